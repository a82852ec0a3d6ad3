//! Runs against the simulator's engine in virtual time, with no HTTP and no wall clock.
//!
//! Some lessons need loads this machine cannot drive over HTTP in reasonable time, such as an
//! H100 serving over a thousand streams above its capacity. These functions feed the same
//! batching engine the simulated server uses and return what each request saw in virtual
//! seconds. They measure the model, not a client: there is no network, no client overhead and
//! no coordinated omission, so use them to show physics, and the HTTP load generators to
//! measure servers.

use std::time::Duration;

use infphys_sim::Preset;
use infphys_sim::engine::{ClosedLoop, Engine, LoopOutcome, run_closed_loop, run_open_loop_at};
use polars::prelude::*;

use crate::error::{Result, invalid};
use crate::open_loop::OpenLoopSpec;
use crate::schema::{LATENCY_S, OK, OUTPUT_TOKENS, REQUEST_ID, SENT_S, TTFT_S};

fn preset(name: &str) -> Result<Preset> {
    name.parse()
        .map_err(|e| invalid("preset", name, format!("{e}")))
}

fn outcomes_frame(outcomes: &[LoopOutcome]) -> Result<DataFrame> {
    let seconds = |d: Duration| d.as_secs_f64();
    Ok(DataFrame::new_infer_height(vec![
        Column::new(
            REQUEST_ID.into(),
            (0..outcomes.len() as u64).collect::<Vec<_>>(),
        ),
        Column::new(
            SENT_S.into(),
            outcomes
                .iter()
                .map(|o| seconds(o.sent_at))
                .collect::<Vec<_>>(),
        ),
        Column::new(
            TTFT_S.into(),
            outcomes
                .iter()
                .map(|o| o.time_to_first_token.map(seconds))
                .collect::<Vec<_>>(),
        ),
        Column::new(
            LATENCY_S.into(),
            outcomes
                .iter()
                .map(|o| seconds(o.latency()))
                .collect::<Vec<_>>(),
        ),
        Column::new(
            OK.into(),
            outcomes.iter().map(|o| !o.timed_out).collect::<Vec<_>>(),
        ),
        Column::new(
            OUTPUT_TOKENS.into(),
            outcomes
                .iter()
                .map(|o| o.completion_tokens as u32)
                .collect::<Vec<_>>(),
        ),
    ])?)
}

/// Runs a closed loop of `requests` at `concurrency` against `preset`, in virtual time: one row per
/// request with its send time, time to first token and latency in virtual seconds.
pub fn simulate_closed_loop(
    preset_name: &str,
    concurrency: usize,
    requests: usize,
    prompt_tokens: usize,
    max_tokens: usize,
    seed: u64,
) -> Result<DataFrame> {
    if concurrency == 0 || requests == 0 || max_tokens == 0 {
        return Err(invalid(
            "virtual closed loop",
            format!("concurrency {concurrency}, requests {requests}, max_tokens {max_tokens}"),
            "expected each to be at least 1",
        ));
    }
    let load = ClosedLoop {
        concurrency,
        requests,
        prompt_tokens,
        max_tokens,
        timeout: None,
    };
    outcomes_frame(&run_closed_loop(
        &preset(preset_name)?.physics(),
        seed,
        &load,
    ))
}

/// Runs an open loop against `preset` in virtual time, on `spec`'s schedule (its rate, arrivals,
/// request count and duration) with its `max_tokens` and `prompt_tokens` of prompt: one row per
/// request, latency and time to first token counted from the scheduled send.
pub fn simulate_open_loop(
    preset_name: &str,
    spec: &OpenLoopSpec,
    prompt_tokens: usize,
    seed: u64,
) -> Result<DataFrame> {
    spec.validate()?;
    let engine = Engine::new(preset(preset_name)?.physics(), seed, None);
    let max_tokens = spec.request.max_tokens as usize;
    outcomes_frame(&run_open_loop_at(
        engine,
        &spec.schedule(),
        prompt_tokens,
        max_tokens,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::column_f64;
    use crate::open_loop::Arrivals;

    fn mean_of_thirds(frame: &DataFrame) -> (f64, f64) {
        let ttft = column_f64(frame, TTFT_S).unwrap();
        let third = ttft.len() / 3;
        let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
        (mean(&ttft[..third]), mean(&ttft[ttft.len() - third..]))
    }

    #[test]
    fn h100_open_loop_above_capacity_grows_ttft() {
        // About 60 requests per second of 512 tokens fill the H100 preset's 1024 sequences;
        // offer 90 for 40 virtual seconds.
        let spec = OpenLoopSpec {
            rate_rps: 90.0,
            arrivals: Arrivals::Poisson { seed: 1 },
            max_requests: 10_000,
            duration: Duration::from_secs(40),
            max_in_flight: None,
            request: crate::ChatRequest::new("", 512),
        };
        let open = simulate_open_loop("h100", &spec, 200, 0).unwrap();
        let (first, last) = mean_of_thirds(&open);
        assert!(
            last > 5.0 * first,
            "open loop TTFT {first:.3} s, then {last:.3} s"
        );

        // A closed loop holding about as many requests in flight as the server can run.
        let closed = simulate_closed_loop("h100", 512, 3000, 200, 512, 0).unwrap();
        let (first, last) = mean_of_thirds(&closed);
        assert!(
            last < 2.0 * first.max(0.02),
            "closed loop TTFT {first:.3} s, then {last:.3} s"
        );
    }

    #[test]
    fn unknown_preset_is_named() {
        let message = simulate_closed_loop("b200", 1, 1, 10, 10, 0)
            .unwrap_err()
            .to_string();
        assert!(message.contains("b200"), "{message}");
    }
}
