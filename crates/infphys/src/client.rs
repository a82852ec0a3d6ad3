//! The chat client: one shared connection pool, one chat completion at a time.
//!
//! A request is timed from just before it is handed to the connection to the last byte of the
//! response, or to the error. Failures come back as [`RequestFailure`] with an [`ErrorKind`], so
//! load generators can record them as rows instead of dropping them.

use std::fmt;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::retry::RetryPolicy;
use crate::stream::StreamTiming;
use crate::target::Target;

/// Largest response body the client reads; a larger one fails as [`ErrorKind::Decode`] instead
/// of exhausting memory.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The system message of every request, as in the original lab.
pub const SYSTEM_PROMPT: &str = "You are a helpful assistant.";

/// The kind of failure of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No connection could be made, or the connection broke before the response was complete.
    Connect,
    /// The client's timeout fired.
    Timeout,
    /// The server responded with a status other than 2xx.
    HttpStatus,
    /// The response body was not the expected JSON, or was too large.
    Decode,
    /// The server sent an error event inside a successful stream.
    StreamError,
    /// The stream ended without `[DONE]` or a finish reason.
    StreamTruncated,
    /// The response carried no generated text.
    Empty,
}

impl ErrorKind {
    /// Returns the name used in the `error_kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::HttpStatus => "http_status",
            Self::Decode => "decode",
            Self::StreamError => "stream_error",
            Self::StreamTruncated => "stream_truncated",
            Self::Empty => "empty",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One chat completion to send.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The system message.
    pub system: String,
    /// The user message.
    pub prompt: String,
    /// Upper bound on generated tokens.
    pub max_tokens: u32,
    /// Sampling temperature.
    pub temperature: f64,
    /// Client timeout for the whole request, in server time (see [`Target::time_scale`]).
    pub timeout: Duration,
    /// Whether to stream the response as server-sent events, asking for a usage chunk.
    pub stream: bool,
}

impl ChatRequest {
    /// Creates a request with the lab's system message, a temperature of 0 and a 60 s timeout.
    pub fn new(prompt: impl Into<String>, max_tokens: u32) -> Self {
        Self {
            system: SYSTEM_PROMPT.to_owned(),
            prompt: prompt.into(),
            max_tokens,
            temperature: 0.0,
            timeout: Duration::from_secs(60),
            stream: false,
        }
    }

    /// Asks for a streamed response, which measures time to first token and inter-token
    /// latency.
    pub fn streaming(mut self) -> Self {
        self.stream = true;
        self
    }

    /// Sets the temperature.
    pub fn temperature(mut self, temperature: f64) -> Self {
        self.temperature = temperature;
        self
    }

    /// Sets the timeout, in server time.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Builds the JSON body sent for this request.
    pub fn body(&self, model: &str) -> Value {
        let mut body = json!({
            "model": model,
            "messages": [
                {"role": "system", "content": self.system},
                {"role": "user", "content": self.prompt},
            ],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        });
        if self.stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_tokens == 0 {
            return Err(crate::error::invalid(
                "max_tokens",
                0,
                "expected at least 1",
            ));
        }
        validate_timeout(self.timeout)
    }
}

pub(crate) fn validate_timeout(timeout: Duration) -> Result<()> {
    if timeout.is_zero() {
        return Err(crate::error::invalid(
            "timeout",
            "0s",
            "expected a timeout greater than 0, for example 60s",
        ));
    }
    Ok(())
}

/// Token counts the server reported in `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: Option<u32>,
    /// Tokens generated.
    pub completion_tokens: Option<u32>,
}

impl Usage {
    /// Reads the `usage` object of a response or stream chunk; `None` when it has none.
    pub(crate) fn from_response(json: &Value) -> Option<Self> {
        let usage = json.get("usage").filter(|u| u.is_object())?;
        let count = |key: &str| {
            usage
                .get(key)
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
        };
        Some(Self {
            prompt_tokens: count("prompt_tokens"),
            completion_tokens: count("completion_tokens"),
        })
    }
}

/// A successful chat completion.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatReply {
    /// Generated text: `message.content`, else `choices[0].text`, trimmed.
    pub text: String,
    /// From just before the request was sent to the last byte of the response, in server time.
    pub latency: Duration,
    /// HTTP status code.
    pub status: u16,
    /// Token counts, when the server reported them.
    pub usage: Option<Usage>,
    /// Timing of a streamed response; `None` for a non-streaming request.
    pub stream: Option<StreamTiming>,
    /// The `infphys` object of the response, which the built-in simulator adds: its own
    /// virtual-time record of the request (`queued_s`, `first_token_s`, `last_token_s`,
    /// `token_times_s`), for comparing the client's view with the server's. `None` for other
    /// servers.
    pub server_timing: Option<Value>,
}

