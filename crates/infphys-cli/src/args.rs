//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Measure the physics of LLM inference: latency, throughput, the p95 cliff and overload.
///
/// The target comes from NIM_BASE_URL (default http://localhost:8000), NIM_CHAT_PATH (default
/// /v1/chat/completions) and NIM_GEN_MODEL, with a bearer key from NIM_API_KEY or OPENAI_API_KEY.
/// With NIM_BASE_URL=sim, or unset with nothing responding at the default address, the built-in
/// simulator is started.
#[derive(Debug, Parser)]
#[command(name = "infphys", version)]
pub struct Cli {
    #[command(flatten)]
    pub target: TargetArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Options that choose and shape the target.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Server base URL, or `sim` for the built-in simulator; overrides NIM_BASE_URL.
    #[arg(long, global = true)]
    pub base_url: Option<String>,

    /// Model name sent with each request, or for `sim` the model it serves; overrides
    /// NIM_GEN_MODEL.
    #[arg(long, global = true)]
    pub model: Option<String>,

    /// Simulator preset: classroom, h100 or a100. It applies to `sim` and to the built-in
    /// simulator that other commands start when no server is set.
    #[arg(long, global = true, env = "INFPHYS_SIM_PRESET", value_parser = parse_preset)]
    pub preset: Option<String>,

    /// How many times faster than real time the built-in simulator runs; timeouts and reported
    /// durations stay in simulated (server) time.
    #[arg(long, global = true, env = "INFPHYS_TIME_SCALE", value_parser = parse_time_scale, allow_negative_numbers = true)]
    pub time_scale: Option<f64>,

    /// Attempts per request, the first included; above 1, failed requests that may succeed later
    /// (connection errors, timeouts, 429, 5xx) are retried with exponential backoff and jitter,
    /// honouring Retry-After. Every attempt is its own row.
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub attempts: u32,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the built-in simulator over HTTP.
    Sim(SimArgs),
    /// Send one short request to check that the target responds.
    Preflight,
    /// Sequential requests: the single-request latency distribution.
    Baseline(BaselineArgs),
    /// Closed-loop load at several concurrency levels.
    Sweep(SweepArgs),
    /// p50 and p95 latency over prompt sizes and max_tokens.
    Tokens(TokensArgs),
    /// The sweep with a short timeout and high concurrency: queueing, then failures.
    Overload(SweepArgs),
    /// All four sections with the lab's parameters, their CSV files, the per-request rows as
    /// Parquet, and an HTML report.
    Lab(LabArgs),
    /// A closed-loop sweep with streamed responses: time to first token and inter-token latency
    /// per level, with `stream.html`.
    Stream(StreamArgs),
    /// An open loop at several arrival rates: latency counted from each request's scheduled
    /// send time, with `rate.html`.
    Rate(RateArgs),
}

impl Command {
    /// Returns the output folder of a measuring command.
    pub fn output_folder(&self) -> Option<&std::path::Path> {
        match self {
            Command::Sim(_) | Command::Preflight => None,
            Command::Baseline(args) => Some(&args.output.out),
            Command::Sweep(args) | Command::Overload(args) => Some(&args.output.out),
            Command::Tokens(args) => Some(&args.output.out),
            Command::Lab(args) => Some(&args.output.out),
            Command::Stream(args) => Some(&args.output.out),
            Command::Rate(args) => Some(&args.output.out),
        }
    }
}

