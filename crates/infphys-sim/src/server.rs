//! Starting the simulated server: in-process router, async serve, or a background thread.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::config::{SimConfig, SimError};
use crate::connections::{ConnectionLimits, serve_connections};
use crate::driver;
use crate::engine::Engine;
use crate::fd_limit::warn_if_fd_limit_low;
use crate::http::{self, AppState};
use crate::metrics::LatencyMetrics;
use crate::replicas::Replicas;

/// Builds the HTTP routes and starts one engine thread per replica.
///
/// The engine threads stop once the router and every clone of it are
/// dropped and the last request in flight has ended.
/// Use this to serve the simulator in-process, for example with
/// `axum::serve` on a `TcpListener` bound to 127.0.0.1:0. Set `TCP_NODELAY`
/// on the accepted connections, as [`serve`] and [`spawn`] do, or streamed
/// tokens can wait for the client's delayed ACK and arrive in bursts. The
/// router applies [`SimConfig::max_body_bytes`], but the connection cap and
/// timeouts apply only under [`serve`] and [`spawn`].
///
/// The handlers must run on a tokio runtime.
///
/// # Panics
///
/// Panics when [`SimConfig::validate`] fails or an engine thread cannot be
/// started; [`serve`] and [`spawn`] return these errors instead.
pub fn router(config: &SimConfig) -> axum::Router {
    if let Err(error) = config.validate() {
        panic!("{error}");
    }
    match start_engines(config) {
        Ok(state) => http::routes(state),
        Err(error) => panic!("{error}"),
    }
}

/// Starts one engine thread per replica and returns the handlers' state.
fn start_engines(config: &SimConfig) -> Result<Arc<AppState>, SimError> {
    let clock = driver::Clock::new(config.time_scale);
    let latency = Arc::new(Mutex::new(LatencyMetrics::default()));
    let mut engines = Vec::with_capacity(config.replicas);
    for index in 0..config.replicas {
        let seed = config.seed.wrapping_add(index as u64);
        let engine =
            Engine::new(config.physics.clone(), seed, config.max_queue).with_stall(config.stall);
        let handle =
            driver::start(engine, clock, Arc::clone(&latency), index).map_err(|source| {
                SimError::Io {
                    action: "start an engine thread",
                    source,
                }
            })?;
        engines.push(handle);
    }
    let state = AppState {
        config: config.clone(),
        replicas: Replicas::new(engines, config.routing, clock, latency),
        next_id: AtomicU64::new(0),
        emit_lateness: Arc::default(),
    };
    Ok(Arc::new(state))
}

/// Serves the simulator on `listener` until `shutdown` completes.
///
/// Shutdown is graceful: the server stops accepting connections, closes idle
/// ones and waits for in-flight requests to finish. The connection limits of
/// [`SimConfig`] apply, and a warning is logged when the process's open-file
/// limit is too low for [`SimConfig::max_connections`]. While serving, it logs the load once a
/// minute of wall time at the info level, for an instructor watching a class.
pub async fn serve(
    config: SimConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SimError> {
    config.validate()?;
    let state = start_engines(&config)?;
    let app = http::routes(Arc::clone(&state));
    if let Ok(addr) = listener.local_addr() {
        log_start(&config, addr);
    }
    let load_logger = tokio::spawn(log_load(state, LOAD_LOG_INTERVAL));
    serve_connections(
        listener,
        app,
        ConnectionLimits::from_config(&config),
        shutdown,
    )
    .await;
    // The logger keeps a reference to the engines, so it must stop for their threads to end.
    load_logger.abort();
    tracing::info!("simulated inference server stopped");
    Ok(())
}

/// Wall time between two load log lines of [`serve`].
const LOAD_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Load of the server over one log interval.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LoadReport {
    running: usize,
    waiting: usize,
    kv_usage: f64,
    /// Requests that finished generating since the previous report.
    completed: u64,
}

/// Returns the current load and the completion counter it was computed from.
fn load_report(state: &AppState, previous_completed: u64) -> (LoadReport, u64) {
    let stats = state.replicas.stats();
    let completed_total = state.replicas.latency().completed_total;
    let report = LoadReport {
        running: stats.running,
        waiting: stats.waiting,
        kv_usage: stats.kv_usage,
        completed: completed_total.saturating_sub(previous_completed),
    };
    (report, completed_total)
}

/// Logs one line of load every `interval` until the task is aborted.
async fn log_load(state: Arc<AppState>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once; skip it so each line covers a whole interval.
    ticks.tick().await;
    let mut previous_completed = 0;
    loop {
        ticks.tick().await;
        let (report, completed_total) = load_report(&state, previous_completed);
        previous_completed = completed_total;
        tracing::info!(
            running = report.running,
            waiting = report.waiting,
            kv_cache_usage = format_args!("{:.2}", report.kv_usage),
            completed_last_interval = report.completed,
            interval_s = interval.as_secs(),
            "simulated server load"
        );
    }
}

/// Binds `config.host:config.port` and runs the server on a thread of its
/// own with its own tokio runtime, next to its engine threads.
///
/// This works from synchronous code and from inside another runtime, such
/// as a `#[tokio::test]`. It returns once the socket is bound and the server
/// is accepting connections.
pub fn spawn(config: SimConfig) -> Result<SimHandle, SimError> {
    config.validate()?;
    let requested = SocketAddr::new(config.host, config.port);
    let listener = StdTcpListener::bind(requested).map_err(|source| SimError::Bind {
        addr: requested,
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind {
        addr: requested,
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| SimError::Io {
            action: "make the listening socket non-blocking",
            source,
        })?;

    let (ready_sender, ready) = std::sync::mpsc::sync_channel::<Result<(), SimError>>(1);
    let (shutdown_sender, shutdown) = oneshot::channel::<()>();
    let thread_config = config.clone();
    let thread = std::thread::Builder::new()
        .name(format!("infphys-sim-{}", addr.port()))
        .spawn(move || run_server_thread(thread_config, listener, ready_sender, shutdown))
        .map_err(|source| SimError::Io {
            action: "start the server thread",
            source,
        })?;

    let started = ready.recv().unwrap_or_else(|_| {
        Err(SimError::Io {
            action: "start the server thread",
            source: std::io::Error::other("the server thread exited before it was ready"),
        })
    });
    if let Err(error) = started {
        let _ = thread.join();
        return Err(error);
    }

    let connect_host = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(SimHandle {
        addr,
        base_url: format!("http://{}", SocketAddr::new(connect_host, addr.port())),
        config,
        shutdown: Some(shutdown_sender),
        thread: Some(thread),
    })
}

/// Body of the server thread: builds the runtime, serves until shutdown,
/// then drops the runtime here, outside any async context.
fn run_server_thread(
    config: SimConfig,
    listener: StdTcpListener,
    ready: std::sync::mpsc::SyncSender<Result<(), SimError>>,
    shutdown: oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("infphys-sim-worker")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(source) => {
            let _ = ready.send(Err(SimError::Io {
                action: "start the tokio runtime",
                source,
            }));
            return;
        }
    };

    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(source) => {
                let _ = ready.send(Err(SimError::Io {
                    action: "register the listening socket with tokio",
                    source,
                }));
                return;
            }
        };
        let addr = listener.local_addr().ok();
        let state = match start_engines(&config) {
            Ok(state) => state,
            Err(error) => {
                let _ = ready.send(Err(error));
                return;
            }
        };
        let app = http::routes(state);
        if let Some(addr) = addr {
            log_start(&config, addr);
        }
        let _ = ready.send(Ok(()));

        // Stop immediately on shutdown: dropping the runtime below cancels in-flight requests.
        let limits = ConnectionLimits::from_config(&config);
        tokio::select! {
            () = serve_connections(listener, app, limits, std::future::pending()) => {}
            _ = shutdown => {}
        }
    });
    drop(runtime);
    tracing::info!("simulated inference server stopped");
}

