//! Virtual-time engine: continuous batching of one GPU in the vLLM scheduler order.
//!
//! [`Engine`] is a synchronous state machine with no notion of wall time.
//! Each call to [`Engine::step`] schedules one step at the current virtual
//! time and advances the clock by its modeled duration. The server drives it
//! from a thread of its own; tests and notebooks can drive it directly, as
//! [`run_closed_loop`] does.

use std::collections::VecDeque;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, LogNormal, StandardNormal};

use crate::config::Stall;
use crate::preset::Physics;

/// Identifier the caller assigns to a request; unique per engine.
pub type RequestId = u64;

/// Request as submitted to the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineRequest {
    /// Caller-assigned id used for aborts and results.
    pub id: RequestId,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Maximum completion length in tokens; at least 1.
    pub max_tokens: usize,
    /// Virtual time at which the request joins the waiting queue, after the HTTP overhead.
    pub enqueue_at: Duration,
    /// Completion length fixed by the request content; `None` samples the
    /// natural length from the physics' lognormal.
    pub fixed_output_tokens: Option<usize>,
}

/// Reason a completion ended, as in the OpenAI `finish_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended the reply before `max_tokens`.
    Stop,
    /// The reply reached `max_tokens`.
    Length,
}

impl FinishReason {
    /// Returns the OpenAI name, "stop" or "length".
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// A finished request with the virtual time of every output token.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// Request id.
    pub id: RequestId,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Virtual time the request joined the waiting queue.
    pub enqueue_at: Duration,
    /// Virtual time of the start of the first step that scheduled the request.
    pub scheduled_at: Duration,
    /// Virtual time of each output token; the last one is the finish time.
    pub token_times: Vec<Duration>,
    /// Reason the completion ended.
    pub finish_reason: FinishReason,
    /// How many times the request was preempted and recomputed.
    pub preemptions: u32,
}

/// Output tokens and completions of one step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepReport {
    /// Virtual time the step started.
    pub start: Duration,
    /// Virtual time the step ended; every token of the step is produced at this time.
    pub end: Duration,
    /// Requests that produced a token, with the token's 0-based index.
    pub tokens: Vec<(RequestId, usize)>,
    /// Requests that finished in this step.
    pub finished: Vec<Finished>,
    /// Requests preempted in this step; they wait again and recompute their KV cache.
    pub preempted: Vec<RequestId>,
    /// Requests that finished their HTTP overhead and joined the waiting queue or the batch.
    pub accepted: Vec<RequestId>,
    /// Requests rejected because they would have waited behind a full bounded queue.
    pub rejected: Vec<(RequestId, QueueFull)>,
    /// Tokens processed in the step (`N` of the step-time model).
    pub batch_tokens: usize,
    /// Sequences in the step (`B` of the step-time model).
    pub batch_seqs: usize,
}

/// Rejection of a request because the bounded waiting queue was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull {
    /// Number of requests already waiting when the request arrived.
    pub waiting: usize,
}

/// Engine occupancy, with the vLLM metric each value corresponds to.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EngineStats {
    /// Sequences holding a batch slot (`vllm:num_requests_running`).
    pub running: usize,
    /// Requests in the waiting queue, not counting those still in their HTTP overhead (`vllm:num_requests_waiting`).
    pub waiting: usize,
    /// Fraction of KV blocks in use, 0 to 1 (`vllm:gpu_cache_usage_perc`).
    pub kv_usage: f64,
    /// Preemptions since the engine started (`vllm:num_preemptions_total`).
    pub preemptions_total: u64,
    /// Prompt tokens of all submitted requests (`vllm:prompt_tokens_total`).
    pub prompt_tokens_total: u64,
    /// Output tokens produced, including ones later discarded by aborts (`vllm:generation_tokens_total`).
    pub generation_tokens_total: u64,
}

#[derive(Debug)]
struct Sequence {
    id: RequestId,
    prompt_tokens: usize,
    target_tokens: usize,
    finish_reason: FinishReason,
    enqueue_at: Duration,
    /// Tokens whose KV entries are in the cache.
    computed: usize,
    blocks: usize,
    /// Start of the first step that scheduled the sequence.
    scheduled_at: Option<Duration>,
    token_times: Vec<Duration>,
    preemptions: u32,
    /// False until the request has passed the bounded-queue check.
    accepted: bool,
}

