//! Server configuration and the crate's error type.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::faults::Faults;
use crate::preset::{Physics, Preset, preset_names};

/// Errors from configuring, binding or running the simulated server.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listening socket could not be bound.
    #[error("failed to bind {addr}: {source}; choose a free port, or port 0 for any free port")]
    Bind {
        /// Address that could not be bound.
        addr: SocketAddr,
        /// Error from the operating system.
        #[source]
        source: std::io::Error,
    },
    /// A configuration value is out of range; the message names the value and the valid range.
    #[error("invalid simulator configuration: {0}")]
    InvalidConfig(String),
    /// The preset name is not one of the known presets.
    #[error("unknown preset `{name}`: expected one of {}", preset_names())]
    UnknownPreset {
        /// Name as given.
        name: String,
    },
    /// An I/O operation of the server failed, such as starting its runtime or thread.
    #[error("failed to {action}: {source}")]
    Io {
        /// Action that failed, such as "start the server thread".
        action: &'static str,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Periodic pause of the whole engine, such as a garbage-collection pause
/// or a job that preempts the GPU.
///
/// In virtual time, the engine stops at `every`, `2 * every`, ... for
/// `length` each time. A step that would start inside a pause starts when
/// the pause ends, and a step that is running when a pause begins ends
/// `length` later. Requests keep arriving and queue during a pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// Virtual time from the start of one pause to the start of the next; greater than `length`.
    pub every: Duration,
    /// Virtual duration of each pause; greater than 0.
    pub length: Duration,
}

/// Maximum number of replicas; each runs its own engine thread.
const MAX_REPLICAS: usize = 256;

/// Policy by which a server with several replicas picks the engine for each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Routing {
    /// Cycles through the replicas in order.
    #[default]
    RoundRobin,
    /// Picks the replica with the fewest requests in flight, the lowest index on a tie.
    LeastLoaded,
}

/// Configuration of one simulated server.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Preset the physics came from; informational once `physics` is set.
    pub preset: Preset,
    /// Constants of the latency model; starts as `preset.physics()` and may be edited.
    pub physics: Physics,
    /// Speed of the virtual clock relative to the wall clock: wall time is
    /// virtual time divided by `time_scale`, so 100 runs a 3 s request in
    /// 30 ms. Must be finite and greater than 0.
    pub time_scale: f64,
    /// Seed of the step-time jitter and the completion lengths.
    pub seed: u64,
    /// Address to listen on; 127.0.0.1 by default.
    pub host: IpAddr,
    /// Port to listen on; 0 picks a free port.
    pub port: u16,
    /// Model name reported by `/v1/models` and in responses.
    pub model: String,
    /// Maximum number of waiting requests before new ones get HTTP 503;
    /// `None` queues without bound, as vLLM does.
    pub max_queue: Option<usize>,
    /// Faults injected into requests; none by default.
    pub faults: Faults,
    /// Periodic pause of the whole engine; `None` by default. With several
    /// replicas every engine pauses at the same virtual times.
    pub stall: Option<Stall>,
    /// Number of engines, each one simulated GPU, behind the server; 1 by default.
    /// Replica `i` seeds its jitter and lengths with `seed + i`.
    pub replicas: usize,
    /// Policy that spreads requests over the replicas.
    pub routing: Routing,
    /// Maximum size of a request body in bytes; larger bodies get HTTP 413. 2 MiB by default.
    pub max_body_bytes: usize,
    /// Maximum number of open client connections; further connections get HTTP 503 and are
    /// closed. 16,384 by default. Each connection uses one file descriptor, so the process's
    /// open-file limit (`ulimit -n`) must be higher.
    pub max_connections: usize,
    /// Wall time a client may take to send a request's headers once their first byte has
    /// arrived; 10 s by default. It stops slow clients that trickle headers to hold a connection.
    pub header_read_timeout: Duration,
    /// Wall time a connection may stay open without sending the first byte of a request, both
    /// after connecting and between keep-alive requests; 5 minutes by default.
    pub idle_timeout: Duration,
    /// Wall time a client may take to send a request's body once its headers have arrived;
    /// 10 s by default. A body still incomplete then gets HTTP 408 and the connection closes,
    /// so a client that trickles its body cannot hold a connection and its buffer.
    pub body_read_timeout: Duration,
    /// Wall time a write to a client may stay blocked because the client does not read; 30 s
    /// by default. The connection is then closed and its request aborted, so a client that
    /// stops reading a stream frees its batch slot, its KV blocks and the buffered chunks.
    pub write_timeout: Duration,
}

