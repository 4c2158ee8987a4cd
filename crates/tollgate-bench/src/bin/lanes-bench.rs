//! Priority lanes and tenants, measured on tokio's paused clock (the figures are exact and the
//! run takes a second): the rate limiter over an instant in-memory provider.
//!
//! 1. A 5,000-request batch in the low lane saturating a 50/s quota, and one interactive request
//!    a second in the high lane: the interactive requests' queue wait, p50 and p99, against the
//!    same run with every request in one lane (FIFO).
//! 2. Two tenants weighted 3:1, both saturating the quota: their shares of the admissions.
//!
//! Run: `cargo run --release -p tollgate-bench --bin lanes-bench`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tollgate::rate_limit::{Priority, Rate, RateLimitLayer, Tenant};
use tower::{Layer, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const RATE: u64 = 50;
const BATCH: usize = 5_000;

fn main() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    println!("## Priority lanes and tenants (paused clock, exact)\n");
    println!(
        "A {BATCH}-request batch in the low lane saturating {RATE}/s (burst 1), one interactive \
         request a second in the high lane, for the batch's whole run:\n"
    );
    println!(
        "| queue | interactive requests | wait p50 ms | wait p99 ms | max ms | batch done s |"
    );
    println!("|---|---|---|---|---|---|");
    for lanes in [false, true] {
        let (waits, done) = runtime.block_on(interactive_behind_batch(lanes));
        let at = |p: f64| waits[((waits.len() - 1) as f64 * p).round() as usize];
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            if lanes {
                "lanes (interactive high, low share 0.1)"
            } else {
                "FIFO (one lane)"
            },
            waits.len(),
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            waits[waits.len() - 1].as_secs_f64() * 1e3,
            done.as_secs_f64(),
        );
    }
    let (a, b) = runtime.block_on(tenants());
    println!(
        "\nTwo tenants weighted 3:1, each with 2,000 requests queued against {RATE}/s: of the \
         first 2,000 admissions, tenant A {a} ({:.1}%), tenant B {b} ({:.1}%); target 75/25 \
         within 2 points.",
        100.0 * a as f64 / 2_000.0,
        100.0 * b as f64 / 2_000.0
    );
    Ok(())
}

fn limiter() -> RateLimitLayer {
    RateLimitLayer::builder()
        .requests(Rate::per_second(RATE).with_burst(1))
        .headroom(Duration::ZERO)
        .fixed()
        .build()
        .expect("valid settings")
}

fn upstream(
    log: Arc<Mutex<Vec<String>>>,
) -> impl tower::Service<
    Request<String>,
    Response = Response<String>,
    Error = Infallible,
    Future: Send,
> + Clone {
    tower::service_fn(move |request: Request<String>| {
        log.lock().unwrap().push(request.body().clone());
        std::future::ready(Ok::<_, Infallible>(Response::new(String::new())))
    })
}

/// The interactive requests' waits, sorted, and when the batch's last request went.
async fn interactive_behind_batch(lanes: bool) -> (Vec<Duration>, Duration) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let service = limiter().layer(upstream(Arc::clone(&log)));
    let started = Instant::now();
    let batch: Vec<_> = (0..BATCH)
        .map(|i| {
            let mut request = Request::new(format!("batch{i}"));
            request.extensions_mut().insert(if lanes {
                Priority::LOW
            } else {
                Priority::NORMAL
            });
            tokio::spawn(service.clone().oneshot(request))
        })
        .collect();
    let mut waits = Vec::new();
    let seconds = BATCH as u64 / RATE;
    let mut interactive = Vec::new();
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut request = Request::new("interactive".to_owned());
        request.extensions_mut().insert(if lanes {
            Priority::HIGH
        } else {
            Priority::NORMAL
        });
        let service = service.clone();
        interactive.push(tokio::spawn(async move {
            let asked = Instant::now();
            let _ = service.oneshot(request).await;
            asked.elapsed()
        }));
    }
    for task in interactive {
        if let Ok(wait) = task.await {
            waits.push(wait);
        }
    }
    for task in batch {
        let _ = task.await;
    }
    waits.sort_unstable();
    (waits, started.elapsed())
}

/// Admissions of tenants A (weight 3) and B (weight 1) among the first 2,000.
async fn tenants() -> (usize, usize) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let service = limiter().layer(upstream(Arc::clone(&log)));
    let tasks: Vec<_> = (0..2_000)
        .flat_map(|i| {
            [("a", 3), ("b", 1)].map(|(name, weight)| {
                let mut request = Request::new(format!("{name}{i}"));
                request
                    .extensions_mut()
                    .insert(Tenant::new(name).with_weight(weight));
                tokio::spawn(service.clone().oneshot(request))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2_000 / RATE)).await;
    let log = log.lock().unwrap().clone();
    for task in tasks {
        task.abort();
    }
    let first = &log[..2_000.min(log.len())];
    let a = first.iter().filter(|l| l.starts_with('a')).count();
    (a, first.len() - a)
}
