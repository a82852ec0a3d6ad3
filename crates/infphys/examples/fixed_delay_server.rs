//! A chat-completions endpoint that responds to every request after a fixed delay, for measuring how
//! much a load generator adds to the latency it reports.
//!
//! `POST /v1/chat/completions` sleeps for the delay, timed by a dedicated thread instead of tokio's
//! 1 ms ticks, and returns a small chat completion with
//! `usage`. The server binds 127.0.0.1 only, prints its base URL as the first line of stdout, and
//! exits after `--exit-after-s` seconds or when killed.
//!
//! A request with `"stream": true` gets server-sent events in the OpenAI chat-completions format
//! instead: a role chunk at once, `--stream-chunks` content chunks of one token each, a chunk with
//! `usage` (sent whether or not the request set `stream_options.include_usage`), and
//! `data: [DONE]`. By default the content chunks are spread evenly over the delay, the last one at
//! the delay, and `--stream-burst` sends them all at the delay instead. Either way the usage chunk
//! and `[DONE]` follow the last content chunk at once, so the whole response takes the delay,
//! as a non-streaming one does.
//!
//! ```text
//! cargo run --release --example fixed_delay_server -- --delay-ms 100 --port 0
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio::sync::oneshot;

const USAGE: &str = "\
Usage: fixed_delay_server [--delay-ms MS] [--port PORT] [--backlog N] [--exit-after-s S]
                          [--stream-chunks N] [--stream-burst]

  --delay-ms MS       time each request waits before its response, in milliseconds (default 100)
  --port PORT         TCP port on 127.0.0.1; 0 picks a free one (default 0)
  --backlog N         listen backlog, capped by the kernel's net.core.somaxconn (default 4096)
  --exit-after-s S    exit after this many seconds, so a forgotten server stops (default 1800)
  --stream-chunks N   content chunks of a streamed response, one token each (default 4)
  --stream-burst      send a streamed response's content chunks all at the delay, instead of
                      spread evenly over it

Prints the base URL, such as http://127.0.0.1:41234, as the first line of stdout.";

struct Options {
    delay: Duration,
    port: u16,
    backlog: u32,
    exit_after: Duration,
    stream_chunks: u32,
    stream_burst: bool,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        delay: Duration::from_millis(100),
        port: 0,
        backlog: 4096,
        exit_after: Duration::from_secs(1800),
        stream_chunks: 4,
        stream_burst: false,
    };

    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{flag} requires a value"))
        };
        match flag.as_str() {
            "--delay-ms" => options.delay = Duration::from_millis(parse_number(flag, value()?)?),
            "--port" => options.port = parse_number(flag, value()?)?,
            "--backlog" => options.backlog = parse_number(flag, value()?)?,
            "--exit-after-s" => {
                options.exit_after = Duration::from_secs(parse_number(flag, value()?)?);
            }
            "--stream-chunks" => options.stream_chunks = parse_number(flag, value()?)?,
            "--stream-burst" => options.stream_burst = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.exit_after.is_zero() {
        return Err("--exit-after-s must be at least 1".to_owned());
    }
    if options.stream_chunks == 0 {
        return Err("--stream-chunks must be at least 1".to_owned());
    }
    Ok(options)
}

fn parse_number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("invalid value {value:?} for {flag}: expected a whole number"))
}

struct ServerState {
    delay: Duration,
    timer: PreciseTimer,
    next_id: AtomicU64,
    stream_chunks: u32,
    stream_burst: bool,
}

type Wakeup = (Instant, oneshot::Sender<()>);

/// Wakes sleeping requests at their deadlines from one dedicated thread.
///
/// tokio's timer has 1 ms ticks and rounds every deadline up to the next tick, which added about
/// 1 ms to the p50 of a 100 ms delay on a 2-core VM and wakes all requests of the same tick
/// together. Both would be counted as client overhead. The thread waits with `recv_timeout`,
/// which Linux serves with a high-resolution timer (default slack 50 µs), so a request wakes
/// close to its deadline while the machine has a free core.
struct PreciseTimer {
    sender: mpsc::Sender<Wakeup>,
}

impl PreciseTimer {
    fn start() -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("precise-timer".to_owned())
            .spawn(move || run_timer(&receiver))?;
        Ok(Self { sender })
    }

    async fn sleep_until(&self, deadline: Instant) {
        let (waker, woken) = oneshot::channel();
        // The timer thread only stops when the server does, so a send fails only during
        // shutdown, and the handler then responds without waiting.
        if self.sender.send((deadline, waker)).is_ok() {
            let _ = woken.await;
        }
    }
}

