//! Periodic engine stalls in virtual time, and how closed-loop and
//! open-loop clients see them (coordinated omission).

mod common;

use std::time::Duration;

use infphys_sim::engine::{
    ClosedLoop, Engine, EngineRequest, LoopOutcome, OpenLoop, run_closed_loop_on, run_open_loop,
};
use infphys_sim::{Preset, SimConfig, Stall};
use serde_json::Value;

const STALL: Stall = Stall {
    every: Duration::from_secs(20),
    length: Duration::from_secs(4),
};

fn stalled_engine(seed: u64) -> Engine {
    Engine::new(Preset::Classroom.physics(), seed, None).with_stall(Some(STALL))
}

/// Returns true if `time` lies strictly inside a pause.
fn inside_pause(time: Duration) -> bool {
    let index = time.as_nanos() / STALL.every.as_nanos();
    let pause_start = STALL.every * index as u32;
    index >= 1 && time > pause_start && time < pause_start + STALL.length
}

/// Returns the latency at quantile `q` by nearest rank.
fn quantile(outcomes: &[LoopOutcome], q: f64) -> Duration {
    let mut latencies: Vec<Duration> = outcomes.iter().map(LoopOutcome::latency).collect();
    latencies.sort();
    let rank = ((latencies.len() as f64) * q).ceil() as usize;
    latencies[rank.saturating_sub(1)]
}

#[test]
fn no_token_inside_a_pause() {
    let mut engine = stalled_engine(1);
    for id in 0..8 {
        engine.submit(EngineRequest {
            id,
            prompt_tokens: 40,
            max_tokens: 2000,
            enqueue_at: Duration::from_secs(id * 7),
            fixed_output_tokens: Some(900),
        });
    }
    let mut tokens = 0;
    let mut finished = 0;
    for _ in 0..1_000_000 {
        if finished == 8 {
            break;
        }
        if !engine.has_work() {
            let arrival = engine.next_arrival().expect("unfinished requests wait");
            engine.advance_to(arrival);
        }
        let report = engine.step();
        assert!(
            !inside_pause(report.start),
            "a step started at {:?}, inside a pause",
            report.start
        );
        for finished in &report.finished {
            for time in &finished.token_times {
                assert!(!inside_pause(*time), "token at {time:?} is inside a pause");
            }
        }
        tokens += report.tokens.len();
        finished += report.finished.len();
    }
    assert_eq!(finished, 8);
    assert_eq!(tokens, 8 * 900);
    assert!(
        engine.now() > 3 * STALL.every,
        "the run crosses several pauses"
    );
}

#[test]
fn pause_lengthens_a_spanning_request() {
    let physics = Preset::Classroom.physics();
    let run = |stall: Option<Stall>| {
        let mut engine = Engine::new(physics.clone(), 3, None).with_stall(stall);
        engine.submit(EngineRequest {
            id: 0,
            prompt_tokens: 40,
            max_tokens: 1000,
            enqueue_at: Duration::from_secs(18),
            fixed_output_tokens: Some(200),
        });
        engine.advance_to(Duration::from_secs(18));
        let mut finished = Vec::new();
        for _ in 0..10_000 {
            finished.extend(engine.step().finished);
            if !finished.is_empty() {
                break;
            }
        }
        *finished[0].token_times.last().unwrap()
    };
    let plain = run(None);
    let stalled = run(Some(STALL));
    assert!(
        plain > STALL.every,
        "the request runs across the pause at 20 s"
    );
    assert_eq!(stalled - plain, STALL.length);
}

#[test]
fn open_loop_sees_stall_closed_loop_hides_it() {
    let closed = run_closed_loop_on(
        stalled_engine(5),
        &ClosedLoop {
            concurrency: 1,
            requests: 60,
            prompt_tokens: 32,
            max_tokens: 16,
            timeout: None,
        },
    );
    let open = run_open_loop(
        stalled_engine(5),
        &OpenLoop {
            rate: 1.0,
            requests: 60,
            prompt_tokens: 32,
            max_tokens: 16,
        },
    );
    let slow = Duration::from_secs(1);
    let closed_slow = closed
        .iter()
        .filter(|outcome| outcome.latency() > slow)
        .count();
    let open_slow = open
        .iter()
        .filter(|outcome| outcome.latency() > slow)
        .count();
    let closed_end = closed.iter().map(|outcome| outcome.done_at).max().unwrap();
    let open_end = open.iter().map(|outcome| outcome.done_at).max().unwrap();
    let pauses = |end: Duration| (end.as_nanos() / STALL.every.as_nanos()) as usize;
    eprintln!(
        "closed loop: {closed_slow} slow of 60, p95 {:?}, {} pauses; open loop: {open_slow} slow of 60, p95 {:?}, {} pauses",
        quantile(&closed, 0.95),
        pauses(closed_end),
        quantile(&open, 0.95),
        pauses(open_end)
    );

    // A closed-loop client has one request in flight, so each pause slows one request.
    assert!(
        closed_slow <= pauses(closed_end),
        "{closed_slow} slow requests"
    );
    assert!(quantile(&closed, 0.95) < slow);
    // An open-loop client keeps sending, so every request sent during a pause waits.
    assert!(
        open_slow >= 3 * pauses(open_end),
        "{open_slow} slow requests"
    );
    assert!(quantile(&open, 0.95) > slow);
    assert!(quantile(&open, 1.0) >= STALL.length);
}

#[test]
fn open_loop_is_deterministic() {
    let load = OpenLoop {
        rate: 3.0,
        requests: 40,
        prompt_tokens: 32,
        max_tokens: 64,
    };
    assert_eq!(
        run_open_loop(stalled_engine(9), &load),
        run_open_loop(stalled_engine(9), &load)
    );
}

#[tokio::test]
async fn server_applies_configured_stall() {
    // The engine runs 0.1 s of every second, from 1 s on. Forty decode steps
    // of about 30 ms cross at least one pause, which adds 0.9 s.
    let mut config = SimConfig {
        time_scale: 100.0,
        ..SimConfig::new(Preset::Classroom)
    }
    .with_stall(Duration::from_secs(1), Duration::from_millis(900));
    config.physics.output_len_median = 1e6;
    config.physics.output_len_sigma = 0.0;
    let server = infphys_sim::spawn(config).unwrap();
    let body: Value = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.base_url()))
        .json(&common::lab_body(40))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let record = &body["infphys"];
    let span = record["last_token_s"].as_f64().unwrap() - record["first_token_s"].as_f64().unwrap();
    assert!(span > 2.0, "40 tokens took {span} s: {record}");
}
