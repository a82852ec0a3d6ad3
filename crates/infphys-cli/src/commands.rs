//! The subcommands: each parses nothing, calls the library, and prints or writes its results.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use infphys::analysis::{self, Slo};
use infphys::calibration::Calibration;
use infphys::charts;
use infphys::files::{write_csv, write_parquet};
use infphys::open_loop::{Arrivals, OpenLoopSpec, rate_sweep};
use infphys::polars::prelude::DataFrame;
use infphys::report::Report;
use infphys::target::{BaseUrl, parse_base_url};
use infphys::{
    ChatRequest, Client, LabParams, LabResults, Progress, StopSignal, Sweep, TargetSpec,
};

use crate::args::{
    ArrivalsArg, BaselineArgs, Cli, Command, LabArgs, RateArgs, RoutingArg, SimArgs, SloArgs,
    StreamArgs, SweepArgs, TargetArgs, TokensArgs,
};

/// Runs the parsed command line. Measuring commands watch `stop`: once it is raised, the run in
/// progress returns what it measured, marked partial, and the command writes that.
pub async fn run(cli: Cli, stop: StopSignal) -> Result<()> {
    let client =
        || async { Ok::<_, anyhow::Error>(connect(&cli.target).await?.with_stop(stop.clone())) };
    match &cli.command {
        Command::Sim(args) => serve_simulator(&cli.target, args).await,
        Command::Preflight => preflight(&client().await?).await,
        Command::Baseline(args) => baseline(&client().await?, args).await,
        Command::Sweep(args) => sweep(&client().await?, args, Section::Sweep).await,
        Command::Overload(args) => sweep(&client().await?, args, Section::Overload).await,
        Command::Tokens(args) => tokens(&client().await?, args).await,
        Command::Lab(args) => lab(&client().await?, args).await,
        Command::Stream(args) => stream(&client().await?, args).await,
        Command::Rate(args) => rate(&client().await?, args).await,
    }
}

fn target_spec(args: &TargetArgs) -> Result<TargetSpec> {
    let mut spec =
        TargetSpec::from_env().context("failed to read the target from the environment")?;
    if let Some(url) = &args.base_url {
        spec.base_url = parse_base_url(url)?;
    }
    if let Some(model) = &args.model {
        spec.model.clone_from(model);
    }
    if let Some(preset) = &args.preset {
        spec.sim.preset.clone_from(preset);
    }
    if let Some(scale) = args.time_scale {
        spec.sim.time_scale = scale;
    }
    Ok(spec)
}

async fn connect(args: &TargetArgs) -> Result<Client> {
    let spec = target_spec(args)?;
    let target = infphys::resolve(&spec).await?;
    eprintln!("{}", target.describe());
    let policy = if args.attempts > 1 {
        infphys::retry::RetryPolicy::exponential(args.attempts)
    } else {
        infphys::retry::RetryPolicy::none()
    };
    Ok(Client::new(target)?.with_retry(policy))
}

async fn preflight(client: &Client) -> Result<()> {
    let report = infphys::preflight(client).await?;
    eprintln!("{report}");
    Ok(())
}

