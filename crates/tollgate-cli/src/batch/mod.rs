//! `tollgate batch`: one request per input line through the standard stack, one result per
//! line in the output, nothing lost and nothing sent twice across interruptions.

mod flags;
mod input;
mod output;
mod report;
mod target;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tollgate::retry::{RetryError, RetryInfo, StopReason};
use tower::{Layer, ServiceExt};

pub(crate) use target::Target;

/// Options of `tollgate batch`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BatchArgs {
    /// JSONL input: one chat request, or `{"id": ..., "prompt": "..."}`, per line.
    #[arg(long)]
    input: PathBuf,
    /// JSONL output: one result per input line. Run again with the same file to resume.
    #[arg(long)]
    output: PathBuf,
    /// Provider preset: openai, anthropic, groq, azure-openai, gemini, gemini-openai,
    /// openai-compatible.
    #[arg(long, conflicts_with = "config")]
    provider: Option<String>,
    /// Config file (TOML or JSON) with `[providers.NAME]` policies; the first provider is used
    /// unless `--provider` names one... of the file's names.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The provider named in the config file to use.
    #[arg(long, requires = "config")]
    config_provider: Option<String>,
    /// Base URL of an OpenAI- or Anthropic-compatible API. Without it, and without an API key in
    /// the environment, the batch runs against the embedded mock provider.
    #[arg(long)]
    endpoint: Option<String>,
    /// Model for `prompt` lines.
    #[arg(long, default_value = "gpt-4o-mini")]
    model: String,
    /// `max_tokens` for `prompt` lines.
    #[arg(long, default_value_t = 256)]
    max_tokens: u64,
    /// The flags that change the policy.
    #[command(flatten)]
    policy: flags::PolicyFlags,
    /// Share the quota with every process using this Redis (`redis://host:port/`): several
    /// batches on one API key then never exceed its limits together. Needs `--rpm` or `--tpm`.
    #[arg(long, env = "TOLLGATE_REDIS_URL", hide_env_values = true)]
    redis: Option<String>,
    /// How many processes share the quota with `--redis`: while Redis is down, each sends its
    /// share (the limit divided by this) until Redis answers again.
    #[arg(long, default_value_t = 1, requires = "redis", value_parser = clap::value_parser!(u32).range(1..))]
    processes: u32,
    /// After Ctrl-C, how long in-flight requests may finish, in seconds.
    #[arg(long, default_value_t = 30.0)]
    grace: f64,
    /// Write the run's totals as JSON to this file.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// Write a report with a plot over time to this file (`.svg` or `.html`).
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Default)]
struct Counters {
    done: AtomicU64,
    ok: AtomicU64,
    attempts: AtomicU64,
    rate_limited: AtomicU64,
}