/// Runs the timer thread until every sender is gone: wakes each due request, then waits for the
/// next deadline or a new request, whichever comes first.
fn run_timer(receiver: &mpsc::Receiver<Wakeup>) {
    // Keyed by deadline, then by arrival, so equal deadlines keep distinct entries.
    let mut pending: BTreeMap<(Instant, u64), oneshot::Sender<()>> = BTreeMap::new();
    let mut arrivals: u64 = 0;
    loop {
        let now = Instant::now();
        while let Some(entry) = pending.first_entry() {
            if entry.key().0 > now {
                break;
            }
            // The request may have been dropped, for example when its client disconnected.
            let _ = entry.remove().send(());
        }

        let next = match pending.first_key_value() {
            Some(((deadline, _), _)) => match receiver.recv_timeout(*deadline - now) {
                Ok(wakeup) => Some(wakeup),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            },
            None => match receiver.recv() {
                Ok(wakeup) => Some(wakeup),
                Err(mpsc::RecvError) => return,
            },
        };
        if let Some((deadline, waker)) = next {
            pending.insert((deadline, arrivals), waker);
            arrivals += 1;
        }
    }
}

async fn chat_completions(
    State(state): State<Arc<ServerState>>,
    Json(request): Json<Value>,
) -> Response {
    let started = Instant::now();
    let id = format!("chatcmpl-{}", state.next_id.fetch_add(1, Ordering::Relaxed));
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fixed-delay")
        .to_owned();
    let reply = Reply { id, created, model };
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        return stream_reply(state, reply, started);
    }

    if !state.delay.is_zero() {
        state.timer.sleep_until(started + state.delay).await;
    }
    Json(json!({
        "id": reply.id,
        "object": "chat.completion",
        "created": reply.created,
        "model": reply.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "ok"},
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }))
    .into_response()
}

/// The server-sent event that ends a streamed chat completion.
const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

/// Fields shared by every chunk of one response.
struct Reply {
    id: String,
    created: u64,
    model: String,
}

impl Reply {
    /// Formats one server-sent event carrying a `chat.completion.chunk`.
    fn chunk(&self, choices: Value, usage: Option<Value>) -> Bytes {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let Some(usage) = usage {
            chunk["usage"] = usage;
        }
        Bytes::from(format!("data: {chunk}\n\n"))
    }
}

/// Starts a streamed response: the role chunk at once, then each content chunk at its deadline,
/// then the usage chunk and `[DONE]` right after the last content chunk.
fn stream_reply(state: Arc<ServerState>, reply: Reply, started: Instant) -> Response {
    let chunks = state.stream_chunks;
    let role = reply.chunk(
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
        None,
    );
    // Each step of the stream is the index of the next content chunk, from 1 to `chunks`.
    let content = futures_util::stream::unfold(1u32, move |index| {
        let state = Arc::clone(&state);
        let reply_chunk = if index > chunks {
            None
        } else if index < chunks {
            Some(reply.chunk(
                json!([{"index": 0, "delta": {"content": "ok "}, "finish_reason": null}]),
                None,
            ))
        } else {
            // The last content chunk carries the finish reason, and the usage chunk and [DONE]
            // go out in the same write.
            let last = reply.chunk(
                json!([{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]),
                None,
            );
            let usage = reply.chunk(
                json!([]),
                Some(json!({
                    "prompt_tokens": 1,
                    "completion_tokens": chunks,
                    "total_tokens": chunks + 1,
                })),
            );
            let mut tail = Vec::with_capacity(last.len() + usage.len() + DONE_EVENT.len());
            tail.extend_from_slice(&last);
            tail.extend_from_slice(&usage);
            tail.extend_from_slice(DONE_EVENT);
            Some(Bytes::from(tail))
        };
        async move {
            let bytes = reply_chunk?;
            let offset = if state.stream_burst {
                state.delay
            } else {
                state.delay * index / chunks
            };
            if !offset.is_zero() {
                state.timer.sleep_until(started + offset).await;
            }
            Some((Ok::<Bytes, std::convert::Infallible>(bytes), index + 1))
        }
    });
    let body = futures_util::stream::once(async move { Ok(role) }).chain(content);
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

async fn serve(options: Options) -> std::io::Result<()> {
    // TcpSocket instead of TcpListener::bind, whose backlog of 1024 drops SYNs when 1024 clients
    // connect at once, and a dropped SYN costs the client a 1 s retransmission.
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, options.port)))?;
    let listener = socket.listen(options.backlog)?;

    // Flushed at once, because the caller waits for this line before it starts sending.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "http://{}", listener.local_addr()?)?;
    stdout.flush()?;
    drop(stdout);

    let state = Arc::new(ServerState {
        delay: options.delay,
        timer: PreciseTimer::start()?,
        next_id: AtomicU64::new(0),
        stream_chunks: options.stream_chunks,
        stream_burst: options.stream_burst,
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .with_state(state);
    let exit_after = options.exit_after;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { tokio::time::sleep(exit_after).await })
        .await
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse_options(&args) {
        Ok(options) => options,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            eprintln!("{USAGE}");
            return if message.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: failed to start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: the server failed: {e}");
            ExitCode::FAILURE
        }
    }
}
