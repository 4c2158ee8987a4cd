//! Prints the project's performance tables in markdown: per-call overhead against tower,
//! tower-resilience and governor; goodput against a rate-limited mock provider for tollgate,
//! tower and a hand-written loop; and peak memory.
//!
//! `cargo run --release -p tollgate-bench --bin bench-report` (about two minutes; `-- --overhead`
//! for the per-call table alone). Every figure
//! is also given as a ratio to a baseline measured in the same run, since machines are noisy.

use std::time::{Duration, Instant};

use tollgate::circuit_breaker::CircuitBreakerLayer;
use tollgate::circuit_breaker::Window;
use tollgate::classify::ClassifyLayer;
use tollgate::rate_limit::Rate;
use tollgate::rate_limit::RateLimitLayer;
use tollgate::retry::BackoffRetryLayer;
use tollgate_bench::layers::*;
use tollgate_bench::{clone_parts, request, CloneRequest, Instant200, NeverRetry};
use tollgate_e2e::{chat_request, drive, http_client, naive_send, send_ok, Body};
use tollgate_mock::{MockConfig, MockServer};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, case] = args.as_slice() {
        if flag == "--memory" {
            return memory_case(case);
        }
    }
    // The per-call table alone (a few seconds).
    if args.get(1).is_some_and(|a| a == "--overhead") {
        overhead();
        return Ok(());
    }
    println!("# tollgate performance report\n");
    println!("Machine: {} cores, {}.\n", num_cores(), cpu_model());
    overhead();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(goodput())?;
    memory()?;
    Ok(())
}

// ---------------------------------------------------------------- overhead

/// ns per `ready` + `call` on a current-thread runtime: the best of five runs of 200,000 calls.
fn ns_per_call<S, Req>(mut service: S, make: fn() -> Req) -> f64
where
    S: Service<Req>,
    S::Error: std::fmt::Debug,
{
    let runtime = tollgate_bench::current_thread_runtime();
    runtime.block_on(async {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let started = Instant::now();
            for _ in 0..200_000 {
                let response = service.ready().await.expect("ready").call(make()).await;
                std::hint::black_box(response.is_ok());
            }
            best = best.min(started.elapsed().as_nanos() as f64 / 200_000.0);
        }
        best
    })
}

fn overhead() {
    let runtime = tollgate_bench::current_thread_runtime();
    let _entered = runtime.enter();
    let bare = ns_per_call(Instant200, request);
    let rows: Vec<(&str, f64, &str, f64)> = vec![
        (
            "retry (no retry needed)",
            ns_per_call(tollgate_retry().layer(Instant200), request),
            "tower `Retry`",
            ns_per_call(
                tower::retry::RetryLayer::new(NeverRetry).layer(Instant200),
                request,
            ),
        ),
        (
            "retry (no retry needed)",
            ns_per_call(tollgate_retry().layer(Instant200), request),
            "tower-resilience retry",
            ns_per_call(tr_retry().layer(Instant200), || CloneRequest(request())),
        ),
        (
            "rate limit, admitted at once",
            ns_per_call(tollgate_limit().layer(Instant200), request),
            "tower `RateLimit`",
            ns_per_call(
                tower::limit::RateLimitLayer::new(HUGE, Duration::from_secs(1)).layer(Instant200),
                request,
            ),
        ),
        (
            "rate limit, admitted at once",
            ns_per_call(tollgate_limit().layer(Instant200), request),
            "tower-resilience rate limiter (token bucket)",
            ns_per_call(tr_limiter().layer(Instant200), request),
        ),
        (
            "concurrency limit",
            ns_per_call(tollgate_concurrency().layer(Instant200), request),
            "tower `ConcurrencyLimit`",
            ns_per_call(
                tower::limit::ConcurrencyLimitLayer::new(1024).layer(Instant200),
                request,
            ),
        ),
        (
            "circuit breaker, closed",
            ns_per_call(tollgate_breaker().layer(Instant200), request),
            "tower-resilience circuit breaker",
            ns_per_call(tr_breaker().layer(Instant200), request),
        ),
    ];
    let classify = ns_per_call(ClassifyLayer::new().layer(Instant200), request);
    let stack = ns_per_call(full_stack(), request);
    let open = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .build()
        .expect("valid");
    open.handle().isolate();
    let rejection = ns_per_call(open.layer(Instant200), request);

    println!("## Overhead per call on the success path (single task)\n");
    println!(
        "The same in-memory service answers at once under every layer; `bare` is that service \
         alone ({bare:.0} ns per call, building the request included). \"Added\" is the layer's own \
         cost: its time minus bare.\n"
    );
    println!("| tollgate layer | ns/call | added | compared with | ns/call | added | tollgate's added cost |");
    println!("|---|---|---|---|---|---|---|");
    for (ours, ours_ns, theirs, theirs_ns) in rows {
        let (ours_added, theirs_added) = (ours_ns - bare, theirs_ns - bare);
        println!(
            "| {ours} | {ours_ns:.0} | {ours_added:.0} | {theirs} | {theirs_ns:.0} | {theirs_added:.0} | {:.2}x |",
            ours_added / theirs_added.max(1.0)
        );
    }
    println!(
        "| classify (stamps the verdict) | {classify:.0} | {:.0} | | | | |",
        classify - bare
    );
    println!("| full stack: retry, breaker, requests + tokens + concurrency, classify | {stack:.0} | {:.0} | | | | |", stack - bare);
    println!("| rejection while the circuit is open | {rejection:.0} | | | | | |\n");
}

