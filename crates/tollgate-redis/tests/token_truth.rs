//! Input, output and daily limits in Redis, and the settling of held charges, against a real
//! `redis-server`: the store's scripts directly, then four independent clients sharing input
//! and output limits. Its own test binary, so no other test competes for the cores during the run.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body_util::BodyExt;
use tollgate::classify::LimitKind;
use tollgate::rate_limit::{Charge, Grant, OnStoreError, Rate, RateLimitLayer, Store};
use tollgate_e2e::redis_server::RedisServer;
use tollgate_redis::RedisStore;
use tower::{service_fn, Layer, ServiceExt};

// Per hour: the few milliseconds a test takes refill nothing that matters.
const THOUSAND: Rate = Rate::new(1000, Duration::from_secs(3600)).with_burst(1000);

fn output(quota: &str, max_tokens: u64) -> Charge {
    let mut charge = Charge::new(quota, None, None, Duration::ZERO);
    charge.output_tokens = Some((THOUSAND, max_tokens));
    charge.held = true;
    charge
}

#[tokio::test]
async fn a_held_output_charge_is_settled_to_the_real_output() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url()).build().unwrap();
    let Grant::Held([None, Some(hold), None]) = store.acquire(output("held", 400)).await.unwrap()
    else {
        panic!("an output charge is held when asked");
    };
    assert_eq!((hold.which, hold.amount), (LimitKind::OutputTokens, 400));
    store
        .settle("held", Some(THOUSAND), hold, 100)
        .await
        .unwrap();
    // 1,000 less the 100 really used: 900 fit, one more does not.
    assert!(matches!(
        store.acquire(output("held", 900)).await.unwrap(),
        Grant::Held(_)
    ));
    assert!(matches!(
        store.acquire(output("held", 1)).await.unwrap(),
        Grant::Wait {
            which: LimitKind::OutputTokens,
            ..
        }
    ));
}

#[tokio::test]
async fn excess_output_is_charged_and_an_unheld_charge_stands() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url()).build().unwrap();
    let Grant::Held([_, Some(hold), _]) = store.acquire(output("excess", 100)).await.unwrap()
    else {
        panic!("held");
    };
    store
        .settle("excess", Some(THOUSAND), hold, 300)
        .await
        .unwrap();
    let mut unheld = output("excess", 700);
    unheld.held = false;
    assert_eq!(store.acquire(unheld).await.unwrap(), Grant::Admitted);
    assert!(
        matches!(
            store.acquire(output("excess", 1)).await.unwrap(),
            Grant::Wait { .. }
        ),
        "300 used + 700 = the whole limit"
    );
}

#[tokio::test]
async fn a_refusal_by_the_output_limit_takes_nothing_from_the_input_limit() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url()).build().unwrap();
    let both = |input, max_tokens| {
        let mut charge = output("atomic", max_tokens);
        charge.input_tokens = Some((THOUSAND, input));
        charge
    };
    assert!(matches!(
        store.acquire(both(100, 1000)).await.unwrap(),
        Grant::Held(_)
    ));
    for _ in 0..5 {
        assert!(matches!(
            store.acquire(both(100, 10)).await.unwrap(),
            Grant::Wait {
                which: LimitKind::OutputTokens,
                ..
            }
        ));
    }
    // Only the first request's 100 input tokens were taken: 900 remain.
    let mut input_only = Charge::new("atomic", None, None, Duration::ZERO);
    input_only.input_tokens = Some((THOUSAND, 900));
    assert!(matches!(
        store.acquire(input_only).await.unwrap(),
        Grant::Admitted
    ));
}

#[tokio::test]
async fn a_spent_daily_quota_waits_until_the_next_day_and_tokens_settle() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url()).build().unwrap();
    let day = |tokens| {
        let mut charge = Charge::new("daily", None, None, Duration::ZERO);
        charge.requests_per_day = Some(3);
        charge.tokens_per_day = Some((1_000, tokens));
        charge.held = true;
        charge
    };
    let Grant::Held([None, None, Some(hold)]) = store.acquire(day(600)).await.unwrap() else {
        panic!("the daily tokens are held");
    };
    assert_eq!(hold.which, LimitKind::TokensPerDay);
    store.settle("daily", None, hold, 50).await.unwrap();
    // 950 tokens left: 900 go, then the third request finds the request count spent too.
    assert!(matches!(
        store.acquire(day(900)).await.unwrap(),
        Grant::Held(_)
    ));
    assert!(matches!(
        store.acquire(day(1)).await.unwrap(),
        Grant::Held(_)
    ));
    match store.acquire(day(1)).await.unwrap() {
        Grant::Wait { wait, which } => {
            assert_eq!(which, LimitKind::RequestsPerDay);
            assert!(wait > Duration::ZERO && wait <= Duration::from_secs(24 * 3600));
        }
        other => panic!("a fourth request today: {other:?}"),
    }
}