pub(crate) async fn run(args: BatchArgs) -> Result<ExitCode, String> {
    if let Some(path) = &args.report {
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("svg" | "html" | "htm")
        ) {
            return Err(format!(
                "cannot tell the report format of {}: name it *.svg or *.html",
                path.display()
            ));
        }
    }
    let (jobs, invalid) = input::read(&args.input, &args.model, args.max_tokens)?;
    let done = output::done_ids(&args.output)?;
    let mut results = output::Results::open(&args.output)?;
    let target = Target::resolve(&args).await?;
    let total_lines = jobs.len() + invalid.len();
    let mut errors_by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut totals = report::Totals::default();
    let timeline = Arc::new(report::Timeline::new());
    for bad in invalid.iter().filter(|b| !done.contains(&b.id)) {
        eprintln!("tollgate: skipping {}", bad.message);
        let line = json!({"id": bad.id, "status": null, "outcome": "invalid_input",
            "error": {"kind": "invalid_input", "message": bad.message}, "attempts": 0, "latency_ms": 0});
        results
            .append(&line)
            .map_err(|e| format!("cannot write output {}: {e}", args.output.display()))?;
        *errors_by_kind.entry("invalid_input".into()).or_default() += 1;
    }
    let todo: Vec<_> = jobs
        .into_iter()
        .filter(|job| !done.contains(&job.id))
        .collect();
    let skipped = total_lines
        - todo.len()
        - errors_by_kind.get("invalid_input").copied().unwrap_or(0) as usize;
    if skipped > 0 {
        eprintln!(
            "tollgate: resuming: {skipped} of {total_lines} already in {}",
            args.output.display()
        );
    }

    let counters = Arc::new(Counters::default());
    let rate_limited = Arc::clone(&counters);
    // Count the 429s the provider sends, below the stack, where every attempt passes.
    let client = tower::util::MapResponseLayer::new(
        move |response: http::Response<hyper::body::Incoming>| {
            if response.status() == http::StatusCode::TOO_MANY_REQUESTS {
                rate_limited.rate_limited.fetch_add(1, Ordering::Relaxed);
            }
            response
        },
    )
    .layer(tollgate_e2e::https_client());
    let layer = target.layer.clone();
    let breaker = layer.breaker_handle();
    let limiter = layer.limit_handle();
    let stack = layer.layer(client);

    let stop = Arc::new(AtomicBool::new(false));
    let stopper = Arc::clone(&stop);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "\ntollgate: interrupted: finishing the requests in flight, admitting no more"
            );
            stopper.store(true, Ordering::SeqCst);
        }
    });

    let (sender, mut receiver) = mpsc::unbounded_channel::<Value>();
    let slots = Arc::new(Semaphore::new(target.concurrency));
    let started = Instant::now();
    let total = todo.len() as u64;
    let progress = Progress::new(total);
    let dispatcher = {
        let (stop, counters) = (Arc::clone(&stop), Arc::clone(&counters));
        let target = target.clone();
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for job in todo {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    break;
                };
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let (stack, sender, counters, target) = (
                    stack.clone(),
                    sender.clone(),
                    Arc::clone(&counters),
                    target.clone(),
                );
                tasks.spawn(async move {
                    let result = send(stack, &target, job).await;
                    counters
                        .attempts
                        .fetch_add(result["attempts"].as_u64().unwrap_or(0), Ordering::Relaxed);
                    if result["outcome"] == "ok" {
                        counters.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    counters.done.fetch_add(1, Ordering::Relaxed);
                    let _ = sender.send(result);
                    drop(slot);
                });
            }
            drop(sender);
            tasks
        })
    };

    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let mut grace_deadline: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            line = receiver.recv() => {
                let Some(line) = line else { break };
                totals.add(&line);
                if line["outcome"] == "ok" {
                    timeline.record(report::Event::Succeeded);
                } else {
                    let kind = line["error"]["kind"].as_str().unwrap_or("http_error").to_owned();
                    *errors_by_kind.entry(kind).or_default() += 1;
                }
                results.append(&line).map_err(|e| format!("cannot write output {}: {e}", args.output.display()))?;
            }
            _ = ticker.tick() => {
                let rate = limiter.snapshot().adaptive_rate;
                if let Some(rate) = rate {
                    timeline.record_rate(rate);
                }
                progress.show(&counters, breaker.snapshot().state.as_str(), rate, started.elapsed());
                if stop.load(Ordering::SeqCst) && grace_deadline.is_none() {
                    grace_deadline = Some(tokio::time::Instant::now() + Duration::from_secs_f64(args.grace.max(0.0)));
                }
                if grace_deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    break;
                }
            }
        }
    }
    // Only requests whose results are written count as done: the rest are resumed next time.
    let mut tasks = dispatcher
        .await
        .map_err(|e| format!("dispatcher failed: {e}"))?;
    tasks.abort_all();
    progress.finish(&counters, started.elapsed());

    let written = counters.done.load(Ordering::Relaxed);
    let interrupted = stop.load(Ordering::SeqCst) && written < total;
    let summary = json!({
        "requests": total_lines,
        "resumed_skipped": skipped,
        "sent": written,
        "successes": counters.ok.load(Ordering::Relaxed),
        "errors_by_kind": errors_by_kind,
        "attempts": counters.attempts.load(Ordering::Relaxed),
        "rate_limited_429": counters.rate_limited.load(Ordering::Relaxed),
        "wall_time_s": started.elapsed().as_secs_f64(),
        "interrupted": interrupted,
    });
    eprintln!("{}", totals.text());
    if let Some(path) = &args.report {
        let limit = target.policy.limits.requests.map(|rate| rate.per_sec());
        report::write(path, &timeline, &totals, limit)?;
    }
    if let Some(path) = &args.summary_json {
        std::fs::write(path, format!("{summary:#}\n"))
            .map_err(|e| format!("cannot write summary {}: {e}", path.display()))?;
    }
    eprintln!("tollgate: {summary}");
    if interrupted {
        eprintln!(
            "tollgate: {} requests left; run the same command again to resume",
            total - written
        );
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends one job and describes its end as a result line.
async fn send<S, B>(stack: S, target: &Target, job: input::Job) -> Value
where
    S: tower::Service<
        http::Request<tollgate_e2e::Body>,
        Response = http::Response<B>,
        Error = RetryError,
    >,
    B: http_body::Body,
    B::Error: std::fmt::Display,
{
    let started = Instant::now();
    let request = target.request(job.body);
    let latency = |started: Instant| started.elapsed().as_millis() as u64;
    match stack.oneshot(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let info = response.extensions().get::<RetryInfo>().copied();
            let attempts = info.map_or(1, |i| i.attempts);
            let response_stop = info.and_then(|i| i.stopped);
            let body = match response.into_body().collect().await {
                Ok(body) => body.to_bytes(),
                Err(error) => {
                    return json!({"id": job.id, "status": status, "outcome": "error",
                        "error": {"kind": "connection", "message": format!("the answer broke off: {error}")},
                        "attempts": attempts, "latency_ms": latency(started)});
                }
            };
            let answer: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            if (200..300).contains(&status) {
                json!({"id": job.id, "status": status, "outcome": "ok", "response": answer, "attempts": attempts, "latency_ms": latency(started)})
            } else {
                let stopped = response_stop.map(StopReason::as_str);
                json!({"id": job.id, "status": status, "outcome": "http_error",
                    "error": {"kind": error_kind(&format!("http_{status}"), response_stop), "stopped": stopped, "message": answer},
                    "attempts": attempts, "latency_ms": latency(started)})
            }
        }
        Err(error) => json!({"id": job.id, "status": null, "outcome": "error",
            "error": {"kind": error_kind(error.last_verdict().kind().as_str(), Some(error.reason())), "stopped": error.reason().as_str(), "message": error.to_string()},
            "attempts": error.attempts(), "latency_ms": latency(started)}),
    }
}