impl Sequence {
    /// Returns the tokens still to process before the next output token:
    /// the whole prompt at first, 1 while decoding, and the prompt plus all
    /// output so far after a preemption.
    fn remaining(&self) -> usize {
        self.prompt_tokens + self.token_times.len() - self.computed
    }
}

/// One sequence's share of a step.
struct Planned {
    /// Index into `running`.
    index: usize,
    tokens: usize,
    context: usize,
}

/// Continuous-batching engine on a virtual clock.
#[derive(Debug)]
pub struct Engine {
    physics: Physics,
    max_queue: Option<usize>,
    now: Duration,
    /// Submitted requests still in their HTTP overhead, ordered by `enqueue_at`.
    pending: VecDeque<Sequence>,
    waiting: VecDeque<Sequence>,
    /// Running sequences in admission order; the last one is preempted first.
    running: Vec<Sequence>,
    total_blocks: usize,
    free_blocks: usize,
    jitter: Option<LogNormal<f64>>,
    step_rng: StdRng,
    length_rng: StdRng,
    stats: EngineStats,
    stall: Option<Stall>,
}

impl Engine {
    /// Creates an idle engine at virtual time 0.
    ///
    /// `seed` drives the step jitter and the completion lengths, so the same
    /// seed and the same submissions give the same token times.
    /// `max_queue` bounds the waiting queue as in [`crate::SimConfig::max_queue`].
    pub fn new(physics: Physics, seed: u64, max_queue: Option<usize>) -> Self {
        let total_blocks = physics.kv_blocks();
        let jitter = (physics.jitter_sigma > 0.0).then(|| {
            LogNormal::new(0.0, physics.jitter_sigma).expect("jitter_sigma is finite and positive")
        });
        Engine {
            physics,
            max_queue,
            now: Duration::ZERO,
            pending: VecDeque::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            total_blocks,
            free_blocks: total_blocks,
            jitter,
            step_rng: StdRng::seed_from_u64(seed),
            // A different stream than the jitter, so lengths do not depend on the number of steps.
            length_rng: StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
            stats: EngineStats::default(),
            stall: None,
        }
    }

    /// Returns the engine with periodic pauses, as [`crate::SimConfig::stall`] describes.
    ///
    /// # Panics
    ///
    /// Panics if a stall's `length` is 0 or not shorter than `every`.
    pub fn with_stall(mut self, stall: Option<Stall>) -> Self {
        if let Some(stall) = stall {
            assert!(
                !stall.length.is_zero() && stall.length < stall.every,
                "stall length {:?} must be above 0 and below its period {:?}",
                stall.length,
                stall.every
            );
        }
        self.stall = stall;
        self
    }

    /// Returns the physics the engine runs with.
    pub fn physics(&self) -> &Physics {
        &self.physics
    }

