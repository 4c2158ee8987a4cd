//! The results file: one JSON line per input line, appended and flushed as each completes, so a
//! run killed at any moment resumes where it stopped; and its index, which says what a rerun
//! must not send again.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use super::input::{hex, Key};

/// How a result ended, as far as a rerun cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Succeeded,
    /// A failure a rerun tries again: the run's conditions (a key, an endpoint, an outage, a
    /// quota) may have changed.
    Retryable,
    /// A failure of the prompt itself (invalid input, a request the provider rejects as
    /// malformed): tried again with `--retry-failed`, or when the line changes.
    Prompt,
}

impl Class {
    fn as_str(self) -> Option<&'static str> {
        match self {
            Class::Succeeded => None,
            Class::Retryable => Some("retryable"),
            Class::Prompt => Some("prompt"),
        }
    }

    fn parse(failure: Option<&str>, outcome: Option<&str>) -> Class {
        match (failure, outcome) {
            (_, Some("ok")) => Class::Succeeded,
            (Some("prompt"), _) | (None, Some("invalid_input")) => Class::Prompt,
            _ => Class::Retryable,
        }
    }
}

/// What the results file already holds for one key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    /// 0 for a result without one (written by an older tollgate): never taken as done (a
    /// line's fingerprint is 0 once in 2^64). Not an `Option`: the index is a few words per
    /// result, and a million results make it count.
    pub(crate) fingerprint: u64,
    pub(crate) class: Class,
    /// The result is to be redone: its line is dropped before the run.
    pub(crate) redo: bool,
}

/// The results already written, by key digest: a few words per result, never the bodies.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub(crate) entries: HashMap<u64, Entry>,
}

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum Format {
    /// One tollgate result per line (id, status, outcome, response or error, attempts).
    #[default]
    Tollgate,
    /// The OpenAI Batch API's output lines (`custom_id`, `response`, `error`).
    OpenaiBatch,
}

/// Checks that `path` can be the results file: a regular file or nothing yet, in a directory
/// that exists, and not the input.
pub(crate) fn check_path(path: &Path, input: &Path) -> Result<(), String> {
    if let Ok(metadata) = std::fs::metadata(path) {
        if !metadata.is_file() {
            return Err(format!(
                "--output {} is not a regular file: results are appended to a file and read back \
                 to resume",
                path.display()
            ));
        }
        let same = std::fs::canonicalize(path).ok() == std::fs::canonicalize(input).ok();
        if same {
            return Err(format!(
                "--output {} is the input file: name another file for the results",
                path.display()
            ));
        }
    }
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        return Err(format!(
            "--output {}: the directory {} does not exist",
            path.display(),
            parent.display()
        ));
    }
    Ok(())
}

/// Reads the results in `path` (if any), after cutting off a last line that a killed run left
/// half written.
pub(crate) fn index(path: &Path) -> Result<Index, String> {
    let cannot = |e: std::io::Error| format!("cannot use output {}: {e}", path.display());
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Index::default()),
        Err(e) => return Err(cannot(e)),
    };
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let (mut index, mut line, mut complete) = (Index::default(), Vec::new(), 0u64);
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).map_err(cannot)?;
        if read == 0 || line.last() != Some(&b'\n') {
            break;
        }
        complete += read as u64;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (key, entry) = parse(&line).ok_or_else(|| {
            format!(
                "{} has a line that is not a tollgate result; use another output file",
                path.display()
            )
        })?;
        index.entries.insert(key.digest(), entry);
    }
    let length = std::fs::metadata(path).map_err(cannot)?.len();
    if complete < length {
        let file = OpenOptions::new().write(true).open(path).map_err(cannot)?;
        file.set_len(complete).map_err(cannot)?;
    }
    Ok(index)
}

/// The fields of a result line a rerun reads (either format); the response and error bodies are
/// skipped, not built.
#[derive(Deserialize)]
struct Stored {
    // `null` is an id too (a line filed by its number): only a missing id is `None`.
    #[serde(default, deserialize_with = "present")]
    id: Option<Id>,
    #[serde(default, deserialize_with = "present")]
    custom_id: Option<Id>,
    line: Option<u64>,
    fingerprint: Option<String>,
    outcome: Option<String>,
    failure: Option<String>,
    tollgate: Option<Meta>,
}

fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Id>, D::Error> {
    Id::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    Text(String),
    Null(()),
}

#[derive(Deserialize)]
struct Meta {
    line: Option<u64>,
    fingerprint: Option<String>,
    outcome: Option<String>,
    failure: Option<String>,
}

/// The key and what a rerun needs to know of one result line, in either format.
fn parse(line: &[u8]) -> Option<(Key, Entry)> {
    let stored: Stored = serde_json::from_slice(line).ok()?;
    let (id, meta) = match (stored.custom_id, stored.id) {
        (Some(id), _) => (id, stored.tollgate?),
        (None, Some(id)) => (
            id,
            Meta {
                line: stored.line,
                fingerprint: stored.fingerprint,
                outcome: stored.outcome,
                failure: stored.failure,
            },
        ),
        (None, None) => return None,
    };
    let key = match id {
        Id::Text(id) => Key::Id(id),
        Id::Null(()) => Key::Line(meta.line?),
    };
    let fingerprint = meta
        .fingerprint
        .as_deref()
        .and_then(|f| u64::from_str_radix(f, 16).ok())
        .unwrap_or(0);
    let class = Class::parse(meta.failure.as_deref(), meta.outcome.as_deref());
    Some((
        key,
        Entry {
            fingerprint,
            class,
            redo: false,
        },
    ))
}

