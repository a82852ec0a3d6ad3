//! A journal of measured rows on disk, written as they arrive.
//!
//! An interrupted notebook cell kills the kernel's process and every variable in it, and a
//! killed CLI run never reaches the end where it writes its files. A client with a journal
//! appends every finished request to a JSON Lines file the moment the collector receives it, so
//! every completed row survives. Each run is framed by a start line (with the number of
//! requests planned) and a finish line, so [`read_journal`] can tell a complete run from one
//! that was cut short and mark the latter as partial.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use polars::prelude::*;
use serde_json::{Value, json};

use crate::client::ErrorKind;
use crate::error::{Error, Result};
use crate::frames::requests_frame;
use crate::load::{LoadRun, RequestRecord};
use crate::schema::{PARTIAL, PLANNED_REQUESTS, RUN_ID, SECTION};
use crate::stream::ItlBasis;

/// Number of a run inside one journal file, counted from 1.
pub type RunId = u64;

/// An append-only JSON Lines file of request rows.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    /// The next run's number; it continues after the runs already in the file.
    next_run: AtomicU64,
}

impl Journal {
    /// Opens `path` for appending, creating it and its folder when missing.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|source| Error::Io {
                action: "failed to create the journal folder",
                path: folder.display().to_string(),
                source,
            })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| Error::Io {
                action: "failed to open the journal",
                path: path.display().to_string(),
                source,
            })?;
        let next_run = last_run_id(&path) + 1;
        Ok(Self {
            path,
            file: Mutex::new(file),
            next_run: AtomicU64::new(next_run),
        })
    }

    /// Creates `path` empty, replacing an earlier journal there, and opens it for appending.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    action: "failed to replace the journal",
                    path: path.display().to_string(),
                    source,
                });
            }
        }
        Self::open(path)
    }

    /// The journal's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts a run labelled `run` against `target` that plans `planned_requests` requests, and
    /// returns its number for [`Journal::append`] and [`Journal::finish_run`].
    pub fn start_run(&self, run: &str, target: &str, planned_requests: usize) -> Result<RunId> {
        let id = self.next_run.fetch_add(1, Ordering::Relaxed);
        let line = json!({
            "event": "run_started",
            "run_id": id,
            "run": run,
            "target": target,
            "planned_requests": planned_requests,
        });
        self.write(&format!("{line}\n"))?;
        Ok(id)
    }

    /// Marks the run `id` finished, with `interrupted` set when a stop signal ended it early.
    pub fn finish_run(&self, id: RunId, run: &str, interrupted: bool) -> Result<()> {
        let line = json!({
            "event": "run_finished",
            "run_id": id,
            "run": run,
            "interrupted": interrupted,
        });
        self.write(&format!("{line}\n"))
    }

    /// Appends `records` of the run `id`, labelled `run`, against `target`, one line each, and
    /// flushes them to the operating system, so they survive the process being killed.
    pub fn append(
        &self,
        id: RunId,
        run: &str,
        target: &str,
        records: &[RequestRecord],
    ) -> Result<()> {
        let mut lines = String::new();
        for record in records {
            let mut line = to_line(run, target, record);
            line["run_id"] = json!(id);
            lines.push_str(&line.to_string());
            lines.push('\n');
        }
        self.write(&lines)
    }

    fn write(&self, lines: &str) -> Result<()> {
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        file.write_all(lines.as_bytes())
            .and_then(|()| file.flush())
            .map_err(|source| Error::Io {
                action: "failed to append to the journal",
                path: self.path.display().to_string(),
                source,
            })
    }
}

/// Returns the highest run number in the journal at `path`, or 0 when it has none.
fn last_run_id(path: &Path) -> RunId {
    let Ok(file) = File::open(path) else {
        return 0;
    };
    BufReader::new(file)
        .lines()
        .map_while(std::result::Result::ok)
        .filter(|line| line.contains("\"run_started\""))
        .filter_map(|line| {
            serde_json::from_str::<Value>(&line)
                .ok()?
                .get("run_id")?
                .as_u64()
        })
        .max()
        .unwrap_or(0)
}

