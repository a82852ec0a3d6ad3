//! Client self-calibration: what the client itself adds to every measurement on this machine.
//!
//! A loopback server inside this process answers every request at once, with no work, so the
//! latencies the client measures against it are its own overhead (building and parsing the
//! request, the connection pool, the HTTP stack, the scheduler) plus the loopback hop. A second
//! run with many requests in flight finds the client's ceiling in requests per second. Reports
//! carry both, so a reader knows what differences the client can resolve: a p99 gap smaller
//! than the overhead's p99 is noise.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::client::{ChatRequest, Client};
use crate::error::{Error, Result};
use crate::load::{LoadSpec, run_load};
use crate::progress::Progress;
use crate::stats::LatencyStats;
use crate::target::Target;

/// The client's own overhead and ceiling, measured on loopback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Median latency of one request at a time against a server that does no work.
    pub overhead_p50: Duration,
    /// 99th-percentile of the same.
    pub overhead_p99: Duration,
    /// Requests per second with `ceiling_concurrency` in flight against the same server.
    pub max_rps: f64,
    /// Requests in flight during the ceiling run.
    pub ceiling_concurrency: usize,
}

impl std::fmt::Display for Calibration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "client overhead on this machine: p50 {:.3} ms, p99 {:.3} ms per request; ceiling {:.0} req/s at concurrency {}",
            self.overhead_p50.as_secs_f64() * 1e3,
            self.overhead_p99.as_secs_f64() * 1e3,
            self.max_rps,
            self.ceiling_concurrency
        )
    }
}

const REPLY_BODY: &str = r#"{"choices":[{"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#;

/// Answers every HTTP/1.1 request on `stream` with the same small chat completion, keeping the
/// connection open, until the client closes it.
async fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{REPLY_BODY}",
        REPLY_BODY.len()
    );
    let mut buffer = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // Read one request: headers up to a blank line, then content-length bytes of body.
        let body_start = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
        };
        let headers = String::from_utf8_lossy(&buffer[..body_start]).to_ascii_lowercase();
        let length: usize = headers
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buffer.len() < body_start + length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
        buffer.drain(..body_start + length);
        stream.write_all(response.as_bytes()).await?;
    }
}

/// Measures the client's overhead with `requests` sequential requests, and its ceiling with
/// `requests` requests at `ceiling_concurrency` in flight, against an in-process loopback server.
pub async fn calibrate(requests: usize, ceiling_concurrency: usize) -> Result<Calibration> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|source| Error::Io {
            action: "failed to bind the calibration server on",
            path: "127.0.0.1:0".to_owned(),
            source,
        })?;
    let address = listener.local_addr().map_err(|source| Error::Io {
        action: "failed to read the address of",
        path: "the calibration server".to_owned(),
        source,
    })?;
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(answer(stream));
        }
    });

    let target = Target::server(
        &format!("http://{address}"),
        "/v1/chat/completions",
        "calibration",
        None,
    )?;
    let client = Client::new(target)?;
    let request = ChatRequest::new("calibration", 1).timeout(Duration::from_secs(10));
    let sequential = run_load(
        &client,
        &LoadSpec {
            total_requests: requests,
            concurrency: 1,
            request: request.clone(),
        },
        Progress::Silent,
    )
    .await?;
    let parallel = run_load(
        &client,
        &LoadSpec {
            total_requests: requests.max(ceiling_concurrency * 4),
            concurrency: ceiling_concurrency,
            request,
        },
        Progress::Silent,
    )
    .await?;
    server.abort();

    let stats = LatencyStats::from_latencies(&sequential.ok_latencies());
    let ceiling = parallel.summary();
    Ok(Calibration {
        overhead_p50: stats.p50.unwrap_or_default(),
        overhead_p99: stats.p99.unwrap_or_default(),
        max_rps: ceiling.ok as f64 / ceiling.wall.as_secs_f64(),
        ceiling_concurrency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calibration_measures_a_working_client() {
        let calibration = calibrate(200, 16).await.unwrap();
        assert!(calibration.overhead_p50 > Duration::ZERO);
        assert!(calibration.overhead_p50 <= calibration.overhead_p99);
        assert!(calibration.max_rps > 0.0);
        assert!(calibration.to_string().contains("ceiling"), "{calibration}");
    }
}