    /// Returns the current virtual time.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Returns the current occupancy and counters.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            running: self.running.len(),
            waiting: self.waiting.len(),
            kv_usage: if self.total_blocks == 0 {
                0.0
            } else {
                (self.total_blocks - self.free_blocks) as f64 / self.total_blocks as f64
            },
            ..self.stats
        }
    }

    /// Returns true while a sequence is running or waiting, or an arrival is
    /// due at the current time, so [`step`](Self::step) has work.
    pub fn has_work(&self) -> bool {
        !self.running.is_empty()
            || !self.waiting.is_empty()
            || self
                .next_arrival()
                .is_some_and(|arrival| arrival <= self.now)
    }

    /// Returns the earliest `enqueue_at` of a request still in its HTTP overhead.
    pub fn next_arrival(&self) -> Option<Duration> {
        self.pending.front().map(|sequence| sequence.enqueue_at)
    }

    /// Moves the clock forward to `time` while idle; an earlier time is ignored.
    pub fn advance_to(&mut self, time: Duration) {
        self.now = self.now.max(time);
    }

    /// Adds a request that joins the waiting queue at its `enqueue_at`.
    ///
    /// The completion length is drawn here, in submission order. The
    /// bounded-queue check happens in the first step after `enqueue_at`,
    /// which lists the request in [`StepReport::accepted`] or
    /// [`StepReport::rejected`]. Returns the number of output tokens the
    /// request will produce unless it is aborted.
    pub fn submit(&mut self, request: EngineRequest) -> usize {
        let max_tokens = request.max_tokens.max(1);
        let natural = match request.fixed_output_tokens {
            Some(tokens) => tokens.max(1),
            None => self.sample_natural_length(),
        };
        let (target_tokens, finish_reason) = if natural >= max_tokens {
            (max_tokens, FinishReason::Length)
        } else {
            (natural, FinishReason::Stop)
        };
        self.stats.prompt_tokens_total += request.prompt_tokens as u64;

        let sequence = Sequence {
            id: request.id,
            prompt_tokens: request.prompt_tokens.max(1),
            target_tokens,
            finish_reason,
            enqueue_at: request.enqueue_at,
            computed: 0,
            blocks: 0,
            scheduled_at: None,
            token_times: Vec::new(),
            preemptions: 0,
            accepted: false,
        };
        // Arrivals come nearly in order, so the insertion point is almost always the back.
        let position = self
            .pending
            .iter()
            .rposition(|other| other.enqueue_at <= sequence.enqueue_at)
            .map_or(0, |index| index + 1);
        self.pending.insert(position, sequence);
        target_tokens
    }

    /// Removes a request wherever it is and frees its batch slot and KV
    /// blocks, as vLLM does when a client disconnects. Returns false when the
    /// id is unknown or already finished.
    pub fn abort(&mut self, id: RequestId) -> bool {
        if let Some(index) = self.running.iter().position(|sequence| sequence.id == id) {
            let sequence = self.running.remove(index);
            self.free_blocks += sequence.blocks;
            return true;
        }
        for queue in [&mut self.waiting, &mut self.pending] {
            if let Some(index) = queue.iter().position(|sequence| sequence.id == id) {
                queue.remove(index);
                return true;
            }
        }
        false
    }

    /// Runs one step at the current virtual time and advances the clock to its end.
    ///
    /// The order follows the vLLM V1 scheduler. Running sequences come
    /// first, each with one decode token or its next prefill chunk, and the
    /// most recently admitted one is preempted whenever KV blocks run out.
    /// If nothing was preempted, requests are then admitted from the head of
    /// the FIFO waiting queue while the sequence limit, the step token budget
    /// and the free KV blocks allow. Last, new arrivals that would wait
    /// behind `max_queue` others are rejected. A step with nothing to
    /// schedule takes no time.
    pub fn step(&mut self) -> StepReport {
        self.now = self.after_stall(self.now);
        self.admit_arrivals();
        let start = self.now;
        let mut report = StepReport {
            start,
            end: start,
            ..StepReport::default()
        };

        let mut plan = Vec::new();
        let mut budget = self.physics.max_batched_tokens;
        let preempted_any = self.schedule_running(&mut plan, &mut budget, &mut report);
        if !preempted_any {
            self.schedule_waiting(&mut plan, &mut budget);
        }
        self.enforce_queue_limit(&mut report);
        if plan.is_empty() {
            return report;
        }

        let duration = self.step_duration(&plan);
        let end = self.step_end(start, duration);
        self.now = end;
        report.end = end;
        report.batch_seqs = plan.len();
        report.batch_tokens = plan.iter().map(|planned| planned.tokens).sum();

        for planned in &plan {
            let sequence = &mut self.running[planned.index];
            sequence.scheduled_at.get_or_insert(start);
            sequence.computed += planned.tokens;
            if sequence.remaining() == 0 {
                report
                    .tokens
                    .push((sequence.id, sequence.token_times.len()));
                sequence.token_times.push(end);
                self.stats.generation_tokens_total += 1;
            }
        }
        self.collect_finished(&mut report);
        report
    }

    /// Returns `time`, or the end of the stall it falls in.
    fn after_stall(&self, time: Duration) -> Duration {
        let Some(stall) = self.stall else {
            return time;
        };
        let period = stall.every.as_nanos();
        let index = time.as_nanos() / period;
        let pause_start = duration_from_nanos(index * period);
        if index >= 1 && time < pause_start + stall.length {
            pause_start + stall.length
        } else {
            time
        }
    }

    /// Returns the end of a step of `duration` starting at `start`, extended by every stall that begins during it.
    fn step_end(&self, start: Duration, duration: Duration) -> Duration {
        let mut end = start + duration;
        let Some(stall) = self.stall else {
            return end;
        };
        let period = stall.every.as_nanos();
        let mut pause_start = duration_from_nanos((start.as_nanos() / period + 1) * period);
        // Each pass moves the next pause start forward by more than it moves the end, so the loop ends.
        while pause_start < end {
            end += stall.length;
            pause_start += stall.every;
        }
        end
    }

    fn admit_arrivals(&mut self) {
        while let Some(front) = self.pending.front() {
            if front.enqueue_at > self.now {
                break;
            }
            let sequence = self.pending.pop_front().expect("front exists");
            self.waiting.push_back(sequence);
        }
    }

    /// Rejects the newest unaccepted arrivals beyond `max_queue` waiting
    /// requests and accepts every other new arrival, scheduled or waiting.
    fn enforce_queue_limit(&mut self, report: &mut StepReport) {
        if let Some(limit) = self.max_queue {
            while self.waiting.len() > limit
                && self
                    .waiting
                    .back()
                    .is_some_and(|sequence| !sequence.accepted)
            {
                let sequence = self.waiting.pop_back().expect("back exists");
                let waiting = self.waiting.len().min(limit);
                report.rejected.push((sequence.id, QueueFull { waiting }));
            }
        }
        for sequence in self.running.iter_mut().chain(self.waiting.iter_mut()) {
            if !sequence.accepted {
                sequence.accepted = true;
                report.accepted.push(sequence.id);
            }
        }
    }

    /// Schedules the running sequences; returns true if any was preempted.
    fn schedule_running(
        &mut self,
        plan: &mut Vec<Planned>,
        budget: &mut usize,
        report: &mut StepReport,
    ) -> bool {
        let mut preempted_any = false;
        let mut index = 0;
        while index < self.running.len() && *budget > 0 {
            let sequence = &self.running[index];
            let tokens = sequence.remaining().min(*budget);
            let context = sequence.computed;
            let needed = self
                .blocks_for(context + tokens)
                .saturating_sub(sequence.blocks);

            let mut preempted_self = false;
            while needed > self.free_blocks {
                let mut victim = self
                    .running
                    .pop()
                    .expect("the current sequence is still running");
                preempted_self = self.running.len() == index;
                self.free_blocks += victim.blocks;
                victim.blocks = 0;
                victim.computed = 0;
                victim.preemptions += 1;
                self.stats.preemptions_total += 1;
                report.preempted.push(victim.id);
                // Recompute preemption: back to the front of the queue, ahead of new arrivals.
                self.waiting.push_front(victim);
                preempted_any = true;
                if preempted_self {
                    break;
                }
            }
            if preempted_self {
                break;
            }

            self.free_blocks -= needed;
            self.running[index].blocks += needed;
            plan.push(Planned {
                index,
                tokens,
                context,
            });
            *budget -= tokens;
            index += 1;
        }
        preempted_any
    }

    fn schedule_waiting(&mut self, plan: &mut Vec<Planned>, budget: &mut usize) {
        while self.running.len() < self.physics.max_num_seqs && *budget > 0 {
            let Some(head) = self.waiting.front() else {
                break;
            };
            let tokens = head.remaining().min(*budget);
            let needed = self.blocks_for(tokens);
            if needed > self.free_blocks {
                break;
            }
            let mut sequence = self.waiting.pop_front().expect("head exists");
            sequence.blocks = needed;
            self.free_blocks -= needed;
            self.running.push(sequence);
            plan.push(Planned {
                index: self.running.len() - 1,
                tokens,
                context: 0,
            });
            *budget -= tokens;
        }
    }

    /// Returns the modeled step time including jitter.
    fn step_duration(&mut self, plan: &[Planned]) -> Duration {
        let physics = &self.physics;
        let batch_tokens: usize = plan.iter().map(|planned| planned.tokens).sum();
        let mut decode_context = 0usize;
        let mut prefill_pairs = 0.0f64;
        for planned in plan {
            if planned.tokens == 1 && planned.context > 0 {
                decode_context += planned.context;
            } else {
                prefill_pairs +=
                    planned.tokens as f64 * (planned.context as f64 + planned.tokens as f64 / 2.0);
            }
        }

        let compute = physics.per_token.mul_f64(batch_tokens as f64);
        let base = physics.step_overhead
            + physics.weight_stream.max(compute)
            + physics.per_seq.mul_f64(plan.len() as f64)
            + physics.per_kv_token.mul_f64(decode_context as f64)
            + physics.prefill_attention.mul_f64(prefill_pairs);
        match &self.jitter {
            Some(jitter) => base.mul_f64(jitter.sample(&mut self.step_rng)),
            None => base,
        }
    }

    fn collect_finished(&mut self, report: &mut StepReport) {
        let mut index = 0;
        while index < self.running.len() {
            let sequence = &self.running[index];
            if sequence.token_times.len() < sequence.target_tokens {
                index += 1;
                continue;
            }
            let sequence = self.running.remove(index);
            self.free_blocks += sequence.blocks;
            report.finished.push(Finished {
                id: sequence.id,
                prompt_tokens: sequence.prompt_tokens,
                enqueue_at: sequence.enqueue_at,
                scheduled_at: sequence.scheduled_at.unwrap_or(sequence.enqueue_at),
                token_times: sequence.token_times,
                finish_reason: sequence.finish_reason,
                preemptions: sequence.preemptions,
            });
        }
    }

    fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.physics.kv_block_tokens)
    }

    fn sample_natural_length(&mut self) -> usize {
        let normal: f64 = StandardNormal.sample(&mut self.length_rng);
        let length =
            self.physics.output_len_median * (self.physics.output_len_sigma * normal).exp();
        length.round().clamp(1.0, 1e9) as usize
    }
}

