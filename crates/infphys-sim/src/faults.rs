//! Injected faults: error statuses, stalls, dropped connections and error
//! events, set for the whole server or per request by a header.
//!
//! Every duration is virtual time, so it is divided by the time scale like
//! the rest of the model. Server-wide faults are drawn per request from a
//! random stream seeded by the server seed and the request id, so the same
//! seed and the same sequence of requests get the same faults.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Name of the request header that sets the faults of one request.
pub(crate) const FAULT_HEADER: &str = "x-infphys-fault";

/// Maximum stall or `Retry-After` the header accepts, in virtual seconds.
const MAX_HEADER_SECONDS: f64 = 3600.0;

/// Faults injected into the requests of one server, for teaching and for
/// testing clients' error handling.
///
/// The default injects nothing. Every duration is virtual time.
///
/// # Per-request header
///
/// A request that carries the `x-infphys-fault` header gets exactly the
/// faults the header names and none of the server-wide ones. The value is a
/// list of `key=value` items separated by `;`, with optional spaces:
///
/// - `status=CODE`: respond with HTTP CODE (400 to 599) and an OpenAI-style
///   error body after the HTTP overhead, instead of a completion. Other
///   items are then ignored.
/// - `retry_after=SECONDS`: add a `Retry-After` to that error response;
///   `status=429` without it uses [`Faults::retry_after`].
/// - `stall_first=SECONDS`: delay the first token and all later ones.
/// - `stall_mid=SECONDS`: delay token `n / 2` of an `n`-token reply and all
///   later ones.
/// - `drop_after=TOKENS`: close the connection after that many tokens of a
///   stream. A non-streaming response sends half of its JSON body at the
///   time it would be complete, then closes the connection.
/// - `error_event_after=TOKENS`: after that many tokens of a stream, send
///   `data: {"error": {...}}` and `data: [DONE]`. Non-streaming requests
///   ignore it.
///
/// SECONDS is a decimal number of virtual seconds from 0 to 3600, and
/// TOKENS a whole number. A drop or error event placed at or after the last
/// token does not happen. An invalid value gets HTTP 400 with a message
/// that names the invalid item. Example: `x-infphys-fault: status=429;retry_after=2`.
///
/// # Retry-After
///
/// Error responses that carry a retry time send it in wall-clock time, the
/// virtual time divided by the time scale: `Retry-After` in whole seconds
/// rounded up, as the header requires, and `retry-after-ms` in
/// milliseconds, which OpenAI clients also read.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Fraction of requests, 0 to 1, that receive an error status instead of
    /// a completion, after the HTTP overhead.
    pub error_rate: f64,
    /// Statuses an injected error picks from, uniformly; each from 400 to 599.
    pub error_statuses: Vec<u16>,
    /// Virtual wait before retrying that a 429 response sends in `Retry-After`.
    pub retry_after: Duration,
    /// Fraction of requests, 0 to 1, that get the two stalls below; 1 by default.
    pub stall_rate: f64,
    /// Virtual time added before the first token is sent.
    pub stall_before_first_token: Duration,
    /// Virtual time added before token `n / 2` of an `n`-token reply is
    /// sent, for replies of at least 2 tokens.
    pub stall_mid_stream: Duration,
    /// Fraction of requests, 0 to 1, whose connection closes halfway through
    /// the response without finishing it.
    pub drop_connection: f64,
    /// Fraction of streamed requests, 0 to 1, that receive an OpenAI-style
    /// error event halfway through the reply, followed by `[DONE]`.
    pub error_event: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_rate: 0.0,
            error_statuses: vec![429, 500, 503],
            retry_after: Duration::from_secs(1),
            stall_rate: 1.0,
            stall_before_first_token: Duration::ZERO,
            stall_mid_stream: Duration::ZERO,
            drop_connection: 0.0,
            error_event: 0.0,
        }
    }
}

