//! OpenAI-compatible HTTP endpoints on top of the engine threads.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::SimConfig;
use crate::driver::{Clock, Command, Event, MIN_SLEEP};
use crate::engine::{EngineRequest, Finished, RequestId};
use crate::faults::{FAULT_HEADER, FaultPlan, TokenPoint, parse_fault_header};
use crate::metrics;
use crate::record::TimingRecord;
use crate::replicas::{InFlight, Replicas};
use crate::text;

/// Default `max_tokens` cap when a request does not set one.
const DEFAULT_MAX_TOKENS: usize = 4096;

/// Roles a chat message may have.
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

/// State shared by the handlers.
pub(crate) struct AppState {
    pub(crate) config: SimConfig,
    pub(crate) replicas: Replicas,
    pub(crate) next_id: AtomicU64,
    /// Lateness of every streamed token chunk, for `/metrics`.
    pub(crate) emit_lateness: Arc<metrics::EmitLateness>,
}

/// Builds the routes of the simulated server.
pub(crate) fn routes(state: Arc<AppState>) -> Router {
    let max_body_bytes = state.config.max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
        .route("/v1/health/ready", get(health_ready))
        .route("/health", get(health_ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// Error response in the OpenAI shape `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
    /// Value of the `code` field; `None` sends `null`.
    code: Option<u16>,
}

impl ApiError {
    fn invalid_request(param: Option<&'static str>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
        }
    }

    fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
        }
    }

    fn body_too_large(max_body_bytes: usize) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: body_too_large_message(max_body_bytes),
            kind: "invalid_request_error",
            param: None,
            code: Some(StatusCode::PAYLOAD_TOO_LARGE.as_u16()),
        }
    }

    /// HTTP 408 for a request body that did not arrive within `timeout`.
    fn body_read_timeout(timeout: Duration) -> Self {
        ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!(
                "The request body did not arrive within the simulator's body read timeout of \
                 {timeout:?}. Send the whole body at once, or restart the simulator with a \
                 longer timeout: `infphys sim --body-read-timeout 60s` or \
                 `SimConfig::body_read_timeout`."
            ),
            kind: "invalid_request_error",
            param: None,
            code: Some(StatusCode::REQUEST_TIMEOUT.as_u16()),
        }
    }
}

/// Message of the HTTP 413 response to a request body over `max_body_bytes`.
fn body_too_large_message(max_body_bytes: usize) -> String {
    format!(
        "The request body is larger than the simulator's limit of {max_body_bytes} bytes. \
         Send a smaller body, or restart the simulator with a higher limit: \
         `infphys sim --max-body-bytes N` or `SimConfig::max_body_bytes`."
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        tracing::debug!(status = self.status.as_u16(), param = ?self.param, message = %self.message, "rejected request");
        let body = json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still arrive; the connection cannot carry another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// JSON body extractor whose rejections are [`ApiError`]s instead of axum's plain text.
///
/// A body over [`SimConfig::max_body_bytes`], which [`routes`] sets as axum's body limit,
/// gets HTTP 413 with a message that names the limit.
pub(crate) struct JsonBody(Value);

impl FromRequest<Arc<AppState>> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(
        request: Request,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let timeout = state.config.body_read_timeout;
        let bytes = tokio::time::timeout(timeout, Bytes::from_request(request, state))
            .await
            .map_err(|_| ApiError::body_read_timeout(timeout))?
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    return ApiError::body_too_large(state.config.max_body_bytes);
                }
                ApiError {
                    status: rejection.status(),
                    message: format!("Failed to read the request body: {}", rejection.body_text()),
                    kind: "invalid_request_error",
                    param: None,
                    code: None,
                }
            })?;
        let value = serde_json::from_slice(&bytes).map_err(|error| {
            ApiError::invalid_request(
                None,
                format!(
                    "The request body is not valid JSON: {error}. Send a JSON object such as \
                     {{\"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}."
                ),
            )
        })?;
        Ok(JsonBody(value))
    }
}

/// Words of the reply, one entry per token.
#[derive(Debug, Clone)]
enum ReplyText {
    Filler,
    Forced(Vec<String>),
}

impl ReplyText {
    fn token(&self, index: usize) -> String {
        match self {
            ReplyText::Filler => text::filler_token(index),
            ReplyText::Forced(tokens) => tokens.get(index).cloned().unwrap_or_default(),
        }
    }

