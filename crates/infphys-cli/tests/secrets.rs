//! The API key never leaves the Authorization header: the `infphys` binary runs with
//! `NIM_API_KEY` set and debug logging, and neither its stdout, its stderr, the simulator's log
//! nor any file it writes under `--out` may contain the key.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A key that no other text in the output could contain by chance.
const KEY: &str = "nvapi-infphys-test-Zq7RkW3vX9";

/// Connections the rejecting server accepts before it stops.
const MAX_CONNECTIONS: usize = 32;

fn infphys() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_infphys"));
    for name in [
        "NIM_BASE_URL",
        "NIM_CHAT_PATH",
        "NIM_GEN_MODEL",
        "NIM_API_KEY",
        "OPENAI_API_KEY",
        "INFPHYS_TIME_SCALE",
        "RUST_LOG",
    ] {
        command.env_remove(name);
    }
    command
}

fn scratch(name: &str) -> PathBuf {
    let folder =
        std::env::temp_dir().join(format!("infphys-secrets-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&folder);
    folder
}

/// Returns every file under `folder`, recursively.
fn files_under(folder: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![folder.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// Asserts that the key is in none of the outputs and in no file under `out`, and returns how
/// many files were checked.
fn assert_no_key(output: &Output, out: &Path) -> usize {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!contains(&output.stdout, KEY), "the key is in stdout");
    assert!(
        !contains(&output.stderr, KEY),
        "the key is in stderr: {stderr}"
    );
    let files = files_under(out);
    for file in &files {
        let bytes = std::fs::read(file).unwrap();
        assert!(!contains(&bytes, KEY), "the key is in {}", file.display());
    }
    files.len()
}

/// Reads one request's head and body from `stream` and returns the head.
fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    let mut body_length = 0;
    for _ in 0..200 {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            body_length = value.trim().parse().unwrap_or(0);
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            let mut body = vec![0; body_length];
            reader.read_exact(&mut body).ok()?;
            return Some(head);
        }
    }
    None
}

/// Starts a server on 127.0.0.1 that responds to every request with 401 and `body`, and returns its
/// base URL and the request heads it received.
fn start_rejecting_server(body: String) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&heads);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(MAX_CONNECTIONS) {
            let Ok(mut stream) = stream else {
                continue;
            };
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let Some(head) = read_request(&mut stream) else {
                continue;
            };
            seen.lock().unwrap().push(head);
            let response = format!(
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    (url, heads)
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `infphys sim` with debug logging on a free port, and returns it, its base URL and
/// its log so far and to come.
fn start_simulator() -> (Server, String, Arc<Mutex<String>>) {
    let mut child = infphys()
        .args(["--time-scale", "40", "sim", "--port", "0"])
        .env("NIM_API_KEY", KEY)
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let log = Arc::new(Mutex::new(String::new()));
    let url = loop {
        let line = lines
            .next()
            .expect("the simulator exited before printing its URL")
            .unwrap();
        log.lock().unwrap().push_str(&line);
        if let Some(rest) = line.trim().strip_prefix("export NIM_BASE_URL=") {
            break rest.to_owned();
        }
    };
    // Keep collecting the simulator's log so it never blocks on a full pipe.
    let collected = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let mut log = collected.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    (Server(child), url, log)
}

#[test]
fn key_absent_after_401_rejection() {
    let body = r#"{"error":{"message":"Invalid API key.","type":"authentication_error"}}"#;
    let (url, heads) = start_rejecting_server(body.to_owned());
    let out = scratch("rejected");

    let output = infphys()
        .args(["baseline", "--requests", "2", "--out"])
        .arg(&out)
        .env("NIM_BASE_URL", &url)
        .env("NIM_API_KEY", KEY)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);

    // The key did reach the server, in the Authorization header only.
    let heads = heads.lock().unwrap();
    assert!(!heads.is_empty(), "the server got no request: {stderr}");
    let bearer = format!("authorization: bearer {}", KEY.to_ascii_lowercase());
    assert!(
        heads
            .iter()
            .any(|head| head.to_ascii_lowercase().contains(&bearer)),
        "the key was not sent: {heads:?}"
    );

    assert!(!output.status.success(), "a 401 counted as success");
    assert!(
        stderr.contains("401"),
        "the rejection is not reported: {stderr}"
    );
    assert!(stderr.contains("Invalid API key"), "{stderr}");
    assert!(stderr.contains("DEBUG"), "debug logging is off: {stderr}");
    assert_no_key(&output, &out);
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn key_echoed_by_server_is_redacted() {
    // Some servers quote a rejected key back in their error message.
    let body = format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY}."}}}}"#);
    let (url, _heads) = start_rejecting_server(body);
    let out = scratch("echoed");

    let output = infphys()
        .args(["baseline", "--requests", "2", "--out"])
        .arg(&out)
        .env("NIM_BASE_URL", &url)
        .env("NIM_API_KEY", KEY)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a 401 counted as success");
    assert!(
        stderr.contains("Incorrect API key provided: [API key]"),
        "the server's message is not shown redacted: {stderr}"
    );
    assert_no_key(&output, &out);
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn key_absent_from_simulator_run() {
    let (server, url, sim_log) = start_simulator();
    let out = scratch("simulated");

    let output = infphys()
        .args([
            "baseline",
            "--requests",
            "3",
            "--max-tokens",
            "8",
            "--timeout",
            "30s",
            "--out",
        ])
        .arg(&out)
        .env("NIM_BASE_URL", &url)
        .env("NIM_API_KEY", KEY)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the baseline failed: {stderr}");
    assert!(stderr.contains("DEBUG"), "debug logging is off: {stderr}");

    let files = assert_no_key(&output, &out);
    for name in ["baseline.csv", "requests.jsonl"] {
        assert!(out.join(name).exists(), "{name} missing");
    }
    assert!(files >= 2, "only {files} files written");

    drop(server);
    let sim_log = sim_log.lock().unwrap();
    assert!(
        sim_log.contains("DEBUG"),
        "the simulator's debug log is off"
    );
    assert!(!sim_log.contains(KEY), "the key is in the simulator's log");
    let _ = std::fs::remove_dir_all(out);
}
