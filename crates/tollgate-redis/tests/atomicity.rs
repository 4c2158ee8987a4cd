//! Atomicity across processes: four clients, each with its own runtime, connection and
//! limiter (nothing shared but Redis), sharing one limit for five seconds. Its own test binary,
//! so no other test competes for the two cores while the admission log is taken.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
use support::{logging_upstream, Log};
use tollgate::rate_limit::RateLimitLayer;
use tollgate::rate_limit::{OnStoreError, Rate};
use tollgate_e2e::redis_server::RedisServer;
use tollgate_redis::RedisStore;
use tower::{Layer, ServiceExt};

const RATE: u64 = 200;
const BURST: u64 = 20;
const RUN: Duration = Duration::from_secs(5);
const CLIENTS: usize = 4;

#[test]
fn four_independent_clients_never_admit_more_than_burst_plus_rate_times_elapsed() {
    let server = RedisServer::start();
    let log: Log = Arc::default();
    let deadline = Instant::now() + RUN;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, log) = (server.url(), Arc::clone(&log));
            // Each client has its own runtime, connection and limiter: nothing is shared but Redis.
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let store = RedisStore::builder(url).build().unwrap();
                    let layer = RateLimitLayer::builder()
                        .requests(Rate::per_second(RATE).with_burst(BURST))
                        .headroom(Duration::ZERO)
                        .store(store, OnStoreError::FailClosed)
                        .build()
                        .unwrap();
                    let service = layer.layer(logging_upstream(log));
                    let tasks: Vec<_> = (0..8)
                        .map(|_| {
                            let service = service.clone();
                            tokio::spawn(async move {
                                let mut admitted = 0u64;
                                while Instant::now() < deadline {
                                    let request = Request::new(String::new());
                                    service.clone().oneshot(request).await.expect("admitted");
                                    admitted += 1;
                                }
                                admitted
                            })
                        })
                        .collect();
                    let mut admitted = 0;
                    for task in tasks {
                        admitted += task.await.unwrap();
                    }
                    admitted
                })
            })
        })
        .collect();
    let per_client: Vec<u64> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let mut log = log.lock().unwrap().clone();
    log.sort();
    let total = log.len() as u64;
    assert_eq!(total, per_client.iter().sum::<u64>());
    assert!(
        per_client.iter().all(|&n| n > 0),
        "every client is served: {per_client:?}"
    );
    let elapsed = log[log.len() - 1] - log[0];
    let allowance = BURST as f64 + RATE as f64 * elapsed.as_secs_f64();
    // Admission instants are read here, a round trip after Redis's clock decided: allow one.
    assert!(
        total as f64 <= allowance + 1.0,
        "{total} admitted in {elapsed:?}, allowance {allowance:.1}"
    );
    // And in every window, give or take 20 ms of scheduling between admission and logging.
    let slack = RATE as f64 * 0.020 + 1.0;
    for (i, start) in log.iter().enumerate() {
        for (j, end) in log.iter().enumerate().skip(i) {
            let window = (*end - *start).as_secs_f64();
            let admitted = (j - i + 1) as f64;
            assert!(
                admitted <= BURST as f64 + RATE as f64 * window + slack,
                "{admitted} admitted within {window:.4}s"
            );
        }
    }
    println!(
        "4 clients: {total} admitted in {:.3}s, {:.3}x of the allowance",
        elapsed.as_secs_f64(),
        total as f64 / allowance
    );
}