/// Logs the start, with warnings for a non-loopback address and a low open-file limit.
fn log_start(config: &SimConfig, addr: SocketAddr) {
    if let Some(warning) = exposure_warning(addr) {
        tracing::warn!("{warning}");
    }
    warn_if_fd_limit_low(config.max_connections);
    tracing::info!(
        %addr,
        preset = config.preset.name(),
        time_scale = config.time_scale,
        seed = config.seed,
        model = %config.model,
        max_connections = config.max_connections,
        max_body_bytes = config.max_body_bytes,
        idle_timeout_s = config.idle_timeout.as_secs_f64(),
        "simulated inference server listening"
    );
}

/// Returns a warning when `addr` accepts connections from other machines.
pub(crate) fn exposure_warning(addr: SocketAddr) -> Option<String> {
    if addr.ip().is_loopback() {
        return None;
    }
    Some(format!(
        "the simulator listens on {addr}, which other machines can reach; \
         bind 127.0.0.1 (--host 127.0.0.1, the default) to keep it local"
    ))
}

/// Running server started by [`spawn`]; dropping it stops the server.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    base_url: String,
    config: SimConfig,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// Returns the base URL without a trailing slash, such as `http://127.0.0.1:40123`.
    ///
    /// An unspecified bind address (0.0.0.0 or ::) is replaced by loopback.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Returns the bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the configuration the server runs with.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Stops the server and waits for its thread to end. In-flight requests
    /// are cut off. The engine threads end on their own once the handlers
    /// are gone, without being joined.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(addr = %self.addr, "simulated inference server thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preset::Preset;

    #[tokio::test]
    async fn load_report_counts_completions_per_interval() {
        let config = SimConfig {
            time_scale: 100.0,
            ..SimConfig::new(Preset::Classroom)
        };
        let state = start_engines(&config).unwrap();
        let (report, completed_total) = load_report(&state, 0);
        assert_eq!(
            report,
            LoadReport {
                running: 0,
                waiting: 0,
                kv_usage: 0.0,
                completed: 0
            }
        );
        assert_eq!(completed_total, 0);

        state.replicas.latency.lock().unwrap().completed_total = 7;
        let (report, completed_total) = load_report(&state, 0);
        assert_eq!(report.completed, 7);
        let (report, _) = load_report(&state, completed_total);
        assert_eq!(
            report.completed, 0,
            "nothing finished since the last report"
        );
    }

    #[test]
    fn exposure_warning_only_off_loopback() {
        let loopback: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        let loopback_v6: SocketAddr = "[::1]:8000".parse().unwrap();
        assert_eq!(exposure_warning(loopback), None);
        assert_eq!(exposure_warning(loopback_v6), None);

        let any: SocketAddr = "0.0.0.0:8000".parse().unwrap();
        let warning = exposure_warning(any).unwrap();
        assert!(warning.contains("0.0.0.0:8000"), "{warning}");
        assert!(warning.contains("--host 127.0.0.1"), "{warning}");
    }

    #[tokio::test]
    async fn load_logger_runs_until_aborted() {
        let config = SimConfig::new(Preset::Classroom);
        let state = start_engines(&config).unwrap();
        let logger = tokio::spawn(log_load(state, Duration::from_millis(5)));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!logger.is_finished());
        logger.abort();
        assert!(logger.await.unwrap_err().is_cancelled());
    }
}