async fn serve_simulator(args: &TargetArgs, sim: &SimArgs) -> Result<()> {
    let spec = target_spec(args)?;
    if let BaseUrl::Url(url) = &spec.base_url {
        tracing::warn!(%url, "NIM_BASE_URL is ignored by `infphys sim`, which serves the simulator itself");
    }
    let preset: infphys_sim::Preset = spec
        .sim
        .preset
        .parse()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut config = infphys_sim::SimConfig::new(preset);
    config.time_scale = spec.sim.time_scale;
    config.seed = sim.seed;
    config.host = sim.host;
    config.port = sim.port;
    config.model = spec.model.clone();
    config.max_queue = sim.max_queue;
    config.max_connections = sim.max_connections;
    config.max_body_bytes = sim.max_body_bytes;
    config.idle_timeout = sim.idle_timeout;
    config.body_read_timeout = sim.body_read_timeout;
    config.write_timeout = sim.write_timeout;
    let routing = match sim.routing {
        RoutingArg::RoundRobin => infphys_sim::Routing::RoundRobin,
        RoutingArg::LeastLoaded => infphys_sim::Routing::LeastLoaded,
    };
    config = config
        .with_replicas(sim.replicas as usize, routing)
        .with_faults(infphys_sim::Faults {
            error_rate: sim.error_rate,
            error_statuses: sim.error_statuses.clone(),
            ..infphys_sim::Faults::default()
        });
    if let (Some(every), Some(length)) = (sim.stall_every, sim.stall_length) {
        config = config.with_stall(every, length);
    }
    config.validate()?;
    raise_open_file_limit(config.max_connections);

    let address = std::net::SocketAddr::new(sim.host, sim.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| {
            format!("failed to bind {address}; pick another port with --port, or 0 for a free one")
        })?;
    let bound = listener.local_addr()?;
    tracing::info!(
        %bound,
        preset = preset.name(),
        time_scale = config.time_scale,
        header_read_timeout = ?config.header_read_timeout,
        body_read_timeout = ?config.body_read_timeout,
        write_timeout = ?config.write_timeout,
        idle_timeout = ?config.idle_timeout,
        "simulator listening"
    );
    eprintln!(
        "Simulator ({preset}) serving on http://{bound}; use it with:\n  export NIM_BASE_URL=http://{bound}"
    );

    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    infphys_sim::serve(config, listener, shutdown).await?;
    tracing::info!("simulator stopped");
    Ok(())
}

/// Raises the soft open-file limit up to the hard limit, so `max_connections` connections
/// fit, and logs the change. `infphys_sim::serve` warns when the limit stays too low.
fn raise_open_file_limit(max_connections: usize) {
    let Ok(before) = infphys_sim::open_file_limit() else {
        return;
    };
    let requested = max_connections as u64 + infphys_sim::FD_MARGIN;
    match infphys_sim::raise_open_file_limit(requested) {
        Ok(after) if after.soft > before.soft => {
            tracing::info!(
                from = before.soft,
                to = after.soft,
                hard_limit = after.hard,
                "raised the soft open-file limit (RLIMIT_NOFILE) for up to {max_connections} connections"
            );
        }
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(%error, soft_limit = before.soft, "failed to raise the open-file limit");
        }
    }
}

/// Creates the output folder up front, so a run never measures for minutes and then fails to
/// save.
fn prepare_output(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| {
        format!(
            "failed to create the output folder {}; pass a writable one with --out",
            out.display()
        )
    })?;
    let probe = out.join(".infphys-write-check");
    std::fs::write(&probe, b"").with_context(|| {
        format!(
            "the output folder {} is not writable; pass a writable one with --out",
            out.display()
        )
    })?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Clones `client` so that it appends every finished request to `out/requests.jsonl` as it
/// arrives, so an interrupted run keeps its rows.
fn with_journal(client: &Client, out: &Path) -> Result<Client> {
    let journal = infphys::journal::Journal::create(out.join(JOURNAL_FILE))?;
    Ok(client.clone().with_journal(journal))
}

/// The journal's file name inside the output folder.
pub const JOURNAL_FILE: &str = "requests.jsonl";

fn save(out: &Path, name: &str, summary: &DataFrame, requests: &DataFrame) -> Result<()> {
    let csv = out.join(format!("{name}.csv"));
    write_csv(summary, &csv)?;
    let parquet = out.join(format!("{name}-requests.parquet"));
    write_parquet(requests, &parquet)?;
    eprintln!("wrote {} and {}", csv.display(), parquet.display());
    Ok(())
}

fn print_table(title: &str, df: &DataFrame) {
    println!("\n{title}\n{df}");
}

async fn baseline(client: &Client, args: &BaselineArgs) -> Result<()> {
    prepare_output(&args.output.out)?;
    let client = &with_journal(client, &args.output.out)?;
    preflight(client).await?;
    let request = ChatRequest::new(infphys::lab::BASE_PROMPT, args.max_tokens)
        .temperature(args.temperature)
        .timeout(args.timeout);

    let run = infphys::baseline(client, args.requests as usize, &request, Progress::Stderr).await?;
    let summary = run.latency_summary_frame()?;
    print_table("Baseline latency", &summary);
    save(
        &args.output.out,
        "baseline",
        &summary,
        &run.requests_frame()?,
    )
}

#[derive(Clone, Copy)]
enum Section {
    Sweep,
    Overload,
}