/// Default of [`SimConfig::max_body_bytes`]: 2 MiB, the same as axum's default limit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Default of [`SimConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// Default of [`SimConfig::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Default of [`SimConfig::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Default of [`SimConfig::body_read_timeout`].
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Default of [`SimConfig::write_timeout`].
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

impl SimConfig {
    /// Creates a configuration with the preset's physics, time scale 1, seed 0,
    /// 127.0.0.1 on a free port, an unbounded queue, no faults, no stall, one replica, and the
    /// default connection limits.
    pub fn new(preset: Preset) -> Self {
        SimConfig {
            preset,
            physics: preset.physics(),
            time_scale: 1.0,
            seed: 0,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            model: "meta/llama-3.1-8b-instruct".to_string(),
            max_queue: None,
            faults: Faults::default(),
            stall: None,
            replicas: 1,
            routing: Routing::RoundRobin,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        }
    }

    /// Returns the configuration with `replicas` engines behind one server, routed by `routing`.
    pub fn with_replicas(mut self, replicas: usize, routing: Routing) -> Self {
        self.replicas = replicas;
        self.routing = routing;
        self
    }

    /// Returns the configuration with its engine pausing for `length` every `every` of virtual time.
    pub fn with_stall(mut self, every: Duration, length: Duration) -> Self {
        self.stall = Some(Stall { every, length });
        self
    }

