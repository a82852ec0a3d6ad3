//! Analyses of measured runs.

use std::time::Duration;

use crate::load::LoadRun;

/// Little's law (L = λW) checked on one closed-loop run.
///
/// The check uses the run's steady window, from the first completion to the last send. Inside
/// it a closed loop replaces each finished request at once, so the number in flight should
/// equal the concurrency; outside it the loop is still filling up or already draining, and
/// including those edges would bias both sides. Throughput is the rate of requests sent inside
/// the window, which in a steady closed loop equals the rate of completions, and the mean
/// latency is over those same requests, including the part of each that runs past the window:
/// the requests still in flight at its end stand in for those already in flight at its start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LittlesLaw {
    /// Start of the steady window, since the run started.
    pub window_start: Duration,
    /// End of the steady window, since the run started.
    pub window_end: Duration,
    /// Time-averaged number of requests in flight during the window, measured from each
    /// request's send time and latency.
    pub measured_in_flight: f64,
    /// Requests sent per second inside the window (λ).
    pub throughput_rps: f64,
    /// Mean latency of the requests sent inside the window (W).
    pub mean_latency: Duration,
    /// The concurrency the loop was configured with.
    pub concurrency: usize,
}

impl LittlesLaw {
    /// λ × W: the number in flight that Little's law predicts.
    pub fn predicted_in_flight(&self) -> f64 {
        self.throughput_rps * self.mean_latency.as_secs_f64()
    }
}

/// Checks Little's law on `run`, or returns `None` when the run has no steady window (it sent
/// every request before the first one finished).
pub fn littles_law(run: &LoadRun) -> Option<LittlesLaw> {
    let intervals: Vec<(f64, f64)> = run
        .records
        .iter()
        .map(|r| {
            let start = r.sent.as_secs_f64();
            (start, start + r.latency.as_secs_f64())
        })
        .collect();
    let first_end = intervals
        .iter()
        .map(|&(_, end)| end)
        .fold(f64::INFINITY, f64::min);
    let last_send = intervals
        .iter()
        .map(|&(start, _)| start)
        .fold(f64::NEG_INFINITY, f64::max);
    if intervals.is_empty() || last_send <= first_end {
        return None;
    }
    let span = last_send - first_end;

    let busy: f64 = intervals
        .iter()
        .map(|&(start, end)| (end.min(last_send) - start.max(first_end)).max(0.0))
        .sum();
    let sent_inside: Vec<f64> = intervals
        .iter()
        .filter(|&&(start, _)| start >= first_end && start < last_send)
        .map(|&(start, end)| end - start)
        .collect();
    if sent_inside.is_empty() {
        return None;
    }

    Some(LittlesLaw {
        window_start: Duration::from_secs_f64(first_end),
        window_end: Duration::from_secs_f64(last_send),
        measured_in_flight: busy / span,
        throughput_rps: sent_inside.len() as f64 / span,
        mean_latency: Duration::from_secs_f64(
            sent_inside.iter().sum::<f64>() / sent_inside.len() as f64,
        ),
        concurrency: run.concurrency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::RequestRecord;

    fn record(id: u64, sent: f64, latency: f64) -> RequestRecord {
        RequestRecord {
            request_id: id,
            concurrency: 2,
            scheduled: Duration::from_secs_f64(sent),
            sent: Duration::from_secs_f64(sent),
            latency: Duration::from_secs_f64(latency),
            http_status: Some(200),
            output_chars: 1,
            ..RequestRecord::default()
        }
    }

    fn run(records: Vec<RequestRecord>) -> LoadRun {
        LoadRun {
            concurrency: 2,
            total_requests: records.len(),
            timeout: Duration::from_secs(60),
            wall: Duration::from_secs(10),
            records,
            target: "test".into(),
        }
    }

    #[test]
    fn steady_closed_loop_satisfies_the_law() {
        // Two slots, each request 1 s, replaced at once: sends at 0, 0, 1, 1, ..., 9, 9.
        let records = (0..20).map(|i| record(i, (i / 2) as f64, 1.0)).collect();
        let law = littles_law(&run(records)).unwrap();
        assert_eq!(law.window_start, Duration::from_secs(1));
        assert_eq!(law.window_end, Duration::from_secs(9));
        assert!((law.measured_in_flight - 2.0).abs() < 1e-9, "{law:?}");
        assert!((law.predicted_in_flight() - 2.0).abs() < 1e-9, "{law:?}");
    }

    #[test]
    fn no_window_when_everything_was_sent_at_once() {
        let records = (0..2).map(|i| record(i, 0.0, 1.0)).collect();
        assert_eq!(littles_law(&run(records)), None);
    }
}
