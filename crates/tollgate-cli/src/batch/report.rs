//! The run report: totals by outcome, attempts histogram, latency percentiles, and a plot over
//! time of attempts sent, successes, 429s, retries, tokens and the limits (SVG, or HTML around
//! it).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use plotters::prelude::*;

use super::output::Outcome;

/// Per-second counts, recorded while the batch runs.
pub(crate) struct Timeline {
    started: Instant,
    seconds: Mutex<Vec<[u64; EVENTS]>>,
    /// The adaptive rate limit at each second, when known.
    rates: Mutex<Vec<(f64, f64)>>,
}

/// Which count a moment adds to.
#[derive(Clone, Copy)]
pub(crate) enum Event {
    /// An attempt leaves for the provider.
    Sent = 0,
    /// A request ends in success.
    Succeeded = 1,
    /// The provider answers 429.
    RateLimited = 2,
    /// Attempts beyond the first, counted when the request ends.
    Retries = 3,
    /// Tokens the provider reports used (`usage.total_tokens`), when the request ends.
    Tokens = 4,
}

const EVENTS: usize = 5;

impl Timeline {
    pub(crate) fn new() -> Self {
        Timeline {
            started: Instant::now(),
            seconds: Mutex::new(Vec::new()),
            rates: Mutex::new(Vec::new()),
        }
    }

    /// Records the adaptive rate limit now.
    pub(crate) fn record_rate(&self, per_sec: f64) {
        let at = self.started.elapsed().as_secs_f64();
        let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        // A day of samples at most.
        if rates.len() < 200_000 {
            rates.push((at, per_sec));
        }
    }

    pub(crate) fn record(&self, event: Event, count: u64) {
        if count == 0 {
            return;
        }
        // A day of seconds at most, so a forgotten run cannot grow it without bound.
        let second = (self.started.elapsed().as_secs() as usize).min(86_400);
        let mut seconds = self.seconds.lock().unwrap_or_else(|p| p.into_inner());
        if seconds.len() <= second {
            seconds.resize(second + 1, [0; EVENTS]);
        }
        seconds[second][event as usize] += count;
    }

    fn series(&self) -> Vec<[u64; EVENTS]> {
        self.seconds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What the results say, for the text report and the plot.
#[derive(Default)]
pub(crate) struct Totals {
    pub(crate) by_outcome: BTreeMap<String, u64>,
    pub(crate) attempts: BTreeMap<u64, u64>,
    pub(crate) latencies: Vec<u64>,
    /// Input and output tokens the answers reported.
    pub(crate) tokens: (u64, u64),
    /// The run's estimated cost in dollars, when the config has prices.
    pub(crate) cost: Option<f64>,
}

impl Totals {
    pub(crate) fn add(&mut self, result: &Outcome) {
        *self
            .by_outcome
            .entry(result.outcome.to_owned())
            .or_default() += 1;
        if result.outcome != "invalid_input" {
            *self.attempts.entry(u64::from(result.attempts)).or_default() += 1;
            self.latencies.push(result.latency_ms);
        }
    }

    fn percentile(&self, sorted: &[u64], p: f64) -> u64 {
        if sorted.is_empty() {
            return 0;
        }
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }

    /// The report as text lines.
    pub(crate) fn text(&self) -> String {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let outcomes: Vec<String> = self
            .by_outcome
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let attempts: Vec<String> = self
            .attempts
            .iter()
            .map(|(k, v)| format!("{k}x {v}"))
            .collect();
        let cost = self
            .cost
            .map_or_else(String::new, |cost| format!(", estimated cost ${cost:.4}"));
        format!(
            "outcomes: {}\nattempts: {}\nlatency ms: p50 {} p90 {} p99 {} max {}\n\
             tokens: input {} output {}{cost}",
            outcomes.join(", "),
            attempts.join(", "),
            self.percentile(&sorted, 0.5),
            self.percentile(&sorted, 0.9),
            self.percentile(&sorted, 0.99),
            sorted.last().copied().unwrap_or(0),
            self.tokens.0,
            self.tokens.1,
        )
    }
}

/// Checks that `path` names a format the report is written in.
pub(crate) fn check_format(path: &Path) -> Result<(), String> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg" | "html" | "htm") => Ok(()),
        _ => Err(format!(
            "cannot tell the report format of {}: name it *.svg or *.html",
            path.display()
        )),
    }
}

