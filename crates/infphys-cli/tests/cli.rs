//! The `infphys` binary as a user runs it: bad input gets a clear message and a failure exit
//! code, and a server that dies in the middle of the lab, or a Ctrl-C, leaves every measured
//! row behind.

use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn infphys() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_infphys"));
    for name in [
        "NIM_BASE_URL",
        "NIM_CHAT_PATH",
        "NIM_GEN_MODEL",
        "NIM_API_KEY",
        "OPENAI_API_KEY",
        "INFPHYS_TIME_SCALE",
    ] {
        command.env_remove(name);
    }
    command
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let folder = std::env::temp_dir().join(format!("infphys-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&folder);
    folder
}

/// Arguments, environment variables, and texts the error message must contain.
type BadInput<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);

#[test]
fn bad_input_fails_with_value_and_fix() {
    let cases: &[BadInput] = &[
        (
            &["preflight"],
            &[("NIM_BASE_URL", "localhost:8000")],
            &["localhost:8000", "http://"],
        ),
        (
            &["preflight"],
            &[("NIM_CHAT_PATH", "v1/chat/completions")],
            &["must start with '/'"],
        ),
        (
            &["sweep", "--concurrency", "0"],
            &[],
            &["invalid concurrency level \"0\""],
        ),
        (
            &["sweep", "--concurrency", ""],
            &[],
            &["invalid concurrency level"],
        ),
        (
            &["sweep", "--timeout", "0s"],
            &[],
            &["invalid duration \"0s\""],
        ),
        (
            &["sweep", "--timeout", "NaN"],
            &[],
            &["invalid duration \"NaN\""],
        ),
        (
            &["--time-scale", "0", "preflight"],
            &[],
            &["time scale", "greater than 0"],
        ),
        (&["rate", "--rates=-1"], &[], &["invalid rate \"-1\""]),
        (&["rate", "--rates", "-1"], &[], &["invalid rate \"-1\""]),
        (
            &["sweep", "--requests", "-3"],
            &[],
            &["--requests", "invalid count \"-3\""],
        ),
        (
            &["sweep", "--timeout", "-1s"],
            &[],
            &["--timeout", "invalid duration \"-1s\""],
        ),
        (
            &["sim", "--max-queue", "0"],
            &[],
            &["--max-queue", "invalid count \"0\""],
        ),
        (
            &["sim", "--error-rate", "1.5"],
            &[],
            &["--error-rate", "invalid fraction \"1.5\"", "from 0 to 1"],
        ),
        (&["rate", "--rates", "0"], &[], &["invalid rate \"0\""]),
        (
            &["--preset", "b200", "preflight"],
            &[("NIM_BASE_URL", "sim")],
            &["b200"],
        ),
    ];
    for (args, env, expected) in cases {
        let output = infphys()
            .args(*args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = stderr_of(&output);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        for text in *expected {
            assert!(
                stderr.contains(text),
                "{args:?}: {text:?} missing from {stderr}"
            );
        }
    }
}

#[test]
fn unknown_preset_is_a_usage_error() {
    for (args, env) in [
        (&["--preset", "b200", "preflight"][..], None),
        (&["preflight"][..], Some(("INFPHYS_SIM_PRESET", "b200"))),
    ] {
        let output = infphys()
            .args(args)
            .envs(env)
            .env("NIM_BASE_URL", "sim")
            .output()
            .unwrap();
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains("unknown preset `b200`"), "{stderr}");
        assert!(stderr.contains("INFPHYS_SIM_PRESET"), "{stderr}");
    }
}

#[test]
fn unwritable_output_folder_is_reported_before_measuring() {
    let folder = scratch("unwritable");
    std::fs::create_dir_all(&folder).unwrap();
    let file = folder.join("a-file");
    std::fs::write(&file, b"").unwrap();
    let out = file.join("report");

    let output = infphys()
        .args(["baseline", "--out"])
        .arg(&out)
        .env("NIM_BASE_URL", "sim")
        .output()
        .unwrap();
    let stderr = stderr_of(&output);
    assert!(!output.status.success());
    assert!(
        stderr.contains("failed to create the output folder"),
        "{stderr}"
    );
    assert!(stderr.contains("--out"), "{stderr}");
    assert!(
        !stderr.contains("Preflight"),
        "it measured before checking the folder: {stderr}"
    );
    let _ = std::fs::remove_dir_all(folder);
}

