//! `tollgate batch`: one request per input line through the standard stack, one result per
//! line in the output, nothing lost and nothing sent twice across interruptions.
//!
//! The input is read twice, line by line and never whole: once to plan (what the results file
//! already holds for each line, bound by the line's fingerprint), once to send. Memory follows
//! the number of lines only through a few words per line in the index.
//!
//! Exit codes: 0 every line succeeded (in this run or an earlier one); 1 the run finished but
//! some lines did not succeed (their results say why; a rerun tries them again); 2 the run could
//! not start (bad arguments, an unreachable endpoint or Redis, an unusable output); 130 and 143
//! stopped by SIGINT or SIGTERM (a rerun resumes); 75 a daily quota is spent (a rerun after it
//! resets resumes).

pub(crate) mod flags;
mod input;
mod output;
mod plan;
mod progress;
mod report;
mod send;
mod stop;
mod stream;
pub(crate) mod target;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{mpsc, Semaphore};
use tower::Layer;

use input::{Key, Line, LineKind, Shape};
use output::{Class, Outcome};
pub(crate) use target::Target;

/// Options of `tollgate batch`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BatchArgs {
    /// JSONL input, read line by line: `{"id": ..., "prompt": "..."}`, a chat request body, or
    /// an OpenAI Batch API line (`custom_id`, `method`, `url`, `body`).
    #[arg(long)]
    input: PathBuf,
    /// JSONL output: one result per input line. Run again with the same file to resume: what
    /// succeeded is kept, failures are tried again (see --retry-failed), and a result whose
    /// input line changed is redone.
    #[arg(long)]
    output: PathBuf,
    /// The results' format: tollgate's, or the OpenAI Batch API's output lines.
    #[arg(long, value_enum, default_value_t)]
    output_format: output::Format,
    /// Also try again the failures of the prompts themselves (invalid lines, 400/413/422
    /// answers, requests over the token limit), which a plain rerun keeps.
    #[arg(long)]
    retry_failed: bool,
    /// Provider preset: openai, anthropic, groq, azure-openai, gemini, gemini-openai,
    /// openai-compatible.
    #[arg(long, conflicts_with = "config")]
    provider: Option<String>,
    /// Config file (TOML or JSON) with `[providers.NAME]` policies; the first provider is used
    /// unless --config-provider names another.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The provider of the config file to use (a name of its `[providers.NAME]` tables).
    #[arg(long, requires = "config")]
    config_provider: Option<String>,
    /// Base URL of an OpenAI- or Anthropic-compatible API (`https://host[:port][/prefix]`); it
    /// must answer before the run starts. Without it, and without an API key in the
    /// environment, the batch runs against the embedded mock provider.
    #[arg(long)]
    endpoint: Option<String>,
    /// Another endpoint of the same API to send a request to when the one before it cannot
    /// serve it (its breaker open, its quota refusing, its retries given up on an outage or
    /// overload, the prompt too long for its model): `URL`, or `URL#MODEL` to ask it for another
    /// model. Repeatable, tried in order; each has its own breaker and limiter, the same key and
    /// policy. Every result then says which served it (`served_by`).
    #[arg(long = "fallback", value_name = "URL[#MODEL]")]
    fallbacks: Vec<String>,
    /// Send no API key: the --endpoint needs none (a local server).
    #[arg(long)]
    no_key: bool,
    /// Model for `prompt` lines (default: the provider's small current model: gpt-4o-mini,
    /// claude-haiku-4-5, llama-3.1-8b-instant, gemini-2.5-flash).
    #[arg(long)]
    model: Option<String>,
    /// Send every request streamed (server-sent events) and assemble the answer: the results
    /// have the same shape as without it. A stream that breaks after its first token is sent
    /// again whole (counted in the summary's `streams_retried`); one that breaks before it is
    /// retried by the stack.
    #[arg(long)]
    stream: bool,
    /// The batch's lane in the quota's queue (`low`, `normal`, `high`, or 0 to 255): with
    /// `--redis`, other processes' higher lanes go first (default normal).
    #[arg(long, value_parser = parse_priority)]
    priority: Option<tollgate::rate_limit::Priority>,
    /// `max_tokens` for `prompt` lines.
    #[arg(long, default_value_t = 256, value_parser = flags::positive)]
    max_tokens: u64,
    /// The flags that change the policy.
    #[command(flatten)]
    policy: flags::PolicyFlags,
    /// Sharing the quota through Redis.
    #[command(flatten)]
    pub(crate) redis: crate::shared_quota::RedisFlags,
    /// After Ctrl-C or SIGTERM, how long in-flight requests may finish, in seconds (a second
    /// signal stops at once).
    #[arg(long, default_value_t = 30.0, value_parser = flags::non_negative_secs)]
    grace: f64,
    /// Write the run's totals as JSON to this file.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// Write a report with a plot over time to this file (`.svg` or `.html`).
    #[arg(long)]
    report: Option<PathBuf>,
}

