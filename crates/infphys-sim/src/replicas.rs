//! Several engines behind one server, and the router that picks one per request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::Routing;
use crate::driver::{Clock, EngineHandle};
use crate::engine::EngineStats;
use crate::metrics::LatencyMetrics;

/// The engines of one server with a shared clock and shared latency metrics.
pub(crate) struct Replicas {
    engines: Vec<EngineHandle>,
    /// Requests each replica is serving, from submission until the handler or stream ends.
    in_flight: Vec<Arc<AtomicUsize>>,
    routing: Routing,
    next: AtomicUsize,
    pub(crate) clock: Clock,
    pub(crate) latency: Arc<Mutex<LatencyMetrics>>,
}

/// Count of one request at a replica, released when dropped.
pub(crate) struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Replicas {
    /// Groups engines started on `clock` that share `latency`.
    ///
    /// # Panics
    ///
    /// Panics if `engines` is empty.
    pub(crate) fn new(
        engines: Vec<EngineHandle>,
        routing: Routing,
        clock: Clock,
        latency: Arc<Mutex<LatencyMetrics>>,
    ) -> Self {
        assert!(!engines.is_empty(), "a server needs at least one engine");
        let in_flight = engines
            .iter()
            .map(|_| Arc::new(AtomicUsize::new(0)))
            .collect();
        Replicas {
            engines,
            in_flight,
            routing,
            next: AtomicUsize::new(0),
            clock,
            latency,
        }
    }

    /// Picks the replica for a new request and counts the request there until
    /// the returned [`InFlight`] is dropped.
    ///
    /// Round robin cycles through the replicas in order. Least loaded picks
    /// the replica with the fewest requests in flight, the lowest index on a tie.
    pub(crate) fn pick(&self) -> (&EngineHandle, InFlight) {
        let index = match self.routing {
            Routing::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % self.engines.len(),
            Routing::LeastLoaded => self
                .in_flight
                .iter()
                .enumerate()
                .min_by_key(|(index, count)| (count.load(Ordering::Relaxed), *index))
                .map_or(0, |(index, _)| index),
        };
        self.in_flight[index].fetch_add(1, Ordering::Relaxed);
        (
            &self.engines[index],
            InFlight(Arc::clone(&self.in_flight[index])),
        )
    }

    /// Returns the occupancy summed over replicas, with the KV-cache usage
    /// averaged, so that `vllm:gpu_cache_usage_perc` stays a fraction from 0 to 1.
    pub(crate) fn stats(&self) -> EngineStats {
        let mut total = EngineStats::default();
        for engine in &self.engines {
            let stats = engine.stats();
            total.running += stats.running;
            total.waiting += stats.waiting;
            total.kv_usage += stats.kv_usage / self.engines.len() as f64;
            total.preemptions_total += stats.preemptions_total;
            total.prompt_tokens_total += stats.prompt_tokens_total;
            total.generation_tokens_total += stats.generation_tokens_total;
        }
        total
    }

    /// Returns a copy of the latency metrics of all replicas.
    pub(crate) fn latency(&self) -> LatencyMetrics {
        self.latency
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}
