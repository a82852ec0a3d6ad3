//! Serves the simulator on 127.0.0.1 until interrupted, for benchmarks that
//! need it in a process of its own without building the `infphys` CLI.
//!
//! ```text
//! cargo run --release -p infphys-sim --example sim_server -- --preset h100 --time-scale 1
//! ```
//!
//! It binds a free port and prints `listening on http://127.0.0.1:PORT` on
//! stderr. SIGINT or SIGTERM stops it.

use infphys_sim::{Preset, SimConfig};
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "usage: sim_server [--preset classroom|h100|a100] [--time-scale X] [--port N]";

fn parse_config() -> Result<SimConfig, String> {
    let mut config = SimConfig::new(Preset::H100);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("missing value after {flag}. {USAGE}"))?;
        match flag.as_str() {
            "--preset" => {
                let preset: Preset = value
                    .parse()
                    .map_err(|error| format!("invalid --preset {value:?}: {error}"))?;
                let time_scale = config.time_scale;
                config = SimConfig::new(preset);
                config.time_scale = time_scale;
            }
            "--time-scale" => {
                config.time_scale = value
                    .parse()
                    .map_err(|_| format!("--time-scale must be a number, got {value:?}"))?;
            }
            "--port" => {
                config.port = value
                    .parse()
                    .map_err(|_| format!("--port must be a port number, got {value:?}"))?;
            }
            _ => return Err(format!("unknown option {flag}. {USAGE}")),
        }
    }
    config.host = std::net::Ipv4Addr::LOCALHOST.into();
    config.validate().map_err(|error| error.to_string())?;
    Ok(config)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let config = match parse_config() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind((config.host, config.port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("failed to bind {}:{}: {error}", config.host, config.port);
            std::process::exit(1);
        }
    };
    let addr = listener
        .local_addr()
        .expect("a bound socket has an address");
    eprintln!("listening on http://{addr}");

    let shutdown = async {
        let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    };
    if let Err(error) = infphys_sim::serve(config, listener, shutdown).await {
        eprintln!("simulator failed: {error}");
        std::process::exit(1);
    }
}