    fn content(&self, tokens: usize) -> String {
        (0..tokens).map(|index| self.token(index)).collect()
    }
}

/// A validated chat-completion request.
#[derive(Debug, Clone)]
pub(crate) struct ChatRequest {
    prompt_tokens: usize,
    max_tokens: usize,
    stream: bool,
    include_usage: bool,
    /// vLLM's `ignore_eos`: generate exactly `max_tokens` tokens, as benchmarks ask.
    ignore_eos: bool,
    reply: ReplyText,
}

pub(crate) fn parse_chat_request(
    body: &Value,
    config: &SimConfig,
) -> Result<ChatRequest, ApiError> {
    let Some(object) = body.as_object() else {
        return Err(ApiError::invalid_request(
            None,
            format!(
                "The request body must be a JSON object, got {}. Send an object with a `messages` array.",
                type_name(body)
            ),
        ));
    };

    if let Some(model) = object.get("model").filter(|value| !value.is_null())
        && !model.is_string()
    {
        return Err(ApiError::invalid_request(
            Some("model"),
            format!(
                "`model` must be a string, got {}. Send a model name or omit the field.",
                type_name(model)
            ),
        ));
    }

    let (contents, last_user) = parse_messages(object.get("messages"))?;
    let prompt_tokens = text::estimate_prompt_tokens(contents.iter().map(String::as_str));

    let requested_max_tokens = parse_max_tokens(object)?;
    parse_temperature(object.get("temperature"))?;
    let (stream, include_usage) = parse_stream(object)?;
    let ignore_eos = match object.get("ignore_eos") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(value)) => *value,
        Some(other) => {
            return Err(ApiError::invalid_request(
                Some("ignore_eos"),
                format!(
                    "`ignore_eos` must be true or false, got {}. Set it to true to get exactly \
                     `max_tokens` tokens, or omit it.",
                    type_name(other)
                ),
            ));
        }
    };
    if let Some(n) = object.get("n").filter(|value| !value.is_null())
        && n.as_u64() != Some(1)
    {
        return Err(ApiError::invalid_request(
            Some("n"),
            format!(
                "`n` is {n}, but the simulator returns one choice per request. Set `n` to 1 or omit it."
            ),
        ));
    }

    let max_model_len = config.physics.max_model_len;
    let max_tokens = match requested_max_tokens {
        Some(max_tokens) => {
            if prompt_tokens + max_tokens > max_model_len {
                return Err(ApiError::invalid_request(
                    Some("max_tokens"),
                    format!(
                        "This model's maximum context length is {max_model_len} tokens. However, you requested \
                         {} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). Lower \
                         max_tokens to at most {} or shorten the messages.",
                        prompt_tokens + max_tokens,
                        max_model_len.saturating_sub(prompt_tokens),
                    ),
                ));
            }
            max_tokens
        }
        None => {
            if prompt_tokens >= max_model_len {
                return Err(ApiError::invalid_request(
                    Some("messages"),
                    format!(
                        "This model's maximum context length is {max_model_len} tokens. However, your messages \
                         resulted in {prompt_tokens} tokens. Shorten the messages."
                    ),
                ));
            }
            (max_model_len - prompt_tokens).min(DEFAULT_MAX_TOKENS)
        }
    };

    // After the body's own checks, as in vLLM, so a misspelt model name fails here as it would
    // on a real server.
    if let Some(name) = object
        .get("model")
        .and_then(Value::as_str)
        .filter(|name| *name != config.model)
    {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "The model `{name}` does not exist. This simulator serves `{}`; send that \
                 name (NIM_GEN_MODEL), or start the simulator with --model {name}.",
                config.model
            ),
            kind: "NotFoundError",
            param: Some("model"),
            code: Some(StatusCode::NOT_FOUND.as_u16()),
        });
    }

    let reply = match last_user.as_deref().and_then(text::forced_reply) {
        Some(forced) => ReplyText::Forced(text::forced_tokens(&forced)),
        None => ReplyText::Filler,
    };
    Ok(ChatRequest {
        prompt_tokens,
        max_tokens,
        stream,
        include_usage,
        ignore_eos,
        reply,
    })
}