async fn sweep(client: &Client, args: &SweepArgs, section: Section) -> Result<()> {
    prepare_output(&args.output.out)?;
    let client = &with_journal(client, &args.output.out)?;
    preflight(client).await?;
    let lab = LabParams::default();
    let (name, levels, requests, timeout) = match section {
        Section::Sweep => (
            "sweep",
            lab.sweep_levels,
            lab.sweep_requests,
            lab.sweep_timeout,
        ),
        Section::Overload => (
            "overload",
            lab.overload_levels,
            lab.overload_requests,
            lab.overload_timeout,
        ),
    };
    let levels = args.concurrency.clone().unwrap_or(levels);
    let requests = args.requests.map_or(requests, |r| r as usize);
    let timeout = args.timeout.unwrap_or(timeout);
    let request = ChatRequest::new(infphys::lab::BASE_PROMPT, args.max_tokens)
        .temperature(lab.temperature)
        .timeout(timeout);

    let result = infphys::sweep(client, &levels, requests, &request, Progress::Stderr).await?;
    let summary = result.summary_frame()?;
    print_table(
        &format!("{name}: closed loop, timeout {}", seconds(timeout)),
        &summary,
    );
    save(&args.output.out, name, &summary, &result.requests_frame()?)
}

async fn tokens(client: &Client, args: &TokensArgs) -> Result<()> {
    prepare_output(&args.output.out)?;
    let client = &with_journal(client, &args.output.out)?;
    preflight(client).await?;
    let lab = LabParams::default();
    let template = lab.base_request(args.timeout);

    let budget = infphys::token_budget(
        client,
        &args.prompt_sizes,
        &args.max_tokens,
        args.repeats as usize,
        &template,
        Progress::Stderr,
    )
    .await?;
    let frame = budget.frame()?;
    print_table("Token budget: p50 and p95 latency", &frame);
    save(
        &args.output.out,
        "tokens",
        &frame,
        &budget.requests_frame()?,
    )
}

async fn lab(client: &Client, args: &LabArgs) -> Result<()> {
    let out = &args.output.out;
    prepare_output(out)?;
    let client = &with_journal(client, out)?;
    preflight(client).await?;
    let params = if args.quick {
        LabParams::quick()
    } else {
        LabParams::default()
    };

    // Each section's table is written as soon as it is measured, so a failure later in the lab
    // keeps the sections before it. After a stop, the interrupted section's table (marked
    // partial) and the report of what was measured are still written.
    let mut results = LabResults::default();
    let mut written = Vec::new();
    lab_sections(client, &params, out, &mut results, &mut written).await?;

    write_parquet(&results.requests_frame()?, &out.join("requests.parquet"))?;
    written.push("requests.parquet");
    let calibration = if client.is_stopped() {
        None
    } else {
        calibrate().await
    };
    let report = infphys::report::render_report(
        &results,
        &client.target().describe(),
        calibration.as_ref(),
    )?;
    let report_path = out.join("report.html");
    std::fs::write(&report_path, report)
        .with_context(|| format!("failed to write {}", report_path.display()))?;
    written.push("report.html");
    eprintln!("\nwrote {} to {}", written.join(", "), out.display());
    Ok(())
}

