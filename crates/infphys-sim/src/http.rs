//! OpenAI-compatible HTTP endpoints on top of the engine task.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::config::SimConfig;
use crate::driver::{Command, EngineHandle, Event};
use crate::engine::{EngineRequest, Finished, RequestId};
use crate::record::TimingRecord;
use crate::text;

/// Default `max_tokens` cap when a request does not set one.
const DEFAULT_MAX_TOKENS: usize = 4096;

/// Roles a chat message may have.
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

/// State shared by the handlers.
pub(crate) struct AppState {
    pub(crate) config: SimConfig,
    pub(crate) engine: EngineHandle,
    pub(crate) next_id: AtomicU64,
}

/// Builds the routes of the simulated server.
pub(crate) fn routes(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(list_models))
        .route("/v1/health/ready", get(health_ready))
        .route("/health", get(health_ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Error response in the OpenAI shape `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
}

impl ApiError {
    fn invalid_request(param: Option<&'static str>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
        }
    }

    fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: message.into(),
            kind: "server_error",
            param: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        tracing::debug!(status = self.status.as_u16(), param = ?self.param, message = %self.message, "rejected request");
        let body = json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": null,
            }
        });
        (self.status, Json(body)).into_response()
    }
}

/// JSON body extractor whose rejections are [`ApiError`]s instead of axum's plain text.
pub(crate) struct JsonBody(Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| ApiError {
                status: rejection.status(),
                message: format!("Failed to read the request body: {}", rejection.body_text()),
                kind: "invalid_request_error",
                param: None,
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
struct ChatRequest {
    prompt_tokens: usize,
    max_tokens: usize,
    stream: bool,
    include_usage: bool,
    reply: ReplyText,
}

fn parse_chat_request(body: &Value, config: &SimConfig) -> Result<ChatRequest, ApiError> {
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

    let reply = match last_user.as_deref().and_then(text::forced_reply) {
        Some(forced) => ReplyText::Forced(text::forced_tokens(&forced)),
        None => ReplyText::Filler,
    };
    Ok(ChatRequest {
        prompt_tokens,
        max_tokens,
        stream,
        include_usage,
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
    commands: mpsc::UnboundedSender<Command>,
    armed: bool,
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

fn sse_event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request = parse_chat_request(&body, &state.config)?;
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let clock = state.engine.clock;
    let arrival = clock.virtual_now();
    let enqueue_at = arrival + state.config.physics.http_overhead;
    let fixed_output_tokens = match &request.reply {
        ReplyText::Forced(tokens) => Some(tokens.len()),
        ReplyText::Filler => None,
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
    state
        .engine
        .commands
        .send(submit)
        .map_err(|_| engine_stopped())?;
    let mut guard = AbortGuard {
        id,
        commands: state.engine.commands.clone(),
        armed: true,
    };

    match events.recv().await {
        Some(Event::Accepted { .. }) => {}
        Some(Event::Rejected(full)) => {
            guard.disarm();
            return Err(ApiError::unavailable(format!(
                "The server is overloaded: the waiting queue is full (max_queue = {}). \
                 Retry later or lower the request rate.",
                full.waiting
            )));
        }
        _ => return Err(engine_stopped()),
    }

    let context = ReplyContext {
        id: format!("chatcmpl-sim-{id}"),
        created: unix_seconds(),
        model: state.config.model.clone(),
        prompt_tokens: request.prompt_tokens,
        reply: request.reply,
        arrival,
    };
    if request.stream {
        return Ok(stream_response(
            context,
            events,
            guard,
            request.include_usage,
        ));
    }

    loop {
        match events.recv().await {
            Some(Event::Finished(finished)) => {
                guard.disarm();
                let record = TimingRecord::new(arrival, &finished, &finished.token_times);
                return Ok(Json(context.completion(&finished, &record)).into_response());
            }
            Some(_) => continue,
            None => return Err(engine_stopped()),
        }
    }
}

struct StreamState {
    events: mpsc::UnboundedReceiver<Event>,
    guard: AbortGuard,
    context: ReplyContext,
    include_usage: bool,
    queued: VecDeque<Bytes>,
    /// Virtual send time of each token so far.
    send_times: Vec<Duration>,
    done: bool,
}

/// Streams one chunk per token at the wall time the engine produces it.
///
/// The role-only chunk goes out together with the first token, as in vLLM,
/// so a client that times the first chunk measures the time to first token.
fn stream_response(
    context: ReplyContext,
    events: mpsc::UnboundedReceiver<Event>,
    guard: AbortGuard,
    include_usage: bool,
) -> Response {
    let state = StreamState {
        events,
        guard,
        context,
        include_usage,
        queued: VecDeque::new(),
        send_times: Vec::new(),
        done: false,
    };
    let chunks = futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(chunk) = state.queued.pop_front() {
                return Some((Ok::<Bytes, Infallible>(chunk), state));
            }
            if state.done {
                return None;
            }
            match state.events.recv().await {
                Some(Event::Token { index, at }) => {
                    if state.send_times.is_empty() {
                        let role = state.context.chunk(
                            json!({"role": "assistant", "content": ""}),
                            None,
                            state.include_usage,
                        );
                        state.queued.push_back(role);
                    }
                    state.send_times.push(at);
                    let content = state.context.reply.token(index);
                    let chunk =
                        state
                            .context
                            .chunk(json!({"content": content}), None, state.include_usage);
                    state.queued.push_back(chunk);
                }
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
    }))
}

async fn health_ready() -> Json<Value> {
    Json(json!({"object": "health-response", "message": "Service is ready."}))
}

/// Writes engine occupancy in the Prometheus text format with vLLM metric names.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let stats = state.engine.stats();
    let model = state
        .config
        .model
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let series: [(&str, &str, &str, String); 6] = [
        (
            "vllm:num_requests_running",
            "gauge",
            "Number of requests in model execution batches.",
            stats.running.to_string(),
        ),
        (
            "vllm:num_requests_waiting",
            "gauge",
            "Number of requests waiting to be processed.",
            stats.waiting.to_string(),
        ),
        (
            "vllm:gpu_cache_usage_perc",
            "gauge",
            "GPU KV-cache usage. 1 means 100 percent usage.",
            stats.kv_usage.to_string(),
        ),
        (
            "vllm:num_preemptions_total",
            "counter",
            "Cumulative number of preemptions from the engine.",
            stats.preemptions_total.to_string(),
        ),
        (
            "vllm:prompt_tokens_total",
            "counter",
            "Number of prefill tokens processed.",
            stats.prompt_tokens_total.to_string(),
        ),
        (
            "vllm:generation_tokens_total",
            "counter",
            "Number of generation tokens processed.",
            stats.generation_tokens_total.to_string(),
        ),
    ];
    let mut body = String::new();
    for (name, kind, help, value) in series {
        body.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{model_name=\"{model}\"}} {value}\n"
        ));
    }
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
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}
