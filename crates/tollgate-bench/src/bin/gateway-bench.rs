//! `tollgate serve`'s gateway, measured on loopback against calling the mock provider directly,
//! in the same run:
//!
//! 1. Added latency at a fixed offered load (open loop: requests are sent on schedule whatever
//!    the answers do), 1,000 and 5,000 requests a second for 5 s each after a 1 s warm-up, three
//!    rounds rotating through the targets: the medians of p50 and p99 of the direct calls, of the
//!    calls through the gateway, and the differences.
//! 2. The most requests a second each sustains: 64 callers, each sending its next request when
//!    its answer is read, for 5 s.
//!
//! The gateway runs the full standard stack (OpenAI preset: retry, breaker, rate limit,
//! classify), with one client key, in front of the mock (instant answers, no limits), in this
//! process: the mock on one Tokio worker, the gateway on two, the load on one (this machine has
//! two cores: they share them, as a gateway shares its host with its callers). Two
//! configurations of the gateway's limiter: told the key's limit (60,000,000 RPM, far above
//! any load here: the cost of the path), and told nothing (the defaults: the rate is found from the
//! provider's answers, which here never refuse).
//!
//! 3. With `--litellm`: LiteLLM's proxy (the version the gateway issue measured, one worker,
//!    installed by `scripts/litellm.sh` into `target/litellm`, about 750 MB) in front of the same
//!    mock, at 50 and 1,000 requests a second and closed loop, beside the gateway: the ratios.
//!    Calls that take longer than ten seconds count as failed.
//!
//! Run: `cargo run --release -p tollgate-bench --bin gateway-bench [-- --litellm]`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::runtime::Runtime;
use tollgate::rate_limit::Rate;
use tollgate::stack::Policy;
use tollgate::Provider;
use tollgate_mock::{MockConfig, MockServer};
use tollgate_serve::{ClientKey, Gateway, ServeConfig, ServerHandle};
use tower::Layer;

const KEY: &str = "gw-bench-0123456789";
/// LiteLLM's master key in `--litellm` runs.
const LITELLM_KEY: &str = "sk-litellm-bench";
/// Rounds of each latency measurement.
const ROUNDS: usize = 3;
const BODY: &str =
    r#"{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"Say hi"}]}"#;

fn runtime(workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("a Tokio runtime")
}

/// Where the load goes, and the key it sends.
struct Target {
    name: &'static str,
    url: String,
    key: &'static str,
}

impl Target {
    fn new(name: &'static str, url: String) -> Arc<Self> {
        Arc::new(Target {
            name,
            url,
            key: KEY,
        })
    }
}

fn request(target: &Target) -> Request<Full<Bytes>> {
    Request::post(format!("{}/v1/chat/completions", target.url))
        .header("authorization", format!("Bearer {}", target.key))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .expect("a valid request")
}

/// One call: its latency, or `None` when it failed or took longer than ten seconds.
async fn call(client: &tollgate_e2e::HttpClient, target: &Target) -> Option<Duration> {
    let started = Instant::now();
    let answer = async {
        let response = client.request(request(target)).await.ok()?;
        let ok = response.status().is_success();
        response.into_body().collect().await.ok()?;
        ok.then(|| started.elapsed())
    };
    tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .ok()
        .flatten()
}

struct Latencies {
    p50: Duration,
    p99: Duration,
    failed: usize,
    sent: usize,
}