/// Measures the lab's sections in order into `results`, writing each table as it is measured
/// and naming it in `written`. Returns early once the client's stop signal is raised.
async fn lab_sections(
    client: &Client,
    params: &LabParams,
    out: &Path,
    results: &mut LabResults,
    written: &mut Vec<&'static str>,
) -> Result<()> {
    eprintln!(
        "\n== Baseline: {} sequential requests ==",
        params.baseline_requests
    );
    let baseline = infphys::baseline(
        client,
        params.baseline_requests,
        &params.base_request(params.baseline_timeout),
        Progress::Stderr,
    )
    .await?;
    let baseline_table = baseline.latency_summary_frame()?;
    print_table("Baseline latency", &baseline_table);
    write_csv(&baseline_table, &out.join("baseline.csv"))?;
    written.push("baseline.csv");
    let single = baseline.summary().latency.mean;
    results.baseline = Some(baseline);
    if client.is_stopped() {
        return Ok(());
    }
    if let Some(single) = single {
        let wall = |e: infphys::lab::Estimate| infphys::lab::Estimate {
            low: client.target().to_wall_time(e.low),
            high: client.target().to_wall_time(e.high),
        };
        eprintln!(
            "\nestimated time from the baseline's mean latency: sweep {}, token budget {}, overload {}",
            wall(params.estimate_sweep(single)),
            wall(params.estimate_tokens(single)),
            wall(params.estimate_overload(single)),
        );
    }

    eprintln!(
        "\n== Concurrency sweep: {:?}, {} requests each ==",
        params.sweep_levels, params.sweep_requests
    );
    let sweep = infphys::sweep(
        client,
        &params.sweep_levels,
        params.sweep_requests,
        &params.base_request(params.sweep_timeout),
        Progress::Stderr,
    )
    .await?;
    let sweep_table = sweep.summary_frame()?;
    print_table(
        &format!(
            "Concurrency sweep, timeout {}",
            seconds(params.sweep_timeout)
        ),
        &sweep_table,
    );
    write_csv(&sweep_table, &out.join("sweep.csv"))?;
    written.push("sweep.csv");
    results.sweep = Some(sweep);
    if client.is_stopped() {
        return Ok(());
    }

    eprintln!(
        "\n== Token budget: prompt sizes {:?} x max_tokens {:?}, {} repeats ==",
        params.prompt_sizes, params.max_tokens_grid, params.token_repeats
    );
    let tokens = infphys::token_budget(
        client,
        &params.prompt_sizes,
        &params.max_tokens_grid,
        params.token_repeats,
        &params.base_request(params.baseline_timeout),
        Progress::Stderr,
    )
    .await?;
    let tokens_table = tokens.frame()?;
    print_table("Token budget: p50 and p95 latency", &tokens_table);
    write_csv(&tokens_table, &out.join("tokens.csv"))?;
    written.push("tokens.csv");
    results.tokens = Some(tokens);
    if client.is_stopped() {
        return Ok(());
    }

    eprintln!(
        "\n== Overload: {:?}, {} requests each, timeout {} ==",
        params.overload_levels,
        params.overload_requests,
        seconds(params.overload_timeout)
    );
    let overload = infphys::sweep(
        client,
        &params.overload_levels,
        params.overload_requests,
        &params.base_request(params.overload_timeout),
        Progress::Stderr,
    )
    .await?;
    let overload_table = overload.summary_frame()?;
    print_table(
        &format!("Overload, timeout {}", seconds(params.overload_timeout)),
        &overload_table,
    );
    write_csv(&overload_table, &out.join("overload.csv"))?;
    written.push("overload.csv");
    results.overload = Some(overload);
    Ok(())
}

/// Measures the client's own overhead for the report; a failure only leaves it out.
async fn calibrate() -> Option<Calibration> {
    match infphys::calibration::calibrate(300, 64).await {
        Ok(calibration) => {
            eprintln!("{calibration}");
            Some(calibration)
        }
        Err(error) => {
            tracing::warn!(%error, "client calibration failed; the report leaves it out");
            None
        }
    }
}

fn slo_of(args: &SloArgs) -> Slo {
    Slo {
        ttft: args.slo_ttft,
        tpot: args.slo_tpot,
        e2e: args.slo_p95,
    }
}

/// Adds the knee, Little's law and goodput of `sweep` to `report` and prints them.
fn add_analysis(
    report: &mut Report,
    sweep: &Sweep,
    summary: &DataFrame,
    load_column: &str,
    slo: &SloArgs,
) -> Result<()> {
    let knee = match slo.slo_p95 {
        Some(objective) => analysis::knee(summary, load_column, infphys::schema::P95_S, objective)?,
        None => None,
    };
    match (&knee, slo.slo_p95) {
        (Some(knee), _) => println!(
            "\nknee: {load_column} {:.3} keeps p95 within {} s",
            knee.load, knee.slo_s
        ),
        (None, Some(objective)) => println!(
            "\nno knee: even the lightest load misses the {} s p95 objective",
            objective.as_secs_f64()
        ),
        (None, None) => {}
    }
    report.chart(&charts::latency_vs_load(
        summary,
        load_column,
        knee.as_ref(),
    )?);

    let littles = analysis::littles_law_frame(sweep)?;
    print_table(
        "Little's law in each run's steady window (predicted = throughput x mean latency)",
        &littles,
    );
    report.section(
        "Little's law",
        "Measured requests in flight against throughput times mean latency, in each run's steady window.",
        &littles,
    );

    let objectives = slo_of(slo);
    if objectives != Slo::default() {
        let goodput = analysis::goodput_frame(sweep, &objectives)?;
        print_table(
            "Goodput: requests per second that met every objective",
            &goodput,
        );
        report.section(
            "Goodput",
            "Successful requests per second that met every objective.",
            &goodput,
        );
    }
    Ok(())
}

