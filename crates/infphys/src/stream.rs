//! Streaming chat completions: time to first token, inter-token latency and stream errors.
//!
//! The response is read chunk by chunk as it arrives; each server-sent event is stamped with the
//! arrival time of the bytes that completed it. A token is a chunk whose delta carries non-empty
//! `content` or reasoning text (`reasoning_content` or `reasoning`); the role-only first chunk
//! and chunks whose content is null or empty are not tokens.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{
    ChatReply, ErrorKind, MAX_BODY_BYTES, RequestFailure, Usage, classify, describe_reqwest_error,
};
use crate::sse::{Decoder, Event, SseError};
use crate::target::Target;

/// The basis of a stream's inter-token latency: tokens or chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ItlBasis {
    /// Per token: the server reported how many tokens it generated in `usage`.
    #[default]
    Token,
    /// Per chunk: no usage arrived, so each text-bearing chunk counts as one token. Servers
    /// that pack several tokens into a chunk make this an overestimate of the per-token gap.
    Chunk,
}

impl ItlBasis {
    /// Returns the name used in the `itl_basis` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Chunk => "chunk",
        }
    }
}

/// Timing of one streamed response, in server time, measured from just before sending.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamTiming {
    /// Time to the first token, content or reasoning.
    pub ttft: Option<Duration>,
    /// Time to the first content token; later than `ttft` when the model reasons first.
    pub ttfc: Option<Duration>,
    /// Time to the last token: the end-to-end latency of a streamed request.
    pub last_token: Option<Duration>,
    /// Time until the stream closed, after `[DONE]` or the last byte.
    pub close: Duration,
    /// Chunks that carried text.
    pub token_chunks: u32,
    /// Tokens generated: `usage.completion_tokens` when reported, else `token_chunks`.
    pub output_tokens: u32,
    /// Mean time per output token after the first: (last − first token) / (tokens − 1).
    pub tpot: Option<Duration>,
    /// Whether `tpot` counts tokens or chunks.
    pub itl_basis: ItlBasis,
}

#[derive(Default)]
struct State {
    first_token: Option<Instant>,
    first_content: Option<Instant>,
    last_token: Option<Instant>,
    token_chunks: u32,
    text: String,
    finished: bool,
    done: bool,
    usage: Option<Usage>,
    any_data: bool,
    server_timing: Option<Value>,
}

impl State {
    fn on_event(&mut self, event: &Event, at: Instant) -> Result<(), (ErrorKind, String)> {
        self.any_data = true;
        if self.done {
            return Ok(());
        }
        if event.data.trim() == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        if event.name.as_deref() == Some("error") {
            return Err((
                ErrorKind::StreamError,
                format!("error event in the stream: {}", excerpt(&event.data)),
            ));
        }

        let json: Value = serde_json::from_str(&event.data).map_err(|e| {
            (
                ErrorKind::Decode,
                format!(
                    "invalid JSON in a stream event ({e}): {}",
                    excerpt(&event.data)
                ),
            )
        })?;
        if let Some(error) = json.get("error").filter(|e| !e.is_null()) {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| error.to_string(), str::to_owned);
            return Err((
                ErrorKind::StreamError,
                format!("error event in the stream: {}", excerpt(&message)),
            ));
        }

        if let Some(record) = json.get("infphys").filter(|r| r.is_object()) {
            self.server_timing = Some(record.clone());
        }
        if let Some(usage) = Usage::from_response(&json) {
            self.usage = Some(usage);
        }

        let Some(choice) = json
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            return Ok(());
        };
        if choice.get("finish_reason").is_some_and(|r| !r.is_null()) {
            self.finished = true;
        }
        let delta = choice.get("delta").or_else(|| choice.get("message"));
        let text_of = |key: &str| {
            delta
                .and_then(|d| d.get(key))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let content = text_of("content").or_else(|| {
            choice
                .get("text")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        });
        let reasoning = text_of("reasoning_content").or_else(|| text_of("reasoning"));

        if content.is_some() || reasoning.is_some() {
            self.first_token.get_or_insert(at);
            self.last_token = Some(at);
            self.token_chunks += 1;
        }
        if let Some(content) = content {
            self.first_content.get_or_insert(at);
            if self.text.len() + content.len() <= MAX_BODY_BYTES {
                self.text.push_str(content);
            }
        }
        Ok(())
    }

    /// Handles the events one read completed, then the decoder's result for that read, so an
    /// event before a bad line counts however the bytes were split into reads.
    fn on_read(
        &mut self,
        decoded: Result<(), SseError>,
        events: &mut Vec<Event>,
        at: Instant,
    ) -> Result<(), (ErrorKind, String)> {
        for event in events.drain(..) {
            self.on_event(&event, at)?;
        }
        decoded.map_err(|error| (ErrorKind::Decode, error.to_string()))
    }

    /// Returns why a stream that closed cleanly still failed, if it did.
    fn end_failure(&self, output_tokens: u32) -> Option<(ErrorKind, String)> {
        if !self.done && !self.finished {
            let message = format!(
                "the stream ended without [DONE] or a finish reason after {output_tokens} tokens"
            );
            return Some((ErrorKind::StreamTruncated, message));
        }
        if self.token_chunks == 0 {
            return Some((ErrorKind::Empty, "the stream carried no tokens".to_owned()));
        }
        None
    }

    /// Returns the output tokens, from `usage` when reported, else the token chunks.
    fn output_tokens(&self) -> (u32, ItlBasis) {
        match self.usage.and_then(|u| u.completion_tokens) {
            Some(tokens) => (tokens, ItlBasis::Token),
            None => (self.token_chunks, ItlBasis::Chunk),
        }
    }

    fn timing(&self, sent_at: Instant, closed_at: Instant, target: &Target) -> StreamTiming {
        let since_sent = |at: Option<Instant>| {
            at.map(|at| target.to_server_time(at.saturating_duration_since(sent_at)))
        };
        let (output_tokens, itl_basis) = self.output_tokens();
        let tpot = match (self.first_token, self.last_token) {
            (Some(first), Some(last)) if output_tokens > 1 => Some(
                target.to_server_time(last.saturating_duration_since(first)) / (output_tokens - 1),
            ),
            _ => None,
        };

        StreamTiming {
            ttft: since_sent(self.first_token),
            ttfc: since_sent(self.first_content),
            last_token: since_sent(self.last_token),
            close: target.to_server_time(closed_at.saturating_duration_since(sent_at)),
            token_chunks: self.token_chunks,
            output_tokens,
            tpot,
            itl_basis,
        }
    }
}