#[test]
fn dead_server_url_explains_the_fix() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let output = infphys()
        .arg("preflight")
        .env("NIM_BASE_URL", &url)
        .output()
        .unwrap();
    let stderr = stderr_of(&output);
    assert!(!output.status.success());
    assert!(stderr.contains(&url), "{stderr}");
    assert!(stderr.contains("NIM_BASE_URL=sim"), "{stderr}");
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `infphys sim` on a free port and returns it with its base URL.
fn start_simulator(time_scale: &str) -> (Server, String) {
    let mut child = infphys()
        .args(["--time-scale", time_scale, "sim", "--port", "0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("the simulator exited before printing its URL")
            .unwrap();
        if let Some(rest) = line.trim().strip_prefix("export NIM_BASE_URL=") {
            break rest.to_owned();
        }
    };
    // Keep draining the simulator's log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Server(child), url)
}

/// Starts `infphys lab --quick` against `url`, writing to `out`, and returns once its stderr
/// shows the sweep's second level (or after 120 s), with the rest of its stderr to read.
fn start_lab_until_sweep(out: &Path, url: &str) -> (Child, Lines<BufReader<ChildStderr>>) {
    let mut lab = infphys()
        .args(["lab", "--quick", "--out"])
        .arg(out)
        .env("NIM_BASE_URL", url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(lab.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with("c=2:") || Instant::now() > deadline {
            break;
        }
    }
    (lab, lines)
}

#[test]
fn lab_survives_its_server_dying() {
    let out = scratch("killed");
    let (mut server, url) = start_simulator("40");
    // Kill the server once the sweep has started, leaving the baseline complete.
    let (mut lab, lines) = start_lab_until_sweep(&out, &url);
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = lab.wait().unwrap();

    assert!(
        status.success(),
        "the lab failed after its server died: {rest:?}"
    );
    for file in [
        "baseline.csv",
        "sweep.csv",
        "tokens.csv",
        "overload.csv",
        "requests.parquet",
        "report.html",
        "requests.jsonl",
    ] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    let contents = infphys::journal::read_journal(out.join("requests.jsonl")).unwrap();
    assert_eq!(contents.skipped_lines, 0);
    let rows = contents.requests;
    let ok = rows.column(infphys::schema::OK).unwrap().bool().unwrap();
    let succeeded = ok.iter().filter(|v| *v == Some(true)).count();
    assert!(
        succeeded >= 4,
        "the baseline's rows are gone: {succeeded} succeeded"
    );
    assert!(
        succeeded < rows.height(),
        "no failures recorded after the kill"
    );

    let sweep = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    assert!(
        sweep.contains("connect:"),
        "the sweep table does not say why requests failed: {sweep}"
    );
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        report.contains("connect:"),
        "the report does not say why requests failed"
    );
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn ctrl_c_writes_partial_lab() {
    let out = scratch("ctrl-c");
    let (_server, url) = start_simulator("40");
    // Press Ctrl-C once the sweep's second level has started, as a user would.
    let (mut lab, lines) = start_lab_until_sweep(&out, &url);
    let interrupt = Command::new("kill")
        .args(["-INT", &lab.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupt.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = lab.wait().unwrap();
    let output = rest.join("\n");

    assert_eq!(status.code(), Some(130), "{output}");
    assert!(output.contains("stopping"), "{output}");
    assert!(output.contains("requests.jsonl"), "{output}");
    for file in [
        "baseline.csv",
        "sweep.csv",
        "requests.parquet",
        "report.html",
    ] {
        assert!(out.join(file).exists(), "{file} missing: {output}");
    }
    for file in ["tokens.csv", "overload.csv"] {
        assert!(
            !out.join(file).exists(),
            "{file} was written after the stop"
        );
    }

    // The sweep table ends at the interrupted level, marked partial.
    let sweep = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    let mut rows = sweep.lines();
    // `partial` is the last column; reading from the end stays clear of quoted error messages.
    assert!(rows.next().unwrap().ends_with(",partial"), "{sweep}");
    let flags: Vec<String> = rows
        .map(|row| row.rsplit(',').next().unwrap().to_owned())
        .collect();
    assert_eq!(flags.last().map(String::as_str), Some("true"), "{sweep}");
    assert!(flags.len() < 5, "levels after the stop ran: {sweep}");

    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        report.contains("Interrupted"),
        "the report does not say it is partial"
    );
    assert!(report.contains("Not measured: token budget, overload"));

    let journal = infphys::journal::read_journal(out.join("requests.jsonl")).unwrap();
    let partial_runs = journal.partial_runs();
    assert_eq!(partial_runs.len(), 1, "{partial_runs:?}");
    assert_eq!(partial_runs[0].0, "c=2");
}