/// Validates `messages` and returns each message's text and the last user message.
fn parse_messages(messages: Option<&Value>) -> Result<(Vec<String>, Option<String>), ApiError> {
    let invalid = |message: String| Err(ApiError::invalid_request(Some("messages"), message));
    let messages = match messages {
        None | Some(Value::Null) => {
            return invalid(
                "Missing required field `messages`. Send a non-empty array such as \
                 [{\"role\": \"user\", \"content\": \"Hello\"}]."
                    .into(),
            );
        }
        Some(Value::Array(messages)) if messages.is_empty() => {
            return invalid(
                "`messages` is an empty array. Send at least one message such as \
                 {\"role\": \"user\", \"content\": \"Hello\"}."
                    .into(),
            );
        }
        Some(Value::Array(messages)) => messages,
        Some(other) => {
            return invalid(format!(
                "`messages` must be an array of {{\"role\", \"content\"}} objects, got {}.",
                type_name(other)
            ));
        }
    };

    let mut contents = Vec::with_capacity(messages.len());
    let mut last_user = None;
    for (index, message) in messages.iter().enumerate() {
        let Some(message) = message.as_object() else {
            return invalid(format!(
                "messages[{index}] must be an object with `role` and `content`, got {}.",
                type_name(message)
            ));
        };
        let role = match message.get("role") {
            Some(Value::String(role)) if ROLES.contains(&role.as_str()) => role.as_str(),
            Some(Value::String(role)) => {
                return invalid(format!(
                    "messages[{index}].role is \"{role}\"; use one of {}.",
                    ROLES.join(", ")
                ));
            }
            None | Some(Value::Null) => {
                return invalid(format!(
                    "messages[{index}] has no `role`; set it to one of {}.",
                    ROLES.join(", ")
                ));
            }
            Some(other) => {
                return invalid(format!(
                    "messages[{index}].role must be a string, got {}.",
                    type_name(other)
                ));
            }
        };
        let content = parse_content(index, role, message.get("content"))?;
        if role == "user" {
            last_user = Some(content.clone());
        }
        contents.push(content);
    }
    Ok((contents, last_user))
}

/// Returns the text of a message's content: a string, or an array of `{"type": "text", "text"}` parts.
fn parse_content(index: usize, role: &str, content: Option<&Value>) -> Result<String, ApiError> {
    let invalid = |message: String| Err(ApiError::invalid_request(Some("messages"), message));
    match content {
        Some(Value::String(text)) => Ok(text.clone()),
        None | Some(Value::Null) if role == "assistant" => Ok(String::new()),
        None | Some(Value::Null) => invalid(format!(
            "messages[{index}] has no `content`; set it to the message text as a string."
        )),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (part_index, part) in parts.iter().enumerate() {
                match part.get("text").and_then(Value::as_str) {
                    Some(part_text) if part.get("type").and_then(Value::as_str) == Some("text") => {
                        text.push_str(part_text);
                    }
                    _ => {
                        return invalid(format!(
                            "messages[{index}].content[{part_index}] must be {{\"type\": \"text\", \"text\": \"...\"}}; \
                             the simulator accepts text parts only."
                        ));
                    }
                }
            }
            Ok(text)
        }
        Some(other) => invalid(format!(
            "messages[{index}].content must be a string or an array of text parts, got {}.",
            type_name(other)
        )),
    }
}

