//! Retries with exponential backoff and jitter, honouring `Retry-After`; off by default.
//!
//! Every attempt is recorded as its own row (with an `attempt` number), so retries never hide
//! failures: a request that failed twice and then succeeded shows two failed rows and one
//! successful row.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::client::{ErrorKind, RequestFailure};

/// When and how often a failed request is sent again.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means no retries.
    pub max_attempts: u32,
    /// Backoff before the first retry; each later retry doubles it.
    pub base_backoff: Duration,
    /// Largest backoff before jitter.
    pub max_backoff: Duration,
    /// Whether a `Retry-After` header replaces the computed backoff.
    pub honor_retry_after: bool,
    /// Seed for the jitter; each request derives its own generator from it and its id.
    pub seed: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::none()
    }
}

impl RetryPolicy {
    /// No retries: each request is sent once.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            base_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            honor_retry_after: false,
            seed: 0,
        }
    }

    /// Up to `max_attempts` attempts with backoff starting at 0.5 s and capped at 8 s, with jitter
    /// and `Retry-After` honoured: the behaviour of well-behaved clients.
    pub fn exponential(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            honor_retry_after: true,
            seed: 0,
        }
    }

    /// Up to `max_attempts` attempts sent again at once, ignoring `Retry-After`: the blind
    /// retries that make overload worse.
    pub fn immediate(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            ..Self::none()
        }
    }

    /// Whether `failure` is worth retrying: connection failures, timeouts, 408, 429 and 5xx.
    /// A 400 or a decoding failure would fail the same way again.
    pub fn is_retryable(failure: &RequestFailure) -> bool {
        match failure.kind {
            ErrorKind::Connect | ErrorKind::Timeout => true,
            ErrorKind::HttpStatus => matches!(failure.status, Some(408 | 429) | Some(500..=599)),
            ErrorKind::StreamError | ErrorKind::StreamTruncated => true,
            ErrorKind::Decode | ErrorKind::Empty => false,
        }
    }

    /// The wait before retry number `retry` (1 for the first retry), in server time: the
    /// server's `Retry-After` when honoured and given, else `min(max, base × 2^(retry−1))` with
    /// "equal jitter" (a uniform draw between half of it and all of it).
    pub fn backoff(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        rng: &mut SmallRng,
    ) -> Duration {
        if self.honor_retry_after
            && let Some(wait) = retry_after
        {
            return wait;
        }
        let doubling = 2u32.saturating_pow(retry.saturating_sub(1));
        let ceiling = self
            .base_backoff
            .saturating_mul(doubling)
            .min(self.max_backoff);
        if ceiling.is_zero() {
            return Duration::ZERO;
        }
        let fraction: f64 = rng.random_range(0.5..=1.0);
        ceiling.mul_f64(fraction)
    }

    /// The wait before sending attempt `attempt + 1` after `failure`, or `None` when no retry
    /// follows.
    pub(crate) fn next_delay(
        &self,
        attempt: u32,
        failure: &RequestFailure,
        rng: &mut SmallRng,
    ) -> Option<Duration> {
        (attempt < self.max_attempts && Self::is_retryable(failure))
            .then(|| self.backoff(attempt, failure.retry_after, rng))
    }

    pub(crate) fn rng_for(&self, request_id: u64) -> SmallRng {
        SmallRng::seed_from_u64(self.seed ^ request_id.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(kind: ErrorKind, status: Option<u16>) -> RequestFailure {
        RequestFailure {
            kind,
            message: String::new(),
            status,
            latency: Duration::ZERO,
            stream: None,
            retry_after: None,
        }
    }

    #[test]
    fn backoff_doubles_within_jitter_and_cap() {
        let policy = RetryPolicy::exponential(10);
        let mut rng = policy.rng_for(1);
        for retry in 1..=8 {
            let ceiling =
                (Duration::from_millis(500) * 2u32.pow(retry - 1)).min(Duration::from_secs(8));
            let wait = policy.backoff(retry, None, &mut rng);
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "retry {retry}: {wait:?} outside {ceiling:?}"
            );
        }
    }

    #[test]
    fn retry_after_wins_when_honoured() {
        let mut rng = SmallRng::seed_from_u64(0);
        let honoured =
            RetryPolicy::exponential(3).backoff(1, Some(Duration::from_secs(2)), &mut rng);
        assert_eq!(honoured, Duration::from_secs(2));
        let ignored = RetryPolicy::immediate(3).backoff(1, Some(Duration::from_secs(2)), &mut rng);
        assert_eq!(ignored, Duration::ZERO);
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let policy = RetryPolicy::exponential(3);
        let mut rng = policy.rng_for(0);
        assert!(
            policy
                .next_delay(1, &failure(ErrorKind::HttpStatus, Some(429)), &mut rng)
                .is_some()
        );
        assert!(
            policy
                .next_delay(1, &failure(ErrorKind::HttpStatus, Some(503)), &mut rng)
                .is_some()
        );
        assert!(
            policy
                .next_delay(1, &failure(ErrorKind::Connect, None), &mut rng)
                .is_some()
        );
        assert!(
            policy
                .next_delay(1, &failure(ErrorKind::HttpStatus, Some(400)), &mut rng)
                .is_none()
        );
        assert!(
            policy
                .next_delay(1, &failure(ErrorKind::Decode, Some(200)), &mut rng)
                .is_none()
        );
        assert!(
            policy
                .next_delay(3, &failure(ErrorKind::Connect, None), &mut rng)
                .is_none(),
            "past max attempts"
        );
    }

    #[test]
    fn no_retries_by_default() {
        let policy = RetryPolicy::default();
        let mut rng = policy.rng_for(0);
        assert!(
            policy
                .next_delay(1, &failure(ErrorKind::HttpStatus, Some(429)), &mut rng)
                .is_none()
        );
    }
}