/// The kind of a failure as the result line says it: what the last attempt met, unless the
/// retry layer stopped for a reason of its own that the operator must see (its budget ran out;
/// the status or the message still says what the last attempt met).
fn error_kind(last: &str, stopped: Option<StopReason>) -> String {
    match stopped {
        Some(StopReason::BudgetExhausted) => "retry_budget_exhausted".to_owned(),
        _ => last.to_owned(),
    }
}

/// A progress bar on a terminal, a plain line every few seconds otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    last_line: std::sync::Mutex<Instant>,
}

impl Progress {
    fn new(total: u64) -> Self {
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

    fn show(&self, counters: &Counters, breaker: &str, rate: Option<f64>, elapsed: Duration) {
        let done = counters.done.load(Ordering::Relaxed);
        let retries = counters
            .attempts
            .load(Ordering::Relaxed)
            .saturating_sub(done);
        let limited = counters.rate_limited.load(Ordering::Relaxed);
        let rate = rate.map_or_else(|| "none yet".to_owned(), |r| format!("{r:.1}/s"));
        let message =
            format!("retries {retries} 429s {limited} breaker {breaker} adaptive limit {rate}");
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

    fn finish(&self, counters: &Counters, elapsed: Duration) {
        if let Some(bar) = &self.bar {
            bar.set_position(counters.done.load(Ordering::Relaxed));
            bar.finish();
        }
        let _ = elapsed;
    }
}