/// Options of `infphys sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to bind; anything other than 127.0.0.1 exposes the simulator to the network.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,

    /// Port to bind; 0 picks a free one.
    #[arg(long, default_value_t = 8000)]
    pub port: u16,

    /// Seed for jitter and output lengths.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Maximum waiting requests of each replica before new ones get 503. Unset means unbounded,
    /// as in vLLM.
    #[arg(long, value_parser = parse_count::<usize>, allow_negative_numbers = true)]
    pub max_queue: Option<usize>,

    /// Engines behind one server, each a copy of the preset's GPU; adding one moves the knee.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub replicas: u64,

    /// Policy that spreads requests over replicas.
    #[arg(long, value_enum, default_value_t = RoutingArg::RoundRobin)]
    pub routing: RoutingArg,

    /// Fraction of requests, 0 to 1, that get an error status instead of a completion.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction, allow_negative_numbers = true)]
    pub error_rate: f64,

    /// Statuses the injected errors pick from, comma-separated; 429 carries Retry-After.
    #[arg(long, value_delimiter = ',', default_value = "429,500,503")]
    pub error_statuses: Vec<u16>,

    /// Every this much simulated time, the whole engine pauses (a stop-the-world stall, to show
    /// coordinated omission); needs --stall-length.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true, requires = "stall_length")]
    pub stall_every: Option<Duration>,

    /// Length of each engine pause; needs --stall-every.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true, requires = "stall_every")]
    pub stall_length: Option<Duration>,

    /// Maximum open client connections; further ones get HTTP 503. Each uses one file
    /// descriptor, so the open-file limit (`ulimit -n`) must be higher.
    #[arg(long, default_value_t = infphys_sim::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,

    /// Maximum request body size in bytes; larger bodies get HTTP 413.
    #[arg(long, default_value_t = infphys_sim::DEFAULT_MAX_BODY_BYTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_body_bytes: usize,

    /// Wall time a connection may stay open without starting a request, such as 300s or 5m.
    #[arg(long, default_value = "5m", value_parser = parse_duration, allow_hyphen_values = true)]
    pub idle_timeout: Duration,

    /// Wall time a client may take to send a request body after its headers; a body still
    /// incomplete then gets HTTP 408.
    #[arg(long, default_value = "10s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub body_read_timeout: Duration,

    /// Wall time a write may stay blocked by a client that does not read; the connection is
    /// then closed and its request aborted.
    #[arg(long, default_value = "30s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub write_timeout: Duration,
}

/// Policy by which the simulator spreads requests over replicas.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RoutingArg {
    /// Each replica in turn.
    RoundRobin,
    /// The replica with the fewest requests in flight.
    LeastLoaded,
}

/// Options shared by the measuring subcommands.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Folder for CSV, Parquet and HTML output; created when missing.
    #[arg(long, default_value = "lab-report")]
    pub out: PathBuf,
}

/// Options of `infphys baseline`.
#[derive(Debug, Args)]
pub struct BaselineArgs {
    /// Sequential requests to send.
    #[arg(long, default_value_t = 12, value_parser = parse_count::<u64>, allow_negative_numbers = true)]
    pub requests: u64,

    /// max_tokens of each request.
    #[arg(long, default_value_t = 96, value_parser = parse_count::<u32>, allow_negative_numbers = true)]
    pub max_tokens: u32,

    /// Sampling temperature.
    #[arg(long, default_value_t = 0.2)]
    pub temperature: f64,

    /// Timeout per request, such as 60s, 500ms or 2m.
    #[arg(long, default_value = "60s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub timeout: Duration,

    #[command(flatten)]
    pub output: OutputArgs,
}

/// Options of `infphys sweep` and `infphys overload`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Concurrency levels, comma-separated; the defaults are the sweep's 1,2,4,8,16 (overload:
    /// 4,8,16,32).
    #[arg(long, value_delimiter = ',', value_parser = parse_level)]
    pub concurrency: Option<Vec<usize>>,

    /// Requests per level; default 80 (overload: 60).
    #[arg(long, value_parser = parse_count::<u64>, allow_negative_numbers = true)]
    pub requests: Option<u64>,

    /// Timeout per request, such as 60s or 5s; default 60s (overload: 5s).
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub timeout: Option<Duration>,

    /// max_tokens of each request.
    #[arg(long, default_value_t = 96, value_parser = parse_count::<u32>, allow_negative_numbers = true)]
    pub max_tokens: u32,

    #[command(flatten)]
    pub output: OutputArgs,
}

/// Options of `infphys tokens`.
#[derive(Debug, Args)]
pub struct TokensArgs {
    /// Filler characters of the prompts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "200,800,2000")]
    pub prompt_sizes: Vec<usize>,

    /// max_tokens values, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "32,64,128,256", value_parser = parse_count::<u32>, allow_negative_numbers = true)]
    pub max_tokens: Vec<u32>,

