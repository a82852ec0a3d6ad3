//! The lab's sweep and overload sections on the classroom preset, with the lab's own parameters,
//! show the lesson they are meant to teach.
//!
//! This is its own test binary so that nothing else competes for the CPU while it runs. The
//! sweep runs at a time scale of 20; the overload runs at 10, where the 5 s timeout is 500 ms of
//! wall time and the 3 s replies at concurrency 4 keep 200 ms of margin on a busy machine.

use infphys::target::SimOptions;
use infphys::{Client, LabParams, LoadSummary, Progress, Target};

fn level(summaries: &[LoadSummary], concurrency: usize) -> &LoadSummary {
    summaries
        .iter()
        .find(|s| s.concurrency == concurrency)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classroom_lab_shows_knee_and_overload() {
    let options = SimOptions {
        time_scale: 20.0,
        ..SimOptions::default()
    };
    let client =
        Client::new(Target::simulator(&options, "meta/llama-3.1-8b-instruct").unwrap()).unwrap();
    let params = LabParams::default();

    let sweep = infphys::sweep(
        &client,
        &params.sweep_levels,
        params.sweep_requests,
        &params.base_request(params.sweep_timeout),
        Progress::Stderr,
    )
    .await
    .unwrap();
    let summaries = sweep.summaries();
    let (one, sixteen) = (level(&summaries, 1), level(&summaries, 16));
    println!("{}", sweep.summary_frame().unwrap());

    assert_eq!(
        one.err + sixteen.err,
        0,
        "the sweep's 60 s timeout should never fire"
    );
    assert!(
        sixteen.throughput_rps < 16.0 * one.throughput_rps,
        "throughput did not saturate: {} at 16 vs {} at 1",
        sixteen.throughput_rps,
        one.throughput_rps
    );
    let (p95_one, p95_sixteen) = (one.latency.p95.unwrap(), sixteen.latency.p95.unwrap());
    assert!(
        p95_sixteen >= p95_one * 3,
        "no p95 cliff: {p95_sixteen:?} at 16 vs {p95_one:?} at 1"
    );

    let options = SimOptions {
        time_scale: 10.0,
        ..SimOptions::default()
    };
    let client =
        Client::new(Target::simulator(&options, "meta/llama-3.1-8b-instruct").unwrap()).unwrap();
    let overload = infphys::sweep(
        &client,
        &params.overload_levels,
        params.overload_requests,
        &params.base_request(params.overload_timeout),
        Progress::Stderr,
    )
    .await
    .unwrap();
    let summaries = overload.summaries();
    println!("{}", overload.summary_frame().unwrap());
    assert_eq!(
        level(&summaries, 4).error_rate,
        0.0,
        "{:?}",
        level(&summaries, 4).sample_error
    );
    let at_32 = level(&summaries, 32);
    assert!(
        at_32.error_rate > 0.2,
        "error rate at 32 is only {}",
        at_32.error_rate
    );
    assert_eq!(
        at_32.ok + at_32.err,
        params.overload_requests,
        "rows were lost"
    );
}