fn duration_from_nanos(nanos: u128) -> Duration {
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Load of a simulated closed-loop client: `concurrency` workers each send
/// the next request as soon as the previous one ends.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedLoop {
    /// Number of workers, each with one request in flight.
    pub concurrency: usize,
    /// Total requests to send.
    pub requests: usize,
    /// Prompt length of every request in tokens.
    pub prompt_tokens: usize,
    /// `max_tokens` of every request.
    pub max_tokens: usize,
    /// Client timeout; a request still unfinished this long after it was sent is aborted.
    pub timeout: Option<Duration>,
}

/// Result of one request of a [`ClosedLoop`] run, in virtual time.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopOutcome {
    /// Virtual time the client sent the request.
    pub sent_at: Duration,
    /// Virtual time the client received the response or gave up.
    pub done_at: Duration,
    /// Output tokens received; 0 for a timed-out request.
    pub completion_tokens: usize,
    /// Time to first token, measured from `sent_at`; `None` for a timed-out request.
    pub time_to_first_token: Option<Duration>,
    /// True when the client timed out.
    pub timed_out: bool,
}

impl LoopOutcome {
    /// Returns the client-side latency, `done_at - sent_at`.
    pub fn latency(&self) -> Duration {
        self.done_at - self.sent_at
    }
}