/// A failed chat completion.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct RequestFailure {
    /// The kind of failure.
    pub kind: ErrorKind,
    /// A description of the failure with the URL. The API key is replaced by `[API key]` wherever
    /// the server quoted it.
    pub message: String,
    /// HTTP status code, when a response arrived.
    pub status: Option<u16>,
    /// From just before the request was sent to the failure, in server time.
    pub latency: Duration,
    /// The timing of what a stream delivered before it failed, when the request was streamed and the
    /// response had started; boxed to keep failures small.
    pub stream: Option<Box<StreamTiming>>,
    /// The server's `Retry-After` header in seconds, read as server time.
    pub retry_after: Option<Duration>,
}

/// A request body serialized once and shared by every send of it.
#[derive(Debug, Clone)]
pub(crate) struct PreparedBody {
    body: bytes::Bytes,
}

/// The outcome of one request with the instant it was sent, for load generators.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub sent_at: Instant,
    pub result: Result<ChatReply, RequestFailure>,
}

/// An HTTP client bound to one target, with a connection pool shared by every request.
///
/// Cloning is cheap and shares the pool.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The chat URL, parsed once rather than on every request.
    chat_url: reqwest::Url,
    target: Target,
    retry: RetryPolicy,
    journal: Option<std::sync::Arc<crate::journal::Journal>>,
    stop: Option<crate::stop::StopSignal>,
}

