//! Whatever tollgate is told, it converges to what the provider allows: the robustness matrix.
//!
//! The mock provider at 50 requests per second with a burst of 10, answering 429 with only
//! `Retry-After` in whole seconds (as nginx's `limit_req`), then with only `retry-after-ms`; no
//! rate-limit headers either way. 500 requests from 64 tasks over loopback through the standard
//! stack built from `Policy::preset(OpenAiCompatible)` with nothing but the request limit set,
//! as a user would: told nothing, the right rate, 2x and 4x too high, and 2x too low. Then the
//! noise case: a provider answering in 0.5-1 s and refusing ~11% of requests with a hint-less
//! 429 and ~10% with a 5xx whatever the rate, 1,200 requests from 64 tasks, default stack
//! against one that only learns (no adaptive rate), with and without rate-limit headers.
//!
//! `cargo run --release -p tollgate-bench --bin robustness-bench` (about four minutes). The ideal
//! is (N - burst) / rate; the baseline of each table is a run of the same table: the right rate
//! held strictly fixed, and the learn-only stack.

use std::time::Duration;

use tollgate::rate_limit::Rate;
use tollgate::stack::Policy;
use tollgate::Provider;
use tollgate_e2e::{chat_request, drive, http_client, send_ok};
use tollgate_mock::{FaultMix, Faults, HintStyle, MockConfig, MockServer};
use tower::Layer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const RATE: u64 = 50;
const BURST: u64 = 10;
const N: u64 = 500;
const TASKS: usize = 64;

/// What the stack is told: a request limit per minute (none: told nothing), fixed or not.
#[derive(Clone, Copy)]
struct Told {
    name: &'static str,
    rpm: Option<u64>,
    fixed: bool,
}

const MATRIX: [Told; 6] = [
    Told {
        name: "right rate, fixed (baseline)",
        rpm: Some(RATE * 60),
        fixed: true,
    },
    Told {
        name: "told nothing",
        rpm: None,
        fixed: false,
    },
    Told {
        name: "the right rate",
        rpm: Some(RATE * 60),
        fixed: false,
    },
    Told {
        name: "2x too high",
        rpm: Some(RATE * 120),
        fixed: false,
    },
    Told {
        name: "4x too high",
        rpm: Some(RATE * 240),
        fixed: false,
    },
    Told {
        name: "2x too low",
        rpm: Some(RATE * 30),
        fixed: false,
    },
];

struct Outcome {
    ok: u64,
    refused: u64,
    attempts: u64,
    wall: Duration,
}

async fn run(mock: MockConfig, told: Told, n: u64) -> Result<Outcome, BoxError> {
    let mock = MockServer::spawn(mock).await?;
    let mut policy = Policy::preset(Provider::OpenAiCompatible);
    policy.limits.requests = told.rpm.map(Rate::per_minute);
    if told.fixed {
        policy.limits.adaptive = None;
    }
    let stack = policy.layer()?.layer(http_client());
    let url = mock.url();
    let result = drive(n, TASKS, move || {
        let (stack, url) = (stack.clone(), url.clone());
        async move { send_ok(stack, chat_request(&url, "sk-bench", "Hello", 16)).await }
    })
    .await;
    let stats = mock.stats();
    Ok(Outcome {
        ok: result.successes,
        refused: stats.limited,
        attempts: stats.requests,
        wall: result.wall,
    })
}

async fn matrix(hints: HintStyle, label: &str) -> Result<(), BoxError> {
    let ideal = (N - BURST) as f64 / RATE as f64;
    println!("\n## {label}\n");
    println!(
        "| told | succeeded | failed | 429s (% of requests) | wall time | vs ideal | vs baseline |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut baseline = None;
    for told in MATRIX {
        let mock = MockConfig {
            rpm: Some((RATE * 60) as u32),
            burst: Some(BURST as u32),
            hints,
            ..MockConfig::default()
        };
        let outcome = run(mock, told, N).await?;
        let wall = outcome.wall.as_secs_f64();
        let base = *baseline.get_or_insert(wall);
        // Told too low, the ceiling holds: the ideal is then the configured rate's.
        let ideal = match told.rpm {
            Some(rpm) if rpm < RATE * 60 => N as f64 / (rpm as f64 / 60.0),
            _ => ideal,
        };
        println!(
            "| {} | {}/{N} | {} | {} ({:.1}%) | {wall:.2} s | {:.3}x | {:.3}x |",
            told.name,
            outcome.ok,
            N - outcome.ok,
            outcome.refused,
            outcome.refused as f64 * 100.0 / N as f64,
            wall / ideal,
            wall / base,
        );
    }
    Ok(())
}

async fn noise(hints: HintStyle, label: &str) -> Result<(), BoxError> {
    const REQUESTS: u64 = 1_200;
    println!("\n## {label}\n");
    println!("| stack | succeeded | attempts | wall time | vs learn-only |");
    println!("|---|---|---|---|---|");
    let stacks = [
        Told {
            name: "learn-only (baseline)",
            rpm: None,
            fixed: true,
        },
        Told {
            name: "default (adaptive)",
            rpm: None,
            fixed: false,
        },
    ];
    let mut baseline = None;
    for told in stacks {
        let mock = MockConfig {
            // A limit far above the traffic, so that `full` hints report capacity remaining.
            rpm: Some(600_000),
            hints,
            // Answers take about as long as a short completion: the run is some twenty seconds
            // of work, not one unlucky backoff.
            latency: Duration::from_millis(500),
            latency_jitter: Duration::from_millis(500),
            faults: Faults {
                rate: 0.21,
                mix: FaultMix {
                    server_error: 10,
                    rate_limited_bare: 11,
                    ..FaultMix::none()
                },
                ..Faults::default()
            },
            seed: 7,
            ..MockConfig::default()
        };
        let outcome = run(mock, told, REQUESTS).await?;
        let wall = outcome.wall.as_secs_f64();
        let base = *baseline.get_or_insert(wall);
        println!(
            "| {} | {}/{REQUESTS} | {} | {wall:.2} s | {:.2}x |",
            told.name,
            outcome.ok,
            outcome.attempts,
            wall / base,
        );
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    println!("# Robustness: what tollgate is told against what the provider allows\n");
    println!(
        "Mock provider: {RATE} requests/s, burst {BURST}, no rate-limit headers. {N} requests \
         from {TASKS} tasks, standard stack (openai-compatible preset, only the request limit \
         set). Ideal: {:.1} s.",
        (N - BURST) as f64 / RATE as f64
    );
    matrix(
        HintStyle::RetryAfterOnly,
        "429s say `Retry-After` in whole seconds",
    )
    .await?;
    matrix(HintStyle::RetryAfterMs, "429s say `retry-after-ms`").await?;
    noise(
        HintStyle::Full,
        "Noise: 11% hint-less 429s and 10% 5xx at random, headers report capacity remaining",
    )
    .await?;
    noise(
        HintStyle::RetryAfterOnly,
        "Noise: the same without any rate-limit header",
    )
    .await?;
    Ok(())
}
