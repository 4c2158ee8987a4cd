//! The run report: totals by outcome, attempts histogram, latency percentiles, and a plot over
//! time of requests sent, successes, 429s and the configured limit (SVG, or HTML around it).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use plotters::prelude::*;
use serde_json::Value;

/// Per-second counts, recorded while the batch runs.
pub(crate) struct Timeline {
    started: Instant,
    seconds: Mutex<Vec<[u64; 3]>>,
    /// The adaptive rate limit at each second, when known.
    rates: Mutex<Vec<(f64, f64)>>,
}

/// Which count a moment adds to.
#[derive(Clone, Copy)]
pub(crate) enum Event {
    Sent = 0,
    Succeeded = 1,
    RateLimited = 2,
}

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

    pub(crate) fn record(&self, event: Event) {
        // A day of seconds at most, so a forgotten run cannot grow it without bound.
        let second = (self.started.elapsed().as_secs() as usize).min(86_400);
        let mut seconds = self.seconds.lock().unwrap_or_else(|p| p.into_inner());
        if seconds.len() <= second {
            seconds.resize(second + 1, [0; 3]);
        }
        seconds[second][event as usize] += 1;
    }

    fn series(&self) -> Vec<[u64; 3]> {
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
}

impl Totals {
    pub(crate) fn add(&mut self, result: &Value) {
        let outcome = result["outcome"].as_str().unwrap_or("unknown").to_owned();
        *self.by_outcome.entry(outcome).or_default() += 1;
        if result["outcome"] != "invalid_input" {
            *self
                .attempts
                .entry(result["attempts"].as_u64().unwrap_or(0))
                .or_default() += 1;
            self.latencies
                .push(result["latency_ms"].as_u64().unwrap_or(0));
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
        format!(
            "outcomes: {}\nattempts: {}\nlatency ms: p50 {} p90 {} p99 {} max {}",
            outcomes.join(", "),
            attempts.join(", "),
            self.percentile(&sorted, 0.5),
            self.percentile(&sorted, 0.9),
            self.percentile(&sorted, 0.99),
            sorted.last().copied().unwrap_or(0)
        )
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
        .flat_map(|s| s.iter())
        .copied()
        .max()
        .unwrap_or(1) as f64;
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
        let root = SVGBackend::with_string(&mut svg, (900, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
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