    /// Returns the configuration with `faults` injected into its requests.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Checks that every value is in range; the error names the value and the fix.
    pub fn validate(&self) -> Result<(), SimError> {
        let invalid = |message: String| Err(SimError::InvalidConfig(message));
        let physics = &self.physics;

        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return invalid(format!(
                "time_scale is {}; set a finite number greater than 0 (1 runs in real time, 100 runs 100 times faster)",
                self.time_scale
            ));
        }
        if self.model.trim().is_empty() {
            return invalid(
                "model is empty; set a model name such as meta/llama-3.1-8b-instruct".into(),
            );
        }
        if self.max_queue == Some(0) {
            return invalid(
                "max_queue is 0, which would reject every request; set at least 1, or None for an unbounded queue"
                    .into(),
            );
        }
        self.faults.validate().map_err(SimError::InvalidConfig)?;
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            return invalid(format!(
                "replicas is {}; set from 1 to {MAX_REPLICAS}",
                self.replicas
            ));
        }
        if self.max_body_bytes == 0 {
            return invalid(
                "max_body_bytes is 0, which would reject every request body; set at least 1 (the default is 2 MiB)"
                    .into(),
            );
        }
        if self.max_connections == 0 {
            return invalid(
                "max_connections is 0, which would reject every connection; set at least 1".into(),
            );
        }
        for (name, value) in [
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("write_timeout", self.write_timeout),
        ] {
            if value.is_zero() {
                return invalid(format!(
                    "{name} is 0, which would close every connection at once; set a duration greater than 0"
                ));
            }
        }
        if let Some(stall) = self.stall
            && (stall.length.is_zero() || stall.length >= stall.every)
        {
            return invalid(format!(
                "stall is {:?} every {:?}; set a length greater than 0 and shorter than the period",
                stall.length, stall.every
            ));
        }
        for (name, value) in [
            ("max_num_seqs", physics.max_num_seqs),
            ("max_batched_tokens", physics.max_batched_tokens),
            ("kv_block_tokens", physics.kv_block_tokens),
        ] {
            if value == 0 {
                return invalid(format!("physics.{name} is 0; set at least 1"));
            }
        }
        if physics.max_model_len < 2 {
            return invalid(format!(
                "physics.max_model_len is {}; set at least 2 so a prompt and one output token fit",
                physics.max_model_len
            ));
        }
        let kv_tokens = physics.kv_blocks() * physics.kv_block_tokens;
        if kv_tokens < physics.max_model_len {
            return invalid(format!(
                "physics.kv_capacity_tokens is {} ({} whole blocks of {} tokens), less than max_model_len {}; \
                 raise kv_capacity_tokens or lower max_model_len so one full-length sequence fits",
                physics.kv_capacity_tokens,
                physics.kv_blocks(),
                physics.kv_block_tokens,
                physics.max_model_len
            ));
        }
        if !(physics.jitter_sigma.is_finite() && physics.jitter_sigma >= 0.0) {
            return invalid(format!(
                "physics.jitter_sigma is {}; set a finite number of at least 0 (0 disables jitter)",
                physics.jitter_sigma
            ));
        }
        if !(physics.output_len_median.is_finite() && physics.output_len_median >= 1.0) {
            return invalid(format!(
                "physics.output_len_median is {}; set a finite number of tokens of at least 1",
                physics.output_len_median
            ));
        }
        if !(physics.output_len_sigma.is_finite() && physics.output_len_sigma >= 0.0) {
            return invalid(format!(
                "physics.output_len_sigma is {}; set a finite number of at least 0",
                physics.output_len_sigma
            ));
        }
        Ok(())
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig::new(Preset::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        let config = SimConfig::default();
        assert_eq!(config.preset, Preset::Classroom);
        assert_eq!(config.time_scale, 1.0);
        assert_eq!(config.host, IpAddr::V4(Ipv4Addr::LOCALHOST));
        config.validate().unwrap();
        for preset in Preset::all() {
            SimConfig::new(*preset).validate().unwrap();
        }
    }

    #[test]
    fn validate_rejects_bad_time_scale() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let config = SimConfig {
                time_scale: bad,
                ..SimConfig::default()
            };
            let message = config.validate().unwrap_err().to_string();
            assert!(message.contains("time_scale"), "{message}");
        }
    }

    #[test]
    fn validate_rejects_bad_stall() {
        let second = Duration::from_secs(1);
        for (every, length) in [
            (second, Duration::ZERO),
            (second, second),
            (second, 2 * second),
        ] {
            let config = SimConfig::default().with_stall(every, length);
            let message = config.validate().unwrap_err().to_string();
            assert!(message.contains("stall"), "{message}");
        }
        SimConfig::default()
            .with_stall(10 * second, second)
            .validate()
            .unwrap();
    }

    #[test]
    fn validate_rejects_zero_connection_limits() {
        let cases = [
            (
                "max_body_bytes",
                SimConfig {
                    max_body_bytes: 0,
                    ..SimConfig::default()
                },
            ),
            (
                "max_connections",
                SimConfig {
                    max_connections: 0,
                    ..SimConfig::default()
                },
            ),
            (
                "header_read_timeout",
                SimConfig {
                    header_read_timeout: Duration::ZERO,
                    ..SimConfig::default()
                },
            ),
            (
                "idle_timeout",
                SimConfig {
                    idle_timeout: Duration::ZERO,
                    ..SimConfig::default()
                },
            ),
            (
                "body_read_timeout",
                SimConfig {
                    body_read_timeout: Duration::ZERO,
                    ..SimConfig::default()
                },
            ),
            (
                "write_timeout",
                SimConfig {
                    write_timeout: Duration::ZERO,
                    ..SimConfig::default()
                },
            ),
        ];
        for (name, config) in cases {
            let message = config.validate().unwrap_err().to_string();
            assert!(message.contains(name), "{message}");
        }
    }

    #[test]
    fn validate_rejects_small_kv_cache() {
        let mut config = SimConfig::default();
        config.physics.kv_capacity_tokens = 100;
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("kv_capacity_tokens is 100"), "{message}");
    }

    #[test]
    fn validate_rejects_zero_queue_and_seqs() {
        let mut config = SimConfig {
            max_queue: Some(0),
            ..SimConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("max_queue")
        );
        config.max_queue = None;
        config.physics.max_num_seqs = 0;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("max_num_seqs")
        );
    }
}
