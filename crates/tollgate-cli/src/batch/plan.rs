//! The first pass over the input: what this run must send, given the results already written.
//! It marks in the index the results to redo (failures a rerun retries, results whose line
//! changed), so the second pass only asks the index.

use std::collections::HashSet;
use std::path::Path;

use super::input::{Key, LineKind, Lines, Shape};
use super::output::{Class, Index};

/// What the input and the results file say before anything is sent.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Non-empty input lines.
    pub(crate) lines: u64,
    /// Requests to send this run.
    pub(crate) to_send: u64,
    /// Invalid lines whose result is to be written this run.
    pub(crate) invalid: u64,
    /// Lines whose result an earlier run wrote and that stay as they are.
    pub(crate) done: u64,
    /// Of those, failures kept (failures of the prompt itself, without `--retry-failed`).
    pub(crate) kept_failures: u64,
    /// Earlier failures tried again this run.
    pub(crate) retried: u64,
    /// Earlier results whose line changed since (another input with the same ids): redone.
    pub(crate) changed: u64,
    /// Line numbers that repeat an earlier line's id (a few: kept whole).
    pub(crate) duplicates: HashSet<u64>,
    /// The largest `max_tokens` a request asks, for the default attempt timeout.
    pub(crate) max_tokens: Option<u64>,
}

/// Reads the whole input once (line by line) against `index`.
pub(crate) fn plan(
    input: &Path,
    shape: Shape,
    index: &mut Index,
    retry_failed: bool,
) -> Result<Plan, String> {
    let mut lines = Lines::open(input, shape)?;
    let (mut plan, mut seen) = (Plan::default(), HashSet::new());
    while let Some(line) = lines.next_line()? {
        plan.lines += 1;
        let duplicate = !seen.insert(line.key.digest());
        let key = if duplicate {
            plan.duplicates.insert(line.number);
            Key::Line(line.number)
        } else {
            line.key.clone()
        };
        let is_request = matches!(line.kind, LineKind::Request(_)) && !duplicate;
        if let LineKind::Request(request) = &line.kind {
            plan.max_tokens = plan.max_tokens.max(request.max_tokens);
        }
        let work = match index.entries.get_mut(&key.digest()) {
            None => true,
            Some(entry) if entry.fingerprint != line.fingerprint => {
                entry.redo = true;
                plan.changed += 1;
                true
            }
            Some(entry) => match entry.class {
                Class::Succeeded => false,
                Class::Prompt if !retry_failed => {
                    plan.kept_failures += 1;
                    false
                }
                _ => {
                    entry.redo = true;
                    plan.retried += 1;
                    true
                }
            },
        };
        match (work, is_request) {
            (false, _) => plan.done += 1,
            (true, true) => plan.to_send += 1,
            (true, false) => plan.invalid += 1,
        }
    }
    Ok(plan)
}
