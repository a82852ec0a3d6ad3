//! Connection guard rails of the served simulator: the body limit, the header-read, body-read,
//! write and idle timeouts, the connection cap and many idle keep-alive connections. Every server binds
//! 127.0.0.1 on a free port.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use infphys_sim::{Preset, SimConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound on any single wait in these tests; generous for a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(20);

const HEALTH_REQUEST: &[u8] = b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";

fn loopback_config() -> SimConfig {
    let config = SimConfig {
        time_scale: 100.0,
        ..SimConfig::new(Preset::Classroom)
    };
    assert!(config.host.is_loopback(), "tests bind loopback only");
    config
}

/// Reads one HTTP/1.1 response with a `content-length` body; returns its status and body.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut received = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        if let Some(end) = find(&received, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_string();
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().unwrap())
                })
                .expect("the response has a content-length");
            if received.len() >= end + 4 + length {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                let body = String::from_utf8_lossy(&received[end + 4..end + 4 + length]);
                return (status, body.to_string());
            }
        }
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("the response arrives in time")
            .expect("reading the response succeeds");
        assert!(read > 0, "the server closed the connection mid-response");
        received.extend_from_slice(&chunk[..read]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Sends `GET /health` on `stream` and returns the response status.
async fn health(stream: &mut TcpStream) -> u16 {
    stream.write_all(HEALTH_REQUEST).await.unwrap();
    read_response(stream).await.0
}

/// Waits until the server closes `stream`, discarding anything it sends. Returns the wall
/// time that took, or `None` when the connection is still open after `limit`.
async fn time_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut chunk = [0; 1024];
    loop {
        let remaining = limit.checked_sub(start.elapsed())?;
        match tokio::time::timeout(remaining, stream.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(PATIENCE, TcpStream::connect(addr))
        .await
        .expect("connecting takes less than the patience bound")
        .expect("connecting to the simulator succeeds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_gets_openai_413() {
    let config = SimConfig {
        max_body_bytes: 1000,
        ..loopback_config()
    };
    let server = infphys_sim::spawn(config).unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", server.base_url());
    let body_of_length = |length: usize| {
        let frame = r#"{"max_tokens":1,"messages":[{"role":"user","content":""}]}"#;
        let content = "a".repeat(length - frame.len());
        format!(r#"{{"max_tokens":1,"messages":[{{"role":"user","content":"{content}"}}]}}"#)
    };

    let fits = body_of_length(1000);
    assert_eq!(fits.len(), 1000);
    let response = client.post(&url).body(fits).send().await.unwrap();
    assert_eq!(
        response.status().as_u16(),
        200,
        "a body at the limit is accepted"
    );

    let too_large = body_of_length(1001);
    let response = client.post(&url).body(too_large).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let json: serde_json::Value = response.json().await.unwrap();
    let error = &json["error"];
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("limit of 1000 bytes"), "{message}");
    assert!(message.contains("--max-body-bytes"), "{message}");
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["param"], serde_json::Value::Null);
    assert_eq!(error["code"], 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_is_cut_off() {
    let config = SimConfig {
        header_read_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(60),
        ..loopback_config()
    };
    let server = infphys_sim::spawn(config).unwrap();
    let mut stream = connect(server.addr()).await;

    // Trickle the header one byte every 50 ms, as a slowloris client does, for at most 10 s.
    let header = b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nx-padding: ";
    stream.write_all(header).await.unwrap();
    let start = Instant::now();
    let mut closed = false;
    while start.elapsed() < Duration::from_secs(10) {
        if stream.write_all(b"a").await.is_err() {
            closed = true;
            break;
        }
        let mut byte = [0; 1];
        match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    let elapsed = start.elapsed();
    assert!(closed, "the server kept a trickling client for {elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(400),
        "closed after {elapsed:?}, before the 500 ms header read timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_body_gets_408() {
    let config = SimConfig {
        body_read_timeout: Duration::from_millis(500),
        ..loopback_config()
    };
    let server = infphys_sim::spawn(config).unwrap();
    let mut stream = connect(server.addr()).await;

    // Announce a 200-byte body and send 10 bytes of it. Without a body timeout the server
    // would keep this connection and its buffer for as long as the client stays silent.
    let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n\
                content-type: application/json\r\ncontent-length: 200\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(br#"{"messages"#).await.unwrap();

    let (status, body) = read_response(&mut stream).await;
    assert_eq!(status, 408, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("body read timeout"), "{message}");
    assert!(message.contains("--body-read-timeout"), "{message}");
    assert!(
        time_until_closed(&mut stream, PATIENCE).await.is_some(),
        "the connection closes after the 408"
    );

    let mut fresh = connect(server.addr()).await;
    assert_eq!(health(&mut fresh).await, 200, "the server keeps serving");
}

/// Returns the value of the gauge `name` (labelled with the model only) from `/metrics`.
async fn gauge(addr: SocketAddr, name: &str) -> f64 {
    let mut stream = connect(addr).await;
    let request = "GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut stream).await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix('{')?;
            rest.split_once("} ")?.1.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("/metrics has no sample of {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_stops_reading_is_disconnected() {
    let mut config = SimConfig {
        write_timeout: Duration::from_millis(300),
        time_scale: 50.0,
        ..SimConfig::new(Preset::Classroom)
    };
    // Room for a 60,000-token reply: about 13 MB of chunks over 37 s of wall time, far more
    // than the socket buffers of both ends hold.
    config.physics.max_model_len = 70_000;
    config.physics.kv_capacity_tokens = 200_000;
    let server = infphys_sim::spawn(config).unwrap();

    // A small receive buffer makes the server's writes block sooner.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(server.addr()).await.unwrap();
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": "Write a long story."}],
        "max_tokens": 60_000,
        "ignore_eos": true,
        "stream": true,
    })
    .to_string();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();

    // The client reads nothing from here on, so the server's writes block once the buffers
    // are full. The write timeout then closes the connection, which aborts the engine request
    // long before its 37 s of generation would end.
    let running = "vllm:num_requests_running";
    let start = Instant::now();
    let mut started = false;
    loop {
        let now_running = gauge(server.addr(), running).await;
        started |= now_running > 0.0;
        if started && now_running == 0.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(25),
            "the request of a client that reads nothing still runs after {:?} ({running} {now_running})",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stream);
    assert_eq!(gauge(server.addr(), "vllm:num_requests_waiting").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed() {
    let config = SimConfig {
        idle_timeout: Duration::from_millis(500),
        ..loopback_config()
    };
    let server = infphys_sim::spawn(config).unwrap();

    let mut after_request = connect(server.addr()).await;
    assert_eq!(health(&mut after_request).await, 200);
    let elapsed = time_until_closed(&mut after_request, Duration::from_secs(10))
        .await
        .expect("the idle keep-alive connection is closed within 10 s");
    assert!(
        elapsed >= Duration::from_millis(400),
        "closed after {elapsed:?}"
    );

    let mut never_sent = connect(server.addr()).await;
    let elapsed = time_until_closed(&mut never_sent, Duration::from_secs(10))
        .await
        .expect("a connection that never sends is closed within 10 s");
    assert!(
        elapsed >= Duration::from_millis(400),
        "closed after {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_time_does_not_count_as_header_time() {
    let config = SimConfig {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(60),
        ..loopback_config()
    };
    let server = infphys_sim::spawn(config).unwrap();
    let mut stream = connect(server.addr()).await;
    assert_eq!(health(&mut stream).await, 200);

    // Idle for three header read timeouts between keep-alive requests.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        health(&mut stream).await,
        200,
        "the keep-alive connection survives idle time longer than the header read timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_rejects_with_503() {
    let config = SimConfig {
        max_connections: 3,
        ..loopback_config()
    };
    let server = infphys_sim::spawn(config).unwrap();

    let mut open_connections = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(server.addr()).await;
        assert_eq!(health(&mut stream).await, 200);
        open_connections.push(stream);
    }

    let mut rejected = connect(server.addr()).await;
    rejected.write_all(HEALTH_REQUEST).await.unwrap();
    let (status, body) = read_response(&mut rejected).await;
    assert_eq!(status, 503);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let message = json["error"]["message"].as_str().unwrap();
    assert!(message.contains("3 open connections"), "{message}");
    assert!(message.contains("--max-connections"), "{message}");
    assert_eq!(json["error"]["type"], "server_error");
    assert_eq!(json["error"]["code"], 503);
    assert!(
        time_until_closed(&mut rejected, PATIENCE).await.is_some(),
        "the server closes a rejected connection"
    );

    // Closing one open connection frees a place for a new one.
    drop(open_connections.pop());
    let start = Instant::now();
    loop {
        let mut stream = connect(server.addr()).await;
        if health(&mut stream).await == 200 {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no place freed after closing a connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Environment variable that makes [`server_process_for_connection_tests`] run a server.
const SERVER_PROCESS_VARIABLE: &str = "INFPHYS_CONNECTION_TEST_SERVER";

/// Header read timeout of the server process; the idle connections outlast it.
const SERVER_PROCESS_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Simulator in a child process, so the server's and the client's ends of the connections
/// count against two open-file limits. The child is this test binary, running
/// [`server_process_for_connection_tests`], and it stops when its standard input closes.
struct ServerProcess {
    child: std::process::Child,
    /// Rest of the child's standard output, kept open so its last lines do not fail to write.
    _stdout: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start() -> Self {
        use std::io::BufRead;

        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "server_process_for_connection_tests",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(SERVER_PROCESS_VARIABLE, "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the test binary starts as a server process");
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = stdout
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("listening on ")?.trim().parse().ok())
            .expect("the server process prints its address");
        ServerProcess {
            child,
            _stdout: stdout,
            addr,
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Serves the simulator for [`ServerProcess`] until standard input closes; does nothing
/// when run on its own.
#[test]
#[ignore = "the server half of the many-connection tests, which start it themselves"]
fn server_process_for_connection_tests() {
    if std::env::var_os(SERVER_PROCESS_VARIABLE).is_none() {
        return;
    }
    let limit = infphys_sim::open_file_limit().unwrap();
    infphys_sim::raise_open_file_limit(limit.hard).unwrap();
    let config = SimConfig {
        header_read_timeout: SERVER_PROCESS_HEADER_READ_TIMEOUT,
        ..loopback_config()
    };
    let server = infphys_sim::spawn(config).unwrap();
    println!("listening on {}", server.addr());

    let mut discarded = String::new();
    while std::io::stdin().read_line(&mut discarded).unwrap_or(0) > 0 {}
}

/// Opens `count` connections to a server process, sends one request on each and keeps them
/// idle for longer than the header read timeout. Then checks that a new request is served
/// within 5 s and that the idle connections still serve requests.
async fn many_idle_connections_leave_server_responsive(count: usize) {
    // Each process has one end of every connection open.
    let required_fds = count as u64 + infphys_sim::FD_MARGIN;
    // Raise to the hard limit, because the tests of this binary run in parallel in one process.
    let limit = infphys_sim::raise_open_file_limit(u64::MAX).unwrap();
    if limit.soft < required_fds {
        eprintln!(
            "skipped: {count} connections need {required_fds} file descriptors in each of the \
             client and server processes, but the hard open-file limit is {}; \
             raise it with `ulimit -Hn {required_fds}` as root",
            limit.hard
        );
        return;
    }
    let server = ServerProcess::start();
    let addr = server.addr;
    let start = Instant::now();
    let mut connections = Vec::with_capacity(count);
    let mut opening = tokio::task::JoinSet::new();
    const PARALLEL_OPENS: usize = 64;
    for _ in 0..count {
        if opening.len() >= PARALLEL_OPENS {
            connections.push(opening.join_next().await.unwrap().unwrap());
        }
        opening.spawn(async move {
            let mut stream = connect(addr).await;
            assert_eq!(health(&mut stream).await, 200);
            stream
        });
    }
    while let Some(stream) = opening.join_next().await {
        connections.push(stream.unwrap());
    }
    let opened_in = start.elapsed();
    assert_eq!(connections.len(), count);

    // Idle past the header read timeout, which must not close keep-alive connections.
    tokio::time::sleep(SERVER_PROCESS_HEADER_READ_TIMEOUT + Duration::from_millis(500)).await;

    let sent = Instant::now();
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/health"))
        .timeout(PATIENCE)
        .send()
        .await
        .unwrap();
    let latency = sent.elapsed();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        latency < Duration::from_secs(5),
        "a new request took {latency:?} with {count} idle connections open"
    );

    let step = (count / 10).max(1);
    for stream in connections.iter_mut().step_by(step) {
        assert_eq!(health(stream).await, 200, "an idle connection still serves");
    }
    eprintln!(
        "{count} idle keep-alive connections: opened in {opened_in:?}, \
         a new request took {latency:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_idle_connections_keep_serving() {
    many_idle_connections_leave_server_responsive(1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_keep_serving() {
    many_idle_connections_leave_server_responsive(10_000).await;
}