/// Runs a closed-loop load against a fresh engine entirely in virtual time.
///
/// This is the same model the HTTP server runs, without HTTP or sleeps, so a
/// sweep takes milliseconds. A timed-out request is aborted at the end of the
/// first step that passes its deadline, so timeouts resolve to step granularity.
pub fn run_closed_loop(physics: &Physics, seed: u64, load: &ClosedLoop) -> Vec<LoopOutcome> {
    run_closed_loop_on(Engine::new(physics.clone(), seed, None), load)
}

/// Runs a closed-loop load against `engine`, which may be configured, for
/// example with [`Engine::with_stall`]; otherwise as [`run_closed_loop`].
pub fn run_closed_loop_on(mut engine: Engine, load: &ClosedLoop) -> Vec<LoopOutcome> {
    let mut outcomes = Vec::with_capacity(load.requests);
    let mut in_flight: Vec<(RequestId, Duration)> = Vec::new();
    let mut next_id: RequestId = 0;

    let mut send =
        |engine: &mut Engine, in_flight: &mut Vec<(RequestId, Duration)>, at: Duration| {
            let id = next_id;
            next_id += 1;
            let request = EngineRequest {
                id,
                prompt_tokens: load.prompt_tokens,
                max_tokens: load.max_tokens,
                enqueue_at: at + engine.physics().http_overhead,
                fixed_output_tokens: None,
            };
            engine.submit(request);
            in_flight.push((id, at));
        };

    let mut sent = 0;
    while sent < load.requests.min(load.concurrency) {
        send(&mut engine, &mut in_flight, Duration::ZERO);
        sent += 1;
    }

    while !in_flight.is_empty() {
        if !engine.has_work() {
            let arrival = engine
                .next_arrival()
                .expect("in-flight requests are queued somewhere");
            engine.advance_to(arrival);
        }
        let report = engine.step();

        for finished in report.finished {
            let position = in_flight
                .iter()
                .position(|(id, _)| *id == finished.id)
                .expect("finished request is in flight");
            let (_, sent_at) = in_flight.swap_remove(position);
            let done_at = *finished
                .token_times
                .last()
                .expect("a finished request has a token");
            outcomes.push(LoopOutcome {
                sent_at,
                done_at,
                completion_tokens: finished.token_times.len(),
                time_to_first_token: Some(finished.token_times[0] - sent_at),
                timed_out: false,
            });
            if sent < load.requests {
                send(&mut engine, &mut in_flight, done_at);
                sent += 1;
            }
        }

        if let Some(timeout) = load.timeout {
            let now = engine.now();
            let mut index = 0;
            while index < in_flight.len() {
                let (id, sent_at) = in_flight[index];
                let deadline = sent_at + timeout;
                if deadline > now {
                    index += 1;
                    continue;
                }
                engine.abort(id);
                in_flight.swap_remove(index);
                outcomes.push(LoopOutcome {
                    sent_at,
                    done_at: deadline,
                    completion_tokens: 0,
                    time_to_first_token: None,
                    timed_out: true,
                });
                if sent < load.requests {
                    send(&mut engine, &mut in_flight, deadline);
                    sent += 1;
                }
            }
        }
    }
    outcomes
}

