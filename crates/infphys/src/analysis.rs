//! Analyses of measured runs: the knee of a latency curve, Little's law, and goodput under
//! service-level objectives.

use std::time::Duration;

use polars::prelude::*;

use crate::frames::column_f64;
use crate::load::{LoadRun, Sweep};

/// The point where a latency curve leaves its service-level objective.
#[derive(Debug, Clone, PartialEq)]
pub struct Knee {
    /// The highest load (concurrency or offered rate) whose latency stays within the objective,
    /// interpolated linearly between the last point within it and the first point beyond it.
    pub load: f64,
    /// Whether `load` lies between two measured points; `false` when every measured point met
    /// the objective and `load` is simply the highest one measured.
    pub interpolated: bool,
    /// The objective, in seconds.
    pub slo_s: f64,
    /// The curve the knee was found on: (load, latency in seconds) sorted by load, points
    /// without a latency left out.
    pub curve: Vec<(f64, f64)>,
}

/// Finds the knee of the curve `latency_column` against `load_column` in `summary` (for
/// example `p95_s` against `concurrency` in a sweep's summary frame) for the objective `slo`.
///
/// Returns `None` when no point meets the objective: even the lightest load measured is too
/// slow, so no knee lies inside the measured range.
pub fn knee(
    summary: &DataFrame,
    load_column: &str,
    latency_column: &str,
    slo: Duration,
) -> PolarsResult<Option<Knee>> {
    let loads = column_f64(summary, load_column)?;
    let latencies = column_f64(summary, latency_column)?;
    let mut curve: Vec<(f64, f64)> = loads
        .into_iter()
        .zip(latencies)
        .filter(|(x, y)| x.is_finite() && !y.is_nan())
        .collect();
    curve.sort_by(|a, b| a.0.total_cmp(&b.0));
    let slo_s = slo.as_secs_f64();

    let Some(first_miss) = curve.iter().position(|&(_, y)| y > slo_s) else {
        return Ok(curve.last().map(|&(x, _)| Knee {
            load: x,
            interpolated: false,
            slo_s,
            curve: curve.clone(),
        }));
    };
    if first_miss == 0 {
        return Ok(None);
    }

    let (x0, y0) = curve[first_miss - 1];
    let (x1, y1) = curve[first_miss];
    let load = if y1.is_finite() {
        x0 + (slo_s - y0) / (y1 - y0) * (x1 - x0)
    } else {
        x0
    };
    Ok(Some(Knee {
        load,
        interpolated: y1.is_finite(),
        slo_s,
        curve,
    }))
}

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
    /// Requests sent inside the window. With few of them the edges of the window dominate and
    /// the check is loose; a few dozen make it tight.
    pub requests_in_window: usize,
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
        requests_in_window: sent_inside.len(),
    })
}

/// Little's law for every run of `sweep`, one row per run: the configured concurrency, the
/// offered rate (open loop), the measured time-averaged number in flight, throughput and mean
/// latency in the steady window, their product λW, and λW divided by the measured number.
/// Runs without a steady window are left out.
pub fn littles_law_frame(sweep: &Sweep) -> PolarsResult<DataFrame> {
    let rows: Vec<(&LoadRun, LittlesLaw)> = sweep
        .runs
        .iter()
        .filter_map(|run| littles_law(run).map(|law| (run, law)))
        .collect();
    DataFrame::new_infer_height(vec![
        Column::new(
            "concurrency".into(),
            rows.iter()
                .map(|(_, l)| l.concurrency as u32)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "offered_rps".into(),
            rows.iter().map(|(r, _)| r.offered_rps).collect::<Vec<_>>(),
        ),
        Column::new(
            "measured_in_flight".into(),
            rows.iter()
                .map(|(_, l)| l.measured_in_flight)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "throughput_rps".into(),
            rows.iter()
                .map(|(_, l)| l.throughput_rps)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "mean_latency_s".into(),
            rows.iter()
                .map(|(_, l)| l.mean_latency.as_secs_f64())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "predicted_in_flight".into(),
            rows.iter()
                .map(|(_, l)| l.predicted_in_flight())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "requests_in_window".into(),
            rows.iter()
                .map(|(_, l)| l.requests_in_window as u64)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "ratio".into(),
            rows.iter()
                .map(|(_, l)| l.predicted_in_flight() / l.measured_in_flight)
                .collect::<Vec<_>>(),
        ),
    ])
}

/// Service-level objectives a request must meet to count as good; an unset bound always holds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Slo {
    /// Largest time to first token.
    pub ttft: Option<Duration>,
    /// Largest time per output token.
    pub tpot: Option<Duration>,
    /// Largest end-to-end latency.
    pub e2e: Option<Duration>,
}

impl Slo {
    /// Whether `record` succeeded and meets every bound; a bound on TTFT or time per output
    /// token fails for a request that did not measure it (a non-streaming one).
    pub fn is_met_by(&self, record: &crate::load::RequestRecord) -> bool {
        let within = |bound: Option<Duration>, value: Option<Duration>| match bound {
            None => true,
            Some(bound) => value.is_some_and(|v| v <= bound),
        };
        record.ok()
            && within(self.ttft, record.ttft)
            && within(self.tpot, record.tpot)
            && within(self.e2e, Some(record.latency))
    }
}

