//! Closed-loop loads run on the engine in virtual time, without HTTP.
//!
//! The h100 and a100 presets are checked against published tables in
//! `tests/calibration.rs`.

use std::time::Duration;

use infphys_sim::Preset;
use infphys_sim::engine::{ClosedLoop, LoopOutcome, run_closed_loop};

struct Summary {
    throughput_rps: f64,
    p95_latency: Duration,
    mean_latency: Duration,
    mean_ttft: Duration,
    error_rate: f64,
    span: Duration,
}

fn summarize(outcomes: &[LoopOutcome]) -> Summary {
    let span = outcomes
        .iter()
        .map(|outcome| outcome.done_at)
        .max()
        .unwrap();
    let ok: Vec<_> = outcomes
        .iter()
        .filter(|outcome| !outcome.timed_out)
        .collect();
    let mut latencies: Vec<Duration> = ok.iter().map(|outcome| outcome.latency()).collect();
    latencies.sort();
    let p95 = latencies[((latencies.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)];
    let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
    let ttfts: Vec<Duration> = ok
        .iter()
        .map(|outcome| outcome.time_to_first_token.unwrap())
        .collect();
    let mean_ttft = ttfts.iter().sum::<Duration>() / ttfts.len() as u32;
    Summary {
        throughput_rps: ok.len() as f64 / span.as_secs_f64(),
        p95_latency: p95,
        mean_latency: mean,
        mean_ttft,
        error_rate: 1.0 - ok.len() as f64 / outcomes.len() as f64,
        span,
    }
}

fn classroom_load(concurrency: usize, requests: usize, timeout: Option<Duration>) -> ClosedLoop {
    ClosedLoop {
        concurrency,
        requests,
        // "You are a helpful assistant." plus the lab's user prompt, estimated as the server does.
        prompt_tokens: 32,
        max_tokens: 96,
        timeout,
    }
}

#[test]
fn classroom_sweep_saturates() {
    let physics = Preset::Classroom.physics();
    let mut results = Vec::new();
    for concurrency in [1, 2, 4, 8, 16] {
        let summary = summarize(&run_closed_loop(
            &physics,
            1,
            &classroom_load(concurrency, 80, Some(Duration::from_secs(60))),
        ));
        eprintln!(
            "classroom c={concurrency:>2}: {:.3} req/s, p95 {:.2?}, mean {:.2?}, ttft {:.2?}, span {:.1?}, little L={:.2}",
            summary.throughput_rps,
            summary.p95_latency,
            summary.mean_latency,
            summary.mean_ttft,
            summary.span,
            summary.throughput_rps * summary.mean_latency.as_secs_f64()
        );
        results.push((concurrency, summary));
    }
    let single = &results[0].1;
    let top = &results[4].1;
    assert!(
        (2.5..3.5).contains(&single.mean_latency.as_secs_f64()),
        "single-request latency {:?}",
        single.mean_latency
    );
    assert!(top.throughput_rps < 16.0 * single.throughput_rps);
    assert!(
        top.throughput_rps < 1.2 * results[2].1.throughput_rps,
        "flat from concurrency 4 on"
    );
    assert!(top.p95_latency >= single.p95_latency * 3);
}

#[test]
fn classroom_overload_times_out() {
    let physics = Preset::Classroom.physics();
    let mut rates = Vec::new();
    for concurrency in [4, 8, 16, 32] {
        let summary = summarize(&run_closed_loop(
            &physics,
            2,
            &classroom_load(concurrency, 60, Some(Duration::from_secs(5))),
        ));
        eprintln!(
            "classroom overload c={concurrency:>2}: error rate {:.2}, span {:.1?}",
            summary.error_rate, summary.span
        );
        rates.push(summary.error_rate);
    }
    assert_eq!(rates[0], 0.0);
    assert!(rates[3] > 0.2);
}

#[test]
fn classroom_lab_fits_in_25_minutes() {
    let physics = Preset::Classroom.physics();
    let sweep: Duration = [1, 2, 4, 8, 16]
        .into_iter()
        .map(|concurrency| {
            summarize(&run_closed_loop(
                &physics,
                4,
                &classroom_load(concurrency, 80, Some(Duration::from_secs(60))),
            ))
            .span
        })
        .sum();
    let overload: Duration = [4, 8, 16, 32]
        .into_iter()
        .map(|concurrency| {
            summarize(&run_closed_loop(
                &physics,
                5,
                &classroom_load(concurrency, 60, Some(Duration::from_secs(5))),
            ))
            .span
        })
        .sum();
    eprintln!(
        "lab at time_scale 1: sweep {sweep:.0?}, overload {overload:.0?}, total {:.0?}",
        sweep + overload
    );
    assert!(sweep + overload <= Duration::from_secs(25 * 60));
}
