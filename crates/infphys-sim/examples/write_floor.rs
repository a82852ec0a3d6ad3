//! Measures the floor under the simulator's streaming precision: how late
//! the last of a burst of loopback writes lands when every client's chunk
//! falls due at the same instant.
//!
//! A decode step of a batch of N sequences produces N tokens at one
//! instant, so a server that streams them must make N writes to N sockets
//! at once. This peer does only that, with nothing else in the way: no
//! HTTP, no JSON, no channels and no async runtime on the writing side.
//! At every step it writes one fixed-size chunk to each of N loopback TCP
//! connections and notes how long after the step's scheduled instant each
//! write returned. N reader tasks on a tokio runtime, as many workers as
//! cores, read the chunks and note how late each one arrived. Each chunk
//! carries its scheduled instant, so no clock is shared across machines.
//!
//! It runs twice: once with a single writer thread, and once with the
//! sockets split between one writer thread per core. The better of the two
//! is the best this machine can do for a burst of N chunks, whatever the
//! server's design, as long as each chunk needs its own `write` call.
//!
//! ```text
//! cargo run --release -p infphys-sim --example write_floor -- \
//!     --clients 1024 --step-ms 48 --duration-s 10
//! ```
//!
//! Everything binds to 127.0.0.1. The output is a Markdown table.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

/// Bytes per chunk: about one `chat.completion.chunk` SSE event with its
/// chunked-encoding frame.
const CHUNK_BYTES: usize = 240;

/// Wall time before a step at which a writer stops sleeping and yields.
const YIELD_MARGIN: Duration = Duration::from_micros(200);

#[derive(Debug, Clone, Copy)]
struct Settings {
    clients: usize,
    step: Duration,
    duration: Duration,
    warmup: Duration,
}

const USAGE: &str =
    "usage: write_floor [--clients N] [--step-ms MS] [--duration-s S] [--warmup-s S]";

fn parse_settings() -> Result<Settings, String> {
    let mut settings = Settings {
        clients: 1024,
        step: Duration::from_millis(48),
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("missing value after {flag}. {USAGE}"))?;
        let number = value
            .parse::<f64>()
            .ok()
            .filter(|number| number.is_finite() && *number > 0.0)
            .ok_or_else(|| format!("{flag} {value:?} is not a positive number. {USAGE}"))?;
        match flag.as_str() {
            "--clients" if number.fract() == 0.0 => settings.clients = number as usize,
            "--clients" => return Err(format!("--clients {value:?} must be a whole number")),
            "--step-ms" => settings.step = Duration::from_secs_f64(number / 1000.0),
            "--duration-s" if number <= 600.0 => {
                settings.duration = Duration::from_secs_f64(number)
            }
            "--duration-s" => return Err(format!("--duration-s {value:?} is over 600")),
            "--warmup-s" => settings.warmup = Duration::from_secs_f64(number),
            _ => return Err(format!("unknown option {flag}. {USAGE}")),
        }
    }
    if settings.warmup >= settings.duration {
        return Err("--warmup-s must be shorter than --duration-s".into());
    }
    Ok(settings)
}

/// Lateness samples of one run in nanoseconds, with its failed writes and CPU use.
struct RunSamples {
    written: Vec<u64>,
    arrived: Vec<u64>,
    failed_writes: usize,
    writer_cpu: Duration,
    process_cpu: Duration,
    wall: Duration,
}

/// Result of one writer thread.
struct WriterResult {
    /// Lateness of each write after the warm-up, in nanoseconds.
    lateness: Vec<u64>,
    failed_writes: usize,
    cpu: Duration,
}

/// Scope of the CPU time that [`cpu_time`] reads: the calling thread or the whole process.
#[derive(Debug, Clone, Copy)]
enum CpuScope {
    Thread,
    Process,
}