/// Writes the plot as SVG, or HTML around it, chosen by the file's extension.
pub(crate) fn write(
    path: &Path,
    timeline: &Timeline,
    totals: &Totals,
    limit_per_sec: Option<f64>,
) -> Result<(), String> {
    let svg = plot(timeline, limit_per_sec).map_err(|e| format!("cannot draw the report: {e}"))?;
    let text = match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => svg,
        Some("html") | Some("htm") => format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>tollgate batch report</title></head>\n\
             <body><h1>tollgate batch report</h1>\n<pre>{}</pre>\n{svg}\n</body></html>\n",
            escape(&totals.text())
        ),
        _ => return Err(format!("cannot tell the report format of {}: name it *.svg or *.html", path.display())),
    };
    std::fs::write(path, text).map_err(|e| format!("cannot write report {}: {e}", path.display()))
}

fn plot(
    timeline: &Timeline,
    limit_per_sec: Option<f64>,
) -> Result<String, Box<dyn std::error::Error>> {
    let series = timeline.series();
    let seconds = series.len().max(1) as u64;
    let top = series
        .iter()
        .flat_map(|s| s[..Event::Tokens as usize].iter())
        .copied()
        .max()
        .unwrap_or(1) as f64;
    let tokens: Vec<(u64, f64)> = series
        .iter()
        .enumerate()
        .map(|(i, s)| (i as u64, s[Event::Tokens as usize] as f64))
        .collect();
    let top_tokens = tokens.iter().map(|(_, t)| *t).fold(0.0, f64::max);
    let top_rate = timeline
        .rates
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(_, r)| *r)
        .fold(0.0, f64::max);
    let top = top.max(limit_per_sec.unwrap_or(0.0)).max(top_rate) * 1.1 + 1.0;
    let mut svg = String::new();
    {
        let height = if top_tokens > 0.0 { 620 } else { 420 };
        let root = SVGBackend::with_string(&mut svg, (900, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let (upper, lower) = root.split_vertically(420);
        if top_tokens > 0.0 {
            let mut chart = ChartBuilder::on(&lower)
                .caption("tokens per second (usage reported)", ("sans-serif", 16))
                .margin(12)
                .x_label_area_size(30)
                .y_label_area_size(60)
                .build_cartesian_2d(0u64..seconds, 0f64..top_tokens * 1.1)?;
            chart.configure_mesh().x_desc("seconds").draw()?;
            chart
                .draw_series(LineSeries::new(tokens, BLACK.stroke_width(2)))?
                .label("tokens")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK));
        }
        let mut chart = ChartBuilder::on(&upper)
            .caption("requests per second", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(48)
            .build_cartesian_2d(0u64..seconds, 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("per second")
            .draw()?;
        let named = [
            ("sent", Event::Sent, BLUE),
            ("succeeded", Event::Succeeded, GREEN),
            ("429s", Event::RateLimited, RED),
            ("retries", Event::Retries, CYAN),
        ];
        for (name, event, color) in named {
            let points = series
                .iter()
                .enumerate()
                .map(|(i, s)| (i as u64, s[event as usize] as f64));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        let rates = timeline
            .rates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !rates.is_empty() {
            let points = rates
                .iter()
                .map(|(at, rate)| ((*at as u64).min(seconds), *rate));
            chart
                .draw_series(LineSeries::new(points, MAGENTA.stroke_width(2)))?
                .label("adaptive limit")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], MAGENTA));
        }
        if let Some(limit) = limit_per_sec {
            chart
                .draw_series(LineSeries::new(
                    [(0, limit), (seconds, limit)],
                    BLACK.stroke_width(1),
                ))?
                .label("configured limit")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
