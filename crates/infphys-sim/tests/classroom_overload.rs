//! Classroom preset through HTTP: a 5 s client timeout turns overload into errors.

mod common;

use std::time::Duration;

use infphys_sim::{Preset, SimConfig};

/// Virtual seconds per wall second. Kept low so that the margin between a
/// 3 s reply and the 5 s timeout is 200 ms of wall time on a busy machine.
const TIME_SCALE: f64 = 10.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classroom_overload_times_out() {
    let config = SimConfig {
        time_scale: TIME_SCALE,
        seed: 12,
        ..SimConfig::new(Preset::Classroom)
    };
    let server = infphys_sim::spawn(config).unwrap();

    let mut levels = Vec::new();
    for concurrency in [4, 8, 16, 32] {
        let level = common::closed_loop(
            server.base_url(),
            TIME_SCALE,
            concurrency,
            60,
            Duration::from_secs(5),
        )
        .await;
        eprintln!(
            "overload c={:>2}: error rate {:.2}, {:.3} req/s, elapsed {:.1?}",
            concurrency,
            level.error_rate(),
            level.throughput(),
            level.elapsed
        );
        levels.push(level);
    }
    let total: Duration = levels.iter().map(|level| level.elapsed).sum();
    eprintln!(
        "overload takes {:.0?} of virtual time, the wall time at time_scale 1",
        total
    );

    assert_eq!(levels[0].error_rate(), 0.0, "no timeouts at concurrency 4");
    assert!(
        levels[3].error_rate() > 0.2,
        "error rate at 32 is {:.2}",
        levels[3].error_rate()
    );
    assert!(
        total <= Duration::from_secs(5 * 60),
        "overload takes {total:?} at time_scale 1"
    );

    // Aborted requests leave nothing behind in the engine.
    let client = reqwest::Client::new();
    let running = common::wait_for_metric(
        &client,
        server.base_url(),
        "vllm:num_requests_running",
        Duration::from_secs(5),
        |value| value == 0.0,
    )
    .await;
    assert_eq!(running, 0.0);
    let usage = common::metric(&client, server.base_url(), "vllm:gpu_cache_usage_perc").await;
    assert_eq!(usage, 0.0);
}
