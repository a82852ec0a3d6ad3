//! Accepting and serving TCP connections: the connection cap, `TCP_NODELAY`, the header-read
//! and idle timeouts, and graceful shutdown.
//!
//! `axum::serve` exposes none of these settings, so this module runs hyper's HTTP/1 server
//! on each accepted connection itself, as `axum::serve` does inside.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::SimConfig;

/// Connection settings taken from [`SimConfig`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) write_timeout: Duration,
}

impl ConnectionLimits {
    pub(crate) fn from_config(config: &SimConfig) -> Self {
        ConnectionLimits {
            max_connections: config.max_connections,
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            write_timeout: config.write_timeout,
        }
    }
}

/// Wall time a rejected connection gets to receive its HTTP 503 before it is closed.
const REJECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Maximum number of rejected connections that are sent a 503 at the same time. Beyond it, a
/// rejected connection is closed without a response, so a flood of connections cannot hold
/// an unbounded number of file descriptors.
const MAX_PENDING_REJECTIONS: usize = 1024;

/// Minimum wall time between two log lines about rejected connections or failed accepts.
const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Wall time the accept loop pauses after an error such as "too many open files" (EMFILE),
/// so it does not spin while no file descriptor is free.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `app` on every connection accepted from `listener` until `shutdown` completes,
/// then waits for the open connections to finish their requests.
///
/// Connections beyond `limits.max_connections` get an HTTP 503 and are closed.
pub(crate) async fn serve_connections(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let pending_rejections = Arc::new(AtomicUsize::new(0));
    let rejection_response = Arc::new(rejection_response(limits.max_connections));
    let mut rejection_log = RateLimitedLog::default();
    let mut accept_error_log = RateLimitedLog::default();
    // Every connection task keeps a receiver of each channel: `shutdown_sender` tells them to
    // finish, and `closed_sender.closed()` completes once the last one has ended.
    let (shutdown_sender, shutdown_receiver) = watch::channel(false);
    let (closed_sender, closed_receiver) = watch::channel(());
    let mut shutdown = pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                if let Some(count) = accept_error_log.record() {
                    tracing::warn!(
                        %error,
                        failed_accepts = count,
                        "failed to accept a connection; if the error is \"too many open files\", \
                         raise the open-file limit with `ulimit -n 65536` or lower --max-connections"
                    );
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };

        if open.load(Ordering::Relaxed) >= limits.max_connections {
            if let Some(count) = rejection_log.record() {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    rejected_connections = count,
                    "the connection cap is reached, so new connections get HTTP 503; \
                     raise it with --max-connections"
                );
            }
            reject(stream, &rejection_response, &pending_rejections);
            continue;
        }

        set_nodelay(&stream);
        let connection = OpenConnection::new(Arc::clone(&open));
        tokio::spawn(serve_connection(
            stream,
            app.clone(),
            limits,
            shutdown_receiver.clone(),
            closed_receiver.clone(),
            connection,
        ));
    }

    drop(listener);
    let _ = shutdown_sender.send(true);
    drop(closed_receiver);
    closed_sender.closed().await;
}

/// Serves HTTP/1.1 on one accepted connection until the client closes it, a timeout closes
/// it, or shutdown is signalled and the request in flight has finished.
async fn serve_connection(
    stream: TcpStream,
    app: axum::Router,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
    closed: watch::Receiver<()>,
    connection: OpenConnection,
) {
    let bytes_read = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(CountingStream {
        inner: stream,
        bytes_read: Arc::clone(&bytes_read),
        write_timeout: limits.write_timeout,
        write_stall: None,
    });
    let timer = IdleAwareTimer {
        bytes_read,
        header_read_timeout: limits.header_read_timeout,
        idle_timeout: limits.idle_timeout,
    };

    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(timer)
        .header_read_timeout(limits.header_read_timeout);
    let mut served = pin!(builder.serve_connection(io, TowerToHyperService::new(app)));

    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = served.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "closed a client connection");
                }
                break;
            }
            _ = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
    drop(connection);
    drop(closed);
}

/// Counts an open connection while it lives.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn new(open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(open)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Disables Nagle's algorithm on an accepted connection.
///
/// With Nagle on, a token chunk written while the previous one is still
/// unacknowledged waits for the client's delayed ACK (up to 40 ms on Linux),
/// so streamed tokens would arrive in bursts instead of at their times.
fn set_nodelay(stream: &TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::warn!(%error, "failed to set TCP_NODELAY on an accepted connection");
    }
}