    /// Sequential requests per cell.
    #[arg(long, default_value_t = 6, value_parser = parse_count::<u64>, allow_negative_numbers = true)]
    pub repeats: u64,

    /// Timeout per request.
    #[arg(long, default_value = "60s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub timeout: Duration,

    #[command(flatten)]
    pub output: OutputArgs,
}

/// Options of `infphys lab`.
#[derive(Debug, Args)]
pub struct LabArgs {
    /// Fewer requests and a smaller token grid, for a slow server such as llama.cpp on a CPU: 4
    /// baseline requests, 16 per sweep level, prompt sizes 200 and 2000 with max_tokens 32 and
    /// 128, and 32 per overload level.
    #[arg(long)]
    pub quick: bool,

    #[command(flatten)]
    pub output: OutputArgs,
}

/// Options of `infphys stream`.
#[derive(Debug, Args)]
pub struct StreamArgs {
    /// Concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16", value_parser = parse_level)]
    pub concurrency: Vec<usize>,

    /// Requests per level.
    #[arg(long, default_value_t = 40, value_parser = parse_count::<u64>, allow_negative_numbers = true)]
    pub requests: u64,

    /// max_tokens of each request.
    #[arg(long, default_value_t = 96, value_parser = parse_count::<u32>, allow_negative_numbers = true)]
    pub max_tokens: u32,

    /// Timeout per request.
    #[arg(long, default_value = "60s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub timeout: Duration,

    #[command(flatten)]
    pub slo: SloArgs,

    #[command(flatten)]
    pub output: OutputArgs,
}

/// Service-level objectives for the knee and goodput.
#[derive(Debug, Args)]
pub struct SloArgs {
    /// Objective on p95 end-to-end latency; the knee is the highest load that meets it.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub slo_p95: Option<Duration>,

    /// Objective on each request's time to first token, for goodput.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub slo_ttft: Option<Duration>,

    /// Objective on each request's time per output token, for goodput.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub slo_tpot: Option<Duration>,
}

/// Spacing of open-loop arrivals.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ArrivalsArg {
    /// Exponentially distributed gaps (a Poisson process), seeded.
    Poisson,
    /// Evenly spaced arrivals.
    Constant,
}

/// Options of `infphys rate`.
#[derive(Debug, Args)]
pub struct RateArgs {
    /// Offered rates in requests per second, comma-separated.
    #[arg(long, value_delimiter = ',', required = true, value_parser = parse_rate, allow_negative_numbers = true)]
    pub rates: Vec<f64>,

    /// Spacing of arrivals.
    #[arg(long, value_enum, default_value_t = ArrivalsArg::Poisson)]
    pub arrivals: ArrivalsArg,

    /// Seed of the Poisson schedule.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Most requests scheduled per rate.
    #[arg(long, default_value_t = 200, value_parser = parse_count::<u64>, allow_negative_numbers = true)]
    pub requests: u64,

    /// Maximum schedule length per rate, in server time.
    #[arg(long, default_value = "60s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub duration: Duration,

    /// Maximum requests in flight. A request due while the cap is full waits, and the wait
    /// counts as latency.
    #[arg(long, value_parser = parse_level)]
    pub max_in_flight: Option<usize>,

    /// Stream the responses, measuring time to first token.
    #[arg(long)]
    pub stream: bool,

    /// max_tokens of each request.
    #[arg(long, default_value_t = 96, value_parser = parse_count::<u32>, allow_negative_numbers = true)]
    pub max_tokens: u32,

    /// Timeout per request.
    #[arg(long, default_value = "60s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub timeout: Duration,

    #[command(flatten)]
    pub slo: SloArgs,

    #[command(flatten)]
    pub output: OutputArgs,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "invalid rate {text:?}: expected requests per second greater than 0, such as 0.5,1,2"
        )),
    }
}

/// Parses a count that must be at least 1, such as a number of requests or `max_tokens`.
pub fn parse_count<T: std::str::FromStr + PartialOrd + From<u8>>(text: &str) -> Result<T, String> {
    match text.trim().parse::<T>() {
        Ok(count) if count >= T::from(1) => Ok(count),
        _ => Err(format!(
            "invalid count {text:?}: expected a whole number of at least 1, such as 80"
        )),
    }
}

