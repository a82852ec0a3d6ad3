//! A journal of measured rows on disk, written as they arrive.
//!
//! An interrupted notebook cell kills the kernel's process and every variable in it, and a
//! killed CLI run never reaches the end where it writes its files. A client with a journal
//! appends every finished request to a JSON Lines file the moment the collector receives it, so
//! every completed row survives; [`read_journal`] loads them back as a per-request DataFrame.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use polars::prelude::*;
use serde_json::{Value, json};

use crate::client::ErrorKind;
use crate::error::{Error, Result};
use crate::frames::requests_frame;
use crate::load::RequestRecord;
use crate::schema::SECTION;
use crate::stream::ItlBasis;

/// An append-only JSON Lines file of request rows.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
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
        Ok(Self {
            path,
            file: Mutex::new(file),
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

    /// Appends `records` of the run `run` against `target`, one line each, and flushes them to
    /// the operating system, so they survive the process being killed.
    pub fn append(&self, run: &str, target: &str, records: &[RequestRecord]) -> Result<()> {
        let mut lines = String::new();
        for record in records {
            lines.push_str(&to_line(run, target, record).to_string());
            lines.push('\n');
        }
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

/// Reads a journal back as a per-request frame with a [`SECTION`] column naming each row's run.
///
/// A last line cut off by a crash is skipped, as are lines that are not journal rows; the
/// returned count says how many lines were skipped.
pub fn read_journal(path: impl AsRef<Path>) -> Result<(DataFrame, usize)> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| Error::Io {
        action: "failed to open the journal",
        path: path.display().to_string(),
        source,
    })?;

    let mut rows: Vec<(String, String, RequestRecord)> = Vec::new();
    let mut skipped = 0;
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|source| Error::Io {
            action: "failed to read the journal",
            path: path.display().to_string(),
            source,
        })?;
        match serde_json::from_str::<Value>(&line)
            .ok()
            .as_ref()
            .and_then(from_line)
        {
            Some(row) => rows.push(row),
            None => skipped += 1,
        }
    }

    let mut frame = crate::frames::concat_frames(rows.iter().map(|(run, target, record)| {
        let mut df = requests_frame(std::slice::from_ref(record), target)?;
        df.insert_column(0, Column::new(SECTION.into(), [run.as_str()]))?;
        Ok(df)
    }))?;
    if rows.is_empty() {
        frame.insert_column(0, Column::new(SECTION.into(), Vec::<String>::new()))?;
    }
    Ok((frame, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_torn_line_is_skipped() {
        let folder = std::env::temp_dir().join(format!("infphys-journal-{}", std::process::id()));
        let path = folder.join("rows.jsonl");
        let _ = std::fs::remove_file(&path);
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
        journal
            .append("sweep c=4", "sim:classroom", &[ok, failed])
            .unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"run\":\"cut")
            .unwrap();

        let (frame, skipped) = read_journal(&path).unwrap();
        assert_eq!(frame.height(), 2);
        assert_eq!(skipped, 1);
        let latencies = crate::frames::column_f64(&frame, crate::schema::LATENCY_S).unwrap();
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
        let _ = std::fs::remove_dir_all(folder);
    }
}
