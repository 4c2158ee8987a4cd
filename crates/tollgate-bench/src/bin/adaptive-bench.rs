//! The adaptive rate limit against a server that only says `Retry-After`: the mock provider at
//! 50 requests per second (burst 10) with no rate-limit headers, as nginx's `limit_req`; 500
//! requests from 64 tasks through the standard stack over loopback, for a limit configured
//! right, twice too high, and not at all, fixed and adaptive.
//!
//! `cargo run --release -p tollgate-bench --bin adaptive-bench` (about two minutes). The ideal is
//! (N - burst) / rate; the fixed limit configured right is the baseline of the same run.

use std::time::Duration;

use tollgate::rate_limit::{Adaptive, Rate};
use tollgate::stack::Policy;
use tollgate::Provider;
use tollgate_e2e::{chat_request, drive, http_client, send_ok};
use tollgate_mock::{HintStyle, MockConfig, MockServer};
use tower::Layer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const RATE: u64 = 50;
const BURST: u64 = 10;
const N: u64 = 500;
const TASKS: usize = 64;

struct Case {
    name: &'static str,
    rpm: Option<u64>,
    adaptive: bool,
}

const CASES: [Case; 6] = [
    Case {
        name: "limit right, fixed (baseline)",
        rpm: Some(RATE * 60),
        adaptive: false,
    },
    Case {
        name: "limit right, adaptive",
        rpm: Some(RATE * 60),
        adaptive: true,
    },
    Case {
        name: "limit 2x too high, fixed",
        rpm: Some(RATE * 120),
        adaptive: false,
    },
    Case {
        name: "limit 2x too high, adaptive",
        rpm: Some(RATE * 120),
        adaptive: true,
    },
    Case {
        name: "no limit, pause on 429 only",
        rpm: None,
        adaptive: false,
    },
    Case {
        name: "no limit, adaptive (the default)",
        rpm: None,
        adaptive: true,
    },
];

struct Outcome {
    ok: u64,
    refused: u64,
    wall: Duration,
}

async fn run(case: &Case) -> Result<Outcome, BoxError> {
    let mock = MockServer::spawn(MockConfig {
        rpm: Some((RATE * 60) as u32),
        burst: Some(BURST as u32),
        hints: HintStyle::RetryAfterOnly,
        ..MockConfig::default()
    })
    .await?;
    let mut policy = Policy::preset(Provider::OpenAiCompatible);
    policy.limits.limits.requests = case.rpm.map(|rpm| Rate::per_minute(rpm).with_burst(BURST));
    policy.limits.adapt_when_unlimited = case.adaptive;
    if case.adaptive && case.rpm.is_some() {
        policy.limits.limits.adaptive = Some(Adaptive::default());
    }
    let stack = policy.layer()?.layer(http_client());
    let url = mock.url();
    let result = drive(N, TASKS, move || {
        let (stack, url) = (stack.clone(), url.clone());
        async move { send_ok(stack, chat_request(&url, "sk-bench", "Hello", 16)).await }
    })
    .await;
    let stats = mock.stats();
    Ok(Outcome {
        ok: result.successes,
        refused: stats.limited,
        wall: result.wall,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let ideal = (N - BURST) as f64 / RATE as f64;
    println!("# Adaptive rate limit against a Retry-After-only server\n");
    println!(
        "Mock provider: {RATE} requests/s, burst {BURST}, 429 with only `Retry-After` (whole \
         seconds). {N} requests from {TASKS} tasks, standard stack (openai-compatible preset). \
         Ideal: {ideal:.1} s.\n"
    );
    println!(
        "| case | succeeded | 429s drawn (% of requests) | wall time | vs ideal | vs baseline |"
    );
    println!("|---|---|---|---|---|---|");
    let mut baseline = None;
    for case in &CASES {
        let outcome = run(case).await?;
        let wall = outcome.wall.as_secs_f64();
        let base = *baseline.get_or_insert(wall);
        println!(
            "| {} | {}/{N} | {} ({:.1}%) | {wall:.2} s | {:.3}x | {:.3}x |",
            case.name,
            outcome.ok,
            outcome.refused,
            outcome.refused as f64 * 100.0 / N as f64,
            wall / ideal,
            wall / base,
        );
    }
    Ok(())
}