/// Returns `max_tokens`, or its alias `max_completion_tokens`, if either is set.
fn parse_max_tokens(object: &serde_json::Map<String, Value>) -> Result<Option<usize>, ApiError> {
    let mut found: Option<(&'static str, usize)> = None;
    for name in ["max_tokens", "max_completion_tokens"] {
        let Some(value) = object.get(name).filter(|value| !value.is_null()) else {
            continue;
        };
        let tokens = match value.as_u64() {
            Some(tokens) if tokens > 0 => usize::try_from(tokens).unwrap_or(usize::MAX),
            _ => {
                return Err(ApiError::invalid_request(
                    Some(name),
                    format!(
                        "`{name}` must be a positive integer, got {value}. Set it to the maximum number of \
                         tokens to generate, such as 256, or omit it."
                    ),
                ));
            }
        };
        if let Some((first_name, first_tokens)) = found
            && first_tokens != tokens
        {
            return Err(ApiError::invalid_request(
                Some("max_tokens"),
                format!(
                    "`{first_name}` is {first_tokens} but `{name}` is {tokens}. Send only one of them."
                ),
            ));
        }
        found = Some((name, tokens));
    }
    Ok(found.map(|(_, tokens)| tokens))
}

fn parse_temperature(temperature: Option<&Value>) -> Result<(), ApiError> {
    let Some(value) = temperature.filter(|value| !value.is_null()) else {
        return Ok(());
    };
    match value.as_f64() {
        Some(temperature) if (0.0..=2.0).contains(&temperature) => Ok(()),
        _ => Err(ApiError::invalid_request(
            Some("temperature"),
            format!(
                "`temperature` must be a number from 0 to 2, got {value}. Use 0 for greedy sampling or omit it."
            ),
        )),
    }
}

/// Returns `stream` and `stream_options.include_usage`.
fn parse_stream(object: &serde_json::Map<String, Value>) -> Result<(bool, bool), ApiError> {
    let stream = match object.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => *stream,
        Some(other) => {
            return Err(ApiError::invalid_request(
                Some("stream"),
                format!("`stream` must be true or false, got {other}."),
            ));
        }
    };
    let include_usage = match object.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(options)) if stream => match options.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(include_usage)) => *include_usage,
            Some(other) => {
                return Err(ApiError::invalid_request(
                    Some("stream_options"),
                    format!("`stream_options.include_usage` must be true or false, got {other}."),
                ));
            }
        },
        Some(Value::Object(_)) => {
            return Err(ApiError::invalid_request(
                Some("stream_options"),
                "`stream_options` is only allowed when `stream` is true. Set `stream` to true or remove it.",
            ));
        }
        Some(other) => {
            return Err(ApiError::invalid_request(
                Some("stream_options"),
                format!(
                    "`stream_options` must be an object such as {{\"include_usage\": true}}, got {other}."
                ),
            ));
        }
    };
    Ok((stream, include_usage))
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Sends an abort to the engine when dropped while armed, so a client that
/// disconnects or times out frees its batch slot and KV blocks.
struct AbortGuard {
    id: RequestId,
    commands: std::sync::mpsc::Sender<Command>,
    armed: bool,
    /// Keeps the request counted at its replica for least-loaded routing until the reply ends.
    _in_flight: InFlight,
}

impl AbortGuard {
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if self.armed {
            tracing::debug!(
                request_id = self.id,
                "client went away before the reply finished"
            );
            let _ = self.commands.send(Command::Abort(self.id));
        }
    }
}

/// Identity of one completion, shared by its JSON object or stream chunks.
struct ReplyContext {
    id: String,
    created: u64,
    model: String,
    prompt_tokens: usize,
    reply: ReplyText,
    /// Virtual time the handler received the request.
    arrival: Duration,
}

impl ReplyContext {
    fn usage(&self, completion_tokens: usize) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        })
    }

    fn completion(&self, finished: &Finished, record: &TimingRecord) -> Value {
        let completion_tokens = finished.token_times.len();
        json!({
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": self.reply.content(completion_tokens)},
                "logprobs": null,
                "finish_reason": finished.finish_reason.as_str(),
            }],
            "usage": self.usage(completion_tokens),
            "infphys": record.to_json(),
        })
    }

    fn chunk_value(&self, delta: Value, finish_reason: Option<&str>, include_usage: bool) -> Value {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>, include_usage: bool) -> Bytes {
        sse_event(&self.chunk_value(delta, finish_reason, include_usage))
    }

    /// Returns the last chunks of a finished stream: the finish chunk, the
    /// usage chunk when requested, and `[DONE]`. The `infphys` record rides
    /// on the usage chunk, or on the finish chunk when usage was not requested.
    fn final_chunks(
        &self,
        finished: &Finished,
        record: &TimingRecord,
        include_usage: bool,
    ) -> [Option<Bytes>; 3] {
        let reason = finished.finish_reason.as_str();
        let mut last = self.chunk_value(json!({}), Some(reason), include_usage);
        let mut usage = None;
        if include_usage {
            usage = Some(sse_event(&json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.usage(finished.token_times.len()),
                "infphys": record.to_json(),
            })));
        } else {
            last["infphys"] = record.to_json();
        }
        [
            Some(sse_event(&last)),
            usage,
            Some(Bytes::from_static(b"data: [DONE]\n\n")),
        ]
    }
}