impl Client {
    /// Builds a client for `target`. Redirects are not followed: a 3xx response is recorded as an
    /// [`ErrorKind::HttpStatus`] failure.
    pub fn new(target: Target) -> Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(usize::MAX)
            .tcp_nodelay(true)
            .user_agent(concat!("infphys/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Client)?;
        let chat_url = reqwest::Url::parse(&target.chat_url())
            .map_err(|e| crate::error::invalid("NIM_BASE_URL", target.chat_url(), e.to_string()))?;
        Ok(Self {
            http,
            chat_url,
            target,
            retry: RetryPolicy::none(),
            journal: None,
            stop: None,
        })
    }

    /// Makes the load generators watch `stop`: once it is raised, a run stops sending, keeps
    /// the rows that have arrived and returns them marked as interrupted.
    pub fn with_stop(mut self, stop: crate::stop::StopSignal) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Returns the stop signal the load generators watch, if any.
    pub fn stop_signal(&self) -> Option<&crate::stop::StopSignal> {
        self.stop.as_ref()
    }

    /// Returns whether this client's stop signal has been raised.
    pub fn is_stopped(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(crate::stop::StopSignal::is_stopped)
    }

    /// Makes the load generators append every finished request to `journal` as it arrives, so
    /// an interrupted run keeps its rows on disk.
    pub fn with_journal(mut self, journal: crate::journal::Journal) -> Self {
        self.journal = Some(std::sync::Arc::new(journal));
        self
    }

    /// Returns the journal rows are appended to, if any.
    pub fn journal(&self) -> Option<&crate::journal::Journal> {
        self.journal.as_deref()
    }

    /// Sets the retry policy the load generators apply; [`Client::chat_once`] always sends once.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Returns the retry policy the load generators apply.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Returns the target this client sends to.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Sends one chat completion and waits for the whole response.
    pub async fn chat_once(&self, request: &ChatRequest) -> Result<ChatReply, RequestFailure> {
        self.attempt(request).await.result
    }

    pub(crate) async fn attempt(&self, request: &ChatRequest) -> Attempt {
        let prepared = self.prepare(request);
        self.attempt_prepared(request, &prepared).await
    }

    /// Serializes `request` once, for a load generator that sends it many times.
    pub(crate) fn prepare(&self, request: &ChatRequest) -> PreparedBody {
        let body = serde_json::to_vec(&request.body(self.target.model())).unwrap_or_default();
        PreparedBody {
            body: bytes::Bytes::from(body),
        }
    }

    pub(crate) async fn attempt_prepared(
        &self,
        request: &ChatRequest,
        prepared: &PreparedBody,
    ) -> Attempt {
        let url = &self.chat_url;
        let mut builder = self
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(prepared.body.clone())
            .timeout(self.target.to_wall_time(request.timeout));
        if let Some(key) = self.target.api_key() {
            builder = builder.bearer_auth(key.expose());
        }

        // The clock starts before the request is handed to the pool, so connection set-up and
        // any wait for a free connection count as latency.
        let sent_at = Instant::now();
        if request.stream {
            let result = crate::stream::run(
                builder,
                sent_at,
                &self.target,
                url.as_str(),
                request.timeout,
            )
            .await;
            let result = result.map_err(|failure| redact_key(failure, &self.target));
            return Attempt { sent_at, result };
        }
        let outcome = send_and_read(builder).await;
        let latency = self.target.to_server_time(sent_at.elapsed());

        let result = match outcome {
            Ok(raw) => {
                parse_reply(raw.status, &raw.body, latency, url.as_str()).map_err(|mut failure| {
                    failure.retry_after = raw.retry_after;
                    failure
                })
            }
            Err(failure) if failure.kind == ErrorKind::Timeout => Err(RequestFailure {
                kind: failure.kind,
                message: format!(
                    "no complete response within the {} s timeout ({url})",
                    request.timeout.as_secs_f64()
                ),
                status: failure.status,
                latency,
                stream: None,
                retry_after: None,
            }),
            Err(failure) => Err(RequestFailure {
                kind: failure.kind,
                message: format!("{} ({url})", failure.message),
                status: failure.status,
                latency,
                stream: None,
                retry_after: None,
            }),
        };
        let result = result.map_err(|failure| redact_key(failure, &self.target));
        Attempt { sent_at, result }
    }
}

/// Replaces the API key in a failure's message, because a server may quote it back, as in
/// "Incorrect API key provided: <key>", and messages end up in logs, CSV files and journals.
///
/// NOTE: a server message is cut at 200 characters before this runs, so a key that straddles
/// the cut leaves its first characters in the message.
fn redact_key(mut failure: RequestFailure, target: &Target) -> RequestFailure {
    if let Some(key) = target.api_key().map(|key| key.expose())
        && !key.is_empty()
        && failure.message.contains(key)
    {
        failure.message = failure.message.replace(key, "[API key]");
    }
    failure
}

pub(crate) struct TransportFailure {
    kind: ErrorKind,
    message: String,
    status: Option<u16>,
}

struct RawResponse {
    status: u16,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

async fn send_and_read(builder: reqwest::RequestBuilder) -> Result<RawResponse, TransportFailure> {
    let mut response = builder.send().await.map_err(|e| TransportFailure {
        kind: classify(&e),
        message: describe_reqwest_error(&e),
        status: None,
    })?;
    let status = response.status().as_u16();
    let retry_after = retry_after(&response);
    match read_capped(&mut response).await {
        Ok(body) => Ok(RawResponse {
            status,
            retry_after,
            body,
        }),
        Err(mut failure) => {
            failure.status = Some(status);
            Err(failure)
        }
    }
}

/// Reads a `Retry-After` header given in seconds; the HTTP-date form is ignored.
pub(crate) fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    let seconds: f64 = value.trim().parse().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// Reads a whole response body, failing once it passes [`MAX_BODY_BYTES`].
pub(crate) async fn read_capped(
    response: &mut reqwest::Response,
) -> Result<Vec<u8>, TransportFailure> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(TransportFailure {
                        kind: ErrorKind::Decode,
                        message: format!("response body exceeds {MAX_BODY_BYTES} bytes"),
                        status: None,
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(TransportFailure {
                    kind: classify(&e),
                    message: format!(
                        "failed to read the response body: {}",
                        describe_reqwest_error(&e)
                    ),
                    status: None,
                });
            }
        }
    }
}

pub(crate) fn classify(error: &reqwest::Error) -> ErrorKind {
    if error.is_timeout() {
        ErrorKind::Timeout
    } else if error.is_decode() && !body_broke_off(error) {
        ErrorKind::Decode
    } else {
        ErrorKind::Connect
    }
}

/// Returns whether the connection failed while the body was read. reqwest 0.12's
/// `Response::chunk` reports that as a decode error caused by a body error, so a reset in the
/// middle of a response would otherwise look like bad content and not be retried.
fn body_broke_off(error: &reqwest::Error) -> bool {
    if error.is_body() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_body)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Describes a reqwest error with its whole source chain, which contains the useful part
