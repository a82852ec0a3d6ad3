//! Server metrics in the Prometheus text format, with vLLM's metric names.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::engine::{EngineStats, Finished};

/// Bucket bounds of `vllm:time_to_first_token_seconds`, in virtual seconds.
const TTFT_BOUNDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// Bucket bounds of `vllm:time_per_output_token_seconds`, in virtual seconds.
const TPOT_BOUNDS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// Bucket bounds of `vllm:e2e_request_latency_seconds`, in virtual seconds.
const E2E_BOUNDS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// Bucket bounds of `infphys:token_emit_lateness_seconds`, in wall seconds: fine below 1 ms,
/// where the streaming precision target lies.
const EMIT_LATENESS_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025,
    0.035, 0.05, 0.1, 0.25, 1.0,
];

/// Histogram of how late streamed token chunks are handed to their connection, compared with
/// the wall time of their virtual-time schedule. Every stream records into it, so it counts
/// with atomics rather than behind a lock.
#[derive(Debug)]
pub(crate) struct EmitLateness {
    /// Observations per bucket of [`EMIT_LATENESS_BOUNDS`], plus one above every bound.
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl Default for EmitLateness {
    fn default() -> Self {
        EmitLateness {
            counts: (0..=EMIT_LATENESS_BOUNDS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl EmitLateness {
    /// Records one chunk handed over `late` after its scheduled wall time.
    pub(crate) fn observe(&self, late: Duration) {
        let bucket = bucket_of(EMIT_LATENESS_BOUNDS, late.as_secs_f64());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(late.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Returns the counts so far as a [`Histogram`].
    fn snapshot(&self) -> Histogram {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect();
        Histogram {
            bounds: EMIT_LATENESS_BOUNDS,
            count: counts.iter().sum(),
            counts,
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 * 1e-9,
        }
    }
}

/// Returns the index of the first bound at or above `seconds`, or `bounds.len()` above them all.
fn bucket_of(bounds: &[f64], seconds: f64) -> usize {
    bounds
        .iter()
        .position(|bound| seconds <= *bound)
        .unwrap_or(bounds.len())
}

/// Prometheus histogram with fixed upper bounds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket, not cumulative; the last entry counts those above every bound.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, seconds: f64) {
        let bucket = bucket_of(self.bounds, seconds);
        self.counts[bucket] += 1;
        self.sum += seconds;
        self.count += 1;
    }

    /// Appends the `_bucket`, `_sum` and `_count` lines with cumulative bucket counts.
    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"{bound:?}\"}} {cumulative}"
            );
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {:?}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// Latency histograms and the completion counter of one server, over all replicas.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LatencyMetrics {
    /// From arrival at the handler to the first token.
    ttft: Histogram,
    /// One observation per gap between consecutive tokens of a request.
    tpot: Histogram,
    /// From arrival at the handler to the last token.
    e2e: Histogram,
    /// Requests that finished generating.
    pub(crate) completed_total: u64,
}

impl Default for LatencyMetrics {
    fn default() -> Self {
        LatencyMetrics {
            ttft: Histogram::new(TTFT_BOUNDS),
            tpot: Histogram::new(TPOT_BOUNDS),
            e2e: Histogram::new(E2E_BOUNDS),
            completed_total: 0,
        }
    }
}

impl LatencyMetrics {
    /// Records a finished request that arrived at virtual time `arrival`.
    ///
    /// The times are the engine's token times, so injected delivery stalls do
    /// not show here; engine stalls do.
    pub(crate) fn observe(&mut self, finished: &Finished, arrival: Duration) {
        self.completed_total += 1;
        let (Some(first), Some(last)) = (finished.token_times.first(), finished.token_times.last())
        else {
            return;
        };
        self.ttft
            .observe(first.saturating_sub(arrival).as_secs_f64());
        self.e2e.observe(last.saturating_sub(arrival).as_secs_f64());
        for pair in finished.token_times.windows(2) {
            self.tpot.observe((pair[1] - pair[0]).as_secs_f64());
        }
    }
}

/// Writes the gauges, counters and histograms in the Prometheus text format 0.0.4.
pub(crate) fn render(
    stats: &EngineStats,
    latency: &LatencyMetrics,
    emit_lateness: &EmitLateness,
    model: &str,
) -> String {
    let model = model.replace('\\', "\\\\").replace('"', "\\\"");
    let labels = format!("model_name=\"{model}\"");
    let series: [(&str, &str, &str, String); 6] = [
        (
            "vllm:num_requests_running",
            "gauge",
            "Number of requests in model execution batches.",
            stats.running.to_string(),
        ),
        (
            "vllm:num_requests_waiting",
            "gauge",
            "Number of requests waiting to be processed.",
            stats.waiting.to_string(),
        ),
        (
            "vllm:gpu_cache_usage_perc",
            "gauge",
            "GPU KV-cache usage. 1 means 100 percent usage.",
            stats.kv_usage.to_string(),
        ),
        (
            "vllm:num_preemptions_total",
            "counter",
            "Cumulative number of preemptions from the engine.",
            stats.preemptions_total.to_string(),
        ),
        (
            "vllm:prompt_tokens_total",
            "counter",
            "Number of prefill tokens processed.",
            stats.prompt_tokens_total.to_string(),
        ),
        (
            "vllm:generation_tokens_total",
            "counter",
            "Number of generation tokens processed.",
            stats.generation_tokens_total.to_string(),
        ),
    ];
    let mut body = String::new();
    for (name, kind, help, value) in series {
        let _ = write!(
            body,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{labels}}} {value}\n"
        );
    }

    let histograms = [
        (
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in virtual seconds.",
            &latency.ttft,
        ),
        (
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in virtual seconds.",
            &latency.tpot,
        ),
        (
            "vllm:e2e_request_latency_seconds",
            "Histogram of end-to-end request latency in virtual seconds.",
            &latency.e2e,
        ),
    ];
    for (name, help, histogram) in histograms {
        let _ = write!(body, "# HELP {name} {help}\n# TYPE {name} histogram\n");
        histogram.write(&mut body, name, &labels);
    }

    // The simulator's own precision, with no vLLM counterpart.
    let name = "infphys:token_emit_lateness_seconds";
    let _ = write!(
        body,
        "# HELP {name} Histogram of how late streamed token chunks are handed to their \
         connection after their scheduled time, in wall seconds.\n# TYPE {name} histogram\n"
    );
    emit_lateness.snapshot().write(&mut body, name, &labels);
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::FinishReason;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut histogram = Histogram::new(&[0.1, 1.0]);
        for seconds in [0.05, 0.1, 0.5, 3.0] {
            histogram.observe(seconds);
        }
        let mut out = String::new();
        histogram.write(&mut out, "h", "m=\"x\"");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "h_bucket{m=\"x\",le=\"0.1\"} 2",
                "h_bucket{m=\"x\",le=\"1.0\"} 3",
                "h_bucket{m=\"x\",le=\"+Inf\"} 4",
                "h_sum{m=\"x\"} 3.65",
                "h_count{m=\"x\"} 4",
            ]
        );
    }

    #[test]
    fn observe_counts_every_token_gap() {
        let millis = Duration::from_millis;
        let finished = Finished {
            id: 1,
            prompt_tokens: 8,
            enqueue_at: millis(103),
            scheduled_at: millis(103),
            token_times: vec![millis(200), millis(230), millis(270)],
            finish_reason: FinishReason::Stop,
            preemptions: 0,
        };
        let mut metrics = LatencyMetrics::default();
        metrics.observe(&finished, millis(100));
        assert_eq!(metrics.completed_total, 1);
        assert_eq!(metrics.ttft.count, 1);
        assert!((metrics.ttft.sum - 0.1).abs() < 1e-9);
        assert_eq!(metrics.tpot.count, 2);
        assert!((metrics.tpot.sum - 0.07).abs() < 1e-9);
        assert!((metrics.e2e.sum - 0.17).abs() < 1e-9);
    }
}
