//! Token truth, measured: a batch against the mock metering like Anthropic (output tokens
//! charged `max_tokens` when a request starts, the unused part given back when it ends), with
//! the output limit binding, through the standard Anthropic stack over a real hyper-util client
//! on loopback. Prints one table row per way of configuring tollgate, with the same workload:
//!
//! - told the real limits, with the defaults a user gets (`--otpm N`: its burst is tollgate's
//!   default, not the provider's);
//! - the baseline: the same limits, but the output charge never settled (what tollgate did
//!   before: the whole `max_tokens` charged for every request);
//! - told nothing: the rate found from the provider's headers and refusals;
//! - a wrong guess: the output limit set twice too high.
//!
//! The ideal is (total real output - the provider's burst) / its output rate: the provider
//! could not let the batch through faster. Run: `cargo run --release -p tollgate-bench --bin
//! token-bench` (`-- --prompts N` for another size).

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use tollgate::rate_limit::{LimitConfig, Rate};
use tollgate::stack::Policy;
use tollgate::Provider;
use tollgate_mock::{MockConfig, MockServer};
use tower::Layer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The provider's limits: output binding, the rest far from it.
const RPM: u64 = 12_000;
const ITPM: u64 = 2_000_000;
const OTPM: u64 = 240_000;
/// The provider's output burst: five seconds' worth.
const OTPM_BURST: u32 = 20_000;
const MAX_TOKENS: u32 = 400;
const CONCURRENCY: usize = 32;

struct Row {
    name: &'static str,
    wall: Duration,
    ideal: Duration,
    sent: u64,
    limited: u64,
    ok: u64,
    output: u64,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let prompts = std::env::args()
        .skip_while(|a| a != "--prompts")
        .nth(1)
        .map(|n| n.parse::<usize>())
        .transpose()?
        .unwrap_or(600);
    println!("## Token truth: output tokens binding, metered as Anthropic does\n");
    println!(
        "Mock: {RPM} RPM, {ITPM} ITPM, {OTPM} OTPM (burst {OTPM_BURST}), real output 10-40% of \
         max_tokens {MAX_TOKENS}, 2 ms per output token + 20 ms; {prompts} prompts, \
         {CONCURRENCY} at once, Anthropic preset over hyper-util on loopback.\n"
    );
    let told = |limits: &mut LimitConfig| {
        limits.requests = Some(Rate::per_minute(RPM));
        limits.input_tokens = Some(Rate::per_minute(ITPM));
        limits.output_tokens = Some(Rate::per_minute(OTPM));
    };
    let mut rows = Vec::new();
    rows.push(run("told the real limits (defaults)", prompts, told).await?);
    rows.push(
        run(
            "baseline: max_tokens charged, never settled",
            prompts,
            |l| {
                told(l);
                l.reconcile_usage = false;
            },
        )
        .await?,
    );
    rows.push(run("told nothing (adaptive, headers)", prompts, |_| {}).await?);
    rows.push(
        run("output limit guessed 2x too high", prompts, |l| {
            told(l);
            l.output_tokens = Some(Rate::per_minute(2 * OTPM));
        })
        .await?,
    );
    println!(
        "| tollgate configured | wall s | ideal s | x ideal | attempts | 429s | 429 share | ok | real output |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {} | {} | {:.1}% | {}/{prompts} | {} |",
            row.name,
            row.wall.as_secs_f64(),
            row.ideal.as_secs_f64(),
            row.wall.as_secs_f64() / row.ideal.as_secs_f64(),
            row.sent,
            row.limited,
            100.0 * row.limited as f64 / row.sent.max(1) as f64,
            row.ok,
            row.output
        );
    }
    let (tollgate, baseline) = (&rows[0], &rows[1]);
    println!(
        "\nSettling to the real usage: {:.2}x faster than the baseline in the same run.",
        baseline.wall.as_secs_f64() / tollgate.wall.as_secs_f64()
    );
    Ok(())
}

async fn run(
    name: &'static str,
    prompts: usize,
    configure: impl Fn(&mut LimitConfig),
) -> Result<Row, BoxError> {
    let mock = MockServer::spawn(MockConfig {
        rpm: Some(RPM as u32),
        itpm: Some(ITPM as u32),
        otpm: Some(OTPM as u32),
        otpm_burst: Some(OTPM_BURST),
        output_share: Some((0.1, 0.4)),
        per_output_token: Duration::from_millis(2),
        latency: Duration::from_millis(20),
        seed: 7,
        ..MockConfig::default()
    })
    .await?;
    let mut policy = Policy::preset(Provider::Anthropic);
    policy.limits.concurrency = Some(CONCURRENCY as u32);
    configure(&mut policy.limits);
    let stack = policy.layer()?.layer(tollgate_e2e::http_client());
    let url = mock.url();
    let drive = tollgate_e2e::drive(prompts as u64, CONCURRENCY, move || {
        let (stack, request) = (stack.clone(), message(&url));
        async move { tollgate_e2e::send_ok(stack, request).await }
    })
    .await;
    let wall = drive.wall;
    let stats = mock.stats();
    let ideal = Duration::from_secs_f64(
        stats.output_tokens.saturating_sub(u64::from(OTPM_BURST)) as f64 / (OTPM as f64 / 60.0),
    );
    mock.shutdown().await;
    Ok(Row {
        name,
        wall,
        ideal,
        sent: stats.requests,
        limited: stats.limited,
        ok: drive.successes,
        output: stats.output_tokens,
    })
}

/// An Anthropic Messages request to the mock.
fn message(url: &str) -> Request<tollgate_e2e::Body> {
    let body = serde_json::json!({
        "model": "claude-haiku-4-5",
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": "Summarise the plot of a short story."}],
    });
    let mut request = Request::post(format!("{url}/v1/messages"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a request built from valid parts");
    let _ = Provider::Anthropic.authorize(&mut request, "sk-bench");
    request
}