/// Goodput of one run: how many requests were both successful and fast enough.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Goodput {
    /// Rows that met every objective.
    pub good: usize,
    /// All rows, failures and retries included.
    pub total: usize,
    /// Good rows per second of the run's wall time.
    pub goodput_rps: f64,
    /// All finished rows per second of the run's wall time.
    pub throughput_rps: f64,
}

/// Computes the goodput of `run` under `slo`.
pub fn goodput(run: &LoadRun, slo: &Slo) -> Goodput {
    let good = run.records.iter().filter(|r| slo.is_met_by(r)).count();
    let wall_s = run.wall.as_secs_f64();
    let per_second = |n: usize| {
        if wall_s > 0.0 {
            n as f64 / wall_s
        } else {
            f64::NAN
        }
    };
    Goodput {
        good,
        total: run.records.len(),
        goodput_rps: per_second(good),
        throughput_rps: per_second(run.records.len()),
    }
}

/// Goodput for every run of `sweep`: concurrency, offered rate, throughput, goodput and the
/// share of rows that met the objectives.
pub fn goodput_frame(sweep: &Sweep, slo: &Slo) -> PolarsResult<DataFrame> {
    let rows: Vec<(&LoadRun, Goodput)> = sweep
        .runs
        .iter()
        .map(|run| (run, goodput(run, slo)))
        .collect();
    DataFrame::new_infer_height(vec![
        Column::new(
            "concurrency".into(),
            rows.iter()
                .map(|(r, _)| r.concurrency as u32)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "offered_rps".into(),
            rows.iter().map(|(r, _)| r.offered_rps).collect::<Vec<_>>(),
        ),
        Column::new(
            "throughput_rps".into(),
            rows.iter()
                .map(|(_, g)| g.throughput_rps)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "goodput_rps".into(),
            rows.iter().map(|(_, g)| g.goodput_rps).collect::<Vec<_>>(),
        ),
        Column::new(
            "slo_met_fraction".into(),
            rows.iter()
                .map(|(_, g)| {
                    if g.total > 0 {
                        g.good as f64 / g.total as f64
                    } else {
                        f64::NAN
                    }
                })
                .collect::<Vec<_>>(),
        ),
    ])
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
            offered_rps: None,
            interrupted: false,
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
    fn knee_interpolates_between_points() {
        let df =
            df!("concurrency" => [1.0, 2.0, 4.0, 8.0], "p95_s" => [1.0, 1.2, 2.0, 6.0]).unwrap();
        let knee = knee(&df, "concurrency", "p95_s", Duration::from_secs(3))
            .unwrap()
            .unwrap();
        // Between (4, 2.0) and (8, 6.0): 4 + (3 − 2) / (6 − 2) × 4 = 5.
        assert!((knee.load - 5.0).abs() < 1e-9, "{knee:?}");
        assert!(knee.interpolated);
        assert_eq!(knee.curve.len(), 4);
    }

    #[test]
    fn knee_when_all_or_none_meet_the_slo() {
        let df = df!("concurrency" => [4.0, 1.0], "p95_s" => [2.0, 1.0]).unwrap();
        let all = knee(&df, "concurrency", "p95_s", Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert_eq!(all.load, 4.0);
        assert!(!all.interpolated);
        assert_eq!(
            knee(&df, "concurrency", "p95_s", Duration::from_millis(500)).unwrap(),
            None
        );
    }

    #[test]
    fn knee_with_unbounded_latency() {
        let df = df!("rate" => [1.0, 2.0, 3.0], "p95" => [1.0, 2.0, f64::INFINITY]).unwrap();
        let knee = knee(&df, "rate", "p95", Duration::from_secs(3))
            .unwrap()
            .unwrap();
        assert_eq!(knee.load, 2.0);
        assert!(!knee.interpolated);
    }

    #[test]
    fn goodput_counts_only_fast_successes() {
        let mut records: Vec<RequestRecord> = (0..4)
            .map(|i| record(i, i as f64, 1.0 + i as f64))
            .collect();
        records[3].error_kind = Some(crate::ErrorKind::Timeout);
        let run = run(records);
        let slo = Slo {
            e2e: Some(Duration::from_secs_f64(2.5)),
            ..Slo::default()
        };
        let result = goodput(&run, &slo);
        assert_eq!(
            result.good, 2,
            "1 s and 2 s meet 2.5 s; 3 s does not; the failure never counts"
        );
        assert_eq!(result.total, 4);
        assert!((result.goodput_rps - 0.2).abs() < 1e-9, "{result:?}");
        let streaming_bound = Slo {
            ttft: Some(Duration::from_secs(1)),
            ..Slo::default()
        };
        assert_eq!(
            goodput(&run, &streaming_bound).good,
            0,
            "no TTFT measured, so none count"
        );
    }

    #[test]
    fn no_window_when_everything_was_sent_at_once() {
        let records = (0..2).map(|i| record(i, 0.0, 1.0)).collect();
        assert_eq!(littles_law(&run(records)), None);
    }
}