// ---------------------------------------------------------------- goodput

const TASKS: usize = 64;
const KEY: &str = "sk-bench";

/// tower's `Retry` policy for the goodput race: up to 5 attempts on 429, 5xx and errors, with
/// tower's jittered exponential backoff.
#[derive(Clone)]
struct TowerPolicy {
    attempts_left: usize,
    backoff: tower::retry::backoff::ExponentialBackoff,
}

impl<Res, E> tower::retry::Policy<http::Request<Body>, http::Response<Res>, E> for TowerPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _: &mut http::Request<Body>,
        result: &mut Result<http::Response<Res>, E>,
    ) -> Option<Self::Future> {
        let retryable = match result {
            Ok(response) => response.status() == 429 || response.status().is_server_error(),
            Err(_) => true,
        };
        if !retryable || self.attempts_left == 0 {
            return None;
        }
        self.attempts_left -= 1;
        use tower::retry::backoff::Backoff;
        Some(self.backoff.next_backoff())
    }

    fn clone_request(&mut self, request: &http::Request<Body>) -> Option<http::Request<Body>> {
        Some(clone_parts(request))
    }
}

struct Scenario {
    name: &'static str,
    mock: MockConfig,
    /// (requests per second, burst) or (tokens per second, burst) for the token case.
    rate: u64,
    burst: u64,
    tokens: bool,
    n: u64,
}

async fn race(scenario: &Scenario) -> Result<(), BoxError> {
    let cost = if scenario.tokens { 100 } else { 1 };
    let ideal = (scenario.n * cost - scenario.burst) as f64 / scenario.rate as f64;
    println!("### {}\n", scenario.name);
    println!(
        "{} requests from {TASKS} tasks; the mock allows {} {} per second with a burst of {}; \
         ideal time (N - B) / R = {ideal:.2} s.\n",
        scenario.n,
        scenario.rate,
        if scenario.tokens {
            "tokens (100 per request)"
        } else {
            "requests"
        },
        scenario.burst
    );
    println!("| client | wall time | vs ideal | 429s drawn | attempts per request | lost |");
    println!("|---|---|---|---|---|---|");
    for client in [
        "tollgate standard stack",
        "tower Retry + RateLimit",
        "naive loop, fixed 1 s sleeps",
    ] {
        let server = MockServer::spawn(scenario.mock.clone()).await?;
        let url = server.url();
        let run = match client {
            "tollgate standard stack" => {
                let limits = if scenario.tokens {
                    RateLimitLayer::builder()
                        .tokens(Rate::per_second(scenario.rate).with_burst(scenario.burst))
                } else {
                    RateLimitLayer::builder()
                        .requests(Rate::per_second(scenario.rate).with_burst(scenario.burst))
                };
                let stack = ServiceBuilder::new()
                    .layer(
                        BackoffRetryLayer::builder()
                            .max_attempts(5)
                            .base(Duration::from_millis(100))
                            .build()?,
                    )
                    .layer(
                        CircuitBreakerLayer::builder()
                            .failure_ratio(0.5)
                            .window(Window::Count(50))
                            .min_calls(20)
                            .build()?,
                    )
                    .layer(limits.build()?)
                    .layer(ClassifyLayer::new())
                    .service(http_client());
                drive(scenario.n, TASKS, move || {
                    send_ok(stack.clone(), chat_request(&url, KEY, "hi", 100))
                })
                .await
            }
            "tower Retry + RateLimit" => {
                // tower counts requests only: for a token limit, the user divides by the cost.
                let per_second = scenario.rate / cost;
                let policy = TowerPolicy {
                    attempts_left: 4,
                    backoff: tower::retry::backoff::MakeBackoff::make_backoff(
                        &mut tower::retry::backoff::ExponentialBackoffMaker::new(
                            Duration::from_millis(100),
                            Duration::from_secs(10),
                            0.99,
                            tower::util::rng::HasherRng::default(),
                        )?,
                    ),
                };
                let stack = ServiceBuilder::new()
                    .layer(tower::retry::RetryLayer::new(policy))
                    .buffer(1024)
                    .rate_limit(per_second, Duration::from_secs(1))
                    .service(http_client());
                drive(scenario.n, TASKS, move || {
                    send_ok(stack.clone(), chat_request(&url, KEY, "hi", 100))
                })
                .await
            }
            _ => {
                let client = http_client();
                drive(scenario.n, TASKS, move || {
                    naive_send(client.clone(), url.clone(), 5, Duration::from_secs(1))
                })
                .await
            }
        };
        let stats = server.stats();
        println!(
            "| {client} | {:.2} s | {:.3}x | {} | {:.2} | {} |",
            run.wall.as_secs_f64(),
            run.wall.as_secs_f64() / ideal,
            stats.status(429),
            stats.requests as f64 / scenario.n as f64,
            scenario.n - run.successes
        );
        server.shutdown().await;
    }
    println!();
    Ok(())
}

