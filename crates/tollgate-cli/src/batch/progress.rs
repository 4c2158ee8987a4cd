//! What the operator sees while the batch runs.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Counters;

/// A progress bar on a terminal, a plain line every few seconds otherwise.
pub(crate) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    last_line: std::sync::Mutex<Instant>,
}

impl Progress {
    pub(crate) fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} {per_sec} eta {eta} {msg}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        Progress {
            bar,
            total,
            last_line: std::sync::Mutex::new(Instant::now()),
        }
    }

    pub(crate) fn show(
        &self,
        counters: &Counters,
        breaker: &str,
        rate: Option<f64>,
        elapsed: Duration,
    ) {
        let done = counters.done.load(Ordering::Relaxed);
        let retries = counters
            .attempts
            .load(Ordering::Relaxed)
            .saturating_sub(done);
        let limited = counters.rate_limited.load(Ordering::Relaxed);
        let rate = rate.map_or_else(|| "none yet".to_owned(), |r| format!("{r:.1}/s"));
        let input = counters.input_tokens.load(Ordering::Relaxed);
        let output = counters.output_tokens.load(Ordering::Relaxed);
        let message = format!(
            "retries {retries} 429s {limited} tokens in {input} out {output} breaker {breaker} \
             adaptive limit {rate}"
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(done);
                bar.set_message(message);
            }
            None => {
                let mut last = self.last_line.lock().unwrap_or_else(|p| p.into_inner());
                if last.elapsed() >= Duration::from_secs(5) {
                    *last = Instant::now();
                    let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
                    eprintln!(
                        "tollgate: {done}/{} done, {rate:.1}/s, {message}",
                        self.total
                    );
                }
            }
        }
    }

    pub(crate) fn finish(&self, counters: &Counters, elapsed: Duration) {
        if let Some(bar) = &self.bar {
            bar.set_position(counters.done.load(Ordering::Relaxed));
            bar.finish();
        }
        let _ = elapsed;
    }
}
