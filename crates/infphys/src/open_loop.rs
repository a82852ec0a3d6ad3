//! The open loop: requests sent on a schedule of arrivals, whatever the server is doing.
//!
//! A closed loop waits for a response before sending the next request, so a server that stalls
//! also stalls the load and the stall barely shows in the latencies (coordinated omission). An
//! open loop keeps sending on schedule; each request's latency counts from its scheduled send
//! time, so time spent waiting for the client to dispatch it (a full concurrency cap, a busy
//! machine) counts too, and the `dispatch_lag_s` column says how much of it there was.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Exp};
use tokio::sync::{Semaphore, mpsc};

use crate::client::{ChatRequest, Client};
use crate::error::{Result, invalid};
use crate::load::{LoadRun, Origin, RequestRecord, Sweep, collect, execute};
use crate::progress::{Meter, Progress};

/// The spacing of arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrivals {
    /// Evenly spaced, one every 1/rate seconds.
    Constant,
    /// A Poisson process: exponentially distributed gaps with mean 1/rate, from a seeded
    /// generator, as independent users arrive.
    Poisson {
        /// Seed of the gap generator; the same seed gives the same schedule.
        seed: u64,
    },
}

/// An open-loop run to perform. It stops scheduling at whichever bound comes first.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenLoopSpec {
    /// Mean requests per second offered.
    pub rate_rps: f64,
    /// How arrivals are spaced.
    pub arrivals: Arrivals,
    /// At most this many requests are scheduled.
    pub max_requests: usize,
    /// No request is scheduled later than this, in server time after the start.
    pub duration: Duration,
    /// At most this many requests in flight; a request due while the cap is full waits, and
    /// the wait shows as dispatch lag. `None` sends every request on time.
    pub max_in_flight: Option<usize>,
    /// The request sent each time.
    pub request: ChatRequest,
}

impl OpenLoopSpec {
    /// Creates a Poisson schedule at `rate_rps` for at most `max_requests` requests and `duration`,
    /// without a cap on requests in flight.
    pub fn poisson(
        rate_rps: f64,
        max_requests: usize,
        duration: Duration,
        request: ChatRequest,
    ) -> Self {
        Self {
            rate_rps,
            arrivals: Arrivals::Poisson { seed: 0 },
            max_requests,
            duration,
            max_in_flight: None,
            request,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if !(self.rate_rps.is_finite() && self.rate_rps > 0.0) {
            return Err(invalid(
                "rate",
                self.rate_rps,
                "expected requests per second greater than 0, for example 2.5",
            ));
        }
        if self.max_requests == 0 {
            return Err(invalid("max_requests", 0, "expected at least 1 request"));
        }
        if self.duration.is_zero() {
            return Err(invalid(
                "duration",
                "0s",
                "expected a duration greater than 0, for example 60s",
            ));
        }
        if self.max_in_flight == Some(0) {
            return Err(invalid(
                "max_in_flight",
                0,
                "expected at least 1, or no cap",
            ));
        }
        self.request.validate()
    }

    /// Computes the scheduled send times, in server time after the start.
    pub fn schedule(&self) -> Vec<Duration> {
        let mut times = Vec::new();
        let mut at = 0.0_f64;
        let mut gaps: Box<dyn FnMut() -> f64> = match self.arrivals {
            Arrivals::Constant => {
                let gap = 1.0 / self.rate_rps;
                Box::new(move || gap)
            }
            Arrivals::Poisson { seed } => {
                let mut rng = SmallRng::seed_from_u64(seed);
                // The rate was validated as finite and positive, which is all Exp requires.
                let exp = Exp::new(self.rate_rps).expect("a positive finite rate");
                Box::new(move || exp.sample(&mut rng))
            }
        };

        let limit = self.duration.as_secs_f64();
        // The schedule covers [0, duration): a constant rate r sends r × duration requests.
        while times.len() < self.max_requests && at < limit {
            times.push(Duration::from_secs_f64(at));
            at += gaps();
        }
        times
    }
}

/// Runs an open loop: sends each request at its scheduled time and records one row per attempt.
///
/// Failed requests are rows with an error kind; only an invalid spec returns an error.
pub async fn run_open_loop(
    client: &Client,
    spec: &OpenLoopSpec,
    progress: Progress,
) -> Result<LoadRun> {
    spec.validate()?;
    let schedule = spec.schedule();
    let target = client.target().clone();
    let cap = spec.max_in_flight.map(|n| Arc::new(Semaphore::new(n)));
    let concurrency = spec
        .max_in_flight
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX));
    let (sender, receiver) = mpsc::unbounded_channel::<Vec<RequestRecord>>();
    let started = Instant::now();

    let request = Arc::new(spec.request.clone());
    let prepared = Arc::new(client.prepare(&spec.request));
    let dispatcher_client = client.clone();
    let times = schedule.clone();
    tokio::spawn(async move {
        for (id, offset) in times.into_iter().enumerate() {
            let due = started + dispatcher_client.target().to_wall_time(offset);
            tokio::time::sleep_until(due.into()).await;
            let permit = match &cap {
                Some(cap) => match Arc::clone(cap).acquire_owned().await {
                    Ok(permit) => Some(permit),
                    Err(_) => break,
                },
                None => None,
            };
            // A dropped run (an interrupted cell, Ctrl-C) stops sending.
            if sender.is_closed() {
                break;
            }

            let client = dispatcher_client.clone();
            let request = Arc::clone(&request);
            let prepared = Arc::clone(&prepared);
            let sender = sender.clone();
            tokio::spawn(async move {
                let origin = Origin {
                    started,
                    due,
                    open_loop: true,
                };
                let records =
                    execute(&client, &request, &prepared, id as u64, concurrency, origin).await;
                drop(permit);
                let _ = sender.send(records);
            });
        }
    });

    let label = format!("rate {} req/s", spec.rate_rps);
    let collected = collect(
        receiver,
        Meter::new(progress, label.clone(), schedule.len()),
        client,
        &label,
    )
    .await;
    Ok(LoadRun {
        concurrency: concurrency as usize,
        total_requests: collected.total_requests(schedule.len()),
        timeout: spec.request.timeout,
        wall: target.to_server_time(started.elapsed()),
        records: collected.records,
        target: target.label(),
        offered_rps: Some(spec.rate_rps),
        interrupted: collected.interrupted,
    })
}