/// Returns the CPU time of the calling thread or of the whole process.
#[cfg(target_os = "linux")]
fn cpu_time(scope: CpuScope) -> Duration {
    let resource_scope = match scope {
        CpuScope::Thread => libc::RUSAGE_THREAD,
        CpuScope::Process => libc::RUSAGE_SELF,
    };
    // SAFETY: getrusage only writes into the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(resource_scope, &mut usage);
        usage
    };
    let seconds = |time: libc::timeval| {
        Duration::from_secs(time.tv_sec as u64) + Duration::from_micros(time.tv_usec as u64)
    };
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Returns zero, because per-thread CPU time is read on Linux only. The CPU lines then read 0%.
#[cfg(not(target_os = "linux"))]
fn cpu_time(_scope: CpuScope) -> Duration {
    Duration::ZERO
}

/// Sleeps until shortly before `deadline`, then yields until it passes.
fn wait_until(deadline: Instant) {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining > YIELD_MARGIN {
        std::thread::sleep(remaining - YIELD_MARGIN);
    }
    while Instant::now() < deadline {
        std::thread::yield_now();
    }
}

/// Writes one chunk per step to each of `sockets` until `steps` have passed,
/// timing each write after the warm-up steps and counting the failed ones.
fn write_steps(
    mut sockets: Vec<TcpStream>,
    epoch: Instant,
    settings: Settings,
    steps: u64,
) -> WriterResult {
    let cpu_before = cpu_time(CpuScope::Thread);
    let warmup_steps = (settings.warmup.as_secs_f64() / settings.step.as_secs_f64()) as u64;
    let mut lateness = Vec::with_capacity(sockets.len() * steps as usize);
    let mut failed_writes = 0;
    let mut chunk = [b'x'; CHUNK_BYTES];
    for step in 1..=steps {
        let due = settings.step * step as u32;
        chunk[..8].copy_from_slice(&(due.as_nanos() as u64).to_le_bytes());
        let deadline = epoch + due;
        wait_until(deadline);
        for socket in &mut sockets {
            if socket.write_all(&chunk).is_err() {
                failed_writes += 1;
            } else if step > warmup_steps {
                lateness.push(deadline.elapsed().as_nanos() as u64);
            }
        }
    }
    WriterResult {
        lateness,
        failed_writes,
        cpu: cpu_time(CpuScope::Thread) - cpu_before,
    }
}

/// Reads chunks until end of file and returns how late each one arrived
/// after its scheduled instant, leaving out the warm-up.
async fn read_chunks(
    mut stream: tokio::net::TcpStream,
    epoch: Instant,
    warmup: Duration,
) -> Vec<u64> {
    let mut lateness = Vec::new();
    let mut chunk = [0u8; CHUNK_BYTES];
    while stream.read_exact(&mut chunk).await.is_ok() {
        let arrived = Instant::now();
        let mut due = [0u8; 8];
        due.copy_from_slice(&chunk[..8]);
        let due = Duration::from_nanos(u64::from_le_bytes(due));
        if due > warmup {
            lateness.push(arrived.saturating_duration_since(epoch + due).as_nanos() as u64);
        }
    }
    lateness
}

