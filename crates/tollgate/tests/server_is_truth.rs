//! "The server is the truth": whatever tollgate is told, the standard stack built from a
//! `Policy` with nothing but the limit set converges to what the provider really allows.
//!
//! Under paused time, against a leaky-bucket provider allowing 50 requests per second with a
//! burst of 10 (as nginx's `limit_req`), 500 requests from 64 tasks; the ideal is 9.8 s. Each
//! cell of the robustness matrix (told nothing, the right rate, 2x and 4x too high; `Retry-After`
//! in whole seconds and `retry-after-ms`) must end with every request succeeding, at most 5% of
//! them drawing a 429, within 1.10x of the ideal (1.15x told nothing). Then one regression test
//! for each defect of the issue that asked for this.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{request, Hints, LeakyProvider};
use tokio::time::Instant;
use tollgate::rate_limit::Rate;
use tollgate::stack::Policy;
use tollgate::Provider;
use tower::{Layer, Service, ServiceExt};

const RATE: f64 = 50.0;
const BURST: f64 = 10.0;
const N: usize = 500;
const TASKS: usize = 64;

#[derive(Debug)]
struct Outcome {
    wall: Duration,
    ok: usize,
    failed: usize,
    refused: usize,
}

/// Sends `n` requests from `tasks` tasks through `service`; counts what the caller saw.
async fn drive<S, B>(service: S, provider: &LeakyProvider, n: usize, tasks: usize) -> Outcome
where
    S: Service<http::Request<String>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
    B: Send + 'static,
{
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (service, next, ok) = (service.clone(), next.clone(), ok.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    if let Ok(response) = service.clone().oneshot(request()).await {
                        if response.status() == 200 {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    let ok = ok.load(Ordering::Relaxed);
    Outcome {
        wall: started.elapsed(),
        ok,
        failed: n - ok,
        refused: provider.count(429),
    }
}

/// The standard stack from the OpenAI-compatible preset with only the request limit set.
async fn run_policy(rpm: Option<u64>, hints: Hints) -> Outcome {
    let provider = LeakyProvider::new(RATE, BURST).hints(hints);
    let mut policy = Policy::preset(Provider::OpenAiCompatible);
    policy.limits.limits.requests = rpm.map(Rate::per_minute);
    let stack = policy.layer().unwrap().layer(provider.clone());
    drive(stack, &provider, N, TASKS).await
}

fn check(cell: &str, outcome: &Outcome, max_ratio: f64) {
    let ideal = (N as f64 - BURST) / RATE;
    let ratio = outcome.wall.as_secs_f64() / ideal;
    eprintln!("{cell}: {outcome:?}, {ratio:.3}x the ideal");
    assert_eq!(outcome.failed, 0, "{cell}: every request succeeds");
    assert!(
        outcome.refused * 20 <= N,
        "{cell}: at most 5% drew a 429, got {}",
        outcome.refused
    );
    assert!(
        ratio <= max_ratio,
        "{cell}: within {max_ratio}x of the ideal, got {ratio:.3}x"
    );
}

macro_rules! cell {
    ($name:ident, $rpm:expr, $hints:expr, $max:expr) => {
        #[tokio::test(start_paused = true)]
        async fn $name() {
            let outcome = run_policy($rpm, $hints).await;
            check(stringify!($name), &outcome, $max);
        }
    };
}

cell!(told_nothing_retry_after, None, Hints::RetryAfterSecond, 1.15);
cell!(told_nothing_retry_after_ms, None, Hints::RetryAfterMs, 1.15);
cell!(told_right_retry_after, Some(3_000), Hints::RetryAfterSecond, 1.10);
cell!(told_right_retry_after_ms, Some(3_000), Hints::RetryAfterMs, 1.10);
cell!(told_2x_retry_after, Some(6_000), Hints::RetryAfterSecond, 1.10);
cell!(told_2x_retry_after_ms, Some(6_000), Hints::RetryAfterMs, 1.10);
cell!(told_4x_retry_after, Some(12_000), Hints::RetryAfterSecond, 1.10);
cell!(told_4x_retry_after_ms, Some(12_000), Hints::RetryAfterMs, 1.10);

#[tokio::test(start_paused = true)]
async fn told_too_low_the_ceiling_holds() {
    // Told 25/s against a server allowing 50/s: the configured limit is a ceiling, never passed.
    let outcome = run_policy(Some(1_500), Hints::RetryAfterSecond).await;
    assert_eq!((outcome.failed, outcome.refused), (0, 0));
    let rate = (N - 5) as f64 / outcome.wall.as_secs_f64();
    assert!(rate <= 25.0 + 1e-6, "sent at {rate:.2}/s, above the ceiling");
    assert!(rate >= 24.0, "sent at {rate:.2}/s, well below the ceiling");
}
