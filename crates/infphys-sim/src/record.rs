//! The virtual-time record attached to every completion as its `infphys` field.
//!
//! Clients compare their own measurements with it: the record states when,
//! on the server's virtual clock, the request arrived, waited and received
//! each token.

use std::time::Duration;

use serde_json::{Value, json};

use crate::engine::Finished;

/// Maximum number of entries in `token_times_s`; longer replies list their
/// first tokens only, and `last_token_s` still gives the last one.
pub(crate) const MAX_TOKEN_TIMES: usize = 4096;

/// Virtual-time schedule of one completion as the server sent it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TimingRecord {
    /// Virtual time at which the handler received the request; the origin of every offset.
    pub(crate) arrival: Duration,
    /// Time the request spent in the engine's waiting queue before its first step.
    pub(crate) queued: Duration,
    /// Virtual send time of each token, including injected stalls, at most [`MAX_TOKEN_TIMES`].
    pub(crate) token_times: Vec<Duration>,
    /// Virtual send time of the last token.
    pub(crate) last_token: Duration,
    /// How many times the engine preempted the request.
    pub(crate) preemptions: u32,
}

impl TimingRecord {
    /// Builds the record of a finished request whose tokens were sent at `send_times`.
    pub(crate) fn new(arrival: Duration, finished: &Finished, send_times: &[Duration]) -> Self {
        TimingRecord {
            arrival,
            queued: finished.scheduled_at.saturating_sub(finished.enqueue_at),
            token_times: send_times.iter().take(MAX_TOKEN_TIMES).copied().collect(),
            last_token: send_times.last().copied().unwrap_or(arrival),
            preemptions: finished.preemptions,
        }
    }

    /// Returns the `infphys` JSON object, in seconds rounded to microseconds.
    pub(crate) fn to_json(&self) -> Value {
        let offset = |time: Duration| seconds(time.saturating_sub(self.arrival));
        let token_times: Vec<f64> = self.token_times.iter().map(|time| offset(*time)).collect();
        json!({
            "arrival_s": seconds(self.arrival),
            "queued_s": seconds(self.queued),
            "first_token_s": self.token_times.first().map(|time| offset(*time)),
            "last_token_s": offset(self.last_token),
            "token_times_s": token_times,
            "preemptions": self.preemptions,
        })
    }
}

/// Converts a span to seconds rounded to whole microseconds, to keep the JSON short.
fn seconds(span: Duration) -> f64 {
    span.as_micros() as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::FinishReason;

    #[test]
    fn record_offsets_start_at_arrival() {
        let millis = Duration::from_millis;
        let finished = Finished {
            id: 1,
            prompt_tokens: 10,
            enqueue_at: millis(1003),
            scheduled_at: millis(1050),
            token_times: vec![millis(1100), millis(1130)],
            finish_reason: FinishReason::Stop,
            preemptions: 2,
        };
        let send_times = [millis(1100), millis(1130)];
        let record = TimingRecord::new(millis(1000), &finished, &send_times).to_json();
        assert_eq!(record["arrival_s"], 1.0);
        assert_eq!(record["queued_s"], 0.047);
        assert_eq!(record["first_token_s"], 0.1);
        assert_eq!(record["last_token_s"], 0.13);
        assert_eq!(record["token_times_s"], json!([0.1, 0.13]));
        assert_eq!(record["preemptions"], 2);
    }

    #[test]
    fn record_caps_token_times() {
        let times: Vec<Duration> = (1..=MAX_TOKEN_TIMES as u64 + 10)
            .map(Duration::from_millis)
            .collect();
        let finished = Finished {
            id: 1,
            prompt_tokens: 10,
            enqueue_at: Duration::ZERO,
            scheduled_at: Duration::ZERO,
            token_times: times.clone(),
            finish_reason: FinishReason::Length,
            preemptions: 0,
        };
        let record = TimingRecord::new(Duration::ZERO, &finished, &times).to_json();
        let listed = record["token_times_s"].as_array().unwrap();
        assert_eq!(listed.len(), MAX_TOKEN_TIMES);
        assert_eq!(
            record["last_token_s"],
            (MAX_TOKEN_TIMES + 10) as f64 / 1000.0
        );
    }
}