fn excerpt(text: &str) -> String {
    let short: String = text.chars().take(200).collect();
    if short.len() < text.len() {
        format!("{short}…")
    } else {
        short
    }
}

/// Sends a streaming request built by `builder`, whose clock started at `sent_at`, and reads the
/// stream to its end.
pub(crate) async fn run(
    builder: reqwest::RequestBuilder,
    sent_at: Instant,
    target: &Target,
    url: &str,
    timeout: Duration,
) -> Result<ChatReply, RequestFailure> {
    let elapsed = || target.to_server_time(sent_at.elapsed());
    let fail = |kind: ErrorKind,
                message: String,
                status: Option<u16>,
                stream: Option<StreamTiming>| RequestFailure {
        kind,
        message: if kind == ErrorKind::Timeout {
            format!(
                "no complete response within the {} s timeout ({url})",
                timeout.as_secs_f64()
            )
        } else {
            format!("{message} ({url})")
        },
        status,
        latency: elapsed(),
        stream: stream.map(Box::new),
        retry_after: None,
    };

    let mut response = match builder.send().await {
        Ok(response) => response,
        Err(error) => {
            return Err(fail(
                classify(&error),
                describe_reqwest_error(&error),
                None,
                None,
            ));
        }
    };
    let status = response.status().as_u16();
    if !response.status().is_success() {
        let body = crate::client::read_capped(&mut response)
            .await
            .unwrap_or_default();
        let message = format!("HTTP {status}: {}", crate::client::error_excerpt(&body));
        return Err(fail(ErrorKind::HttpStatus, message, Some(status), None));
    }

    let mut decoder = Decoder::new();
    let mut state = State::default();
    let mut events = Vec::new();
    loop {
        let chunk = response.chunk().await;
        let at = Instant::now();
        let (decoded, ended) = match chunk {
            Ok(Some(bytes)) => (decoder.push(&bytes, &mut events), false),
            Ok(None) => (decoder.finish(&mut events), true),
            Err(error) => {
                let timing = state.timing(sent_at, at, target);
                let kind = match classify(&error) {
                    ErrorKind::Timeout => ErrorKind::Timeout,
                    _ if state.any_data => ErrorKind::StreamTruncated,
                    other => other,
                };
                let message = format!("the stream broke off: {}", describe_reqwest_error(&error));
                return Err(fail(kind, message, Some(status), Some(timing)));
            }
        };
        if let Err((kind, message)) = state.on_read(decoded, &mut events, at) {
            let timing = state.timing(sent_at, at, target);
            return Err(fail(kind, message, Some(status), Some(timing)));
        }
        // Reading goes on after [DONE] until the server closes, so the close time is measured.
        if ended {
            break;
        }
    }

    let timing = state.timing(sent_at, Instant::now(), target);
    if let Some((kind, message)) = state.end_failure(timing.output_tokens) {
        return Err(fail(kind, message, Some(status), Some(timing)));
    }

    Ok(ChatReply {
        text: state.text.trim().to_owned(),
        latency: timing.last_token.unwrap_or(timing.close),
        status,
        usage: state.usage,
        stream: Some(timing),
        server_timing: state.server_timing,
    })
}

/// Outcome of decoding a complete stream's bytes, without a connection or clock.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedStream {
    /// The content text, trimmed, as in [`ChatReply::text`].
    pub text: String,
    /// Chunks that carried content or reasoning text.
    pub token_chunks: u32,
    /// Tokens generated: `usage.completion_tokens` when reported, else `token_chunks`.
    pub output_tokens: u32,
    /// Token counts, when the stream reported them.
    pub usage: Option<Usage>,
    /// The `infphys` object of the stream, when present.
    pub server_timing: Option<Value>,
}

/// Runs the SSE decoder and the stream's event handling over `reads`, one slice per read from
/// the connection, as a stream that then closes cleanly: for fuzz targets and tests. Returns the
/// failure kind and message a streamed request would record, or what it would have received.
#[doc(hidden)]
pub fn decode_stream<'a>(
    reads: impl IntoIterator<Item = &'a [u8]>,
) -> Result<DecodedStream, (ErrorKind, String)> {
    let mut decoder = Decoder::new();
    let mut state = State::default();
    let mut events = Vec::new();
    for bytes in reads {
        let decoded = decoder.push(bytes, &mut events);
        state.on_read(decoded, &mut events, Instant::now())?;
    }
    let decoded = decoder.finish(&mut events);
    state.on_read(decoded, &mut events, Instant::now())?;

    let (output_tokens, _) = state.output_tokens();
    if let Some(failure) = state.end_failure(output_tokens) {
        return Err(failure);
    }
    Ok(DecodedStream {
        text: state.text.trim().to_owned(),
        token_chunks: state.token_chunks,
        output_tokens,
        usage: state.usage,
        server_timing: state.server_timing,
    })
}
