//! The client against hostile servers: raw TCP servers on 127.0.0.1 that write exactly the bytes
//! under test, including broken HTTP, endless bodies, resets and awkward read boundaries.
//!
//! `faults.rs` and `streaming.rs` cover the well-formed failures: timeouts before the headers,
//! invalid JSON, error statuses, a 307 redirect of a plain request, clean truncation and error
//! events. This file covers what only a misbehaving peer does.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use infphys::client::MAX_BODY_BYTES;
use infphys::sse::{MAX_EVENT_BYTES, MAX_LINE_BYTES};
use infphys::{ChatRequest, Client, ErrorKind, RequestFailure, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Connections one test server accepts before it stops listening.
const MAX_CONNECTIONS: usize = 8;

/// Maximum bytes an endless body sends before giving up, far past every cap of the client.
const ENDLESS_LIMIT: usize = 4 * MAX_BODY_BYTES;

/// Timeout of requests that are expected to time out.
const SHORT_TIMEOUT: Duration = Duration::from_millis(400);

/// Timeout of requests that are expected to end by themselves.
const LONG_TIMEOUT: Duration = Duration::from_secs(30);

const SSE_HEAD: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n";

const JSON_HEAD: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";

/// Reads one HTTP request, headers and `Content-Length` body, so a response written afterwards
/// is not mistaken for an early one. Returns `None` when the peer closes first.
async fn read_request(socket: &mut TcpStream) -> Option<Vec<u8>> {
    let mut request = Vec::new();
    let mut buffer = [0_u8; 4096];
    let header_end = loop {
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if request.len() > 1024 * 1024 {
            return None;
        }
        let read = socket.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        request.extend_from_slice(&buffer[..read]);
    };
    let head = String::from_utf8_lossy(&request[..header_end]).to_ascii_lowercase();
    let body_length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    while request.len() < header_end + body_length {
        let read = socket.read(&mut buffer).await.ok()?;
        if read == 0 {
            return None;
        }
        request.extend_from_slice(&buffer[..read]);
    }
    Some(request)
}

/// Serves up to [`MAX_CONNECTIONS`] connections on 127.0.0.1, each with `respond` once its
/// request is read, and returns the base URL.
async fn serve_raw<F, Fut>(respond: F) -> String
where
    F: Fn(TcpStream) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..MAX_CONNECTIONS {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            socket.set_nodelay(true).unwrap();
            let respond = respond.clone();
            tokio::spawn(async move {
                if read_request(&mut socket).await.is_some() {
                    respond(socket).await;
                }
            });
        }
    });
    format!("http://{address}")
}

