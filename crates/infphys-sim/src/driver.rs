//! Engine thread that runs the [`Engine`] against the wall clock.
//!
//! A dedicated OS thread owns the engine and advances its virtual clock one
//! step at a time. After each step it waits until the wall time that
//! corresponds to the step's end (virtual time divided by the time scale),
//! then delivers the step's tokens to the handlers. The thread waits with
//! [`std::thread::sleep`] or [`mpsc::Receiver::recv_timeout`] until shortly
//! before the deadline and yields the CPU in a loop for the rest, so it
//! wakes within microseconds of the deadline on an idle machine. A tokio
//! timer would wake up to 1 ms late, because it rounds sleeps up to whole
//! milliseconds.
//!
//! A wait shorter than [`MIN_SLEEP`] is skipped, so at high time scales
//! several steps run back to back and the engine is never more than that
//! far ahead of the wall clock. When the engine falls behind the wall clock,
//! as on a busy machine, it runs steps without waiting until it catches up.
//! When idle it waits for a command or the next arrival and jumps the
//! virtual clock to that arrival. The virtual clock always moves to the
//! scheduled times, never to the time the thread actually woke, so the same
//! seed and requests give the same virtual times.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc as tokio_mpsc;

use crate::engine::{Engine, EngineRequest, EngineStats, Finished, QueueFull, RequestId};
use crate::metrics::LatencyMetrics;

/// Shortest wall-clock wait the engine thread takes. A step that ends
/// sooner is delivered at once, at most this much early.
///
/// Linux's default timer slack is 50 µs, so a shorter sleep would overshoot
/// by more than it waits.
pub(crate) const MIN_SLEEP: Duration = Duration::from_micros(50);

/// Wall time before a deadline at which the engine thread stops sleeping
/// and yields in a loop instead.
///
/// A 4.6 ms sleep overshot by 85 to 110 µs in the median on a shared
/// 2-core machine, which is the timer slack plus the wake-up. The yield
/// loop costs up to this much CPU per wait, and at most an eighth of the
/// wait (see [`yield_margin`]).
const YIELD_MARGIN: Duration = Duration::from_micros(200);

/// Mapping between wall time and virtual time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
    time_scale: f64,
}

impl Clock {
    pub(crate) fn new(time_scale: f64) -> Self {
        Clock {
            epoch: Instant::now(),
            time_scale,
        }
    }

    /// Returns the virtual time now.
    pub(crate) fn virtual_now(&self) -> Duration {
        self.epoch.elapsed().mul_f64(self.time_scale)
    }

    /// Returns the wall-clock instant of a virtual time.
    pub(crate) fn wall_at(&self, virtual_time: Duration) -> Instant {
        self.epoch + virtual_time.div_f64(self.time_scale)
    }
}

/// Returns how long before a deadline `remaining` away the engine thread
/// switches from sleeping to yielding: [`YIELD_MARGIN`], or an eighth of
/// the wait if that is shorter, so short waits at high time scales do not
/// keep a core busy.
fn yield_margin(remaining: Duration) -> Duration {
    YIELD_MARGIN.min(remaining / 8)
}

/// Message from an HTTP handler to the engine thread.
#[derive(Debug)]
pub(crate) enum Command {
    Submit {
        request: EngineRequest,
        /// When true the handler also receives one [`Event::Token`] per output token.
        stream_tokens: bool,
        events: tokio_mpsc::UnboundedSender<Event>,
    },
    Abort(RequestId),
}

/// Message from the engine thread to the handler of one request.
#[derive(Debug)]
pub(crate) enum Event {
    /// The request passed the bounded-queue check and will produce
    /// `completion_tokens` output tokens unless it is aborted.
    Accepted {
        completion_tokens: usize,
    },
    Rejected(QueueFull),
    /// Token `index` was produced by the step that just ended, at virtual time `at`.
    Token {
        index: usize,
        at: Duration,
    },
    Finished(Finished),
}

/// Handle the HTTP layer keeps to reach the engine thread.
///
/// [`mpsc::Sender::send`] never blocks, so async handlers call it directly.
#[derive(Debug, Clone)]
pub(crate) struct EngineHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) stats: Arc<Mutex<EngineStats>>,
}

