//! Live counters of what the mock saw and answered.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// A snapshot of the mock's counters, also served as JSON at `GET /_mock/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Requests received on the API routes (every attempt a client made).
    pub requests: u64,
    /// Answers by HTTP status.
    pub by_status: BTreeMap<u16, u64>,
    /// Connections closed without an answer (injected resets).
    pub resets: u64,
    /// Requests held without an answer (injected hangs).
    pub hangs: u64,
    /// Requests refused by the limiter with a 429 (injected 429s are counted in `by_status` only).
    pub limited: u64,
    /// Tokens charged to the token bucket.
    pub tokens_charged: u64,
    /// Input tokens of the answers, cache reads included.
    pub input_tokens: u64,
    /// Output tokens of the answers.
    pub output_tokens: u64,
    /// One entry per second since the server started.
    pub timeline: Vec<Second>,
}

/// What happened during one second of the server's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Second {
    /// Requests received.
    pub received: u64,
    /// 2xx answers.
    pub ok: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// Other failures (5xx, resets, hangs).
    pub failed: u64,
}

impl Stats {
    /// Answers with this status.
    pub fn status(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    /// All 2xx answers.
    pub fn successes(&self) -> u64 {
        self.by_status
            .iter()
            .filter(|(status, _)| (200..300).contains(*status))
            .map(|(_, count)| count)
            .sum()
    }
}

/// What kind of outcome to record in the timeline.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Status(u16),
    Reset,
    Hang,
}

#[derive(Debug, Default)]
pub(crate) struct Recorder(Mutex<Stats>);

impl Recorder {
    pub(crate) fn received(&self, second: usize) {
        let mut stats = self.lock();
        stats.requests += 1;
        slot(&mut stats.timeline, second).received += 1;
    }

    pub(crate) fn answered(&self, second: usize, outcome: Outcome, limited: bool, tokens: u64) {
        let mut stats = self.lock();
        stats.tokens_charged += tokens;
        if limited {
            stats.limited += 1;
        }
        let entry = slot(&mut stats.timeline, second);
        match outcome {
            Outcome::Status(status) if (200..300).contains(&status) => entry.ok += 1,
            Outcome::Status(429) => entry.rate_limited += 1,
            _ => entry.failed += 1,
        }
        match outcome {
            Outcome::Status(status) => *stats.by_status.entry(status).or_default() += 1,
            Outcome::Reset => stats.resets += 1,
            Outcome::Hang => stats.hangs += 1,
        }
    }

    /// Tokens an answer used.
    pub(crate) fn used(&self, input: u64, output: u64) {
        let mut stats = self.lock();
        stats.input_tokens += input;
        stats.output_tokens += output;
    }

    pub(crate) fn snapshot(&self) -> Stats {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Stats> {
        // A panic while holding this lock cannot leave the counters inconsistent in a way that
        // matters more than losing them, so recover from poisoning.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn slot(timeline: &mut Vec<Second>, second: usize) -> &mut Second {
    // Bound the timeline to a day so a long-lived server cannot grow it without end.
    let second = second.min(86_400);
    if timeline.len() <= second {
        timeline.resize(second + 1, Second::default());
    }
    &mut timeline[second]
}
