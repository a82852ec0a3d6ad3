//! Closed-loop loads run on the engine in virtual time, without HTTP.

use std::time::Duration;

use infphys_sim::Preset;
use infphys_sim::engine::{ClosedLoop, LoopOutcome, run_closed_loop};

struct Summary {
    throughput_rps: f64,
    output_tokens_per_second: f64,
    p95_latency: Duration,
    mean_latency: Duration,
    mean_ttft: Duration,
    mean_itl: Duration,
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
    let itl_total: Duration = ok
        .iter()
        .filter(|outcome| outcome.completion_tokens > 1)
        .map(|outcome| {
            (outcome.latency() - outcome.time_to_first_token.unwrap())
                / (outcome.completion_tokens as u32 - 1)
        })
        .sum();
    let tokens: usize = ok.iter().map(|outcome| outcome.completion_tokens).sum();
    Summary {
        throughput_rps: ok.len() as f64 / span.as_secs_f64(),
        output_tokens_per_second: tokens as f64 / span.as_secs_f64(),
        p95_latency: p95,
        mean_latency: mean,
        mean_ttft,
        mean_itl: itl_total / ok.len() as u32,
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

/// Published NIM 1.8 numbers for Llama-3.1-8B-Instruct on one H100 with
/// about 200 input and 200 output tokens: concurrency, ITL, output tokens/s.
const H100_PUBLISHED: [(usize, f64, f64); 4] = [
    (1, 4.6e-3, 215.0),
    (25, 5.2e-3, 4679.0),
    (100, 7.6e-3, 12215.0),
    (200, 12.7e-3, 13348.0),
];

#[test]
fn h100_matches_published_numbers() {
    for (concurrency, published_itl, published_throughput) in H100_PUBLISHED {
        let load = ClosedLoop {
            concurrency,
            requests: concurrency * 5,
            prompt_tokens: 200,
            max_tokens: 400,
            timeout: None,
        };
        let mut physics = Preset::H100.physics();
        // About 200 output tokens, with a little spread so the clients do not stay in lockstep.
        physics.output_len_median = 200.0;
        physics.output_len_sigma = 0.1;
        let summary = summarize(&run_closed_loop(&physics, 3, &load));
        eprintln!(
            "h100 c={concurrency:>3}: ttft {:.1?}, itl {:.2?}, {:.0} output tok/s",
            summary.mean_ttft, summary.mean_itl, summary.output_tokens_per_second
        );
        let itl_ratio = summary.mean_itl.as_secs_f64() / published_itl;
        let throughput_ratio = summary.output_tokens_per_second / published_throughput;
        assert!(
            (0.8..1.25).contains(&itl_ratio),
            "ITL at {concurrency} is {itl_ratio:.2}x the published value"
        );
        assert!(
            (0.8..1.25).contains(&throughput_ratio),
            "throughput at {concurrency} is {throughput_ratio:.2}x the published value"
        );
    }
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