/// (for example "Connection refused").
pub(crate) fn describe_reqwest_error(error: &reqwest::Error) -> String {
    let mut message = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if body_broke_off(error) {
        "the response body broke off"
    } else if error.is_decode() {
        "the response could not be decoded"
    } else {
        "the request failed"
    }
    .to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Parses a non-streaming chat-completion response as [`Client::chat_once`] does, without a
/// connection: for fuzz targets and tests. The latency is zero and messages name no URL.
#[doc(hidden)]
pub fn parse_chat_response(status: u16, body: &[u8]) -> Result<ChatReply, RequestFailure> {
    parse_reply(status, body, Duration::ZERO, "no URL")
}

fn parse_reply(
    status: u16,
    body: &[u8],
    latency: Duration,
    url: &str,
) -> Result<ChatReply, RequestFailure> {
    let fail = |kind, message: String| RequestFailure {
        kind,
        message: format!("{message} ({url})"),
        status: Some(status),
        latency,
        stream: None,
        retry_after: None,
    };

    if !(200..300).contains(&status) {
        return Err(fail(
            ErrorKind::HttpStatus,
            format!("HTTP {status}: {}", error_excerpt(body)),
        ));
    }

    if let Some(reply) = parse_typed_reply(body, status, latency) {
        return Ok(reply);
    }
    // The general path: slower, but it names what is wrong with an unusual body.
    let json: Value = serde_json::from_slice(body).map_err(|e| {
        fail(
            ErrorKind::Decode,
            format!("invalid JSON in the response ({e}): {}", excerpt(body)),
        )
    })?;
    let Some(choice) = json
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
    else {
        return Err(fail(
            ErrorKind::Decode,
            format!("the response has no choices: {}", excerpt(body)),
        ));
    };

    let content = choice
        .get("message")
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .or_else(|| choice.get("text").and_then(Value::as_str))
        .unwrap_or("");
    let text = content.trim().to_owned();

    let usage = Usage::from_response(&json);

    if text.is_empty() {
        return Err(fail(
            ErrorKind::Empty,
            "the response carried no generated text".to_owned(),
        ));
    }
    Ok(ChatReply {
        text,
        latency,
        status,
        usage,
        stream: None,
        server_timing: json.get("infphys").cloned(),
    })
}

/// The fields of a chat completion that the client reads, borrowing the text where it has no
/// escapes. Parsing into it skips building a `serde_json::Value` tree of the whole body.
#[derive(serde::Deserialize)]
struct TypedReply<'a> {
    #[serde(borrow)]
    choices: Vec<TypedChoice<'a>>,
    #[serde(default)]
    usage: Option<TypedUsage>,
    #[serde(default)]
    infphys: Option<Value>,
}

#[derive(serde::Deserialize)]
struct TypedChoice<'a> {
    #[serde(default, borrow)]
    message: Option<TypedMessage<'a>>,
    #[serde(default, borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct TypedMessage<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct TypedUsage {
    #[serde(default)]
    prompt_tokens: Option<u32>,
    #[serde(default)]
    completion_tokens: Option<u32>,
}

/// Parses a well-formed reply with text through [`TypedReply`]; returns `None` for anything
/// else (invalid JSON, no choices, no text, unusual field types), which the general path then
/// reports as it always has.
fn parse_typed_reply(body: &[u8], status: u16, latency: Duration) -> Option<ChatReply> {
    let reply: TypedReply = serde_json::from_slice(body).ok()?;
    let choice = reply.choices.first()?;
    let content = choice
        .message
        .as_ref()
        .and_then(|message| message.content.as_deref())
        .or(choice.text.as_deref())?;
    let text = content.trim();
    if text.is_empty() {
        return None;
    }
    Some(ChatReply {
        text: text.to_owned(),
        latency,
        status,
        usage: reply.usage.map(|usage| Usage {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
        }),
        stream: None,
        server_timing: reply.infphys,
    })
}

/// Extracts the server's error message when the body is an OpenAI-style error, else the start
/// of the body.
pub(crate) fn error_excerpt(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|json| {
            let error = json.get("error")?;
            error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| error.as_str().map(str::to_owned))
        })
        .map(|message| excerpt(message.as_bytes()))
        .unwrap_or_else(|| excerpt(body))
}