/// `rate` requests a second for `seconds` to `target`, sent on schedule (each millisecond, the
/// ones due by then).
async fn open_loop(target: &Arc<Target>, rate: u64, seconds: u64) -> Latencies {
    let client = Arc::new(tollgate_e2e::http_client());
    let samples = Arc::new(Mutex::new(Vec::with_capacity((rate * seconds) as usize)));
    let failed = Arc::new(Mutex::new(0usize));
    let total = rate * seconds;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut calls = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while sent < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while sent < due {
            sent += 1;
            let (client, target) = (Arc::clone(&client), Arc::clone(target));
            let (samples, failed) = (Arc::clone(&samples), Arc::clone(&failed));
            calls.spawn(async move {
                match call(&client, &target).await {
                    Some(latency) => samples.lock().unwrap().push(latency),
                    None => *failed.lock().unwrap() += 1,
                }
            });
        }
        while calls.try_join_next().is_some() {}
    }
    while calls.join_next().await.is_some() {}
    let mut samples = std::mem::take(&mut *samples.lock().unwrap());
    samples.sort_unstable();
    let at = |q: f64| {
        samples
            .get(((samples.len() as f64 * q) as usize).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let failed = *failed.lock().unwrap();
    Latencies {
        p50: at(0.50),
        p99: at(0.99),
        failed,
        sent: sent as usize,
    }
}

/// Requests a second with `callers` each sending its next when its answer is read.
async fn closed_loop(target: &Arc<Target>, callers: usize, seconds: u64) -> (f64, usize) {
    let client = Arc::new(tollgate_e2e::http_client());
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let (client, target) = (Arc::clone(&client), Arc::clone(target));
        tasks.spawn(async move {
            let (mut ok, mut failed) = (0usize, 0usize);
            while Instant::now() < until {
                match call(&client, &target).await {
                    Some(_) => ok += 1,
                    None => failed += 1,
                }
            }
            (ok, failed)
        });
    }
    let (mut ok, mut failed) = (0, 0);
    while let Some(Ok((o, f))) = tasks.join_next().await {
        ok += o;
        failed += f;
    }
    (ok as f64 / started.elapsed().as_secs_f64(), failed)
}

fn start_gateway(gateway_rt: &Runtime, mock: &str, told: bool) -> ServerHandle {
    gateway_rt.block_on(serve_gateway(mock.to_owned(), told))
}

/// A gateway on a current-thread runtime of its own thread: every task of a request (the
/// server's connection, the client's) on one thread, none handed to another. Its URL, and the
/// sender that stops it.
fn start_gateway_on_one_thread(mock: &str) -> (String, tokio::sync::oneshot::Sender<()>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let mock = mock.to_owned();
    std::thread::spawn(move || {
        let runtime = tollgate_bench::current_thread_runtime();
        runtime.block_on(async move {
            let server = serve_gateway(mock, true).await;
            let _ = url_tx.send(server.url());
            let _ = stopped.await;
            server.shutdown().await;
        });
    });
    (url_rx.recv().expect("the gateway listens"), stop)
}

async fn serve_gateway(mock: String, told: bool) -> ServerHandle {
    let mut policy = Policy::preset(Provider::OpenAi);
    if told {
        policy.limits.requests = Some(Rate::per_minute(60_000_000));
        policy.limits.adaptive = None;
    }
    async move {
        let mut config = ServeConfig::default();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config
            .clients
            .push(ClientKey::new("bench", KEY).expect("a valid key"));
        let layer = policy.layer().expect("a valid policy");
        let gateway = Gateway::builder(Provider::OpenAi, &mock)
            .provider_key("sk-bench-provider")
            .config(&config)
            .build(layer.layer(tollgate_serve::upstream_client()))
            .expect("a valid gateway");
        tollgate_serve::spawn(gateway, config)
            .await
            .expect("the gateway listens")
    }
    .await
}

fn micros(d: Duration) -> String {
    format!("{}", d.as_micros())
}

/// `now - then` in microseconds, negative when `now` is the smaller.
fn added(now: Duration, then: Duration) -> String {
    if now >= then {
        micros(now - then)
    } else {
        format!("-{}", micros(then - now))
    }
}

/// One row of a latency table: `base` is the direct call's (p50, p99).
fn print_row(
    rate: u64,
    target: &Target,
    (p50, p99): (Duration, Duration),
    base: (Duration, Duration),
    failed: usize,
    sent: usize,
) {
    println!(
        "| {rate}/s | {} | {} | {} | {} | {} | {failed}/{sent} |",
        target.name,
        micros(p50),
        micros(p99),
        added(p50, base.0),
        added(p99, base.1),
    );
}