/// Load of a simulated open-loop client: requests sent at a constant rate,
/// whatever the server's state.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenLoop {
    /// Requests sent per virtual second.
    pub rate: f64,
    /// Total requests to send.
    pub requests: usize,
    /// Prompt length of every request in tokens.
    pub prompt_tokens: usize,
    /// `max_tokens` of every request.
    pub max_tokens: usize,
}

/// Runs an open-loop load against `engine` entirely in virtual time.
///
/// Request `i` is sent at `i / rate`, so a stalled server cannot delay the
/// sends, and each latency runs from the scheduled send time. Outcomes are
/// in send order.
///
/// # Panics
///
/// Panics if `rate` is not finite and greater than 0.
pub fn run_open_loop(engine: Engine, load: &OpenLoop) -> Vec<LoopOutcome> {
    assert!(
        load.rate.is_finite() && load.rate > 0.0,
        "open-loop rate {} must be finite and greater than 0",
        load.rate
    );
    let send_times: Vec<Duration> = (0..load.requests)
        .map(|index| Duration::from_secs_f64(index as f64 / load.rate))
        .collect();
    run_open_loop_at(engine, &send_times, load.prompt_tokens, load.max_tokens)
}

/// Runs an open-loop load against `engine` entirely in virtual time, request
/// `i` sent at `send_times[i]` (for example a Poisson schedule); otherwise as
/// [`run_open_loop`]. Outcomes are in the order of `send_times`.
pub fn run_open_loop_at(
    mut engine: Engine,
    send_times: &[Duration],
    prompt_tokens: usize,
    max_tokens: usize,
) -> Vec<LoopOutcome> {
    let http_overhead = engine.physics().http_overhead;
    let sent_at = send_times.to_vec();
    for (index, sent) in sent_at.iter().enumerate() {
        engine.submit(EngineRequest {
            id: index as RequestId,
            prompt_tokens,
            max_tokens,
            enqueue_at: *sent + http_overhead,
            fixed_output_tokens: None,
        });
    }
    let requests = sent_at.len();

    let mut outcomes: Vec<Option<LoopOutcome>> = vec![None; requests];
    let mut remaining = requests;
    while remaining > 0 {
        if !engine.has_work() {
            let arrival = engine
                .next_arrival()
                .expect("unfinished requests are queued somewhere");
            engine.advance_to(arrival);
        }
        for finished in engine.step().finished {
            let index = finished.id as usize;
            let sent = sent_at[index];
            outcomes[index] = Some(LoopOutcome {
                sent_at: sent,
                done_at: *finished
                    .token_times
                    .last()
                    .expect("a finished request has a token"),
                completion_tokens: finished.token_times.len(),
                time_to_first_token: Some(finished.token_times[0] - sent),
                timed_out: false,
            });
            remaining -= 1;
        }
    }
    outcomes
        .into_iter()
        .map(|outcome| outcome.expect("every request finished"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preset::Preset;

    fn no_jitter(preset: Preset) -> Physics {
        Physics {
            jitter_sigma: 0.0,
            ..preset.physics()
        }
    }

    fn request(
        id: RequestId,
        prompt_tokens: usize,
        output_tokens: usize,
        enqueue_at: Duration,
    ) -> EngineRequest {
        EngineRequest {
            id,
            prompt_tokens,
            max_tokens: output_tokens,
            enqueue_at,
            fixed_output_tokens: Some(output_tokens),
        }
    }

    fn run_to_completion(engine: &mut Engine) -> Vec<Finished> {
        let mut finished = Vec::new();
        for _ in 0..1_000_000 {
            if !engine.has_work() {
                match engine.next_arrival() {
                    Some(arrival) => engine.advance_to(arrival),
                    None => return finished,
                }
            }
            finished.extend(engine.step().finished);
        }
        panic!("engine did not finish within 1,000,000 steps");
    }

    #[test]
    fn single_request_step_times_follow_formula() {
        let physics = no_jitter(Preset::Classroom);
        let mut engine = Engine::new(physics.clone(), 0, None);
        engine.submit(request(1, 32, 3, Duration::ZERO));

        let prefill = engine.step();
        let expected_prefill = physics.step_overhead
            + physics.weight_stream
            + physics.per_seq
            + physics.prefill_attention.mul_f64(32.0 * 16.0);
        assert_eq!(prefill.end - prefill.start, expected_prefill);
        assert_eq!(prefill.tokens, vec![(1, 0)]);
        assert_eq!(prefill.batch_tokens, 32);

        let decode = engine.step();
        let expected_decode = physics.step_overhead
            + physics.weight_stream
            + physics.per_seq
            + physics.per_kv_token.mul_f64(32.0);
        assert_eq!(decode.end - decode.start, expected_decode);
        assert_eq!(decode.tokens, vec![(1, 1)]);

        let last = engine.step();
        assert_eq!(last.finished.len(), 1);
        assert_eq!(last.finished[0].token_times.len(), 3);
        assert_eq!(last.finished[0].finish_reason, FinishReason::Length);
        assert!(!engine.has_work());
        assert_eq!(engine.stats().kv_usage, 0.0);
    }

    #[test]
    fn compute_bound_step_uses_token_slope() {
        let physics = no_jitter(Preset::Classroom);
        let mut engine = Engine::new(physics.clone(), 0, None);
        engine.submit(request(1, 2000, 1, Duration::ZERO));
        let step = engine.step();
        let compute = physics.per_token.mul_f64(2000.0);
        assert!(compute > physics.weight_stream);
        let expected = physics.step_overhead
            + compute
            + physics.per_seq
            + physics.prefill_attention.mul_f64(2000.0 * 1000.0);
        assert_eq!(step.end - step.start, expected);
    }

    #[test]
    fn long_prompt_prefills_in_chunks() {
        let physics = no_jitter(Preset::Classroom);
        let budget = physics.max_batched_tokens;
        let mut engine = Engine::new(physics, 0, None);
        engine.submit(request(1, budget * 2 + 10, 2, Duration::ZERO));
        assert!(engine.step().tokens.is_empty());
        assert!(engine.step().tokens.is_empty());
        let third = engine.step();
        assert_eq!(third.batch_tokens, 10);
        assert_eq!(third.tokens, vec![(1, 0)]);
    }

    #[test]
    fn sequence_limit_queues_the_rest() {
        let physics = no_jitter(Preset::Classroom);
        let mut engine = Engine::new(physics, 0, None);
        for id in 0..6 {
            engine.submit(request(id, 10, 5, Duration::ZERO));
        }
        engine.step();
        let stats = engine.stats();
        assert_eq!(stats.running, 4);
        assert_eq!(stats.waiting, 2);
        let finished = run_to_completion(&mut engine);
        let order: Vec<_> = finished.iter().map(|finished| finished.id).collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn kv_exhaustion_preempts_latest_admitted() {
        let physics = Physics {
            kv_capacity_tokens: 64,
            kv_block_tokens: 16,
            max_model_len: 64,
            ..no_jitter(Preset::Classroom)
        };
        let mut engine = Engine::new(physics, 0, None);
        // Two 16-token prompts fill 2 blocks; each needs 2 more blocks to finish.
        engine.submit(request(1, 16, 30, Duration::ZERO));
        engine.submit(request(2, 16, 30, Duration::ZERO));
        let finished = run_to_completion(&mut engine);
        assert_eq!(finished.len(), 2);
        assert!(engine.stats().preemptions_total >= 1);
        let first = finished.iter().find(|finished| finished.id == 1).unwrap();
        let second = finished.iter().find(|finished| finished.id == 2).unwrap();
        assert_eq!(first.preemptions, 0, "the earlier admission keeps its slot");
        assert!(second.preemptions >= 1);
        assert_eq!(second.token_times.len(), 30);
        assert_eq!(engine.stats().kv_usage, 0.0);
    }

    #[test]
    fn abort_frees_slot_and_blocks() {
        let physics = no_jitter(Preset::Classroom);
        let mut engine = Engine::new(physics, 0, None);
        for id in 0..5 {
            engine.submit(request(id, 100, 1000, Duration::ZERO));
        }
        engine.step();
        assert!(engine.stats().kv_usage > 0.0);
        for id in 0..4 {
            assert!(engine.abort(id));
        }
        assert!(!engine.abort(0), "a second abort finds nothing");
        engine.step();
        let stats = engine.stats();
        assert_eq!(stats.running, 1);
        assert_eq!(stats.waiting, 0);
        assert!(engine.abort(4));
        assert_eq!(engine.stats().kv_usage, 0.0);
        assert!(!engine.has_work());
    }

    #[test]
    fn bounded_queue_rejects_when_full() {
        let physics = no_jitter(Preset::Classroom);
        let mut engine = Engine::new(physics, 0, Some(2));
        for id in 0..8 {
            engine.submit(request(id, 10, 5, Duration::ZERO));
        }
        let report = engine.step();
        let mut accepted = report.accepted.clone();
        accepted.sort();
        assert_eq!(accepted, vec![0, 1, 2, 3, 4, 5], "4 run and 2 wait");
        assert_eq!(report.rejected.len(), 2);
        for (id, full) in &report.rejected {
            assert!(*id >= 6, "the newest arrivals are rejected");
            assert_eq!(full.waiting, 2);
        }

        // A later arrival is rejected while 2 still wait, and accepted after they run.
        engine.submit(request(8, 10, 5, engine.now()));
        let report = engine.step();
        assert_eq!(
            report
                .rejected
                .iter()
                .map(|(id, _)| *id)
                .collect::<Vec<_>>(),
            vec![8]
        );
        assert_eq!(engine.stats().waiting, 2);
    }

    #[test]
    fn arrivals_wait_for_their_enqueue_time() {
        let physics = no_jitter(Preset::Classroom);
        let mut engine = Engine::new(physics, 0, None);
        let later = Duration::from_secs(5);
        engine.submit(request(1, 10, 2, later));
        assert!(!engine.has_work());
        assert_eq!(engine.next_arrival(), Some(later));
        engine.advance_to(later);
        let step = engine.step();
        assert_eq!(step.start, later);
        assert_eq!(step.tokens.len(), 1);
    }

    #[test]
    fn same_seed_gives_same_token_times() {
        let run = |seed: u64| {
            let mut engine = Engine::new(Preset::Classroom.physics(), seed, None);
            for id in 0..12 {
                let request = EngineRequest {
                    id,
                    prompt_tokens: 30 + id as usize,
                    max_tokens: 400,
                    enqueue_at: Duration::from_millis(id * 250),
                    fixed_output_tokens: None,
                };
                engine.submit(request);
            }
            let mut finished = run_to_completion(&mut engine);
            finished.sort_by_key(|finished| finished.id);
            finished
        };
        let first = run(7);
        assert_eq!(first.len(), 12);
        assert_eq!(first, run(7));
        assert_ne!(first, run(8));
    }

    #[test]
    fn closed_loop_is_deterministic() {
        let load = ClosedLoop {
            concurrency: 8,
            requests: 40,
            prompt_tokens: 32,
            max_tokens: 96,
            timeout: Some(Duration::from_secs(5)),
        };
        let physics = Preset::Classroom.physics();
        assert_eq!(
            run_closed_loop(&physics, 3, &load),
            run_closed_loop(&physics, 3, &load)
        );
    }
}