fn excerpt(body: &[u8]) -> String {
    const LIMIT: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(LIMIT * 4)]);
    let text = text.trim();
    if text.is_empty() {
        return "empty body".to_owned();
    }
    let mut short: String = text.chars().take(LIMIT).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://127.0.0.1:1/v1/chat/completions";

    fn parse(status: u16, body: &str) -> Result<ChatReply, RequestFailure> {
        parse_reply(status, body.as_bytes(), Duration::from_millis(5), URL)
    }

    #[test]
    fn reply_reads_message_content_and_usage() {
        let reply = parse(
            200,
            r#"{"choices":[{"message":{"role":"assistant","content":" OK \n"}}],"usage":{"prompt_tokens":20,"completion_tokens":2}}"#,
        )
        .unwrap();
        assert_eq!(reply.text, "OK");
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.usage,
            Some(Usage {
                prompt_tokens: Some(20),
                completion_tokens: Some(2)
            })
        );
    }

    #[test]
    fn typed_and_general_paths_agree() {
        // Each body goes through the typed path; the unusual ones fall back to the general
        // path, and both must give the same reply.
        let bodies = [
            r#"{"choices":[{"message":{"content":"tab\tand \"quotes\" \u00e9"}}],"usage":{"prompt_tokens":3,"completion_tokens":4},"infphys":{"queued_s":0.5}}"#,
            r#"{"choices":[{"text":"plain"}],"usage":null}"#,
            r#"{"choices":[{"message":{"content":"float usage"}}],"usage":{"prompt_tokens":3.0}}"#,
            r#"{"choices":[{"message":"not an object","text":"from text"}]}"#,
        ];
        let expected = [
            ("tab\tand \"quotes\" é", Some((Some(3), Some(4)))),
            ("plain", None),
            ("float usage", Some((None, None))),
            ("from text", None),
        ];
        for (body, (text, usage)) in bodies.iter().zip(expected) {
            let reply = parse(200, body).unwrap();
            assert_eq!(reply.text, text, "{body}");
            let counts = reply.usage.map(|u| (u.prompt_tokens, u.completion_tokens));
            assert_eq!(counts, usage, "{body}");
        }
        let timed = parse(200, bodies[0]).unwrap();
        assert_eq!(timed.server_timing, Some(json!({"queued_s": 0.5})));
        // Empty text is a failure on either path.
        let empty = parse(200, r#"{"choices":[{"message":{"content":"  "}}]}"#).unwrap_err();
        assert_eq!(empty.kind, ErrorKind::Empty);
    }

    #[test]
    fn reply_falls_back_to_choice_text() {
        let reply = parse(
            200,
            r#"{"choices":[{"message":{"content":null},"text":"legacy"}]}"#,
        )
        .unwrap();
        assert_eq!(reply.text, "legacy");
        assert_eq!(reply.usage, None);
    }

    #[test]
    fn non_2xx_is_http_status_with_server_message() {
        let failure = parse(
            503,
            r#"{"error":{"message":"queue full","type":"server_error"}}"#,
        )
        .unwrap_err();
        assert_eq!(failure.kind, ErrorKind::HttpStatus);
        assert_eq!(failure.status, Some(503));
        assert!(
            failure.message.contains("HTTP 503: queue full"),
            "{}",
            failure.message
        );
        assert!(failure.message.contains(URL), "{}", failure.message);
    }

    #[test]
    fn html_body_is_decode_error() {
        let failure = parse(200, "<html><body>Bad gateway</body></html>").unwrap_err();
        assert_eq!(failure.kind, ErrorKind::Decode);
        assert!(failure.message.contains("<html>"), "{}", failure.message);
    }

    #[test]
    fn missing_choices_is_decode_error() {
        assert_eq!(
            parse(200, r#"{"id":"x"}"#).unwrap_err().kind,
            ErrorKind::Decode
        );
    }

    #[test]
    fn blank_content_is_empty_error() {
        assert_eq!(
            parse(200, r#"{"choices":[{"message":{"content":"  "}}]}"#)
                .unwrap_err()
                .kind,
            ErrorKind::Empty
        );
    }

    #[test]
    fn request_body_has_the_lab_payload() {
        let body = ChatRequest::new("hi", 96).temperature(0.2).body("m");
        assert_eq!(body["model"], "m");
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][0]["content"], SYSTEM_PROMPT);
        assert_eq!(body["messages"][1]["content"], "hi");
        assert_eq!(body["max_tokens"], 96);
        assert_eq!(body["temperature"], 0.2);
    }
}