/// A serialized token chunk split around its content, so that each token
/// costs one string escape instead of building and serializing a JSON tree.
struct TokenChunkTemplate {
    /// Text before and after the escaped content; `None` when the
    /// placeholder content could not be located, and every chunk is then
    /// serialized in full.
    parts: Option<(String, String)>,
    include_usage: bool,
}

impl TokenChunkTemplate {
    /// Content whose escaped form marks where a token's content goes.
    const PLACEHOLDER: &'static str = "\u{0}infphys-token-content\u{0}";

    fn new(context: &ReplyContext, include_usage: bool) -> Self {
        let chunk = context.chunk(json!({"content": Self::PLACEHOLDER}), None, include_usage);
        let text = String::from_utf8_lossy(&chunk);
        let marker = Value::from(Self::PLACEHOLDER).to_string();
        // A model name or id that contains the marker would make the split ambiguous.
        let parts = (text.matches(&marker).count() == 1)
            .then(|| text.split_once(&marker))
            .flatten()
            .map(|(prefix, suffix)| (prefix.to_string(), suffix.to_string()));
        TokenChunkTemplate {
            parts,
            include_usage,
        }
    }

    /// Returns the chunk of one token, byte for byte what
    /// [`ReplyContext::chunk`] returns for `{"content": content}`.
    fn render(&self, context: &ReplyContext, content: &str) -> Bytes {
        let Some((prefix, suffix)) = &self.parts else {
            return context.chunk(json!({"content": content}), None, self.include_usage);
        };
        let escaped = Value::from(content).to_string();
        let mut text = String::with_capacity(prefix.len() + escaped.len() + suffix.len());
        text.push_str(prefix);
        text.push_str(&escaped);
        text.push_str(suffix);
        Bytes::from(text)
    }
}

fn sse_event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let header_plan = match headers.get(FAULT_HEADER) {
        Some(value) => {
            let value = value.to_str().map_err(|_| {
                ApiError::invalid_request(
                    None,
                    format!("The {FAULT_HEADER} header is not visible ASCII. Send items such as `status=503`."),
                )
            })?;
            let plan = parse_fault_header(value, &state.config.faults)
                .map_err(|message| ApiError::invalid_request(None, format!("{message}.")))?;
            Some(plan)
        }
        None => None,
    };
    let request = parse_chat_request(&body, &state.config)?;
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let clock = state.replicas.clock;
    let arrival = clock.virtual_now();
    let enqueue_at = arrival + state.config.physics.http_overhead;
    let faults = header_plan.unwrap_or_else(|| state.config.faults.draw(state.config.seed, id));
    if let Some(status) = faults.status {
        sleep_until(clock.wall_at(enqueue_at)).await;
        return Ok(injected_error(
            status,
            faults.retry_after,
            state.config.time_scale,
        ));
    }
    let fixed_output_tokens = match &request.reply {
        ReplyText::Forced(tokens) => Some(tokens.len()),
        ReplyText::Filler => request.ignore_eos.then_some(request.max_tokens),
    };

    let (events_sender, mut events) = mpsc::unbounded_channel();
    let submit = Command::Submit {
        request: EngineRequest {
            id,
            prompt_tokens: request.prompt_tokens,
            max_tokens: request.max_tokens,
            enqueue_at,
            fixed_output_tokens,
        },
        stream_tokens: request.stream,
        events: events_sender,
    };
    let engine_stopped =
        || ApiError::unavailable("The simulated engine has stopped. Restart the server.");
    let (engine, in_flight) = state.replicas.pick();
    engine.commands.send(submit).map_err(|_| engine_stopped())?;
    let mut guard = AbortGuard {
        id,
        commands: engine.commands.clone(),
        armed: true,
        _in_flight: in_flight,
    };

    let completion_tokens = match events.recv().await {
        Some(Event::Accepted { completion_tokens }) => completion_tokens,
        Some(Event::Rejected(full)) => {
            guard.disarm();
            return Err(ApiError::unavailable(format!(
                "The server is overloaded: the waiting queue is full (max_queue = {}). \
                 Retry later or lower the request rate.",
                full.waiting
            )));
        }
        _ => return Err(engine_stopped()),
    };

    let context = ReplyContext {
        id: format!("chatcmpl-sim-{id}"),
        created: unix_seconds(),
        model: state.config.model.clone(),
        prompt_tokens: request.prompt_tokens,
        reply: request.reply,
        arrival,
    };
    let delivery = Delivery::new(clock, &faults, completion_tokens);
    if request.stream {
        return Ok(stream_response(
            context,
            delivery,
            events,
            guard,
            request.include_usage,
            Arc::clone(&state.emit_lateness),
        ));
    }

    let finished = loop {
        match events.recv().await {
            Some(Event::Finished(finished)) => break finished,
            Some(_) => continue,
            None => return Err(engine_stopped()),
        }
    };
    guard.disarm();
    let send_times = delivery.send_times(&finished.token_times);
    let record = TimingRecord::new(arrival, &finished, &send_times);
    if let Some(last) = send_times.last() {
        delivery.wait_until(*last).await;
    }
    let body = context.completion(&finished, &record);
    if delivery.drop_at.is_some() {
        tracing::debug!(
            request_id = id,
            "injected fault: dropping the connection mid-response"
        );
        return Ok(truncated_json_response(&body));
    }
    Ok(Json(body).into_response())
}

