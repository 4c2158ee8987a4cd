//! The Redis store in numbers: admissions per second from one process and from four, the
//! latency an admission adds (p50, p99), and how close four processes sharing one limit come
//! to its allowance. Starts its own `redis-server` on a free loopback port.
//!
//! `cargo run --release -p tollgate-bench --bin redis-bench` (about half a minute). Baselines
//! run in the same process: the in-process limiter, and a bare Redis `PING` round trip.

use std::convert::Infallible;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{Request, Response};
use tollgate::rate_limit::RateLimitLayer;
use tollgate::rate_limit::{OnStoreError, Rate};
use tollgate_e2e::redis_server::RedisServer;
use tollgate_redis::RedisStore;
use tower::{service_fn, Layer, Service, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const UNLIMITED: Rate = Rate::per_second(1_000_000_000);
const SHARED_RATE: u64 = 200;
const SHARED_BURST: u64 = 20;

fn upstream(
) -> impl Service<Request<()>, Response = Response<()>, Error = Infallible, Future: Send> + Clone {
    service_fn(|_: Request<()>| std::future::ready(Ok::<_, Infallible>(Response::new(()))))
}

fn layer(url: Option<&str>, rate: Rate) -> RateLimitLayer {
    let builder = RateLimitLayer::builder()
        .requests(rate)
        .headroom(Duration::ZERO);
    match url {
        Some(url) => builder.store(
            RedisStore::builder(url).build().expect("store"),
            OnStoreError::FailClosed,
        ),
        None => builder,
    }
    .build()
    .expect("layer")
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, url, mode, seconds] = args.as_slice() {
        if flag == "--client" {
            return client(url, mode, seconds.parse()?);
        }
    }
    let server = RedisServer::start();
    let url = server.url();
    println!("# tollgate-redis benchmark\n");
    latency(&url)?;
    throughput(&url)?;
    allowance(&url)?;
    Ok(())
}

/// Sequential admissions: the time each one takes, in process and through Redis.
fn latency(url: &str) -> Result<(), BoxError> {
    const N: usize = 20_000;
    let rt = tollgate_bench::current_thread_runtime();
    let measure = |url: Option<&str>| {
        rt.block_on(async {
            let mut service = layer(url, UNLIMITED).layer(upstream());
            let mut samples = Vec::with_capacity(N);
            for _ in 0..N {
                let started = Instant::now();
                let ready = service.ready().await.expect("ready");
                ready.call(Request::new(())).await.expect("admitted");
                samples.push(started.elapsed());
            }
            samples.sort();
            (samples[N / 2], samples[N * 99 / 100])
        })
    };
    let local = measure(None);
    let redis = measure(Some(url));
    let ping = rt.block_on(async {
        let mut connection = redis::Client::open(url)?
            .get_multiplexed_async_connection()
            .await?;
        let mut samples = Vec::with_capacity(N);
        for _ in 0..N {
            let started = Instant::now();
            let _: String = redis::cmd("PING").query_async(&mut connection).await?;
            samples.push(started.elapsed());
        }
        samples.sort();
        Ok::<_, BoxError>((samples[N / 2], samples[N * 99 / 100]))
    })?;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("## Latency of one admission ({N} sequential, one connection)\n");
    println!("| path | p50 | p99 |");
    println!("|---|---|---|");
    println!(
        "| in-process limiter (baseline) | {:.1} µs | {:.1} µs |",
        us(local.0),
        us(local.1)
    );
    println!(
        "| Redis `PING` round trip (baseline) | {:.1} µs | {:.1} µs |",
        us(ping.0),
        us(ping.1)
    );
    println!(
        "| limiter through Redis | {:.1} µs | {:.1} µs |",
        us(redis.0),
        us(redis.1)
    );
    println!(
        "| added by Redis (through Redis - in process) | {:.1} µs | {:.1} µs |\n",
        us(redis.0) - us(local.0),
        us(redis.1) - us(local.1)
    );
    println!(
        "An admission through Redis costs {:.2}x a bare PING round trip at p50.\n",
        us(redis.0) / us(ping.0)
    );
    Ok(())
}