fn seconds(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

fn to_line(run: &str, target: &str, r: &RequestRecord) -> Value {
    json!({
        "run": run,
        "target": target,
        "request_id": r.request_id,
        "concurrency": r.concurrency,
        "scheduled_s": r.scheduled.as_secs_f64(),
        "sent_s": r.sent.as_secs_f64(),
        "latency_s": r.latency.as_secs_f64(),
        "ttft_s": seconds(r.ttft),
        "ttfc_s": seconds(r.ttfc),
        "tpot_s": seconds(r.tpot),
        "itl_basis": r.itl_basis.map(ItlBasis::as_str),
        "token_chunks": r.token_chunks,
        "output_tokens": r.output_tokens,
        "close_s": seconds(r.close),
        "error_kind": r.error_kind.map(ErrorKind::as_str),
        "error_message": r.error_message,
        "http_status": r.http_status,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "output_chars": r.output_chars,
        "attempt": r.attempt,
        "dispatch_lag_s": seconds(r.dispatch_lag),
    })
}

fn from_line(line: &Value) -> Option<(String, String, RequestRecord)> {
    let f64_of = |key: &str| line.get(key).and_then(Value::as_f64);
    let duration = |key: &str| f64_of(key).and_then(|s| Duration::try_from_secs_f64(s).ok());
    let u32_of = |key: &str| {
        line.get(key)
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
    };
    let text = |key: &str| line.get(key).and_then(Value::as_str).map(str::to_owned);
    let kind = match line.get("error_kind").and_then(Value::as_str) {
        None => None,
        Some(name) => Some(match name {
            "connect" => ErrorKind::Connect,
            "timeout" => ErrorKind::Timeout,
            "http_status" => ErrorKind::HttpStatus,
            "decode" => ErrorKind::Decode,
            "stream_error" => ErrorKind::StreamError,
            "stream_truncated" => ErrorKind::StreamTruncated,
            "empty" => ErrorKind::Empty,
            _ => return None,
        }),
    };
    let record = RequestRecord {
        request_id: line.get("request_id")?.as_u64()?,
        concurrency: u32_of("concurrency")?,
        scheduled: duration("scheduled_s")?,
        sent: duration("sent_s")?,
        latency: duration("latency_s")?,
        ttft: duration("ttft_s"),
        ttfc: duration("ttfc_s"),
        tpot: duration("tpot_s"),
        itl_basis: match line.get("itl_basis").and_then(Value::as_str) {
            Some("token") => Some(ItlBasis::Token),
            Some("chunk") => Some(ItlBasis::Chunk),
            _ => None,
        },
        token_chunks: u32_of("token_chunks"),
        output_tokens: u32_of("output_tokens"),
        close: duration("close_s"),
        error_kind: kind,
        error_message: text("error_message"),
        http_status: line
            .get("http_status")
            .and_then(Value::as_u64)
            .and_then(|v| u16::try_from(v).ok()),
        prompt_tokens: u32_of("prompt_tokens"),
        completion_tokens: u32_of("completion_tokens"),
        output_chars: line
            .get("output_chars")
            .and_then(Value::as_u64)
            .map_or(0, |v| v as usize),
        attempt: u32_of("attempt").unwrap_or(1),
        dispatch_lag: duration("dispatch_lag_s"),
    };
    Some((text("run")?, text("target").unwrap_or_default(), record))
}

/// Contents of a journal: every row, and one summary per run that marks whether it is partial.
#[derive(Debug, Clone)]
pub struct JournalContents {
    /// Every request row, led by the columns [`SECTION`] (the run's label), [`RUN_ID`] and
    /// [`PARTIAL`].
    pub requests: DataFrame,
    /// One row per run, in the order started: [`RUN_ID`], [`SECTION`], [`PARTIAL`],
    /// [`PLANNED_REQUESTS`], then the lab's load summary of the rows it has.
    pub runs: DataFrame,
    /// Lines that were not journal lines, such as a last line cut off by a crash.
    pub skipped_lines: usize,
}

impl JournalContents {
    /// Returns the labels of the partial runs with the number of requests each finished and
    /// planned.
    pub fn partial_runs(&self) -> Vec<(String, usize, Option<usize>)> {
        let (Ok(sections), Ok(partial), Ok(planned), Ok(total)) = (
            self.runs.column(SECTION).and_then(|c| c.str().cloned()),
            self.runs.column(PARTIAL).and_then(|c| c.bool().cloned()),
            self.runs
                .column(PLANNED_REQUESTS)
                .and_then(|c| c.u64().cloned()),
            self.runs
                .column(crate::schema::TOTAL_REQUESTS)
                .and_then(|c| c.u64().cloned()),
        ) else {
            return Vec::new();
        };
        (0..self.runs.height())
            .filter(|&i| partial.get(i) == Some(true))
            .map(|i| {
                (
                    sections.get(i).unwrap_or_default().to_owned(),
                    total.get(i).unwrap_or(0) as usize,
                    planned.get(i).map(|p| p as usize),
                )
            })
            .collect()
    }
}

/// One run as the journal records it.
struct JournalRun {
    id: RunId,
    label: String,
    target: String,
    planned: Option<usize>,
    finished: bool,
    interrupted: bool,
    records: Vec<RequestRecord>,
}

impl JournalRun {
    /// Returns a run with no rows, whose frame has the journal's columns and no rows.
    fn empty() -> Self {
        JournalRun {
            id: 0,
            label: String::new(),
            target: String::new(),
            planned: None,
            finished: true,
            interrupted: false,
            records: Vec::new(),
        }
    }

    /// Returns whether a stop signal ended the run or its process died before it finished.
    fn partial(&self) -> bool {
        self.interrupted || !self.finished
    }
}

/// Reads a journal back: every request row, and one summary row per run marked partial when
/// the run was interrupted or never finished.
///
/// Lines that are not journal lines, such as a last line cut off by a crash, are skipped and
/// counted. Rows written before runs had start lines form one run per label.
pub fn read_journal(path: impl AsRef<Path>) -> Result<JournalContents> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| Error::Io {
        action: "failed to open the journal",
        path: path.display().to_string(),
        source,
    })?;

    let mut runs: Vec<JournalRun> = Vec::new();
    let mut skipped_lines = 0;
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|source| Error::Io {
            action: "failed to read the journal",
            path: path.display().to_string(),
            source,
        })?;
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            skipped_lines += 1;
            continue;
        };
        if !read_line(&value, &mut runs) {
            skipped_lines += 1;
        }
    }

    let requests = if runs.is_empty() {
        labelled_requests(&JournalRun::empty())?
    } else {
        crate::frames::concat_frames(runs.iter().map(labelled_requests))?
    };
    Ok(JournalContents {
        requests,
        runs: runs_frame(runs)?,
        skipped_lines,
    })
}