const RATE: u64 = 2_000; // output tokens per second
const BURST: u64 = 1_000;
const INPUT_RATE: u64 = 600; // input tokens per second
const INPUT_BURST: u64 = 300;
const RUN: Duration = Duration::from_secs(3);
const CLIENTS: usize = 4;

/// Forty characters of prompt (an estimate of 10 tokens) and max_tokens 100.
const PROMPT: &str = r#"{"max_tokens":100,"messages":[{"role":"user","content":"forty characters of prompt, give or take"}]}"#;

/// When each request was admitted, and the input and output it really used.
type Log = Arc<Mutex<Vec<(Instant, u64, u64)>>>;

#[test]
fn four_clients_sharing_input_and_output_limits_never_use_more_than_they_allow() {
    let server = RedisServer::start();
    let log: Log = Arc::default();
    let deadline = Instant::now() + RUN;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (url, log) = (server.url(), Arc::clone(&log));
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let store = RedisStore::builder(url).build().unwrap();
                    let layer = RateLimitLayer::builder()
                        .output_tokens(Rate::per_second(RATE).with_burst(BURST))
                        .input_tokens(Rate::per_second(INPUT_RATE).with_burst(INPUT_BURST))
                        .headroom(Duration::ZERO)
                        .store(store, OnStoreError::FailClosed)
                        .build()
                        .unwrap();
                    let counter = Arc::new(Mutex::new(client as u64));
                    // Answers of 10 to 40 tokens for max_tokens 100, prompts of 2 to 10 tokens
                    // for an estimate of 10, after 5 ms.
                    let upstream = service_fn(move |_: Request<String>| {
                        let (input, used) = {
                            let mut n = counter.lock().unwrap();
                            *n = n
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            (2 + (*n >> 40) % 9, 10 + (*n >> 33) % 31)
                        };
                        log.lock().unwrap().push((Instant::now(), input, used));
                        async move {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            let body = format!(
                                r#"{{"usage":{{"input_tokens":{input},"output_tokens":{used}}}}}"#
                            );
                            Ok::<_, Infallible>(Response::new(body))
                        }
                    });
                    let service = layer.layer(upstream);
                    let tasks: Vec<_> = (0..8)
                        .map(|_| {
                            let service = service.clone();
                            tokio::spawn(async move {
                                while Instant::now() < deadline {
                                    let request = Request::new(PROMPT.to_owned());
                                    let answer = service.clone().oneshot(request).await.unwrap();
                                    answer.into_body().collect().await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap();
                    }
                    // Settlements are told to Redis without waiting: let the last ones land.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                })
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let mut log = log.lock().unwrap().clone();
    log.sort();
    let used: u64 = log.iter().map(|(_, _, used)| used).sum();
    let elapsed = (log[log.len() - 1].0 - log[0].0).as_secs_f64();
    // Every window, give or take 20 ms of scheduling between admission and logging.
    let limits = [
        ("output", RATE, BURST, 40.0),
        ("input", INPUT_RATE, INPUT_BURST, 10.0),
    ];
    for (name, rate, burst, largest) in limits {
        let slack = rate as f64 * 0.020 + largest;
        for (i, (start, ..)) in log.iter().enumerate() {
            let mut in_window = 0;
            for (end, input, output) in &log[i..] {
                in_window += if name == "input" { *input } else { *output };
                let window = (*end - *start).as_secs_f64();
                assert!(
                    in_window as f64 <= burst as f64 + rate as f64 * window + slack,
                    "{in_window} {name} tokens admitted within {window:.4}s"
                );
            }
        }
    }
    // Paced by the reservations alone (100 each), 2,000 a second is 20 requests a second, 500
    // output tokens a second at 25 each: settling to the real output must do far better.
    let rate = used as f64 / elapsed;
    assert!(
        rate > 0.6 * RATE as f64,
        "{used} output tokens in {elapsed:.2}s: {rate:.0}/s"
    );
    println!(
        "4 clients: {} requests, {used} output tokens in {elapsed:.2}s ({:.2}x the limit)",
        log.len(),
        rate / RATE as f64
    );
}