/// Runs [`run_open_loop`] once per rate, with `template`'s other settings; runs are sorted by
/// offered rate.
pub async fn rate_sweep(
    client: &Client,
    rates: &[f64],
    template: &OpenLoopSpec,
    progress: Progress,
) -> Result<Sweep> {
    if rates.is_empty() {
        return Err(invalid(
            "rates",
            "[]",
            "expected at least one rate, for example 0.5,1,2",
        ));
    }
    let mut runs = Vec::with_capacity(rates.len());
    for &rate_rps in rates {
        let spec = OpenLoopSpec {
            rate_rps,
            ..template.clone()
        };
        let run = run_open_loop(client, &spec, progress).await?;
        let interrupted = run.interrupted;
        runs.push(run);
        if interrupted || client.is_stopped() {
            break;
        }
    }
    runs.sort_by(|a, b| {
        a.offered_rps
            .unwrap_or(0.0)
            .total_cmp(&b.offered_rps.unwrap_or(0.0))
    });
    Ok(Sweep { runs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(arrivals: Arrivals, rate: f64, max_requests: usize, seconds: u64) -> OpenLoopSpec {
        OpenLoopSpec {
            rate_rps: rate,
            arrivals,
            max_requests,
            duration: Duration::from_secs(seconds),
            max_in_flight: None,
            request: ChatRequest::new("hi", 4),
        }
    }

    #[test]
    fn constant_schedule_is_evenly_spaced() {
        let times = spec(Arrivals::Constant, 4.0, 100, 1).schedule();
        let expected: Vec<Duration> = (0..4).map(|i| Duration::from_millis(250 * i)).collect();
        assert_eq!(times, expected);
    }

    #[test]
    fn schedule_stops_at_max_requests() {
        assert_eq!(spec(Arrivals::Constant, 100.0, 7, 60).schedule().len(), 7);
    }

    #[test]
    fn poisson_schedule_is_seeded_and_has_the_rate() {
        let a = spec(Arrivals::Poisson { seed: 3 }, 50.0, 100_000, 200).schedule();
        let b = spec(Arrivals::Poisson { seed: 3 }, 50.0, 100_000, 200).schedule();
        let c = spec(Arrivals::Poisson { seed: 4 }, 50.0, 100_000, 200).schedule();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let rate = a.len() as f64 / 200.0;
        assert!((rate / 50.0 - 1.0).abs() < 0.03, "rate {rate}");
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn invalid_rates_are_rejected() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let message = spec(Arrivals::Constant, rate, 10, 1)
                .validate()
                .unwrap_err()
                .to_string();
            assert!(message.contains("rate"), "{message}");
        }
    }
}
