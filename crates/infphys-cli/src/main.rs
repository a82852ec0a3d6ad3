//! The `infphys` command: runs the inference-physics lab, or one of its sections, against an
//! OpenAI-compatible server or the built-in simulator, and serves the simulator.
//!
//! This file only parses arguments, calls the library and maps errors to exit codes.

mod args;
mod commands;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();

    // Wide tables print whole; set before any thread starts, so no other thread reads the
    // environment while it changes.
    // SAFETY: the process is still single-threaded here.
    unsafe {
        std::env::set_var("POLARS_FMT_MAX_COLS", "-1");
        std::env::set_var("POLARS_FMT_MAX_ROWS", "40");
        std::env::set_var("POLARS_FMT_STR_LEN", "48");
        std::env::set_var("POLARS_TABLE_WIDTH", "220");
        std::env::set_var("POLARS_FMT_TABLE_ROUNDED_CORNERS", "1");
    }
    init_tracing(&cli);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let journal = cli
        .command
        .output_folder()
        .map(|out| out.join(commands::JOURNAL_FILE));
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = commands::run(cli) => Some(result),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    match outcome {
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
        None => {
            eprintln!("\ninterrupted");
            if let Some(journal) = journal.filter(|path| path.exists()) {
                eprintln!(
                    "every request finished so far is in {} (one JSON object per line; \
                     infphys::journal::read_journal loads it as a DataFrame)",
                    journal.display()
                );
            }
            ExitCode::from(130)
        }
    }
}

fn init_tracing(cli: &args::Cli) {
    let default = if matches!(cli.command, args::Command::Sim(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour codes only where a terminal shows them, never in a redirected log.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .init();
}