/// Returns the OpenAI-style error response of an injected error status.
///
/// A `Retry-After` header carries the wait in wall-clock seconds, rounded
/// up to whole seconds as the header requires, and `retry-after-ms` carries
/// it in wall-clock milliseconds, as OpenAI clients read it.
fn injected_error(status: u16, retry_after: Option<Duration>, time_scale: f64) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = match status.as_u16() {
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    tracing::debug!(status = status.as_u16(), "injected fault: error status");
    let body = json!({
        "error": {
            "message": format!(
                "Injected fault: the simulator answered with HTTP {} as its fault settings request.",
                status.as_u16()
            ),
            "type": kind,
            "param": null,
            "code": null,
        }
    });
    let mut response = (status, Json(body)).into_response();
    if let Some(retry_after) = retry_after {
        let wall = retry_after.div_f64(time_scale);
        let headers = response.headers_mut();
        let whole_seconds = wall.as_secs() + u64::from(wall.subsec_nanos() > 0);
        headers.insert(header::RETRY_AFTER, HeaderValue::from(whole_seconds));
        let millis = format!("{:.3}", wall.as_secs_f64() * 1e3);
        if let Ok(value) = HeaderValue::from_str(&millis) {
            headers.insert("retry-after-ms", value);
        }
    }
    response
}

/// Returns a 200 response that sends the first half of `body` and then
/// closes the connection, as a server that dies mid-response does.
fn truncated_json_response(body: &Value) -> Response {
    let mut bytes = body.to_string().into_bytes();
    bytes.truncate(bytes.len() / 2);
    let first_half = futures_util::stream::iter([Ok(Bytes::from(bytes))]);
    // The pause makes hyper flush the head and the first half before the error closes the connection.
    let failure = futures_util::stream::once(async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Err(std::io::Error::other("injected fault: connection dropped"))
    });
    let chunks = first_half.chain(failure);
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(chunks))
        .expect("static headers are valid")
}

/// When a reply's tokens go out, with the injected faults of the request
/// resolved for its known length.
struct Delivery {
    clock: Clock,
    stall_first: Duration,
    stall_mid: Duration,
    /// Index of the first token delayed by `stall_mid`.
    mid_index: Option<usize>,
    /// Tokens sent before the connection drops.
    drop_at: Option<usize>,
    /// Tokens sent before the error event.
    error_at: Option<usize>,
}

impl Delivery {
    fn new(clock: Clock, faults: &FaultPlan, completion_tokens: usize) -> Self {
        let point = |point: Option<TokenPoint>| {
            point
                .map(|point| point.tokens_before(completion_tokens))
                .filter(|tokens| *tokens < completion_tokens)
        };
        let mid_index = completion_tokens / 2;
        Delivery {
            clock,
            stall_first: faults.stall_first,
            stall_mid: faults.stall_mid,
            mid_index: (mid_index >= 1).then_some(mid_index),
            drop_at: point(faults.drop_after),
            error_at: point(faults.error_event_after),
        }
    }