/// Serves every connection with the same `pieces` and then closes it. Each piece is written and
/// flushed on its own after a short pause, so the client reads the pieces as separate chunks.
async fn serve_pieces(pieces: Vec<Vec<u8>>) -> String {
    let pieces = Arc::new(pieces);
    serve_raw(move |mut socket| {
        let pieces = Arc::clone(&pieces);
        async move {
            for piece in pieces.iter() {
                if socket.write_all(piece).await.is_err() {
                    return;
                }
                let _ = socket.flush().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = socket.shutdown().await;
        }
    })
    .await
}

/// Writes `head`, then `first`, then resets the connection with a TCP RST.
async fn reset_after(mut socket: TcpStream, head: &str, first: &[u8]) {
    let _ = socket.write_all(head.as_bytes()).await;
    let _ = socket.write_all(first).await;
    let _ = socket.flush().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    socket.set_zero_linger().unwrap();
    drop(socket);
}

/// Writes `head`, then `line` over and over until the client hangs up or [`ENDLESS_LIMIT`]
/// bytes are out, and returns the body bytes written. One block is reused for every write.
async fn write_endless(socket: &mut TcpStream, head: &[u8], prefix: &[u8], line: &[u8]) -> usize {
    if socket.write_all(head).await.is_err() || socket.write_all(prefix).await.is_err() {
        return 0;
    }
    let mut written = prefix.len();
    while written < ENDLESS_LIMIT {
        if socket.write_all(line).await.is_err() {
            break;
        }
        written += line.len();
    }
    written
}

fn client_for(base_url: &str) -> Client {
    let target = Target::server(base_url, "/v1/chat/completions", "m", None).unwrap();
    Client::new(target).unwrap()
}

async fn chat(base_url: &str, timeout: Duration) -> Result<infphys::ChatReply, RequestFailure> {
    client_for(base_url)
        .chat_once(&ChatRequest::new("hi", 8).timeout(timeout))
        .await
}

async fn chat_streaming(
    base_url: &str,
    timeout: Duration,
) -> Result<infphys::ChatReply, RequestFailure> {
    client_for(base_url)
        .chat_once(&ChatRequest::new("hi", 8).streaming().timeout(timeout))
        .await
}

fn content_event(text: &str) -> String {
    let json = serde_json::json!({"choices": [{"index": 0, "delta": {"content": text}}]});
    format!("data: {json}\n\n")
}

fn assert_timed_out(failure: &RequestFailure) {
    assert_eq!(failure.kind, ErrorKind::Timeout, "{failure}");
    assert!(
        failure.latency >= SHORT_TIMEOUT,
        "gave up early: {:?}",
        failure.latency
    );
    assert!(
        failure.latency < SHORT_TIMEOUT + Duration::from_secs(10),
        "timeout ignored: {:?}",
        failure.latency
    );
    assert!(failure.message.contains("timeout"), "{}", failure.message);
}

#[tokio::test]
async fn headers_then_silence_times_out() {
    let url = serve_raw(|mut socket| async move {
        let head =
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
        let _ = socket.write_all(head.as_bytes()).await;
        let _ = socket.write_all(b"{\"choices\":").await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await;
    let failure = chat(&url, SHORT_TIMEOUT).await.unwrap_err();
    assert_timed_out(&failure);
}

#[tokio::test]
async fn stream_stall_times_out_keeping_tokens() {
    let url = serve_raw(|mut socket| async move {
        let _ = socket.write_all(SSE_HEAD.as_bytes()).await;
        let _ = socket.write_all(content_event("one ").as_bytes()).await;
        let _ = socket.write_all(content_event("two").as_bytes()).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await;
    let failure = chat_streaming(&url, SHORT_TIMEOUT).await.unwrap_err();
    assert_timed_out(&failure);
    let stream = failure.stream.expect("the stream's timing is missing");
    assert_eq!(stream.token_chunks, 2);
    assert!(stream.ttft.is_some());
}

#[tokio::test]
async fn endless_body_hits_body_cap() {
    let written = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&written);
    let url = serve_raw(move |mut socket| {
        let counter = Arc::clone(&counter);
        async move {
            let block = vec![b' '; 64 * 1024];
            let bytes = write_endless(&mut socket, JSON_HEAD.as_bytes(), b"[", &block).await;
            counter.store(bytes, Ordering::SeqCst);
        }
    })
    .await;

    let failure = chat(&url, LONG_TIMEOUT).await.unwrap_err();
    assert_eq!(failure.kind, ErrorKind::Decode, "{failure}");
    assert_eq!(failure.status, Some(200));
    let cap = format!("exceeds {MAX_BODY_BYTES} bytes");
    assert!(failure.message.contains(&cap), "{}", failure.message);

    // The client hung up near the cap instead of reading on.
    for _ in 0..200 {
        if written.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let written = written.load(Ordering::SeqCst);
    assert!(written >= MAX_BODY_BYTES, "only {written} bytes written");
    assert!(
        written < ENDLESS_LIMIT,
        "the client read all {written} bytes"
    );
}

#[tokio::test]
async fn endless_stream_line_hits_line_cap() {
    let url = serve_raw(|mut socket| async move {
        let block = vec![b'a'; 64 * 1024];
        write_endless(&mut socket, SSE_HEAD.as_bytes(), b"data: ", &block).await;
    })
    .await;
    let failure = chat_streaming(&url, LONG_TIMEOUT).await.unwrap_err();
    assert_eq!(failure.kind, ErrorKind::Decode, "{failure}");
    let cap = format!("exceeds {MAX_LINE_BYTES} bytes without a newline");
    assert!(failure.message.contains(&cap), "{}", failure.message);
}

#[tokio::test]
async fn endless_stream_event_hits_event_cap() {
    let url = serve_raw(|mut socket| async move {
        let mut line = b"data: ".to_vec();
        line.resize(16 * 1024, b'a');
        line.push(b'\n');
        write_endless(&mut socket, SSE_HEAD.as_bytes(), b"", &line).await;
    })
    .await;
    let failure = chat_streaming(&url, LONG_TIMEOUT).await.unwrap_err();
    assert_eq!(failure.kind, ErrorKind::Decode, "{failure}");
    let cap = format!("exceeds {MAX_EVENT_BYTES} bytes without a blank line");
    assert!(failure.message.contains(&cap), "{}", failure.message);
}

#[tokio::test]
async fn reset_mid_stream_is_truncated() {
    let url = serve_raw(|socket| async move {
        let first = format!("{}{}", content_event("one "), content_event("two"));
        reset_after(socket, SSE_HEAD, first.as_bytes()).await;
    })
    .await;
    let failure = chat_streaming(&url, LONG_TIMEOUT).await.unwrap_err();
    assert_eq!(failure.kind, ErrorKind::StreamTruncated, "{failure}");
    assert_eq!(failure.status, Some(200));
    assert!(
        failure.message.contains("the stream broke off"),
        "{}",
        failure.message
    );
    assert_eq!(failure.stream.expect("timing missing").token_chunks, 2);
}

#[tokio::test]
async fn reset_mid_body_is_connect() {
    let url = serve_raw(|socket| async move {
        let head =
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
        reset_after(socket, head, b"{\"choices\":[").await;
    })
    .await;
    let failure = chat(&url, LONG_TIMEOUT).await.unwrap_err();
    assert_eq!(failure.kind, ErrorKind::Connect, "{failure}");
    assert_eq!(failure.status, Some(200));
    assert!(
        failure.message.contains("failed to read the response body"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn stream_redirect_is_not_followed() {
    // The redirect points at a second local listener, which must never see a connection.
    let elsewhere = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let location = format!(
        "http://{}/v1/chat/completions",
        elsewhere.local_addr().unwrap()
    );
    let visits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&visits);
    tokio::spawn(async move {
        for _ in 0..MAX_CONNECTIONS {
            if elsewhere.accept().await.is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let head = format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
    );
    let url = serve_pieces(vec![head.into_bytes()]).await;

    let failure = chat_streaming(&url, LONG_TIMEOUT).await.unwrap_err();
    assert_eq!(failure.kind, ErrorKind::HttpStatus, "{failure}");
    assert_eq!(failure.status, Some(307));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        visits.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}

#[tokio::test]
async fn non_json_200_bodies_are_decode() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "HTML error page",
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n\
             <html><body><h1>502 Bad Gateway</h1></body></html>",
            "<html>",
        ),
        (
            "empty body",
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n",
            "empty body",
        ),
        (
            "event stream to a plain request",
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n\
             data: [DONE]\n\n",
            "data: [DONE]",
        ),
    ];
    for (name, response, quoted) in cases {
        let url = serve_pieces(vec![response.as_bytes().to_vec()]).await;
        let failure = chat(&url, LONG_TIMEOUT).await.unwrap_err();
        assert_eq!(failure.kind, ErrorKind::Decode, "{name}: {failure}");
        assert_eq!(failure.status, Some(200), "{name}");
        assert!(
            failure.message.contains(quoted),
            "{name}: {}",
            failure.message
        );
    }
}

#[tokio::test]
async fn stream_split_inside_utf8_and_prefix() {
    let event = content_event("h\u{e9}llo \u{1f600}");
    let bytes = event.as_bytes();
    let e_acute = bytes.iter().position(|&b| b == 0xc3).unwrap();
    let emoji = bytes.iter().position(|&b| b == 0xf0).unwrap();
    let pieces = vec![
        SSE_HEAD.as_bytes().to_vec(),
        b"da".to_vec(),
        bytes[2..=e_acute].to_vec(),
        bytes[e_acute + 1..emoji + 2].to_vec(),
        bytes[emoji + 2..bytes.len() - 1].to_vec(),
        b"\n".to_vec(),
        b"data: [DO".to_vec(),
        b"NE]\n".to_vec(),
        b"\n".to_vec(),
    ];
    let url = serve_pieces(pieces).await;
    let reply = chat_streaming(&url, LONG_TIMEOUT).await.unwrap();
    assert_eq!(reply.text, "h\u{e9}llo \u{1f600}");
    assert_eq!(reply.stream.unwrap().token_chunks, 1);
}

#[tokio::test]
async fn stream_with_crlf_line_ends() {
    let body = format!(
        "{}{}{}data: [DONE]\n\n",
        content_event("one "),
        content_event("two "),
        content_event("three")
    )
    .replace('\n', "\r\n");
    // Every read ends between a `\r` and its `\n`.
    let mut pieces = vec![SSE_HEAD.as_bytes().to_vec()];
    let mut rest = body.as_bytes();
    while let Some(cr) = rest.iter().position(|&b| b == b'\r') {
        pieces.push(rest[..=cr].to_vec());
        rest = &rest[cr + 1..];
    }
    pieces.push(rest.to_vec());
    let url = serve_pieces(pieces).await;

    let reply = chat_streaming(&url, LONG_TIMEOUT).await.unwrap();
    assert_eq!(reply.text, "one two three");
    assert_eq!(reply.stream.unwrap().token_chunks, 3);
}

#[tokio::test]
async fn non_http_reply_is_connect() {
    let url = serve_pieces(vec![b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()]).await;
    let failure = chat(&url, LONG_TIMEOUT).await.unwrap_err();
    assert_eq!(failure.kind, ErrorKind::Connect, "{failure}");
    assert_eq!(failure.status, None);
    assert!(failure.message.contains(&url), "{}", failure.message);
}

#[tokio::test]
async fn huge_header_is_rejected() {
    let url = serve_raw(|mut socket| async move {
        let _ = socket.write_all(b"HTTP/1.1 200 OK\r\nX-Filler: ").await;
        let block = vec![b'a'; 64 * 1024];
        write_endless(&mut socket, b"", b"", &block).await;
    })
    .await;
    let failure = chat(&url, LONG_TIMEOUT).await.unwrap_err();
    assert_eq!(failure.kind, ErrorKind::Connect, "{failure}");
    assert_eq!(failure.status, None);
}

#[tokio::test]
async fn closed_before_headers_is_connect() {
    let url = serve_raw(|socket| async move {
        drop(socket);
    })
    .await;
    for streaming in [false, true] {
        let failure = if streaming {
            chat_streaming(&url, LONG_TIMEOUT).await
        } else {
            chat(&url, LONG_TIMEOUT).await
        }
        .unwrap_err();
        assert_eq!(
            failure.kind,
            ErrorKind::Connect,
            "streaming {streaming}: {failure}"
        );
        assert_eq!(failure.status, None, "streaming {streaming}");
        assert!(failure.stream.is_none(), "streaming {streaming}");
    }
}
