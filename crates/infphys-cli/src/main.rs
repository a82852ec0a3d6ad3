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
    let stop = infphys::StopSignal::new();
    // The simulator handles Ctrl-C itself: it stops accepting and lets open requests finish.
    let serves = matches!(cli.command, args::Command::Sim(_));
    let outcome = runtime.block_on(async {
        let mut command = std::pin::pin!(commands::run(cli, stop.clone()));
        if serves {
            return Some(command.await);
        }
        tokio::select! {
            result = &mut command => return Some(result),
            _ = tokio::signal::ctrl_c() => {}
        }
        // The first Ctrl-C stops the measurement: the command keeps every finished request and
        // writes its tables and report, marked partial. A second one quits at once.
        stop.stop();
        eprintln!(
            "\nstopping: writing what was measured so far; press Ctrl-C again to quit at once"
        );
        tokio::select! {
            result = &mut command => Some(result),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    let interrupted = stop.is_stopped();
    let code = match outcome {
        Some(Ok(())) if !interrupted => return ExitCode::SUCCESS,
        Some(Ok(())) => {
            eprintln!(
                "interrupted: the tables and files written cover only what was measured, and \
                 the run that was cut short is marked partial"
            );
            ExitCode::from(130)
        }
        Some(Err(error)) => {
            eprintln!("error: {error:#}");
            if interrupted {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
        None => {
            eprintln!("\ninterrupted before the results were written");
            ExitCode::from(130)
        }
    };
    if let Some(journal) = journal.filter(|path| path.exists()) {
        eprintln!(
            "every request finished so far is in {} (one JSON object per line; \
             infphys::journal::read_journal loads it and marks the runs cut short as partial)",
            journal.display()
        );
    }
    code
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