/// Live counts, for the progress line.
#[derive(Default)]
pub(crate) struct Counters {
    /// Requests handed to the stack this run.
    pub(crate) sent: AtomicU64,
    /// Results written this run.
    pub(crate) done: AtomicU64,
    /// Attempts the client made.
    pub(crate) attempts: AtomicU64,
    /// 429s the provider answered.
    pub(crate) rate_limited: AtomicU64,
    /// Input tokens the answers reported using.
    pub(crate) input_tokens: AtomicU64,
    /// Output tokens the answers reported using.
    pub(crate) output_tokens: AtomicU64,
    /// Streams that broke after their first token and were sent again whole.
    pub(crate) streams_retried: AtomicU64,
}

/// Exit code: the run finished but some lines did not succeed.
const SOME_FAILED: u8 = 1;

/// Exit code: a daily quota is spent; the lines left are sent by a run after it resets
/// (`EX_TEMPFAIL`).
const QUOTA_SPENT: u8 = 75;

/// Invalid lines named on stderr (all are in the results).
const SHOWN_INVALID: u64 = 10;

pub(crate) async fn run(args: BatchArgs) -> Result<ExitCode, String> {
    // Everything that can be checked is checked before anything is sent.
    output::check_path(&args.output, &args.input)?;
    for (flag, path) in [
        ("--report", &args.report),
        ("--summary-json", &args.summary_json),
    ] {
        if let Some(path) = path {
            check_writable(flag, path)?;
        }
    }
    if let Some(path) = &args.report {
        report::check_format(path)?;
    }
    let target::Resolved {
        policy,
        prices,
        fallbacks,
    } = target::policy(&args)?;
    let shape = Shape {
        model: args
            .model
            .clone()
            .unwrap_or_else(|| target::default_model(policy.provider).to_owned()),
        max_tokens: args.max_tokens,
    };
    let mut index = output::index(&args.output)?;
    let (plan, index) = {
        let (input, shape, retry_failed) = (args.input.clone(), shape.clone(), args.retry_failed);
        tokio::task::spawn_blocking(move || {
            plan::plan(&input, shape, &mut index, retry_failed).map(|plan| (plan, index))
        })
        .await
        .map_err(|e| format!("planning failed: {e}"))??
    };
    let target = Target::resolve(&args, policy, fallbacks, plan.max_tokens).await?;
    output::drop_redone(&args.output, &index)?;
    let mut results = output::Results::open(&args.output, args.output_format)?;
    announce(&plan, &args.output);

    let counters = Arc::new(Counters::default());
    let timeline = Arc::new(report::Timeline::new());
    let client = {
        let (counters, timeline) = (Arc::clone(&counters), Arc::clone(&timeline));
        let (sent, attempts) = (Arc::clone(&timeline), Arc::clone(&counters));
        // Below the stack every attempt passes: count what is sent and the 429s it draws.
        tower::ServiceBuilder::new()
            .map_request(move |request: http::Request<tollgate_e2e::Body>| {
                sent.record(report::Event::Sent, 1);
                attempts.attempts.fetch_add(1, Ordering::Relaxed);
                request
            })
            .map_response(move |response: http::Response<hyper::body::Incoming>| {
                if response.status() == http::StatusCode::TOO_MANY_REQUESTS {
                    counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                    timeline.record(report::Event::RateLimited, 1);
                }
                response
            })
            .service(tollgate_e2e::https_client())
    };
    let layer = target.layer.clone();
    let (breaker, limiter) = (layer.breaker_handle(), layer.limit_handle());
    let stack = target.chain()?.layer(client);
    let mut stop = stop::listen(args.grace)?;

    // The second pass: the lines with work to do, read on a blocking thread as they are needed.
    let (lines, mut to_do) = mpsc::channel::<Line>(256);
    let reader = {
        let (input, duplicates) = (args.input.clone(), plan.duplicates.clone());
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut reader = input::Lines::open(&input, shape)?;
            while let Some(mut line) = reader.next_line()? {
                if duplicates.contains(&line.number) {
                    line.kind = LineKind::Invalid(format!(
                        "line {}: the id of an earlier line, given again",
                        line.number
                    ));
                    line.key = Key::Line(line.number);
                }
                let redo = index
                    .entries
                    .get(&line.key.digest())
                    .is_none_or(|entry| entry.redo);
                if redo && lines.blocking_send(line).is_err() {
                    break;
                }
            }
            Ok(())
        })
    };

    let (finished, mut outcomes) = mpsc::channel::<send::Ended>(256);
    // A spent daily quota stops the admissions as a signal does, without its exit code.
    let (quota_spent, spent) = tokio::sync::watch::channel(false);
    let slots = Arc::new(Semaphore::new(target.concurrency));
    let dispatcher = {
        let (target, mut stop, counters) = (target.clone(), stop.clone(), Arc::clone(&counters));
        let mut spent = spent.clone();
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            loop {
                // Stop admitting at the first signal, even while every slot is busy.
                let line = tokio::select! {
                    line = to_do.recv() => line,
                    _ = stop.wait_for(|s| s.signal.is_some()) => None,
                    _ = spent.wait_for(|spent| *spent) => None,
                };
                let Some(line) = line else { break };
                if let LineKind::Invalid(message) = &line.kind {
                    let outcome = send::invalid(&line, message.clone());
                    if finished
                        .send(send::Ended::Done(Box::new(outcome), send::Usage::default()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    continue;
                }
                let slot = tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => slot,
                    _ = stop.wait_for(|s| s.signal.is_some()) => break,
                    _ = spent.wait_for(|spent| *spent) => break,
                };
                let Ok(slot) = slot else { break };
                counters.sent.fetch_add(1, Ordering::Relaxed);
                let (stack, finished, target) = (stack.clone(), finished.clone(), target.clone());
                let counters = Arc::clone(&counters);
                tasks.spawn(async move {
                    let ended = send::send(stack, &target, line, &counters).await;
                    let _ = finished.send(ended).await;
                    drop(slot);
                });
                while tasks.try_join_next().is_some() {}
            }
            tasks
        })
    };

    let started = Instant::now();
    let progress = progress::Progress::new(plan.to_send + plan.invalid);
    let mut totals = report::Totals::default();
    let mut errors_by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let (mut written, mut succeeded, mut failed) = (0u64, 0u64, 0u64);
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let mut grace_ends: Option<tokio::time::Instant> = None;
    let (mut cost, mut unpriced) = (0.0f64, 0u64);
    let mut daily: Option<(tollgate::classify::LimitKind, Duration)> = None;
    let mut write = |outcome: Outcome, usage: send::Usage| -> Result<(), String> {
        results
            .append(&outcome)
            .map_err(|e| format!("cannot write output {}: {e}", args.output.display()))?;
        written += 1;
        counters.done.fetch_add(1, Ordering::Relaxed);
        totals.add(&outcome);
        timeline.record(
            report::Event::Retries,
            u64::from(outcome.attempts.saturating_sub(1)),
        );
        let tokens = usage.input_tokens + usage.output_tokens;
        totals.tokens.0 += usage.input_tokens;
        totals.tokens.1 += usage.output_tokens;
        if tokens > 0 {
            timeline.record(report::Event::Tokens, tokens);
            counters
                .input_tokens
                .fetch_add(usage.input_tokens, Ordering::Relaxed);
            counters
                .output_tokens
                .fetch_add(usage.output_tokens, Ordering::Relaxed);
            match usage.model.as_deref().and_then(|model| prices.get(model)) {
                Some(price) => cost += price.cost(usage.input_tokens, usage.output_tokens),
                None => unpriced += tokens,
            }
        }
        if outcome.class == Class::Succeeded {
            succeeded += 1;
            timeline.record(report::Event::Succeeded, 1);
        } else {
            failed += 1;
            let count = errors_by_kind
                .entry(outcome.kind.clone().unwrap_or_default())
                .or_default();
            *count += 1;
            if outcome.outcome == "invalid_input" && *count <= SHOWN_INVALID {
                let message = outcome.message.as_deref().unwrap_or_default();
                eprintln!("tollgate: skipping {message}");
            }
        }
        Ok(())
    };
    loop {
        tokio::select! {
            ended = outcomes.recv() => {
                match ended {
                    Some(send::Ended::Done(outcome, usage)) => write(*outcome, usage)?,
                    Some(send::Ended::QuotaSpent(limit, resets_in)) => {
                        if daily.is_none() {
                            eprintln!(
                                "\ntollgate: the daily quota of {} is spent: admitting no more; \
                                 the requests in flight finish",
                                limit.as_str()
                            );
                            let _ = quota_spent.send(true);
                        }
                        daily.get_or_insert((limit, resets_in));
                    }
                    None => break,
                }
            }
            _ = stop.changed() => {
                let now = *stop.borrow();
                if now.count >= 2 {
                    break;
                }
                grace_ends.get_or_insert_with(|| {
                    tokio::time::Instant::now() + Duration::from_secs_f64(args.grace)
                });
            }
            _ = async { tokio::time::sleep_until(grace_ends.unwrap_or_else(tokio::time::Instant::now)).await },
                if grace_ends.is_some() => break,
            _ = ticker.tick() => {
                let rate = limiter.snapshot().adaptive_rate;
                if let Some(rate) = rate {
                    timeline.record_rate(rate);
                }
                progress.show(&counters, breaker.snapshot().state.as_str(), rate, started.elapsed());
            }
        }
    }
    // What completed is written; what did not end in time is not, and is resumed next time.
    let stopped_by = stop.borrow().signal;
    if let Ok(mut tasks) = dispatcher.await {
        tasks.abort_all();
    }
    while let Ok(ended) = outcomes.try_recv() {
        if let send::Ended::Done(outcome, usage) = ended {
            write(*outcome, usage)?;
        }
    }
    // The dispatcher has let go of the lines: the reader has ended or ends at its next line. An
    // input that could not be read to its end is an error, not a short run.
    match tokio::time::timeout(Duration::from_secs(5), reader).await {
        Ok(Ok(Err(error))) => return Err(error),
        Ok(Err(error)) => return Err(format!("the input reader failed: {error}")),
        _ => {}
    }
    progress.finish(&counters, started.elapsed());

    totals.cost = (!prices.is_empty()).then_some(cost);
    let not_succeeded = failed + plan.kept_failures;
    let left = (plan.to_send + plan.invalid).saturating_sub(written);
    let summary = json!({
        "lines": plan.lines,
        "already_done": plan.done,
        "retried_from_earlier_runs": plan.retried,
        "redone_because_the_line_changed": plan.changed,
        "sent": counters.sent.load(Ordering::Relaxed),
        "written": written,
        "successes": succeeded,
        "failures": failed,
        "failures_kept_from_earlier_runs": plan.kept_failures,
        "errors_by_kind": errors_by_kind,
        "attempts": counters.attempts.load(Ordering::Relaxed),
        "rate_limited_429": counters.rate_limited.load(Ordering::Relaxed),
        "streams_retried": counters.streams_retried.load(Ordering::Relaxed),
        "input_tokens": counters.input_tokens.load(Ordering::Relaxed),
        "output_tokens": counters.output_tokens.load(Ordering::Relaxed),
        "estimated_cost_usd": (!prices.is_empty()).then_some(cost),
        "tokens_without_a_price": (!prices.is_empty()).then_some(unpriced),
        "daily_quota_spent": daily.map(|(limit, resets_in)| json!({
            "limit": limit.as_str(),
            "resets_in_s": resets_in.as_secs(),
        })),
        "left_to_resume": left,
        "wall_time_s": started.elapsed().as_secs_f64(),
        "interrupted": stopped_by.is_some(),
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
    if let Some(signal) = stopped_by {
        eprintln!("tollgate: {left} lines left; run the same command again to resume");
        return Ok(ExitCode::from(signal.exit_code()));
    }
    if let Some((limit, resets_in)) = daily {
        let at = std::time::SystemTime::now() + resets_in;
        eprintln!(
            "tollgate: the daily quota of {} is spent; it resets in {} (at {}): {left} lines \
             left, run the same command again then to resume",
            limit.as_str(),
            humantime::format_duration(Duration::from_secs(resets_in.as_secs())),
            humantime::format_rfc3339_seconds(at)
        );
        return Ok(ExitCode::from(QUOTA_SPENT));
    }
    if not_succeeded > 0 {
        eprintln!(
            "tollgate: {not_succeeded} of {} lines did not succeed (see {}); run again to retry \
             them{}",
            plan.lines,
            args.output.display(),
            if plan.kept_failures > 0 || errors_by_kind.contains_key("invalid_input") {
                " (failures of the prompts themselves need --retry-failed)"
            } else {
                ""
            }
        );
        return Ok(ExitCode::from(SOME_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_priority(text: &str) -> Result<tollgate::rate_limit::Priority, String> {
    text.parse()
        .map_err(|e: tollgate::ConfigError| e.message().to_owned())
}

/// Says what the plan keeps, retries and redoes.
fn announce(plan: &plan::Plan, output: &Path) {
    if plan.done > 0 {
        eprintln!(
            "tollgate: resuming: {} of {} lines already in {}{}",
            plan.done,
            plan.lines,
            output.display(),
            if plan.kept_failures > 0 {
                format!(
                    " ({} failed prompts kept; --retry-failed tries them)",
                    plan.kept_failures
                )
            } else {
                String::new()
            }
        );
    }
    if plan.retried > 0 {
        eprintln!(
            "tollgate: trying again {} lines that failed before",
            plan.retried
        );
    }
    if plan.changed > 0 {
        eprintln!(
            "tollgate: {} results in {} were for a different line with the same id: those lines \
             are sent again and their old results dropped",
            plan.changed,
            output.display()
        );
    }
}

/// Checks up front that a file the run writes at its end can be written.
fn check_writable(flag: &str, path: &Path) -> Result<(), String> {
    let existed = path.exists();
    let opened = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path);
    match opened {
        Ok(_) => {
            if !existed {
                let _ = std::fs::remove_file(path);
            }
            Ok(())
        }
        Err(e) => Err(format!("cannot write {flag} {}: {e}", path.display())),
    }
}
