//! The lab's parameters, its preflight check, and a run of all four measurement sections.

use std::fmt;

use std::time::Duration;

use crate::client::{ChatRequest, Client};
use crate::error::{Error, Result};
use crate::load::{LoadRun, Sweep, TokenBudget, baseline, sweep, token_budget};
use crate::progress::Progress;

/// The prompt of the baseline, the sweep and the overload sections.
pub const BASE_PROMPT: &str =
    "Explain in one short paragraph how batching changes an inference server's throughput.";

/// Everything the lab measures with, at the original lab's values by default.
#[derive(Debug, Clone, PartialEq)]
pub struct LabParams {
    /// Sequential requests in the baseline.
    pub baseline_requests: usize,
    /// `max_tokens` of the baseline, sweep and overload requests.
    pub max_tokens: u32,
    /// Temperature of every request.
    pub temperature: f64,
    /// Timeout of the baseline and the token-budget requests.
    pub baseline_timeout: Duration,
    /// Concurrency levels of the sweep.
    pub sweep_levels: Vec<usize>,
    /// Requests per sweep level.
    pub sweep_requests: usize,
    /// Timeout of the sweep requests.
    pub sweep_timeout: Duration,
    /// Filler characters of the token-budget prompts.
    pub prompt_sizes: Vec<usize>,
    /// `max_tokens` values of the token-budget grid.
    pub max_tokens_grid: Vec<u32>,
    /// Requests per token-budget cell.
    pub token_repeats: usize,
    /// Concurrency levels of the overload section.
    pub overload_levels: Vec<usize>,
    /// Requests per overload level.
    pub overload_requests: usize,
    /// Timeout of the overload requests, short on purpose.
    pub overload_timeout: Duration,
}

impl Default for LabParams {
    fn default() -> Self {
        Self {
            baseline_requests: 12,
            max_tokens: 96,
            temperature: 0.2,
            baseline_timeout: Duration::from_secs(60),
            sweep_levels: vec![1, 2, 4, 8, 16],
            sweep_requests: 80,
            sweep_timeout: Duration::from_secs(60),
            prompt_sizes: vec![200, 800, 2000],
            max_tokens_grid: vec![32, 64, 128, 256],
            token_repeats: 6,
            overload_levels: vec![4, 8, 16, 32],
            overload_requests: 60,
            overload_timeout: Duration::from_secs(5),
        }
    }
}

impl LabParams {
    /// Smaller counts for a quick pass against a slow server: 4 baseline requests, 16 per sweep
    /// level, prompt sizes 200 and 2000 with `max_tokens` 32 and 128 and 2 repeats, and 32
    /// requests per overload level; the sweep and overload levels are the lab's.
    pub fn quick() -> Self {
        Self {
            baseline_requests: 4,
            sweep_requests: 16,
            sweep_levels: vec![1, 2, 4, 8, 16],
            prompt_sizes: vec![200, 2000],
            max_tokens_grid: vec![32, 128],
            token_repeats: 2,
            overload_levels: vec![4, 8, 16, 32],
            overload_requests: 32,
            ..Self::default()
        }
    }

    /// Builds the request of the baseline, sweep and overload sections, with `timeout`.
    pub fn base_request(&self, timeout: Duration) -> ChatRequest {
        ChatRequest::new(BASE_PROMPT, self.max_tokens)
            .temperature(self.temperature)
            .timeout(timeout)
    }
}

/// A range of durations a section is expected to take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// If the server scales perfectly with concurrency.
    pub low: Duration,
    /// If the server processes one request at a time.
    pub high: Duration,
}