/// Parses a fraction from 0 to 1, such as `0.1`.
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(fraction) if (0.0..=1.0).contains(&fraction) => Ok(fraction),
        _ => Err(format!(
            "invalid fraction {text:?}: expected a number from 0 to 1, such as 0.1"
        )),
    }
}

/// Checks a simulator preset name and returns it unchanged.
pub fn parse_preset(text: &str) -> Result<String, String> {
    text.parse::<infphys_sim::Preset>()
        .map(|_| text.to_string())
        .map_err(|error| format!("{error} (set by --preset or INFPHYS_SIM_PRESET)"))
}

/// Parses a duration such as `60s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit_seconds) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number.trim().parse().map_err(|_| {
        format!(
            "invalid duration {text:?}: expected seconds or a number with a unit, such as 60, 60s, 500ms or 2m"
        )
    })?;
    let seconds = value * unit_seconds;
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!(
            "invalid duration {text:?}: expected a positive duration, such as 5s"
        ));
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

fn parse_level(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) | Err(_) => Err(format!(
            "invalid concurrency level {text:?}: expected a positive integer, such as 1,2,4,8,16"
        )),
        Ok(level) => Ok(level),
    }
}

fn parse_time_scale(text: &str) -> Result<f64, String> {
    infphys::target::parse_time_scale(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn durations_rejected() {
        for bad in ["0s", "0", "-1s", "NaN", "fast", ""] {
            let message = parse_duration(bad).unwrap_err();
            assert!(message.contains("invalid duration"), "{bad}: {message}");
        }
    }

    #[test]
    fn levels_rejected() {
        assert!(parse_level("0").unwrap_err().contains("positive integer"));
        assert!(parse_level("x").is_err());
        assert_eq!(parse_level(" 8"), Ok(8));
    }

    #[test]
    fn rates_rejected() {
        for bad in ["0", "-1", "inf", "x"] {
            assert!(
                parse_rate(bad).unwrap_err().contains("invalid rate"),
                "{bad}"
            );
        }
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        assert_eq!(parse_count::<u64>("80"), Ok(80));
        for bad in ["0", "-1", "1.5", "many"] {
            let message = parse_count::<u32>(bad).unwrap_err();
            assert!(message.contains(&format!("{bad:?}")), "{message}");
            assert!(message.contains("at least 1"), "{message}");
        }
    }

    #[test]
    fn sim_connection_flags() {
        use clap::Parser;

        let cli = Cli::try_parse_from([
            "infphys",
            "sim",
            "--max-connections",
            "5",
            "--max-body-bytes",
            "100",
            "--idle-timeout",
            "2m",
            "--body-read-timeout",
            "3s",
            "--write-timeout",
            "500ms",
        ])
        .unwrap();
        let Command::Sim(sim) = cli.command else {
            panic!("expected the sim subcommand");
        };
        assert_eq!(sim.max_connections, 5);
        assert_eq!(sim.max_body_bytes, 100);
        assert_eq!(sim.idle_timeout, Duration::from_secs(120));
        assert_eq!(sim.body_read_timeout, Duration::from_secs(3));
        assert_eq!(sim.write_timeout, Duration::from_millis(500));

        let Command::Sim(defaults) = Cli::try_parse_from(["infphys", "sim"]).unwrap().command
        else {
            panic!("expected the sim subcommand");
        };
        assert_eq!(
            defaults.max_connections,
            infphys_sim::DEFAULT_MAX_CONNECTIONS
        );
        assert_eq!(defaults.max_body_bytes, infphys_sim::DEFAULT_MAX_BODY_BYTES);
        assert_eq!(defaults.idle_timeout, infphys_sim::DEFAULT_IDLE_TIMEOUT);
        assert_eq!(
            defaults.body_read_timeout,
            infphys_sim::DEFAULT_BODY_READ_TIMEOUT
        );
        assert_eq!(defaults.write_timeout, infphys_sim::DEFAULT_WRITE_TIMEOUT);

        for zero in ["--max-connections", "--max-body-bytes"] {
            assert!(
                Cli::try_parse_from(["infphys", "sim", zero, "0"]).is_err(),
                "{zero} 0 is rejected"
            );
        }
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