impl EngineHandle {
    /// Returns the latest occupancy published by the engine thread.
    pub(crate) fn stats(&self) -> EngineStats {
        *self
            .stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct Subscriber {
    events: tokio_mpsc::UnboundedSender<Event>,
    stream_tokens: bool,
    completion_tokens: usize,
}

/// Starts the engine thread of replica `replica`.
///
/// Every replica of one server shares one `clock`, so that the HTTP layer
/// and all engines agree on virtual time, and one `latency`, which the
/// thread updates as requests finish. The thread ends when every
/// [`EngineHandle`] and every clone of its command sender are dropped.
/// Nothing joins it: it notices the disconnect at its next wait or step.
pub(crate) fn start(
    engine: Engine,
    clock: Clock,
    latency: Arc<Mutex<LatencyMetrics>>,
    replica: usize,
) -> std::io::Result<EngineHandle> {
    let (commands, receiver) = mpsc::channel();
    let stats = Arc::new(Mutex::new(engine.stats()));
    let thread = EngineThread {
        engine,
        clock,
        receiver,
        subscribers: HashMap::new(),
        stats: Arc::clone(&stats),
        latency,
    };
    std::thread::Builder::new()
        .name(format!("infphys-engine-{replica}"))
        .spawn(move || thread.run())?;
    Ok(EngineHandle { commands, stats })
}

/// Why [`EngineThread::wait_until`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    Deadline,
    /// A command arrived and was handled before the deadline.
    Command,
    /// Every command sender is gone, so the server has stopped.
    Disconnected,
}

struct EngineThread {
    engine: Engine,
    clock: Clock,
    receiver: mpsc::Receiver<Command>,
    subscribers: HashMap<RequestId, Subscriber>,
    stats: Arc<Mutex<EngineStats>>,
    latency: Arc<Mutex<LatencyMetrics>>,
}

impl EngineThread {
    fn run(mut self) {
        tracing::debug!("engine thread started");
        loop {
            if !self.drain_commands() {
                break;
            }

            if self.engine.has_work() {
                if !self.run_step() {
                    break;
                }
                continue;
            }

            if let Some(arrival) = self.engine.next_arrival() {
                // Idle until the next request finishes its HTTP overhead, unless a command comes first.
                match self.wait_until(self.clock.wall_at(arrival), true) {
                    Wake::Deadline => self.engine.advance_to(arrival),
                    Wake::Command => {}
                    Wake::Disconnected => break,
                }
                continue;
            }

            match self.receiver.recv() {
                Ok(command) => self.handle(command),
                Err(mpsc::RecvError) => break,
            }
            // The idle engine catches up with the wall clock before its next step.
            let now = self.clock.virtual_now();
            self.engine
                .advance_to(now.min(self.engine.next_arrival().unwrap_or(now)));
        }
        tracing::debug!("engine thread stopped because the server is gone");
    }

    /// Handles every queued command; returns false once all senders are gone.
    fn drain_commands(&mut self) -> bool {
        loop {
            match self.receiver.try_recv() {
                Ok(command) => self.handle(command),
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Waits until the wall-clock `deadline` and handles the commands that
    /// arrive meanwhile, returning after the first one if `return_on_command`.
    ///
    /// A deadline less than [`MIN_SLEEP`] ahead counts as reached. The
    /// thread blocks on the command channel until [`yield_margin`] before
    /// the deadline, then polls the channel and yields the CPU until the
    /// deadline passes.
    fn wait_until(&mut self, deadline: Instant, return_on_command: bool) -> Wake {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining < MIN_SLEEP {
            return Wake::Deadline;
        }
        let yield_from = deadline - yield_margin(remaining);
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Wake::Deadline;
            }
            let command = if now < yield_from {
                match self.receiver.recv_timeout(yield_from - now) {
                    Ok(command) => command,
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return Wake::Disconnected,
                }
            } else {
                match self.receiver.try_recv() {
                    Ok(command) => command,
                    Err(mpsc::TryRecvError::Empty) => {
                        std::thread::yield_now();
                        continue;
                    }
                    Err(mpsc::TryRecvError::Disconnected) => return Wake::Disconnected,
                }
            };
            self.handle(command);
            if return_on_command {
                return Wake::Command;
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Submit {
                request,
                stream_tokens,
                events,
            } => {
                let id = request.id;
                let completion_tokens = self.engine.submit(request);
                self.subscribers.insert(
                    id,
                    Subscriber {
                        events,
                        stream_tokens,
                        completion_tokens,
                    },
                );
            }
            Command::Abort(id) => {
                if self.engine.abort(id) {
                    tracing::debug!(request_id = id, "aborted request after client disconnect");
                }
                self.subscribers.remove(&id);
            }
        }
        self.publish_stats();
    }

    /// Runs one step, delivers its admission results, waits for its
    /// wall-clock end and delivers its tokens and finished requests.
    /// Returns false if the server stopped during the wait.
    ///
    /// Commands that arrive during the wait are handled at once. That gives
    /// the same virtual times as handling them after the delivery, because
    /// the next step is the first to see them.
    fn run_step(&mut self) -> bool {
        let report = self.engine.step();
        self.publish_stats();
        if !report.preempted.is_empty() {
            tracing::debug!(preempted = ?report.preempted, "preempted requests, KV cache full");
        }

        // The bounded-queue check happens at the step's start, so its outcome
        // goes out now. An accepted stream then sends its response head
        // during the step, and only the token chunks wait for its end.
        for id in report.accepted {
            if let Some(subscriber) = self.subscribers.get(&id) {
                let _ = subscriber.events.send(Event::Accepted {
                    completion_tokens: subscriber.completion_tokens,
                });
            }
        }
        for (id, full) in report.rejected {
            tracing::debug!(
                request_id = id,
                waiting = full.waiting,
                "rejected request, queue full"
            );
            if let Some(subscriber) = self.subscribers.remove(&id) {
                let _ = subscriber.events.send(Event::Rejected(full));
            }
        }

        if self.wait_until(self.clock.wall_at(report.end), false) == Wake::Disconnected {
            return false;
        }
        for (id, index) in report.tokens {
            if let Some(subscriber) = self.subscribers.get(&id)
                && subscriber.stream_tokens
            {
                let _ = subscriber.events.send(Event::Token {
                    index,
                    at: report.end,
                });
            }
        }
        if !report.finished.is_empty() {
            let http_overhead = self.engine.physics().http_overhead;
            let mut latency = self
                .latency
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for finished in &report.finished {
                latency.observe(finished, finished.enqueue_at.saturating_sub(http_overhead));
            }
        }
        for finished in report.finished {
            if let Some(subscriber) = self.subscribers.remove(&finished.id) {
                let _ = subscriber.events.send(Event::Finished(finished));
            }
        }
        true
    }

    fn publish_stats(&self) {
        let stats = self.engine.stats();
        *self
            .stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = stats;
    }
}