impl Faults {
    /// Checks that every rate is in 0..=1 and every status is an error
    /// status; the message names the field and the valid range.
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("stall_rate", self.stall_rate),
            ("drop_connection", self.drop_connection),
            ("error_event", self.error_event),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!(
                    "faults.{name} is {rate}; set a fraction from 0 to 1"
                ));
            }
        }
        if self.error_rate > 0.0 && self.error_statuses.is_empty() {
            return Err(
                "faults.error_statuses is empty but faults.error_rate is above 0; list at least one status such as 503"
                    .into(),
            );
        }
        if let Some(status) = self
            .error_statuses
            .iter()
            .find(|status| !(400..=599).contains(*status))
        {
            return Err(format!(
                "faults.error_statuses contains {status}; use error statuses from 400 to 599"
            ));
        }
        Ok(())
    }

    /// Draws the faults of request `id` from a stream seeded by `seed` and `id`.
    pub(crate) fn draw(&self, seed: u64, id: u64) -> FaultPlan {
        let mut rng = StdRng::seed_from_u64(mix(seed ^ mix(id)));
        // Every draw happens whatever the rates, so each decision uses the same random numbers.
        let error_draw: f64 = rng.random();
        let status_draw = rng.random_range(0..self.error_statuses.len().max(1));
        let stall_draw: f64 = rng.random();
        let drop_draw: f64 = rng.random();
        let event_draw: f64 = rng.random();

        let mut plan = FaultPlan::default();
        if error_draw < self.error_rate
            && let Some(status) = self.error_statuses.get(status_draw)
        {
            plan.status = Some(*status);
            plan.retry_after = (*status == 429).then_some(self.retry_after);
        }
        if stall_draw < self.stall_rate {
            plan.stall_first = self.stall_before_first_token;
            plan.stall_mid = self.stall_mid_stream;
        }
        if drop_draw < self.drop_connection {
            plan.drop_after = Some(TokenPoint::Midway);
        }
        if event_draw < self.error_event {
            plan.error_event_after = Some(TokenPoint::Midway);
        }
        plan
    }
}

/// Point in a reply at which a fault happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenPoint {
    /// After this many tokens have been sent.
    After(usize),
    /// After half of the reply's tokens, rounded down, have been sent.
    Midway,
}

impl TokenPoint {
    /// Returns the number of tokens sent before the fault, for a reply of `completion_tokens`.
    pub(crate) fn tokens_before(self, completion_tokens: usize) -> usize {
        match self {
            TokenPoint::After(tokens) => tokens,
            TokenPoint::Midway => completion_tokens / 2,
        }
    }
}

/// Faults of one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FaultPlan {
    /// Error status sent instead of a completion.
    pub(crate) status: Option<u16>,
    /// Virtual time for the `Retry-After` header of the error response.
    pub(crate) retry_after: Option<Duration>,
    /// Virtual time added before the first token.
    pub(crate) stall_first: Duration,
    /// Virtual time added before token `n / 2` of an `n`-token reply.
    pub(crate) stall_mid: Duration,
    /// Point at which the connection closes without finishing the response.
    pub(crate) drop_after: Option<TokenPoint>,
    /// Point at which a stream sends an error event and ends.
    pub(crate) error_event_after: Option<TokenPoint>,
}

/// Parses the `x-infphys-fault` header with the grammar documented on
/// [`Faults`]; the error names the invalid item and lists the valid keys.
pub(crate) fn parse_fault_header(value: &str, faults: &Faults) -> Result<FaultPlan, String> {
    let mut plan = FaultPlan::default();
    let mut seen: Vec<&str> = Vec::new();
    for item in value.split(';').map(str::trim) {
        if item.is_empty() && value.trim().is_empty() {
            return Err(format!(
                "{FAULT_HEADER} is empty; set items such as `status=503` or `stall_first=1.5`"
            ));
        }
        if item.is_empty() {
            continue;
        }
        let Some((key, raw)) = item.split_once('=') else {
            return Err(format!(
                "invalid {FAULT_HEADER} item `{item}`: expected key=value, such as `status=503`"
            ));
        };
        let (key, raw) = (key.trim(), raw.trim());
        if seen.contains(&key) {
            return Err(format!(
                "invalid {FAULT_HEADER} item `{item}`: `{key}` is set twice"
            ));
        }
        seen.push(key);
        match key {
            "status" => {
                let status = raw
                    .parse::<u16>()
                    .ok()
                    .filter(|status| (400..=599).contains(status))
                    .ok_or_else(|| {
                        format!(
                            "invalid {FAULT_HEADER} item `{item}`: status must be an integer from 400 to 599"
                        )
                    })?;
                plan.status = Some(status);
            }
            "retry_after" => plan.retry_after = Some(parse_seconds(item, raw)?),
            "stall_first" => plan.stall_first = parse_seconds(item, raw)?,
            "stall_mid" => plan.stall_mid = parse_seconds(item, raw)?,
            "drop_after" => plan.drop_after = Some(TokenPoint::After(parse_tokens(item, raw)?)),
            "error_event_after" => {
                plan.error_event_after = Some(TokenPoint::After(parse_tokens(item, raw)?));
            }
            _ => {
                return Err(format!(
                    "invalid {FAULT_HEADER} item `{item}`: unknown key `{key}`; use status, retry_after, \
                     stall_first, stall_mid, drop_after or error_event_after"
                ));
            }
        }
    }
    if plan.retry_after.is_some() && plan.status.is_none() {
        return Err(format!(
            "invalid {FAULT_HEADER} value `{value}`: retry_after needs a status, such as `status=429;retry_after=2`"
        ));
    }
    if plan.status == Some(429) && plan.retry_after.is_none() {
        plan.retry_after = Some(faults.retry_after);
    }
    Ok(plan)
}