/// Runs `processes` copies of this binary as clients; returns each one's output line.
fn clients(url: &str, mode: &str, processes: usize, seconds: f64) -> Result<Vec<String>, BoxError> {
    let exe = std::env::current_exe()?;
    let children: Vec<_> = (0..processes)
        .map(|_| {
            Command::new(&exe)
                .args(["--client", url, mode, &seconds.to_string()])
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let mut lines = Vec::new();
    for child in children {
        let output = child.wait_with_output()?;
        lines.push(String::from_utf8(output.stdout)?.trim().to_owned());
    }
    Ok(lines)
}

/// One client process: 32 tasks admitting for `seconds`; prints `count first_us last_us`
/// (wall-clock microseconds, comparable between processes on one host).
fn client(url: &str, mode: &str, seconds: f64) -> Result<(), BoxError> {
    let rate = match mode {
        "shared" => Rate::per_second(SHARED_RATE).with_burst(SHARED_BURST),
        _ => UNLIMITED,
    };
    let rt = tollgate_bench::current_thread_runtime();
    let (count, first, last) = rt.block_on(async {
        let service = layer(Some(url), rate).layer(upstream());
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let service = service.clone();
                tokio::spawn(async move {
                    let (mut count, mut first, mut last) = (0u64, u128::MAX, 0u128);
                    while Instant::now() < deadline {
                        service
                            .clone()
                            .oneshot(Request::new(()))
                            .await
                            .expect("admitted");
                        let now = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .unwrap_or_default();
                        first = first.min(now.as_micros());
                        last = last.max(now.as_micros());
                        count += 1;
                    }
                    (count, first, last)
                })
            })
            .collect();
        let (mut count, mut first, mut last) = (0, u128::MAX, 0);
        for task in tasks {
            let (c, f, l) = task.await.expect("task");
            count += c;
            first = first.min(f);
            last = last.max(l);
        }
        (count, first, last)
    });
    println!("{count} {first} {last}");
    Ok(())
}

fn parse(line: &str) -> Result<(u64, u128, u128), BoxError> {
    let mut parts = line.split_whitespace();
    let mut next = || parts.next().ok_or("short client output");
    Ok((next()?.parse()?, next()?.parse()?, next()?.parse()?))
}

/// Admissions per second with no limit binding: the store's own ceiling.
fn throughput(url: &str) -> Result<(), BoxError> {
    const SECONDS: f64 = 3.0;
    println!("## Admissions per second through Redis (no limit binding, 32 tasks per process)\n");
    println!("| processes | admissions/s | per process | vs one process |");
    println!("|---|---|---|---|");
    let mut one = 0.0;
    for processes in [1, 4] {
        let lines = clients(url, "unlimited", processes, SECONDS)?;
        let total: u64 = lines
            .iter()
            .map(|l| parse(l).map(|p| p.0))
            .sum::<Result<_, _>>()?;
        let per_sec = total as f64 / SECONDS;
        if processes == 1 {
            one = per_sec;
        }
        println!(
            "| {processes} | {per_sec:.0} | {:.0} | {:.2}x |",
            per_sec / processes as f64,
            per_sec / one
        );
    }
    println!();
    Ok(())
}

/// Four processes sharing one limit: how much of the allowance they use, never more.
fn allowance(url: &str) -> Result<(), BoxError> {
    const SECONDS: f64 = 5.0;
    let lines = clients(url, "shared", 4, SECONDS)?;
    let parsed: Vec<_> = lines.iter().map(|l| parse(l)).collect::<Result<_, _>>()?;
    let total: u64 = parsed.iter().map(|p| p.0).sum();
    let first = parsed.iter().map(|p| p.1).min().unwrap_or(0);
    let last = parsed.iter().map(|p| p.2).max().unwrap_or(0);
    let elapsed = (last.saturating_sub(first)) as f64 / 1e6;
    let allowance = SHARED_BURST as f64 + SHARED_RATE as f64 * elapsed;
    println!("## Four processes sharing {SHARED_RATE}/s (burst {SHARED_BURST}) for {SECONDS} s\n");
    println!("| admitted | elapsed | allowance (burst + rate x elapsed) | used |");
    println!("|---|---|---|---|");
    println!(
        "| {total} | {elapsed:.3} s | {allowance:.1} | {:.3}x |",
        total as f64 / allowance
    );
    Ok(())
}