    /// Returns the virtual time token `index`, produced at `produced`, is sent.
    fn send_time(&self, index: usize, produced: Duration) -> Duration {
        let mut time = produced + self.stall_first;
        if self.mid_index.is_some_and(|mid| index >= mid) {
            time += self.stall_mid;
        }
        time
    }

    fn send_times(&self, produced: &[Duration]) -> Vec<Duration> {
        produced
            .iter()
            .enumerate()
            .map(|(index, time)| self.send_time(index, *time))
            .collect()
    }

    /// Sleeps until the wall time of `virtual_time` unless it is less than
    /// [`MIN_SLEEP`] ahead.
    ///
    /// Without an injected stall the engine thread delivers a token at its
    /// wall time, or at most [`MIN_SLEEP`] early when it runs several short
    /// steps back to back, so this returns at once. With a stall the wait
    /// can end up to 1 ms late, because tokio's timer rounds up to whole
    /// milliseconds.
    async fn wait_until(&self, virtual_time: Duration) {
        sleep_until(self.clock.wall_at(virtual_time)).await;
    }
}

/// Sleeps until `deadline` on the tokio timer, unless it is less than
/// [`MIN_SLEEP`] ahead.
async fn sleep_until(deadline: std::time::Instant) {
    if deadline.saturating_duration_since(std::time::Instant::now()) >= MIN_SLEEP {
        tokio::time::sleep_until(deadline.into()).await;
    }
}

struct StreamState {
    events: mpsc::UnboundedReceiver<Event>,
    guard: AbortGuard,
    context: ReplyContext,
    delivery: Delivery,
    include_usage: bool,
    token_chunk: TokenChunkTemplate,
    queued: VecDeque<Bytes>,
    /// Virtual send time of each token so far.
    send_times: Vec<Duration>,
    /// The connection closes once `queued` is empty.
    drop_connection: bool,
    done: bool,
    emit_lateness: Arc<metrics::EmitLateness>,
}

/// Streams one chunk per token at the wall time the engine produces it,
/// delayed by injected stalls.
///
/// The role-only chunk goes out together with the first token, as in vLLM,
/// so a client that times the first chunk measures the time to first token.
/// An injected drop ends the body with an error, which closes the
/// connection without the final chunks. An injected error event is sent
/// as `data: {"error": {...}}` followed by `[DONE]`, as vLLM does when
/// generation fails mid-stream.
fn stream_response(
    context: ReplyContext,
    delivery: Delivery,
    events: mpsc::UnboundedReceiver<Event>,
    guard: AbortGuard,
    include_usage: bool,
    emit_lateness: Arc<metrics::EmitLateness>,
) -> Response {
    let token_chunk = TokenChunkTemplate::new(&context, include_usage);
    let state = StreamState {
        events,
        guard,
        context,
        delivery,
        include_usage,
        token_chunk,
        queued: VecDeque::new(),
        send_times: Vec::new(),
        drop_connection: false,
        done: false,
        emit_lateness,
    };
    let chunks = futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(chunk) = state.queued.pop_front() {
                return Some((Ok::<Bytes, std::io::Error>(chunk), state));
            }
            if state.drop_connection {
                state.drop_connection = false;
                state.done = true;
                // The pause makes hyper flush the chunks already sent before the error closes the connection.
                tokio::time::sleep(Duration::from_millis(10)).await;
                let error = std::io::Error::other("injected fault: connection dropped");
                return Some((Err(error), state));
            }
            if state.done {
                return None;
            }
            match state.events.recv().await {
                Some(Event::Token { index, at }) => state.send_token(index, at).await,
                Some(Event::Finished(finished)) => {
                    state.guard.disarm();
                    let record =
                        TimingRecord::new(state.context.arrival, &finished, &state.send_times);
                    let last = state
                        .context
                        .final_chunks(&finished, &record, state.include_usage);
                    state.queued.extend(last.into_iter().flatten());
                    state.done = true;
                }
                Some(Event::Accepted { .. } | Event::Rejected(_)) => {}
                None => {
                    tracing::warn!(
                        request_id = state.guard.id,
                        "engine stopped during a streamed reply"
                    );
                    state.done = true;
                }
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(chunks))
        .expect("static headers are valid")
}