fn parse_seconds(item: &str, raw: &str) -> Result<Duration, String> {
    raw.parse::<f64>()
        .ok()
        .filter(|seconds| (0.0..=MAX_HEADER_SECONDS).contains(seconds))
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            format!(
                "invalid {FAULT_HEADER} item `{item}`: expected virtual seconds from 0 to {MAX_HEADER_SECONDS}"
            )
        })
}

fn parse_tokens(item: &str, raw: &str) -> Result<usize, String> {
    raw.parse::<usize>().map_err(|_| {
        format!("invalid {FAULT_HEADER} item `{item}`: expected a whole number of tokens")
    })
}

/// Scrambles a 64-bit value (the SplitMix64 finalizer), so nearby request
/// ids seed unrelated random streams.
fn mix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_parses_every_key() {
        let faults = Faults::default();
        let plan = parse_fault_header(
            " status=503 ; retry_after=2.5;stall_first=1.5; stall_mid=0.25;drop_after=10;error_event_after=3",
            &faults,
        )
        .unwrap();
        assert_eq!(plan.status, Some(503));
        assert_eq!(plan.retry_after, Some(Duration::from_millis(2500)));
        assert_eq!(plan.stall_first, Duration::from_millis(1500));
        assert_eq!(plan.stall_mid, Duration::from_millis(250));
        assert_eq!(plan.drop_after, Some(TokenPoint::After(10)));
        assert_eq!(plan.error_event_after, Some(TokenPoint::After(3)));
    }

    #[test]
    fn header_429_defaults_retry_after() {
        let faults = Faults {
            retry_after: Duration::from_secs(7),
            ..Faults::default()
        };
        let plan = parse_fault_header("status=429", &faults).unwrap();
        assert_eq!(plan.retry_after, Some(Duration::from_secs(7)));
        let plan = parse_fault_header("status=500", &faults).unwrap();
        assert_eq!(plan.retry_after, None);
    }

    #[test]
    fn header_rejects_invalid_items() {
        let faults = Faults::default();
        for (value, expected) in [
            ("", "is empty"),
            ("status", "`status`"),
            ("status=200", "`status=200`"),
            ("status=abc", "`status=abc`"),
            ("stall_first=-1", "`stall_first=-1`"),
            ("stall_first=NaN", "`stall_first=NaN`"),
            ("stall_mid=1e9", "`stall_mid=1e9`"),
            ("drop_after=1.5", "`drop_after=1.5`"),
            ("color=red", "unknown key `color`"),
            ("status=500;status=503", "set twice"),
            ("retry_after=2", "needs a status"),
        ] {
            let message = parse_fault_header(value, &faults).unwrap_err();
            assert!(message.contains(expected), "{value:?}: {message}");
        }
    }

    #[test]
    fn draw_is_deterministic_and_follows_rates() {
        let faults = Faults {
            error_rate: 0.3,
            error_statuses: vec![429, 503],
            drop_connection: 0.2,
            ..Faults::default()
        };
        let plans: Vec<FaultPlan> = (0..2000).map(|id| faults.draw(5, id)).collect();
        let again: Vec<FaultPlan> = (0..2000).map(|id| faults.draw(5, id)).collect();
        assert_eq!(plans, again);

        let errors = plans.iter().filter(|plan| plan.status.is_some()).count();
        assert!((500..700).contains(&errors), "{errors} errors in 2000");
        let drops = plans
            .iter()
            .filter(|plan| plan.drop_after.is_some())
            .count();
        assert!((320..480).contains(&drops), "{drops} drops in 2000");
        for plan in &plans {
            match plan.status {
                Some(429) => assert_eq!(plan.retry_after, Some(Duration::from_secs(1))),
                Some(503) | None => assert_eq!(plan.retry_after, None),
                Some(other) => panic!("status {other} is not in the list"),
            }
        }
        assert_eq!(Faults::default().draw(5, 1), FaultPlan::default());
    }

    #[test]
    fn validate_rejects_bad_rates_and_statuses() {
        let bad_rate = Faults {
            drop_connection: 1.5,
            ..Faults::default()
        };
        assert!(bad_rate.validate().unwrap_err().contains("drop_connection"));
        let bad_status = Faults {
            error_statuses: vec![503, 302],
            ..Faults::default()
        };
        assert!(bad_status.validate().unwrap_err().contains("302"));
        let no_status = Faults {
            error_rate: 0.1,
            error_statuses: Vec::new(),
            ..Faults::default()
        };
        assert!(no_status.validate().unwrap_err().contains("error_statuses"));
        Faults::default().validate().unwrap();
    }
}