/// Runs one measurement with `writers` writer threads.
fn run(settings: Settings, writers: usize) -> Result<RunSamples, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|error| format!("bind: {error}"))?;
    let address = listener
        .local_addr()
        .map_err(|error| format!("local address: {error}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("tokio runtime: {error}"))?;
    let steps = (settings.duration.as_secs_f64() / settings.step.as_secs_f64()) as u64;
    let warmup = settings.warmup;

    // Clients connect one at a time, each accepted before the next, so at
    // most one connection waits in the listen backlog.
    let mut streams = Vec::with_capacity(settings.clients);
    let mut sockets = Vec::with_capacity(settings.clients);
    for client in 0..settings.clients {
        let stream = runtime
            .block_on(tokio::net::TcpStream::connect(address))
            .map_err(|error| format!("client {client}: connect: {error}"))?;
        let (socket, _) = listener
            .accept()
            .map_err(|error| format!("client {client}: accept: {error}"))?;
        for nodelay in [stream.set_nodelay(true), socket.set_nodelay(true)] {
            nodelay.map_err(|error| format!("client {client}: TCP_NODELAY: {error}"))?;
        }
        streams.push(stream);
        sockets.push(socket);
    }

    // The epoch lies 100 ms ahead, so readers and writers have started before the first step.
    let epoch = Instant::now() + Duration::from_millis(100);
    let readers: Vec<_> = streams
        .into_iter()
        .map(|stream| runtime.spawn(read_chunks(stream, epoch, warmup)))
        .collect();
    let process_before = cpu_time(CpuScope::Process);
    let per_writer = settings.clients.div_ceil(writers);
    let mut handles = Vec::new();
    while !sockets.is_empty() {
        let share: Vec<TcpStream> = sockets.drain(..per_writer.min(sockets.len())).collect();
        handles.push(std::thread::spawn(move || {
            write_steps(share, epoch, settings, steps)
        }));
    }

    let mut written = Vec::new();
    let mut failed_writes = 0;
    let mut writer_cpu = Duration::ZERO;
    for handle in handles {
        let result = handle
            .join()
            .map_err(|_| "a writer thread panicked".to_string())?;
        written.extend(result.lateness);
        failed_writes += result.failed_writes;
        writer_cpu += result.cpu;
    }
    let wall = epoch.elapsed();
    let process_cpu = cpu_time(CpuScope::Process) - process_before;

    // The writers dropped their sockets, so every reader sees end of file.
    let mut arrived = Vec::new();
    for reader in readers {
        let lateness = runtime
            .block_on(reader)
            .map_err(|error| format!("reader task failed: {error}"))?;
        arrived.extend(lateness);
    }
    Ok(RunSamples {
        written,
        arrived,
        failed_writes,
        writer_cpu,
        process_cpu,
        wall,
    })
}

/// Returns the `q` quantile of sorted nanosecond samples in milliseconds, or NaN when empty.
fn quantile_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index] as f64 / 1e6
}

/// Formats one table row: writer threads, what was timed, then the sample count and quantiles.
fn row(writers: usize, label: &str, samples: &mut [u64]) -> String {
    samples.sort_unstable();
    format!(
        "| {writers} | {label} | {} | {:.3} | {:.3} | {:.3} |",
        samples.len(),
        quantile_ms(samples, 0.5),
        quantile_ms(samples, 0.99),
        quantile_ms(samples, 1.0),
    )
}

fn main() {
    let settings = match parse_settings() {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "{} clients, one {}-byte chunk each every {:.1} ms for {:.1} s ({:.1} s warm-up not measured)",
        settings.clients,
        CHUNK_BYTES,
        settings.step.as_secs_f64() * 1000.0,
        settings.duration.as_secs_f64(),
        settings.warmup.as_secs_f64(),
    );
    println!();
    println!(
        "| Writers | Lateness after the step's instant | Chunks | p50 (ms) | p99 (ms) | max (ms) |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    let mut cpu_lines = Vec::new();
    for writers in [1, cores.max(2)] {
        let mut samples = match run(settings, writers) {
            Ok(samples) => samples,
            Err(message) => {
                eprintln!("write_floor with {writers} writers: {message}");
                std::process::exit(1);
            }
        };
        println!("{}", row(writers, "write returned", &mut samples.written));
        println!(
            "{}",
            row(writers, "chunk read by its client", &mut samples.arrived)
        );
        let wall = samples.wall.as_secs_f64();
        cpu_lines.push(format!(
            "{writers} writer thread(s): writers used {:.1}% of one core, the whole process \
             (writers and readers) {:.1}%, over {wall:.1} s. Failed writes: {}.",
            100.0 * samples.writer_cpu.as_secs_f64() / wall,
            100.0 * samples.process_cpu.as_secs_f64() / wall,
            samples.failed_writes,
        ));
    }
    println!();
    for line in cpu_lines {
        println!("{line}");
        println!();
    }
}