async fn stream(client: &Client, args: &StreamArgs) -> Result<()> {
    let out = &args.output.out;
    prepare_output(out)?;
    let client = &with_journal(client, out)?;
    preflight(client).await?;
    let lab = LabParams::default();
    let request = ChatRequest::new(infphys::lab::BASE_PROMPT, args.max_tokens)
        .temperature(lab.temperature)
        .timeout(args.timeout)
        .streaming();

    let result = infphys::sweep(
        client,
        &args.concurrency,
        args.requests as usize,
        &request,
        Progress::Stderr,
    )
    .await?;
    let summary = result.summary_frame()?;
    let requests = result.requests_frame()?;
    print_table(
        "Streaming sweep: TTFT, inter-token latency and throughput",
        &summary,
    );
    save(out, "stream", &summary, &requests)?;

    let mut report = Report::new("Streaming sweep", &client.target().describe());
    if let Some(calibration) = calibrate().await {
        report.calibration(&calibration);
    }
    report
        .section(
            "Streaming sweep",
            "Time to first token grows with queueing; time per output token grows with batch size.",
            &summary,
        )
        .chart(&charts::duration_histogram(
            &requests,
            infphys::schema::TTFT_S,
            "Time to first token",
        )?)
        .chart(&charts::duration_histogram(
            &requests,
            infphys::schema::TPOT_S,
            "Time per output token",
        )?);
    add_analysis(
        &mut report,
        &result,
        &summary,
        infphys::schema::CONCURRENCY,
        &args.slo,
    )?;
    write_report(out, "stream.html", &report)
}

async fn rate(client: &Client, args: &RateArgs) -> Result<()> {
    let out = &args.output.out;
    prepare_output(out)?;
    let client = &with_journal(client, out)?;
    preflight(client).await?;
    let lab = LabParams::default();
    let mut request = ChatRequest::new(infphys::lab::BASE_PROMPT, args.max_tokens)
        .temperature(lab.temperature)
        .timeout(args.timeout);
    request.stream = args.stream;
    let template = OpenLoopSpec {
        rate_rps: args.rates[0],
        arrivals: match args.arrivals {
            ArrivalsArg::Poisson => Arrivals::Poisson { seed: args.seed },
            ArrivalsArg::Constant => Arrivals::Constant,
        },
        max_requests: args.requests as usize,
        duration: args.duration,
        max_in_flight: args.max_in_flight,
        request,
    };

    let result = rate_sweep(client, &args.rates, &template, Progress::Stderr).await?;
    let summary = result.summary_frame()?;
    let requests = result.requests_frame()?;
    print_table(
        "Open loop: latency counted from each scheduled send time",
        &summary,
    );
    save(out, "rate", &summary, &requests)?;

    let mut report = Report::new("Open-loop rate sweep", &client.target().describe());
    if let Some(calibration) = calibrate().await {
        report.calibration(&calibration);
    }
    report.section(
        "Open loop",
        "Requests are sent on schedule whatever the server does; latency counts from the scheduled time.",
        &summary,
    );
    if args.stream {
        report.chart(&charts::duration_histogram(
            &requests,
            infphys::schema::TTFT_S,
            "Time to first token",
        )?);
    }
    add_analysis(
        &mut report,
        &result,
        &summary,
        infphys::schema::OFFERED_RPS,
        &args.slo,
    )?;
    write_report(out, "rate.html", &report)
}

fn write_report(out: &Path, name: &str, report: &Report) -> Result<()> {
    let path = out.join(name);
    std::fs::write(&path, report.render())
        .with_context(|| format!("failed to write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}