/// Builds the request rows of one run, led by its [`SECTION`], [`RUN_ID`] and [`PARTIAL`].
fn labelled_requests(run: &JournalRun) -> PolarsResult<DataFrame> {
    let mut df = requests_frame(&run.records, &run.target)?;
    let height = df.height();
    let lead = [
        Column::new(SECTION.into(), vec![run.label.as_str(); height]),
        Column::new(RUN_ID.into(), vec![run.id; height]),
        Column::new(PARTIAL.into(), vec![run.partial(); height]),
    ];
    for (index, column) in lead.into_iter().enumerate() {
        df.insert_column(index, column)?;
    }
    Ok(df)
}

/// Adds one parsed line to `runs`; returns false when it is not a journal line.
fn read_line(value: &Value, runs: &mut Vec<JournalRun>) -> bool {
    let id = value.get("run_id").and_then(Value::as_u64);
    let label = value.get("run").and_then(Value::as_str);
    match value.get("event").and_then(Value::as_str) {
        Some("run_started") => {
            let (Some(id), Some(label)) = (id, label) else {
                return false;
            };
            runs.push(JournalRun {
                id,
                label: label.to_owned(),
                target: text_of(value, "target"),
                planned: value
                    .get("planned_requests")
                    .and_then(Value::as_u64)
                    .map(|n| n as usize),
                finished: false,
                interrupted: false,
                records: Vec::new(),
            });
            true
        }
        Some("run_finished") => match runs.iter_mut().rev().find(|run| Some(run.id) == id) {
            Some(run) => {
                run.finished = true;
                run.interrupted = value
                    .get("interrupted")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                true
            }
            None => false,
        },
        Some(_) => false,
        None => {
            let Some((label, target, record)) = from_line(value) else {
                return false;
            };
            let found = runs.iter_mut().rev().find(|run| match id {
                Some(id) => run.id == id,
                None => run.label == label && run.planned.is_none(),
            });
            match found {
                Some(run) => run.records.push(record),
                // Rows written before runs had start lines: one finished run per label.
                None => runs.push(JournalRun {
                    id: id.unwrap_or(0),
                    label,
                    target,
                    planned: None,
                    finished: true,
                    interrupted: false,
                    records: vec![record],
                }),
            }
            true
        }
    }
}