/// LiteLLM's proxy, a child process killed when this is dropped.
struct LiteLlm(std::process::Child);

impl Drop for LiteLlm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts LiteLLM's proxy (installed by `scripts/litellm.sh`; one worker, as the issue measured
/// it) in front of the mock on a free port, and waits until it answers.
fn start_litellm(load_rt: &Runtime, mock: &str) -> Result<(LiteLlm, Arc<Target>), String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let install = std::process::Command::new(root.join("scripts/litellm.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("scripts/litellm.sh: {e}"))?;
    if !install.status.success() {
        return Err("scripts/litellm.sh failed".into());
    }
    let litellm = String::from_utf8_lossy(&install.stdout).trim().to_owned();
    let dir = root.join("target/litellm");
    let config = dir.join("bench.yaml");
    std::fs::write(
        &config,
        format!(
            "model_list:\n  - model_name: gpt-4o-mini\n    litellm_params:\n      \
             model: openai/gpt-4o-mini\n      api_base: {mock}/v1\n      api_key: sk-mock\n\
             general_settings:\n  master_key: {LITELLM_KEY}\n"
        ),
    )
    .map_err(|e| format!("{}: {e}", config.display()))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let log = std::fs::File::create(dir.join("bench.log")).map_err(|e| e.to_string())?;
    let child = std::process::Command::new(&litellm)
        .args([
            "--config",
            &config.to_string_lossy(),
            "--port",
            &port.to_string(),
        ])
        .args(["--num_workers", "1"])
        .env("LITELLM_LOG", "ERROR")
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{litellm}: {e}"))?;
    let child = LiteLlm(child);
    let target = Arc::new(Target {
        name: "LiteLLM proxy, one worker",
        url: format!("http://127.0.0.1:{port}"),
        key: LITELLM_KEY,
    });
    let client = tollgate_e2e::http_client();
    for _ in 0..120 {
        if load_rt.block_on(call(&client, &target)).is_some() {
            return Ok((child, target));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err("LiteLLM did not answer within a minute (see target/litellm/bench.log)".into())
}

/// The same loads against LiteLLM's proxy, one round each, and the ratios to the gateway's.
fn beside_litellm(load_rt: &Runtime, direct: &Arc<Target>, gateway: &Arc<Target>) {
    let mock = direct.url.clone();
    let (_litellm, litellm) = match start_litellm(load_rt, &mock) {
        Ok(started) => started,
        Err(error) => {
            println!("\nLiteLLM not measured: {error}");
            return;
        }
    };
    println!(
        "\n## Beside LiteLLM's proxy (litellm 1.108.7, one worker; one round of 5 s per figure)\n"
    );
    // The closed loop runs between the two loads: after 1,000/s LiteLLM is still working off
    // its backlog for a while.
    let rows_at = |rate: u64| {
        println!("| offered | target | p50 us | p99 us | added p50 us | added p99 us | failed |");
        println!("|---|---|---|---|---|---|---|");
        let rows: Vec<Latencies> = [direct, gateway, &litellm]
            .into_iter()
            .map(|target| {
                load_rt.block_on(open_loop(target, rate, 1));
                load_rt.block_on(open_loop(target, rate, 5))
            })
            .collect();
        let base = (rows[0].p50, rows[0].p99);
        for (target, row) in [direct, gateway, &litellm].into_iter().zip(&rows) {
            print_row(rate, target, (row.p50, row.p99), base, row.failed, row.sent);
        }
        rows
    };
    let rows = rows_at(50);
    let added_p50 = |row: &Latencies| row.p50.saturating_sub(rows[0].p50).as_secs_f64();
    println!(
        "\nAt 50/s LiteLLM adds {:.0}x the gateway's p50.",
        added_p50(&rows[2]) / added_p50(&rows[1]).max(1e-9)
    );
    let (gateway_rps, _) = load_rt.block_on(closed_loop(gateway, 64, 5));
    let (litellm_rps, failed) = load_rt.block_on(closed_loop(&litellm, 64, 5));
    println!(
        "\nMost requests a second (64 callers, closed loop, 5 s): the gateway {gateway_rps:.0}, \
         LiteLLM {litellm_rps:.0} ({failed} failed): the gateway sustains {:.0}x.\n",
        gateway_rps / litellm_rps.max(1.0)
    );
    let rows = rows_at(1_000);
    println!(
        "\nAt 1,000/s LiteLLM answered {} of {} requests within ten seconds.",
        rows[2].sent - rows[2].failed,
        rows[2].sent
    );
}

fn main() {
    let mock_rt = runtime(1);
    let gateway_rt = runtime(2);
    let load_rt = runtime(1);
    let mock = mock_rt
        .block_on(MockServer::spawn(MockConfig::default()))
        .expect("the mock listens");
    let direct = mock.url();
    let told = start_gateway(&gateway_rt, &direct, true);
    let defaults = start_gateway(&gateway_rt, &direct, false);
    let (one_thread, stop_one_thread) = start_gateway_on_one_thread(&direct);
    let targets = [
        Target::new("direct to the mock", direct.clone()),
        Target::new("gateway, told the limit", told.url()),
        Target::new("gateway, told nothing", defaults.url()),
        Target::new("gateway, told the limit, one thread", one_thread),
    ];

    println!(
        "## Added latency at a fixed load (open loop, 5 s each after 1 s of warm-up, median of {ROUNDS} rounds)\n"
    );
    println!("| offered | target | p50 us | p99 us | added p50 us | added p99 us | failed |");
    println!("|---|---|---|---|---|---|---|");
    for rate in [1_000, 5_000] {
        // Rounds rotate through the targets, so that a noisy moment of the machine falls on
        // all of them; each figure is the median of its rounds, and the direct call's median is
        // the baseline.
        let mut rounds: Vec<Vec<Latencies>> = targets.iter().map(|_| Vec::new()).collect();
        for _ in 0..ROUNDS {
            for (target, rounds) in targets.iter().zip(&mut rounds) {
                load_rt.block_on(open_loop(target, rate, 1));
                rounds.push(load_rt.block_on(open_loop(target, rate, 5)));
            }
        }
        let median = |rounds: &[Latencies], of: fn(&Latencies) -> Duration| {
            let mut values: Vec<Duration> = rounds.iter().map(of).collect();
            values.sort_unstable();
            values[values.len() / 2]
        };
        let base = (median(&rounds[0], |l| l.p50), median(&rounds[0], |l| l.p99));
        for (target, rounds) in targets.iter().zip(&rounds) {
            let (p50, p99) = (median(rounds, |l| l.p50), median(rounds, |l| l.p99));
            let failed: usize = rounds.iter().map(|l| l.failed).sum();
            let sent: usize = rounds.iter().map(|l| l.sent).sum();
            print_row(rate, target, (p50, p99), base, failed, sent);
        }
    }

    println!("\n## Most requests a second (64 callers, closed loop, 5 s)\n");
    println!("| target | requests/s | x direct | failed |");
    println!("|---|---|---|---|");
    let mut direct_rps = None;
    for target in &targets {
        let (rps, failed) = load_rt.block_on(closed_loop(target, 64, 5));
        let base = *direct_rps.get_or_insert(rps);
        println!(
            "| {} | {rps:.0} | {:.2} | {failed} |",
            target.name,
            rps / base
        );
    }
    if std::env::args().any(|arg| arg == "--litellm") {
        beside_litellm(&load_rt, &targets[0], &targets[1]);
    }
    let _ = stop_one_thread.send(());
    gateway_rt.block_on(async {
        told.shutdown().await;
        defaults.shutdown().await;
    });
    mock_rt.block_on(mock.shutdown());
}