impl fmt::Display for Estimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let minutes = |d: Duration| d.as_secs_f64() / 60.0;
        if self.high.as_secs_f64() < 10.0 {
            write!(
                f,
                "about {:.1} to {:.1} s",
                self.low.as_secs_f64(),
                self.high.as_secs_f64()
            )
        } else if self.high.as_secs_f64() < 90.0 {
            write!(
                f,
                "about {:.0} to {:.0} s",
                self.low.as_secs_f64(),
                self.high.as_secs_f64()
            )
        } else {
            write!(
                f,
                "about {:.1} to {:.1} min",
                minutes(self.low),
                minutes(self.high)
            )
        }
    }
}

impl LabParams {
    /// Estimates how long the sweep takes in server time, given the mean latency of one
    /// request alone (the baseline's `mean_s`): between perfect scaling with concurrency and
    /// none at all.
    pub fn estimate_sweep(&self, single: Duration) -> Estimate {
        estimate_levels(
            &self.sweep_levels,
            self.sweep_requests,
            single,
            self.sweep_timeout,
        )
    }

    /// Estimates the token-budget grid, scaling `single` (measured at [`LabParams::max_tokens`])
    /// by each cell's `max_tokens`; output length dominates, so prompt size is left out.
    pub fn estimate_tokens(&self, single: Duration) -> Estimate {
        let cells: f64 = self
            .max_tokens_grid
            .iter()
            .map(|&tokens| f64::from(tokens) / f64::from(self.max_tokens.max(1)))
            .sum::<f64>()
            * self.prompt_sizes.len() as f64;
        let total = single.mul_f64(cells * self.token_repeats as f64);
        // Replies often stop before max_tokens, so the low end allows for half the length.
        Estimate {
            low: total / 2,
            high: total,
        }
    }

    /// Estimates the overload section, whose short timeout caps every request.
    pub fn estimate_overload(&self, single: Duration) -> Estimate {
        estimate_levels(
            &self.overload_levels,
            self.overload_requests,
            single,
            self.overload_timeout,
        )
    }
}

fn estimate_levels(
    levels: &[usize],
    requests: usize,
    single: Duration,
    timeout: Duration,
) -> Estimate {
    let capped = single.min(timeout);
    let low: Duration = levels
        .iter()
        .map(|&c| capped.mul_f64(requests as f64 / c.max(1) as f64))
        .sum();
    let high: Duration = levels
        .iter()
        .map(|&c| {
            // With no scaling, c requests in flight each take c times as long, up to the timeout.
            let each = single.mul_f64(c as f64).min(timeout);
            each.mul_f64(requests as f64 / c.max(1) as f64)
        })
        .sum();
    Estimate {
        low,
        high: high.max(low),
    }
}

/// A successful preflight.
#[derive(Debug, Clone, PartialEq)]
pub struct PreflightReport {
    /// The endpoint that responded.
    pub url: String,
    /// The request's latency, in server time.
    pub latency: Duration,
    /// The text the model returned.
    pub sample: String,
}

impl fmt::Display for PreflightReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Preflight OK: {} answered in {:.3} s, sample {:?}",
            self.url,
            self.latency.as_secs_f64(),
            self.sample
        )
    }
}

/// Sends the lab's check ("Reply with only: OK", 4 tokens, temperature 0, 20 s timeout).
///
/// The error names the URL tried, the failure, and how to start a server or switch to the
/// built-in simulator.
pub async fn preflight(client: &Client) -> Result<PreflightReport> {
    let request = ChatRequest::new("Reply with only: OK", 4).timeout(Duration::from_secs(20));
    let url = client.target().chat_url();
    match client.chat_once(&request).await {
        Ok(reply) => Ok(PreflightReport {
            url,
            latency: reply.latency,
            sample: reply.text,
        }),
        Err(failure) => Err(Error::Preflight {
            url,
            cause: failure.to_string(),
        }),
    }
}

/// The four measurement sections of the lab. A section is `None` when the lab was stopped
/// before it started; the section that was running then has rows marked partial.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabResults {
    /// Sequential requests.
    pub baseline: Option<LoadRun>,
    /// The concurrency sweep.
    pub sweep: Option<Sweep>,
    /// The token-budget grid.
    pub tokens: Option<TokenBudget>,
    /// The overload demonstration.
    pub overload: Option<Sweep>,
}

