//! Runs one closed-loop level with `infphys::run_load` and prints its cost as one JSON line, for
//! `scripts/bench-client.sh`.
//!
//! The line contains the request counts, p50 and p99 latency of the successful requests and the wall
//! time in seconds, the achieved rate in requests per second, the CPU seconds the process used
//! during the run (user plus system, from /proc/self/stat) and the peak resident set size in KiB
//! (VmHWM from /proc/self/status). CPU time and the percentiles leave out the warm-up requests,
//! but peak RSS includes them. It needs Linux for /proc.
//!
//! With `--stream` each request is `ChatRequest::streaming()`, and its latency in the line is the
//! time until the stream closed, the full response as other load generators time it, rather than
//! infphys's own end-to-end latency, which stops at the last token.
//!
//! ```text
//! cargo run --release --example bench_closed_loop -- --url http://127.0.0.1:41234 \
//!     --concurrency 256 --requests 2048
//! ```

use std::process::ExitCode;
use std::time::Duration;

use infphys::stats::percentile;
use infphys::{ChatRequest, Client, ErrorKind, LoadRun, LoadSpec, Progress, Target, run_load};
use serde_json::json;

const USAGE: &str = "\
Usage: bench_closed_loop --url URL [--concurrency N] [--requests N] [--timeout-s S]
                         [--warmup N] [--clock-ticks HZ] [--workers N] [--records PATH]
                         [--stream]

  --url URL          base URL of the server, such as http://127.0.0.1:41234
  --concurrency N    maximum requests in flight (default 1)
  --requests N       requests to send in all (default 50)
  --timeout-s S      client timeout per request, in seconds (default 30)
  --warmup N         requests to send at the same concurrency before the measured run, untimed,
                     so its connections are open when it starts (default 0)
  --clock-ticks HZ   clock ticks per second of /proc/self/stat, from `getconf CLK_TCK` (default 100)
  --workers N        tokio worker threads (default: one per CPU)
  --records PATH     also write one CSV row per request: id, scheduled, sent and latency in
                     seconds, and the error kind (empty when it succeeded)
  --stream           send streaming requests and time each until its stream closes";

struct Options {
    url: String,
    concurrency: usize,
    requests: usize,
    timeout: Duration,
    warmup: usize,
    clock_ticks: u64,
    workers: Option<usize>,
    records: Option<String>,
    stream: bool,
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut url = None;
    let mut options = Options {
        url: String::new(),
        concurrency: 1,
        requests: 50,
        timeout: Duration::from_secs(30),
        warmup: 0,
        clock_ticks: 100,
        workers: None,
        records: None,
        stream: false,
    };

    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{flag} requires a value"))
        };
        match flag.as_str() {
            "--url" => url = Some(value()?.clone()),
            "--concurrency" => options.concurrency = parse_number(flag, value()?)?,
            "--requests" => options.requests = parse_number(flag, value()?)?,
            "--timeout-s" => {
                options.timeout = Duration::from_secs(parse_number(flag, value()?)?);
            }
            "--warmup" => options.warmup = parse_number(flag, value()?)?,
            "--clock-ticks" => options.clock_ticks = parse_number(flag, value()?)?,
            "--workers" => options.workers = Some(parse_number(flag, value()?)?),
            "--records" => options.records = Some(value()?.clone()),
            "--stream" => options.stream = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    options.url = url.ok_or("missing --url")?;
    if options.clock_ticks == 0 {
        return Err("--clock-ticks must be at least 1".to_owned());
    }
    if options.workers == Some(0) {
        return Err("--workers must be at least 1".to_owned());
    }
    Ok(options)
}

fn parse_number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("invalid value {value:?} for {flag}: expected a whole number"))
}

/// User plus system CPU time of this process in clock ticks: fields 14 and 15 of /proc/self/stat.
fn cpu_ticks() -> Result<u64, String> {
    let stat = std::fs::read_to_string("/proc/self/stat")
        .map_err(|e| format!("failed to read /proc/self/stat: {e}"))?;
    // The command name in field 2 may contain spaces, so fields are counted after its ')'.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("unexpected /proc/self/stat format: no ')'")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (state), so utime (field 14) is fields[11] and stime is fields[12].
    let ticks = |index: usize| -> Result<u64, String> {
        fields
            .get(index)
            .and_then(|field| field.parse::<u64>().ok())
            .ok_or_else(|| format!("unexpected /proc/self/stat format: {stat:?}"))
    };
    Ok(ticks(11)? + ticks(12)?)
}

/// Peak resident set size in KiB: VmHWM from /proc/self/status.
fn peak_rss_kib() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("failed to read /proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "VmHWM not found in /proc/self/status".to_owned())
}

fn write_records(path: &str, run: &LoadRun) -> Result<(), String> {
    let mut csv = String::from("request_id,scheduled_s,sent_s,latency_s,error_kind\n");
    for record in &run.records {
        let error_kind = record.error_kind.map_or("", ErrorKind::as_str);
        csv.push_str(&format!(
            "{},{:.6},{:.6},{:.6},{error_kind}\n",
            record.request_id,
            record.scheduled.as_secs_f64(),
            record.sent.as_secs_f64(),
            record.latency.as_secs_f64(),
        ));
    }
    std::fs::write(path, csv).map_err(|e| format!("failed to write {path}: {e}"))
}

async fn measure(options: &Options) -> Result<serde_json::Value, String> {
    let target = Target::server(&options.url, "/v1/chat/completions", "fixed-delay", None)
        .map_err(|e| e.to_string())?;
    let client = Client::new(target).map_err(|e| e.to_string())?;
    let mut request = ChatRequest::new("Say ok.", 8).timeout(options.timeout);
    if options.stream {
        request = request.streaming();
    }
    let spec = LoadSpec {
        total_requests: options.requests,
        concurrency: options.concurrency,
        request,
    };

    if options.warmup > 0 {
        let warmup = LoadSpec {
            total_requests: options.warmup,
            ..spec.clone()
        };
        // The client is shared, so the measured run reuses the warm-up's pooled connections.
        run_load(&client, &warmup, Progress::Silent)
            .await
            .map_err(|e| e.to_string())?;
    }

    let ticks_before = cpu_ticks()?;
    let run = run_load(&client, &spec, Progress::Silent)
        .await
        .map_err(|e| e.to_string())?;
    let ticks_used = cpu_ticks()? - ticks_before;
    if let Some(path) = &options.records {
        write_records(path, &run)?;
    }

    let latencies: Vec<f64> = run
        .records
        .iter()
        .filter(|record| record.ok())
        .map(|record| record.close.unwrap_or(record.latency).as_secs_f64())
        .collect();
    let ok = latencies.len();
    let wall_s = run.wall.as_secs_f64();
    let sample_error = run.summary().sample_error;
    Ok(json!({
        "tool": "infphys",
        "stream": options.stream,
        "concurrency": options.concurrency,
        "requests": options.requests,
        "ok": ok,
        "err": run.records.len() - ok,
        "p50_s": percentile(&latencies, 50.0),
        "p99_s": percentile(&latencies, 99.0),
        "wall_s": wall_s,
        "rps": run.records.len() as f64 / wall_s,
        "cpu_s": ticks_used as f64 / options.clock_ticks as f64,
        "peak_rss_kib": peak_rss_kib()?,
        "sample_error": sample_error,
    }))
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

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(workers) = options.workers {
        builder.worker_threads(workers);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: failed to start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(measure(&options)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
