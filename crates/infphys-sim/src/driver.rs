//! Async task that runs the [`Engine`] against the wall clock.
//!
//! The engine task owns the engine and advances its virtual clock one step
//! at a time. After each step it sleeps until the wall time that
//! corresponds to the step's end (virtual time divided by the time scale),
//! then delivers the step's tokens. A sleep shorter than
//! [`MIN_SLEEP`] is skipped, so at high time scales several steps run back
//! to back and the engine is never more than that far ahead of the wall
//! clock. When the engine falls behind the wall clock, as on a busy
//! machine, it runs steps without sleeping until it catches up. When idle it
//! jumps the virtual clock to the next arrival.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::engine::{Engine, EngineRequest, EngineStats, Finished, QueueFull, RequestId};
use crate::metrics::LatencyMetrics;

/// Shortest sleep the engine task takes; closer deadlines run without sleeping.
const MIN_SLEEP: Duration = Duration::from_millis(1);

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

/// Message from an HTTP handler to the engine task.
#[derive(Debug)]
pub(crate) enum Command {
    Submit {
        request: EngineRequest,
        /// When true the handler also receives one [`Event::Token`] per output token.
        stream_tokens: bool,
        events: mpsc::UnboundedSender<Event>,
    },
    Abort(RequestId),
}

/// Message from the engine task to the handler of one request.
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

/// Handle the HTTP layer keeps to reach the engine task.
#[derive(Debug, Clone)]
pub(crate) struct EngineHandle {
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    pub(crate) stats: Arc<Mutex<EngineStats>>,
}

impl EngineHandle {
    /// Returns the latest occupancy published by the engine task.
    pub(crate) fn stats(&self) -> EngineStats {
        *self
            .stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct Subscriber {
    events: mpsc::UnboundedSender<Event>,
    stream_tokens: bool,
    completion_tokens: usize,
}

/// Starts the engine task on the current tokio runtime.
///
/// Every replica of one server shares one `clock`, so that the HTTP layer
/// and all engines agree on virtual time, and one `latency`, which the task
/// updates as requests finish. The task ends when every
/// [`EngineHandle`] is dropped.
pub(crate) fn start(
    engine: Engine,
    clock: Clock,
    latency: Arc<Mutex<LatencyMetrics>>,
) -> EngineHandle {
    let (commands, receiver) = mpsc::unbounded_channel();
    let stats = Arc::new(Mutex::new(engine.stats()));
    let task = EngineTask {
        engine,
        clock,
        receiver,
        subscribers: HashMap::new(),
        stats: Arc::clone(&stats),
        latency,
    };
    tokio::spawn(task.run());
    EngineHandle { commands, stats }
}

struct EngineTask {
    engine: Engine,
    clock: Clock,
    receiver: mpsc::UnboundedReceiver<Command>,
    subscribers: HashMap<RequestId, Subscriber>,
    stats: Arc<Mutex<EngineStats>>,
    latency: Arc<Mutex<LatencyMetrics>>,
}

impl EngineTask {
    async fn run(mut self) {
        tracing::debug!("engine task started");
        loop {
            if !self.drain_commands() {
                break;
            }

            if self.engine.has_work() {
                self.run_step().await;
                continue;
            }

            if let Some(arrival) = self.engine.next_arrival() {
                // Idle until the next request finishes its HTTP overhead, unless a command comes first.
                let wake_at = self.clock.wall_at(arrival);
                tokio::select! {
                    _ = tokio::time::sleep_until(wake_at) => self.engine.advance_to(arrival),
                    command = self.receiver.recv() => match command {
                        Some(command) => self.handle(command),
                        None => break,
                    },
                }
                continue;
            }

            match self.receiver.recv().await {
                Some(command) => self.handle(command),
                None => break,
            }
            // The idle engine catches up with the wall clock before its next step.
            let now = self.clock.virtual_now();
            self.engine
                .advance_to(now.min(self.engine.next_arrival().unwrap_or(now)));
        }
        tracing::debug!("engine task stopped because the server is gone");
    }

    /// Handles every queued command; returns false once all senders are gone.
    fn drain_commands(&mut self) -> bool {
        loop {
            match self.receiver.try_recv() {
                Ok(command) => self.handle(command),
                Err(mpsc::error::TryRecvError::Empty) => return true,
                Err(mpsc::error::TryRecvError::Disconnected) => return false,
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

    async fn run_step(&mut self) {
        let report = self.engine.step();
        self.publish_stats();
        if !report.preempted.is_empty() {
            tracing::debug!(preempted = ?report.preempted, "preempted requests, KV cache full");
        }

        let wake_at = self.clock.wall_at(report.end);
        if wake_at.saturating_duration_since(Instant::now()) >= MIN_SLEEP {
            tokio::time::sleep_until(wake_at).await;
        } else {
            // Let the HTTP tasks run even while the engine catches up.
            tokio::task::yield_now().await;
        }

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
    }

    fn publish_stats(&self) {
        let stats = self.engine.stats();
        *self
            .stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = stats;
    }
}