impl StreamState {
    /// Waits until token `index` is due and queues its chunk, or the
    /// injected fault that replaces it.
    async fn send_token(&mut self, index: usize, produced: Duration) {
        let send_at = self.delivery.send_time(index, produced);
        self.delivery.wait_until(send_at).await;
        let scheduled = self.delivery.clock.wall_at(send_at);
        self.emit_lateness
            .observe(std::time::Instant::now().saturating_duration_since(scheduled));
        let sent = self.send_times.len();
        if self.delivery.drop_at == Some(sent) {
            tracing::debug!(
                request_id = self.guard.id,
                tokens_sent = sent,
                "injected fault: dropping the stream"
            );
            // The armed guard aborts the engine request when the stream is dropped.
            self.drop_connection = true;
            return;
        }
        if self.delivery.error_at == Some(sent) {
            tracing::debug!(
                request_id = self.guard.id,
                tokens_sent = sent,
                "injected fault: error event"
            );
            let error = json!({
                "error": {
                    "message": format!("Injected fault: generation failed after {sent} tokens."),
                    "type": "server_error",
                    "param": null,
                    "code": 500,
                }
            });
            self.queued.push_back(sse_event(&error));
            self.queued
                .push_back(Bytes::from_static(b"data: [DONE]\n\n"));
            self.done = true;
            return;
        }

        if self.send_times.is_empty() {
            let role = self.context.chunk(
                json!({"role": "assistant", "content": ""}),
                None,
                self.include_usage,
            );
            self.queued.push_back(role);
        }
        self.send_times.push(send_at);
        let content = self.context.reply.token(index);
        let chunk = self.token_chunk.render(&self.context, &content);
        self.queued.push_back(chunk);
    }
}

async fn list_models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": state.config.model,
            "object": "model",
            "created": unix_seconds(),
            "owned_by": "infphys-sim",
            "max_model_len": state.config.physics.max_model_len,
        }],
        // Lets a client that reaches this simulator by URL report durations in server time.
        "infphys": {
            "preset": state.config.preset.name(),
            "time_scale": state.config.time_scale,
        },
    }))
}

async fn health_ready() -> Json<Value> {
    Json(json!({"object": "health-response", "message": "Service is ready."}))
}

/// Writes engine occupancy and latency histograms in the Prometheus text format with vLLM metric names.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let stats = state.replicas.stats();
    let latency = state.replicas.latency();
    let body = metrics::render(&stats, &latency, &state.emit_lateness, &state.config.model);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn not_found(request: Request) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!(
            "No route for {} {}. The simulator serves POST /v1/chat/completions, GET /v1/models, \
             GET /v1/health/ready and GET /metrics.",
            request.method(),
            request.uri().path()
        ),
        kind: "invalid_request_error",
        param: None,
        code: None,
    }
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!(
            "Method {} is not allowed on {}.",
            request.method(),
            request.uri().path()
        ),
        kind: "invalid_request_error",
        param: None,
        code: None,
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(model: &str) -> ReplyContext {
        ReplyContext {
            id: "chatcmpl-sim-7".to_string(),
            created: 1_700_000_000,
            model: model.to_string(),
            prompt_tokens: 12,
            reply: ReplyText::Filler,
            arrival: Duration::from_millis(5),
        }
    }

    #[test]
    fn token_template_matches_full_chunk() {
        let contents = [
            "",
            " the",
            "quote \" and \\ slash",
            "tab\tline\n",
            "émoji 🦀",
            "\u{1}",
        ];
        for include_usage in [false, true] {
            let context = context("meta/llama-3.1-8b-instruct");
            let template = TokenChunkTemplate::new(&context, include_usage);
            assert!(template.parts.is_some(), "the placeholder was not found");
            for content in contents {
                let full = context.chunk(json!({"content": content}), None, include_usage);
                assert_eq!(
                    template.render(&context, content),
                    full,
                    "content {content:?}, include_usage {include_usage}"
                );
            }
        }
    }

    #[test]
    fn token_template_falls_back_on_ambiguous_model() {
        let context = context(TokenChunkTemplate::PLACEHOLDER);
        let template = TokenChunkTemplate::new(&context, false);
        assert!(template.parts.is_none());
        let full = context.chunk(json!({"content": " word"}), None, false);
        assert_eq!(template.render(&context, " word"), full);
    }
}
