//! `tollgate demo`: the same batch against the embedded mock (limits and faults), once naively
//! (fixed sleeps, as the seed articles' first attempt) and once through tollgate's stack.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use tollgate::rate_limit::Rate;
use tollgate::stack::Policy;
use tollgate::Provider;
use tollgate_e2e::{chat_request, drive, http_client, naive_send, send_ok};
use tollgate_mock::{FaultMix, Faults, MockConfig, MockServer};
use tower::Layer;

/// Options of `tollgate demo`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DemoArgs {
    /// Requests in the batch.
    #[arg(long, default_value_t = 120)]
    requests: u64,
    /// Requests per minute the mock allows.
    #[arg(long, default_value_t = 1_200)]
    rpm: u32,
    /// Burst the mock allows.
    #[arg(long, default_value_t = 10)]
    burst: u32,
    /// Share of requests the mock fails on purpose.
    #[arg(long, default_value_t = 0.1)]
    fault_rate: f64,
}

const WORKERS: usize = 16;

pub(crate) async fn run(args: DemoArgs) -> Result<ExitCode, String> {
    let mock = MockConfig {
        rpm: Some(args.rpm),
        burst: Some(args.burst),
        latency: Duration::from_millis(30),
        latency_jitter: Duration::from_millis(20),
        faults: Faults {
            rate: args.fault_rate,
            mix: FaultMix {
                reset: 1,
                ..FaultMix::server_errors_only()
            },
            ..Faults::default()
        },
        seed: 7,
        ..MockConfig::default()
    };
    if !(0.0..=1.0).contains(&args.fault_rate) || args.rpm == 0 || args.burst == 0 {
        return Err("--fault-rate must be within 0..1 and --rpm, --burst at least 1".into());
    }
    let ideal =
        (args.requests.saturating_sub(u64::from(args.burst))) as f64 / (f64::from(args.rpm) / 60.0);
    println!(
        "{} requests from {WORKERS} workers to a mock provider allowing {:.0} requests/s (burst {}), with {:.0}% injected faults.\nIdeal time: {ideal:.1}s.\n",
        args.requests,
        f64::from(args.rpm) / 60.0,
        args.burst,
        args.fault_rate * 100.0
    );
    println!("| approach | completed | lost | 429s drawn | attempts sent | wall time | vs ideal |");
    println!("|---|---|---|---|---|---|---|");
    for naive in [true, false] {
        let server = MockServer::spawn(mock.clone())
            .await
            .map_err(|e| format!("cannot start the mock: {e}"))?;
        let url = server.url();
        let started = Instant::now();
        let run = if naive {
            let client = http_client();
            drive(args.requests, WORKERS, move || {
                naive_send(client.clone(), url.clone(), 5, Duration::from_secs(1))
            })
            .await
        } else {
            let mut policy = Policy::preset(Provider::OpenAi);
            policy.limits.requests =
                Some(Rate::per_minute(u64::from(args.rpm)).with_burst(u64::from(args.burst)));
            policy.retry.base = Duration::from_millis(250);
            policy.retry.max_attempts = 6;
            let stack = policy
                .layer()
                .map_err(|e| e.to_string())?
                .layer(http_client());
            drive(args.requests, WORKERS, move || {
                send_ok(
                    stack.clone(),
                    chat_request(&url, "sk-demo", "Classify this email.", 16),
                )
            })
            .await
        };
        let wall = started.elapsed().as_secs_f64();
        let stats = server.stats();
        println!(
            "| {} | {} | {} | {} | {} | {wall:.1}s | {:.2}x |",
            if naive {
                "naive: fixed 1 s sleep"
            } else {
                "tollgate: standard stack"
            },
            run.successes,
            args.requests - run.successes,
            stats.status(429),
            stats.requests,
            if ideal > 0.0 { wall / ideal } else { 0.0 }
        );
        server.shutdown().await;
    }
    Ok(ExitCode::SUCCESS)
}
