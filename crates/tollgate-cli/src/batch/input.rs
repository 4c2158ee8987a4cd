//! Reading the batch: one request per JSONL line.

use std::collections::HashSet;
use std::path::Path;

use bytes::Bytes;
use serde_json::{json, Map, Value};

/// One request to send.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) id: String,
    pub(crate) body: Bytes,
}

/// A line that cannot be sent, reported in the results rather than aborting the run.
#[derive(Debug, Clone)]
pub(crate) struct Invalid {
    pub(crate) id: String,
    pub(crate) message: String,
}

/// Reads `path`: every non-empty line is a job, or an invalid line with its line number.
/// `{"id": ..., "prompt": "..."}` is wrapped in a chat request for `model`; any other object is
/// sent as the request body (its `id`, if any, is taken out and used as the result's id).
pub(crate) fn read(
    path: &Path,
    model: &str,
    max_tokens: u64,
) -> Result<(Vec<Job>, Vec<Invalid>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read input {}: {e}", path.display()))?;
    let (mut jobs, mut invalid, mut seen) = (Vec::new(), Vec::new(), HashSet::new());
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        match parse(line, number, model, max_tokens) {
            Ok(job) if seen.insert(job.id.clone()) => jobs.push(job),
            Ok(job) => invalid.push(Invalid {
                id: format!("line-{number}"),
                message: format!("line {number}: duplicate id `{}`", job.id),
            }),
            Err(message) => invalid.push(Invalid {
                id: format!("line-{number}"),
                message: format!("line {number}: {message}"),
            }),
        }
    }
    Ok((jobs, invalid))
}

fn parse(line: &str, number: usize, model: &str, max_tokens: u64) -> Result<Job, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON ({e})"))?;
    let Value::Object(mut object) = value else {
        return Err("expected a JSON object".into());
    };
    let id = match object.remove("id") {
        None => format!("line-{number}"),
        Some(Value::String(id)) if !id.is_empty() => id,
        Some(Value::Number(id)) => id.to_string(),
        Some(other) => return Err(format!("`id` must be a string or a number, got {other}")),
    };
    let body = if let Some(prompt) = object.remove("prompt") {
        let Value::String(prompt) = prompt else {
            return Err("`prompt` must be a string".into());
        };
        let mut request = Map::new();
        request.insert(
            "model".into(),
            object.remove("model").unwrap_or_else(|| json!(model)),
        );
        request.insert(
            "max_tokens".into(),
            object
                .remove("max_tokens")
                .unwrap_or_else(|| json!(max_tokens)),
        );
        request.insert(
            "messages".into(),
            json!([{"role": "user", "content": prompt}]),
        );
        Value::Object(request)
    } else if object.contains_key("messages")
        || object.contains_key("contents")
        || object.contains_key("input")
    {
        Value::Object(object)
    } else {
        return Err("expected `prompt` or a chat request with `messages`".into());
    };
    Ok(Job {
        id,
        body: Bytes::from(body.to_string()),
    })
}
