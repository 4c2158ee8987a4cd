//! Reading the batch, one line at a time (never the whole file): each line becomes a request to
//! send or an invalid line, with the key and fingerprint that bind its result to it.
//!
//! Three line forms: `{"id": ..., "prompt": "..."}` (wrapped in a chat request for `--model`), a
//! chat request body (`messages`, `contents` or `input`; its `id`, if any, is taken out), and the
//! OpenAI Batch API's `{"custom_id", "method", "url", "body"}`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// What a result is filed under: the line's own id, or its line number when it has none (a
/// namespace of its own, so a generated key never collides with an id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Id(String),
    Line(u64),
}

impl Key {
    /// A 64-bit digest of the key, for the in-memory indexes (ids are not kept whole). It never
    /// leaves the process, so std's hasher (fixed keys: the same in both passes) will do.
    pub(crate) fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut hasher);
        hasher.finish()
    }

    /// The `id` a result line carries (`null` for a line without one).
    pub(crate) fn id_value(&self) -> Value {
        match self {
            Key::Id(id) => Value::String(id.clone()),
            Key::Line(_) => Value::Null,
        }
    }
}

/// One input line, parsed.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub(crate) number: u64,
    pub(crate) key: Key,
    /// A digest of what the line asks (path and normalised body, or the raw line when it is
    /// invalid): a result is this line's only if the fingerprints agree.
    pub(crate) fingerprint: u64,
    pub(crate) kind: LineKind,
}

#[derive(Debug, Clone)]
pub(crate) enum LineKind {
    Request(Request),
    Invalid(String),
}

/// A request to send.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// The path to send it to, when the line names one (the Batch API's `url`).
    pub(crate) path: Option<String>,
    pub(crate) body: Bytes,
    /// Its `max_tokens` (or `max_completion_tokens`), for the default attempt timeout.
    pub(crate) max_tokens: Option<u64>,
}

/// How `prompt` lines become requests.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    pub(crate) model: String,
    pub(crate) max_tokens: u64,
}

/// Reads `path` line by line.
pub(crate) struct Lines {
    reader: BufReader<File>,
    number: u64,
    buffer: Vec<u8>,
    shape: Shape,
}

impl Lines {
    pub(crate) fn open(path: &Path, shape: Shape) -> Result<Lines, String> {
        let file =
            File::open(path).map_err(|e| format!("cannot read input {}: {e}", path.display()))?;
        Ok(Lines {
            reader: BufReader::with_capacity(64 * 1024, file),
            number: 0,
            buffer: Vec::new(),
            shape,
        })
    }

    /// The next non-empty line, or `None` at the end; an error only when the file cannot be
    /// read.
    pub(crate) fn next_line(&mut self) -> Result<Option<Line>, String> {
        loop {
            self.buffer.clear();
            let read = self
                .reader
                .read_until(b'\n', &mut self.buffer)
                .map_err(|e| format!("cannot read input line {}: {e}", self.number + 1))?;
            if read == 0 {
                return Ok(None);
            }
            self.number += 1;
            let mut bytes = self.buffer.as_slice();
            if self.number == 1 {
                // A byte-order mark some editors put first is not part of the JSON.
                bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(parse(bytes, self.number, &self.shape)));
        }
    }
}

/// Parses one line; never fails: what cannot be sent is an invalid line that keeps its own id
/// when one can be read.
fn parse(bytes: &[u8], number: u64, shape: &Shape) -> Line {
    let invalid = |key: Key, message: String| Line {
        number,
        key,
        fingerprint: fingerprint(None, bytes),
        kind: LineKind::Invalid(format!("line {number}: {message}")),
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return invalid(Key::Line(number), "not valid UTF-8".into());
    };
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => return invalid(Key::Line(number), format!("not valid JSON ({e})")),
    };
    let Value::Object(mut object) = value else {
        return invalid(Key::Line(number), "expected a JSON object".into());
    };
    let batch_form = object.contains_key("custom_id");
    let id = object.remove(if batch_form { "custom_id" } else { "id" });
    let key = match id {
        None => Key::Line(number),
        Some(Value::String(id)) if !id.is_empty() => Key::Id(id),
        Some(Value::Number(id)) => Key::Id(id.to_string()),
        Some(other) => {
            return invalid(
                Key::Line(number),
                format!("the id must be a string or a number, got {other}"),
            )
        }
    };
    match request(object, batch_form, shape) {
        Ok(request) => Line {
            number,
            key,
            fingerprint: fingerprint(request.path.as_deref(), &request.body),
            kind: LineKind::Request(request),
        },
        Err(message) => invalid(key, message),
    }
}

fn request(
    mut object: Map<String, Value>,
    batch_form: bool,
    shape: &Shape,
) -> Result<Request, String> {
    let mut path = None;
    if batch_form {
        match object.remove("method") {
            None => {}
            Some(Value::String(method)) if method.eq_ignore_ascii_case("POST") => {}
            Some(other) => return Err(format!("only POST requests can be sent, got {other}")),
        }
        match object.remove("url") {
            Some(Value::String(url)) if url.starts_with('/') => path = Some(url),
            Some(other) => {
                return Err(format!(
                    "`url` must be a path such as \"/v1/chat/completions\", got {other}"
                ))
            }
            None => return Err("a batch line needs `url`".into()),
        }
        let Some(Value::Object(body)) = object.remove("body") else {
            return Err("a batch line needs `body`, an object".into());
        };
        object = body;
    } else if let Some(prompt) = object.remove("prompt") {
        let Value::String(prompt) = prompt else {
            return Err("`prompt` must be a string".into());
        };
        let model = object.remove("model").unwrap_or_else(|| json!(shape.model));
        let max_tokens = object
            .remove("max_tokens")
            .unwrap_or_else(|| json!(shape.max_tokens));
        object = Map::new();
        object.insert("model".into(), model);
        object.insert("max_tokens".into(), max_tokens);
        object.insert(
            "messages".into(),
            json!([{"role": "user", "content": prompt}]),
        );
    } else if !["messages", "contents", "input"]
        .iter()
        .any(|field| object.contains_key(*field))
    {
        return Err(
            "expected `prompt`, a chat request with `messages`, or a batch line with `custom_id`"
                .into(),
        );
    }
    let max_tokens = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .find_map(|field| object.get(*field).and_then(Value::as_u64));
    Ok(Request {
        path,
        // serde_json's map keeps keys sorted: the body is normalised, and so is its fingerprint.
        body: Bytes::from(Value::Object(object).to_string()),
        max_tokens,
    })
}

/// The digest a result carries of what its line asked.
fn fingerprint(path: Option<&str>, body: &[u8]) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(path.unwrap_or("").as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    first_u64(&hasher.finalize())
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// A fingerprint as a result line writes it.
pub(crate) fn hex(fingerprint: u64) -> String {
    format!("{fingerprint:016x}")
}