async fn goodput() -> Result<(), BoxError> {
    println!("## Goodput against a rate-limited provider\n");
    println!(
        "Real time, real hyper-util client, the mock provider on loopback enforcing the limit.\n"
    );
    race(&Scenario {
        name: "Requests per second binding",
        mock: MockConfig {
            rpm: Some(6_000),
            burst: Some(20),
            ..MockConfig::default()
        },
        rate: 100,
        burst: 20,
        tokens: false,
        n: 1_000,
    })
    .await?;
    race(&Scenario {
        name: "Tokens per minute binding",
        mock: MockConfig {
            tpm: Some(600_000),
            token_burst: Some(2_000),
            ..MockConfig::default()
        },
        rate: 10_000,
        burst: 2_000,
        tokens: true,
        n: 1_000,
    })
    .await
}

// ---------------------------------------------------------------- memory

fn memory() -> Result<(), BoxError> {
    println!("## Peak memory\n");
    println!(
        "Each case runs in a fresh process; the baseline is the same process doing nothing.\n"
    );
    println!("| case | peak RSS | vs baseline |");
    println!("|---|---|---|");
    let exe = std::env::current_exe()?;
    let peak = |case: &str| -> Result<u64, BoxError> {
        let output = std::process::Command::new(&exe)
            .args(["--memory", case])
            .output()?;
        Ok(String::from_utf8(output.stdout)?.trim().parse()?)
    };
    let baseline = peak("idle")?;
    println!("| baseline (runtime, no work) | {} KiB | 1.00x |", baseline);
    for (case, label) in [
        ("requests", "1,000,000 requests through the full stack"),
        ("keys", "1,000,000 distinct rate-limit keys"),
    ] {
        let kib = peak(case)?;
        println!(
            "| {label} | {kib} KiB | {:.2}x |",
            kib as f64 / baseline as f64
        );
    }
    println!();
    Ok(())
}

fn memory_case(case: &str) -> Result<(), BoxError> {
    let runtime = tollgate_bench::current_thread_runtime();
    runtime.block_on(async {
        match case {
            "requests" => {
                let mut stack = full_stack();
                for _ in 0..1_000_000 {
                    let response = stack.ready().await.expect("ready").call(request()).await;
                    std::hint::black_box(response);
                }
            }
            "keys" => {
                let layer = RateLimitLayer::builder()
                    .requests(Rate::per_second(1_000))
                    .key(tollgate::key::key_fn(|r: &http::Request<Body>| {
                        r.headers().get("x-key").map(|v| v.as_bytes().to_vec())
                    }))
                    .build()
                    .expect("valid");
                let mut service = layer.layer(Instant200);
                for i in 0..1_000_000u32 {
                    let mut request = request();
                    request.headers_mut().insert("x-key", i.into());
                    let response = service.ready().await.expect("ready").call(request).await;
                    std::hint::black_box(response.is_ok());
                }
            }
            _ => {}
        }
    });
    println!("{}", peak_rss_kib());
    Ok(())
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}