impl LabResults {
    /// Returns whether a stop signal cut the lab short: a section is missing or partial.
    pub fn is_partial(&self) -> bool {
        let (Some(baseline), Some(sweep), Some(tokens), Some(overload)) =
            (&self.baseline, &self.sweep, &self.tokens, &self.overload)
        else {
            return true;
        };
        baseline.interrupted
            || sweep.is_partial()
            || tokens.cells.iter().any(|cell| cell.run.interrupted)
            || overload.is_partial()
    }
}

/// Runs the baseline, the sweep, the token-budget grid and the overload demonstration in order.
///
/// Once the client's stop signal is raised, the running section returns what it measured and
/// the later sections stay `None`.
pub async fn run_lab(
    client: &Client,
    params: &LabParams,
    progress: Progress,
) -> Result<LabResults> {
    let mut results = LabResults {
        baseline: Some(
            baseline(
                client,
                params.baseline_requests,
                &params.base_request(params.baseline_timeout),
                progress,
            )
            .await?,
        ),
        ..LabResults::default()
    };
    if client.is_stopped() {
        return Ok(results);
    }

    results.sweep = Some(
        sweep(
            client,
            &params.sweep_levels,
            params.sweep_requests,
            &params.base_request(params.sweep_timeout),
            progress,
        )
        .await?,
    );
    if client.is_stopped() {
        return Ok(results);
    }

    results.tokens = Some(
        token_budget(
            client,
            &params.prompt_sizes,
            &params.max_tokens_grid,
            params.token_repeats,
            &params.base_request(params.baseline_timeout),
            progress,
        )
        .await?,
    );
    if client.is_stopped() {
        return Ok(results);
    }

    results.overload = Some(
        sweep(
            client,
            &params.overload_levels,
            params.overload_requests,
            &params.base_request(params.overload_timeout),
            progress,
        )
        .await?,
    );
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_estimate_spans_perfect_and_no_scaling() {
        let params = LabParams::default();
        let estimate = params.estimate_sweep(Duration::from_secs(3));
        // Perfect scaling: 80 × 3 s × (1 + 1/2 + 1/4 + 1/8 + 1/16) = 465 s.
        assert!(
            (estimate.low.as_secs_f64() - 465.0).abs() < 1e-6,
            "{estimate:?}"
        );
        // No scaling: 80 × 3 s per level, five levels, no level reaching the 60 s timeout.
        assert!(
            (estimate.high.as_secs_f64() - 1200.0).abs() < 1e-6,
            "{estimate:?}"
        );
        assert_eq!(estimate.to_string(), "about 7.8 to 20.0 min");
    }

    #[test]
    fn overload_estimate_is_capped_by_the_timeout() {
        let params = LabParams::default();
        let estimate = params.estimate_overload(Duration::from_secs(10));
        // Every request is cut at 5 s, c at a time: 60 × 5 s / c per level, however it scales.
        let expected = 300.0 * (0.25 + 0.125 + 0.0625 + 0.03125);
        assert!(
            (estimate.low.as_secs_f64() - expected).abs() < 1e-6,
            "{estimate:?}"
        );
        assert!(
            (estimate.high.as_secs_f64() - expected).abs() < 1e-6,
            "{estimate:?}"
        );
    }

    #[test]
    fn token_estimate_scales_with_max_tokens() {
        let params = LabParams::default();
        let estimate = params.estimate_tokens(Duration::from_secs(3));
        // (32 + 64 + 128 + 256) / 96 = 5 cells' worth per prompt size, × 3 sizes × 6 repeats × 3 s.
        assert!(
            (estimate.high.as_secs_f64() - 270.0).abs() < 1e-6,
            "{estimate:?}"
        );
        assert_eq!(estimate.low * 2, estimate.high);
    }
}
