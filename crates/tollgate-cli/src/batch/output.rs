//! The results file: one JSON line per input, appended and flushed as each completes, so a run
//! killed at any moment resumes where it stopped.

use std::collections::HashSet;
use std::io::{Read, Seek, Write};
use std::path::Path;

use serde_json::Value;

/// The ids already in `path`, after cutting off a last line that a killed run left half
/// written. Creates the file if it does not exist.
pub(crate) fn done_ids(path: &Path) -> Result<HashSet<String>, String> {
    let cannot = |e: std::io::Error| format!("cannot use output {}: {e}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(cannot)?;
    let mut text = Vec::new();
    file.read_to_end(&mut text).map_err(cannot)?;
    let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if complete < text.len() {
        file.set_len(complete as u64).map_err(cannot)?;
    }
    file.seek(std::io::SeekFrom::End(0)).map_err(cannot)?;
    let mut ids = HashSet::new();
    for line in text[..complete]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
    {
        let id = serde_json::from_slice::<Value>(line)
            .ok()
            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned));
        match id {
            Some(id) => {
                ids.insert(id);
            }
            None => {
                return Err(format!(
                    "{} has a line that is not a tollgate result; use another output file",
                    path.display()
                ))
            }
        }
    }
    Ok(ids)
}

/// Appends result lines, flushing each.
pub(crate) struct Results {
    file: std::fs::File,
}

impl Results {
    pub(crate) fn open(path: &Path) -> Result<Self, String> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| format!("cannot write output {}: {e}", path.display()))?;
        Ok(Results { file })
    }

    pub(crate) fn append(&mut self, result: &Value) -> std::io::Result<()> {
        let mut line = result.to_string();
        line.push('\n');
        // One write per line: a kill leaves at most one partial line, which resuming cuts off.
        self.file.write_all(line.as_bytes())?;
        self.file.flush()
    }
}