/// Drops the lines of the results the index marks to redo, so that every key keeps one line.
/// Rewrites into a temporary file beside it, then renames: a kill leaves the old file whole.
pub(crate) fn drop_redone(path: &Path, index: &Index) -> Result<u64, String> {
    if !index.entries.values().any(|e| e.redo) {
        return Ok(0);
    }
    let cannot = |e: std::io::Error| format!("cannot rewrite output {}: {e}", path.display());
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("results");
    let temporary = path.with_file_name(format!(".{name}.tollgate-rewrite"));
    let mut reader = BufReader::new(File::open(path).map_err(cannot)?);
    let mut writer = BufWriter::new(File::create(&temporary).map_err(cannot)?);
    let (mut line, mut dropped) = (Vec::new(), 0);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(cannot)? == 0 {
            break;
        }
        let redo = parse(&line)
            .and_then(|(key, _)| index.entries.get(&key.digest()))
            .is_some_and(|e| e.redo);
        if redo {
            dropped += 1;
        } else {
            writer.write_all(&line).map_err(cannot)?;
        }
    }
    let file = writer.into_inner().map_err(|e| cannot(e.into_error()))?;
    file.sync_all().map_err(cannot)?;
    std::fs::rename(&temporary, path).map_err(cannot)?;
    Ok(dropped)
}

/// How one request ended, to be written as a result line.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) key: Key,
    pub(crate) line: u64,
    pub(crate) fingerprint: u64,
    pub(crate) status: Option<u16>,
    /// `ok`, `http_error`, `error` or `invalid_input`.
    pub(crate) outcome: &'static str,
    pub(crate) class: Class,
    /// The failure's kind (`http_401`, `timeout`, `retry_budget_exhausted`...).
    pub(crate) kind: Option<String>,
    /// Why the retry layer stopped, when it did.
    pub(crate) stopped: Option<&'static str>,
    pub(crate) message: Option<String>,
    /// The provider's answer body.
    pub(crate) body: Option<Value>,
    pub(crate) attempts: u32,
    pub(crate) latency_ms: u64,
    /// With `--fallback`, the target that answered, and the ones skipped before it and why.
    pub(crate) served_by: Option<Value>,
}

impl Outcome {
    fn tollgate_line(&self) -> Value {
        let mut line = json!({
            "id": self.key.id_value(),
            "line": self.line,
            "fingerprint": hex(self.fingerprint),
            "status": self.status,
            "outcome": self.outcome,
            "attempts": self.attempts,
            "latency_ms": self.latency_ms,
        });
        if let Some(served_by) = &self.served_by {
            line["served_by"] = served_by.clone();
        }
        if self.class == Class::Succeeded {
            line["response"] = self.body.clone().unwrap_or(Value::Null);
        } else {
            line["failure"] = json!(self.class.as_str());
            line["error"] = json!({
                "kind": self.kind,
                "stopped": self.stopped,
                "message": self.message,
            });
            if let Some(body) = &self.body {
                line["error"]["body"] = body.clone();
            }
        }
        line
    }

    fn openai_batch_line(&self) -> Value {
        let response = self.status.map(|status| {
            json!({"status_code": status, "request_id": "", "body": self.body.clone().unwrap_or(Value::Null)})
        });
        let error =
            (self.status.is_none()).then(|| json!({"code": self.kind, "message": self.message}));
        json!({
            "id": format!("batch_req_{}", self.line),
            "custom_id": self.key.id_value(),
            "response": response,
            "error": error,
            "tollgate": {
                "line": self.line,
                "fingerprint": hex(self.fingerprint),
                "outcome": self.outcome,
                "failure": self.class.as_str(),
                "stopped": self.stopped,
                "attempts": self.attempts,
                "latency_ms": self.latency_ms,
            },
        })
    }
}

/// Appends result lines, flushing each.
pub(crate) struct Results {
    file: File,
    format: Format,
}

impl Results {
    pub(crate) fn open(path: &Path, format: Format) -> Result<Self, String> {
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| format!("cannot write output {}: {e}", path.display()))?;
        let _ = file.seek(std::io::SeekFrom::End(0));
        Ok(Results { file, format })
    }

    pub(crate) fn append(&mut self, outcome: &Outcome) -> std::io::Result<()> {
        let value = match self.format {
            Format::Tollgate => outcome.tollgate_line(),
            Format::OpenaiBatch => outcome.openai_batch_line(),
        };
        let mut line = value.to_string();
        line.push('\n');
        // One write per line: a kill leaves at most one partial line, which resuming cuts off.
        self.file.write_all(line.as_bytes())?;
        self.file.flush()
    }
}