fn text_of(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Builds the per-run frame of [`JournalContents::runs`].
fn runs_frame(runs: Vec<JournalRun>) -> Result<DataFrame> {
    let lead = [
        Column::new(RUN_ID.into(), runs.iter().map(|r| r.id).collect::<Vec<_>>()),
        Column::new(
            SECTION.into(),
            runs.iter().map(|r| r.label.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            PARTIAL.into(),
            runs.iter().map(JournalRun::partial).collect::<Vec<_>>(),
        ),
        Column::new(
            PLANNED_REQUESTS.into(),
            runs.iter()
                .map(|r| r.planned.map(|p| p as u64))
                .collect::<Vec<_>>(),
        ),
        Column::new(
            crate::schema::TARGET.into(),
            runs.iter().map(|r| r.target.as_str()).collect::<Vec<_>>(),
        ),
    ];
    let summaries: Vec<_> = runs.into_iter().map(summary_of).collect();
    let mut frame = crate::frames::load_summary_frame(&summaries, "")?;
    // A journal records neither the client timeout nor one target for all runs, and `partial`
    // moves to the front with the run's identity.
    for dropped in [crate::schema::TIMEOUT_S, crate::schema::TARGET, PARTIAL] {
        frame.drop_in_place(dropped)?;
    }

    for (index, column) in lead.into_iter().enumerate() {
        frame.insert_column(index, column)?;
    }
    Ok(frame)
}

/// Summarizes the rows of one journal run as the lab summarizes a load run, with the wall time
/// from its first send to its last response.
fn summary_of(run: JournalRun) -> crate::load::LoadSummary {
    let partial = run.partial();
    let first_sent = run.records.iter().map(|r| r.sent).min().unwrap_or_default();
    let last_end = run
        .records
        .iter()
        .map(|r| r.sent + r.latency)
        .max()
        .unwrap_or_default();
    LoadRun {
        concurrency: run.records.first().map_or(0, |r| r.concurrency as usize),
        total_requests: crate::load::distinct_requests(&run.records),
        timeout: Duration::ZERO,
        wall: last_end.saturating_sub(first_sent),
        records: run.records,
        target: run.target,
        offered_rps: None,
        interrupted: partial,
    }
    .summary()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let folder = std::env::temp_dir().join(format!("infphys-journal-{}", std::process::id()));
        let path = folder.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn rows_round_trip_and_torn_line_is_skipped() {
        let path = scratch("rows.jsonl");
        let journal = Journal::open(&path).unwrap();

        let ok = RequestRecord {
            request_id: 3,
            concurrency: 4,
            latency: Duration::from_millis(1500),
            ttft: Some(Duration::from_millis(40)),
            itl_basis: Some(ItlBasis::Token),
            http_status: Some(200),
            output_tokens: Some(96),
            attempt: 1,
            ..RequestRecord::default()
        };
        let failed = RequestRecord {
            request_id: 4,
            error_kind: Some(ErrorKind::Timeout),
            error_message: Some("no complete response".into()),
            attempt: 2,
            ..RequestRecord::default()
        };
        let run = journal.start_run("sweep c=4", "sim:classroom", 2).unwrap();
        journal
            .append(run, "sweep c=4", "sim:classroom", &[ok, failed])
            .unwrap();
        journal.finish_run(run, "sweep c=4", false).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"run\":\"cut")
            .unwrap();

        let contents = read_journal(&path).unwrap();
        let frame = &contents.requests;
        assert_eq!(frame.height(), 2);
        assert_eq!(contents.skipped_lines, 1);
        let latencies = crate::frames::column_f64(frame, crate::schema::LATENCY_S).unwrap();
        assert_eq!(latencies, vec![1.5, 0.0]);
        let kinds = frame
            .column(crate::schema::ERROR_KIND)
            .unwrap()
            .str()
            .unwrap()
            .get(1)
            .map(str::to_owned);
        assert_eq!(kinds.as_deref(), Some("timeout"));
        assert_eq!(
            frame.column(SECTION).unwrap().str().unwrap().get(0),
            Some("sweep c=4")
        );
        assert_eq!(contents.runs.height(), 1);
        assert!(contents.partial_runs().is_empty());
    }

    #[test]
    fn unfinished_and_interrupted_runs_are_partial() {
        let path = scratch("partial.jsonl");
        let row = |id| RequestRecord {
            request_id: id,
            concurrency: 2,
            latency: Duration::from_millis(100),
            http_status: Some(200),
            ..RequestRecord::default()
        };
        {
            let journal = Journal::open(&path).unwrap();
            let done = journal.start_run("c=1", "sim", 2).unwrap();
            journal
                .append(done, "c=1", "sim", &[row(0), row(1)])
                .unwrap();
            journal.finish_run(done, "c=1", false).unwrap();
            let stopped = journal.start_run("c=2", "sim", 10).unwrap();
            journal.append(stopped, "c=2", "sim", &[row(0)]).unwrap();
            journal.finish_run(stopped, "c=2", true).unwrap();
        }
        // A second process appends to the same file and dies mid-run: numbering continues.
        let journal = Journal::open(&path).unwrap();
        let killed = journal.start_run("c=2", "sim", 8).unwrap();
        assert_eq!(killed, 3);
        journal
            .append(killed, "c=2", "sim", &[row(0), row(1), row(2)])
            .unwrap();

        let contents = read_journal(&path).unwrap();
        assert_eq!(contents.skipped_lines, 0);
        assert_eq!(contents.requests.height(), 6);
        let partial = contents
            .runs
            .column(PARTIAL)
            .unwrap()
            .bool()
            .unwrap()
            .clone();
        assert_eq!(
            partial.iter().collect::<Vec<_>>(),
            [Some(false), Some(true), Some(true)]
        );
        assert_eq!(
            contents.partial_runs(),
            vec![
                ("c=2".to_owned(), 1, Some(10)),
                ("c=2".to_owned(), 3, Some(8))
            ]
        );
        let row_partial = contents
            .requests
            .column(PARTIAL)
            .unwrap()
            .bool()
            .unwrap()
            .clone();
        assert_eq!(row_partial.iter().filter(|p| *p == Some(true)).count(), 4);
        let ids = contents
            .requests
            .column(RUN_ID)
            .unwrap()
            .u64()
            .unwrap()
            .clone();
        assert_eq!(ids.iter().flatten().collect::<Vec<_>>(), [1, 1, 2, 3, 3, 3]);
    }
}