/// Builds the complete HTTP/1.1 503 response sent to connections beyond the cap.
fn rejection_response(max_connections: usize) -> Vec<u8> {
    let body = serde_json::json!({
        "error": {
            "message": format!(
                "The simulator already has {max_connections} open connections, its maximum. \
                 Close idle connections, or restart the simulator with a higher cap: \
                 `infphys sim --max-connections N` or `SimConfig::max_connections`."
            ),
            "type": "server_error",
            "param": null,
            "code": 503,
        }
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends the 503 to a rejected connection on a task of its own, then closes it.
fn reject(stream: TcpStream, response: &Arc<Vec<u8>>, pending: &Arc<AtomicUsize>) {
    if pending.fetch_add(1, Ordering::Relaxed) >= MAX_PENDING_REJECTIONS {
        pending.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let response = Arc::clone(response);
    let pending = Arc::clone(pending);
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REJECTION_TIMEOUT, send_rejection(stream, &response)).await;
        pending.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Writes `response`, then reads until the client closes. Closing a socket with unread data
/// makes the kernel send a reset, which can discard the response before the client reads it.
async fn send_rejection(mut stream: TcpStream, response: &[u8]) -> io::Result<()> {
    stream.write_all(response).await?;
    stream.shutdown().await?;
    let mut discarded = [0; 1024];
    while stream.read(&mut discarded).await? > 0 {}
    Ok(())
}

/// Counts events and allows one log line per [`REJECTION_LOG_INTERVAL`].
#[derive(Debug, Default)]
struct RateLimitedLog {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl RateLimitedLog {
    /// Records one event and returns the number of events to report when a line is due.
    fn record(&mut self) -> Option<u64> {
        self.unlogged += 1;
        let due = self
            .last_logged
            .is_none_or(|last| last.elapsed() >= REJECTION_LOG_INTERVAL);
        if !due {
            return None;
        }
        self.last_logged = Some(Instant::now());
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// TCP stream that counts the bytes read from it, for [`IdleAwareTimer`], and fails a write
/// that stays blocked for `write_timeout`.
///
/// A client that stops reading fills its receive window and then the server's send buffer,
/// and from then on every write is pending. Without a limit the connection task, the engine
/// request and every buffered chunk would live until the client reads again, if ever. The
/// error makes hyper close the connection, which drops the response stream and so aborts
/// the engine request.
struct CountingStream {
    inner: TcpStream,
    bytes_read: Arc<AtomicU64>,
    write_timeout: Duration,
    /// Deadline of the write that is blocked now; `None` while writes make progress.
    write_stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl CountingStream {
    /// Returns a write's outcome, or a timeout error once writes have been blocked for
    /// `write_timeout`.
    fn guard_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.write_stall = None;
            return poll;
        }
        let timeout = self.write_timeout;
        let stall = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stall.as_mut().poll(cx).is_ready() {
            self.write_stall = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {timeout:?}, the write timeout"),
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for CountingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.bytes_read.fetch_add(read as u64, Ordering::Relaxed);
        }
        result
    }
}

impl AsyncWrite for CountingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard_write(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard_write(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard_write(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Timer for hyper's header read timeout that separates idle time from header time.
///
/// hyper 1.13 starts its header read timer when it begins waiting for a request, so on its
/// own the timeout would also close keep-alive connections that are merely idle between
/// requests. Each sleep from this timer instead lasts `idle_timeout` while no byte arrives,
/// and `header_read_timeout` from the first byte on.
///
/// NOTE: hyper's HTTP/1 server (1.13) uses its timer only for the header read timeout, which
/// is why `sleep_until` ignores the deadline hyper passes. A hyper version that used the
/// timer for more would need this revisited.
#[derive(Debug, Clone)]
struct IdleAwareTimer {
    bytes_read: Arc<AtomicU64>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl hyper::rt::Timer for IdleAwareTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeaderSleep {
            bytes_read: Arc::clone(&self.bytes_read),
            bytes_at_start: None,
            header_read_timeout: duration,
            sleep: Box::pin(tokio::time::sleep(duration)),
        })
    }

    fn sleep_until(&self, _deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeaderSleep {
            bytes_read: Arc::clone(&self.bytes_read),
            bytes_at_start: Some(self.bytes_read.load(Ordering::Relaxed)),
            header_read_timeout: self.header_read_timeout,
            sleep: Box::pin(tokio::time::sleep(self.idle_timeout)),
        })
    }
}

/// Sleep of [`IdleAwareTimer`]: it runs the idle timeout until a byte arrives, then restarts
/// with the header read timeout.
struct HeaderSleep {
    bytes_read: Arc<AtomicU64>,
    /// Bytes read before the sleep started; `None` once a later byte has arrived.
    bytes_at_start: Option<u64>,
    header_read_timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for HeaderSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // hyper polls this sleep after every read that leaves the header incomplete, so the
        // first poll after a byte arrives happens at about the time it arrived.
        if let Some(bytes_at_start) = self.bytes_at_start
            && self.bytes_read.load(Ordering::Relaxed) != bytes_at_start
        {
            self.bytes_at_start = None;
            let deadline = tokio::time::Instant::now() + self.header_read_timeout;
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for HeaderSleep {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_response_is_openai_error() {
        let response = String::from_utf8(rejection_response(7)).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(head.contains("connection: close"), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("7 open connections"), "{message}");
        assert!(message.contains("--max-connections"), "{message}");
        assert_eq!(body["error"]["type"], "server_error");
        assert_eq!(body["error"]["code"], 503);
    }

    #[test]
    fn rate_limited_log_counts_suppressed_events() {
        let mut log = RateLimitedLog::default();
        assert_eq!(log.record(), Some(1));
        assert_eq!(log.record(), None);
        assert_eq!(log.record(), None);
        log.last_logged = Some(Instant::now() - REJECTION_LOG_INTERVAL);
        assert_eq!(log.record(), Some(3), "two suppressed events and this one");
    }
}
