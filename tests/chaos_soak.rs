//! The full stack against the mock provider injecting 20% mixed faults and an outage, from 64
//! tasks: nothing lost, nothing duplicated, the server's counts agree with the client's, the
//! limiter and breaker end where they should, and the API key never shows up in any log line,
//! error or `Debug` output.
//!
//! CI runs 1,000 requests; `TOLLGATE_SOAK=10000 cargo test --test chaos_soak` runs the long form.
//! Time is paused and shared with the mock, so hangs, backoffs and the outage cost no real time.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use support::capture_logs;
use tokio::time::Instant;
use tollgate::circuit_breaker::CircuitBreakerLayer;
use tollgate::circuit_breaker::{BreakerState, Window};
use tollgate::classify::ClassifyLayer;
use tollgate::rate_limit::Rate;
use tollgate::rate_limit::RateLimitLayer;
use tollgate::retry::BackoffRetryLayer;
use tollgate::retry::{RetryError, RetryInfo};
use tollgate_e2e::{chat_request, http_client};
use tollgate_mock::{FaultMix, Faults, MockConfig, MockServer};
use tower::{ServiceBuilder, ServiceExt};

const API_KEY: &str = "sk-soak-3f9c1e7d0b2a4865";

#[derive(Debug)]
enum Ending {
    Success,
    Refused,
    Error(String),
}

#[tokio::test(start_paused = true)]
async fn twenty_percent_faults_and_an_outage_lose_nothing_and_leak_nothing() {
    let requests: usize = std::env::var("TOLLGATE_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let (logs, _logging) = capture_logs();

    let server = MockServer::spawn(MockConfig {
        rpm: Some(60_000),
        burst: Some(100),
        api_key: Some(API_KEY.into()),
        latency: Duration::from_millis(20),
        latency_jitter: Duration::from_millis(30),
        faults: Faults {
            rate: 0.2,
            mix: FaultMix::default(),
            hang: Duration::from_secs(600),
            outages: vec![(Duration::from_secs(3), Duration::from_secs(6))],
        },
        seed: 2026,
        ..MockConfig::default()
    })
    .await
    .unwrap();

    let transitions = Arc::new(Mutex::new(Vec::new()));
    let heard = Arc::clone(&transitions);
    let started = Instant::now();
    let breaker = CircuitBreakerLayer::builder()
        .failure_ratio(0.5)
        .window(Window::Count(20))
        .min_calls(10)
        .break_duration(Duration::from_millis(500))
        .name("mock")
        .on_state_change(move |change| heard.lock().unwrap().push((started.elapsed(), change.to)))
        .build()
        .unwrap();
    let breaker_handle = breaker.handle();
    let limiter = RateLimitLayer::builder()
        .requests(Rate::per_minute(60_000).with_burst(100))
        .build()
        .unwrap();
    let limiter_handle = limiter.handle();
    let sent = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&sent);
    let stack = ServiceBuilder::new()
        .layer(
            BackoffRetryLayer::builder()
                .max_attempts(8)
                .base(Duration::from_millis(100))
                .cap(Duration::from_secs(2))
                .attempt_timeout(Duration::from_secs(5))
                .no_budget()
                .seed(1)
                .build()
                .unwrap(),
        )
        .layer(breaker)
        .layer(limiter)
        .layer(ClassifyLayer::new())
        // Count what actually leaves for the network, to compare with the server's count.
        .map_request(move |request: http::Request<tollgate_e2e::Body>| {
            counted.fetch_add(1, Ordering::Relaxed);
            // What a client's own debug logging would print of each attempt.
            assert!(
                !format!("{request:?}").contains(API_KEY),
                "an attempt's Debug shows the key"
            );
            request
        })
        .service(http_client());

    let endings = Arc::new(Mutex::new(BTreeMap::new()));
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (stack, endings, next, url) = (
                stack.clone(),
                Arc::clone(&endings),
                Arc::clone(&next),
                server.url(),
            );
            tokio::spawn(async move {
                loop {
                    let id = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if id >= requests {
                        break;
                    }
                    let request = chat_request(&url, API_KEY, &format!("request {id}"), 16);
                    let request_debug = format!("{request:?}");
                    assert!(
                        !request_debug.contains(API_KEY),
                        "a request's Debug shows the key"
                    );
                    let ending = match stack.clone().oneshot(request).await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let debug = format!(
                                "{response:?} {:?}",
                                response.extensions().get::<RetryInfo>()
                            );
                            assert!(!debug.contains(API_KEY));
                            response
                                .into_body()
                                .collect()
                                .await
                                .expect("a body that arrived is readable");
                            if status == 200 {
                                Ending::Success
                            } else {
                                Ending::Refused
                            }
                        }
                        Err(error) => {
                            let error: RetryError = error;
                            Ending::Error(format!("{error} / {error:?}"))
                        }
                    };
                    let previous = endings.lock().unwrap().insert(id, ending);
                    assert!(previous.is_none(), "request {id} ended twice");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("no task panicked");
    }

    let endings = std::mem::take(&mut *endings.lock().unwrap());
    assert_eq!(endings.len(), requests, "every request ended exactly once");
    let successes = endings
        .values()
        .filter(|e| matches!(e, Ending::Success))
        .count();
    assert!(
        successes * 100 >= requests * 90,
        "most requests succeed: {successes} of {requests}"
    );
    for ending in endings.values() {
        if let Ending::Error(text) = ending {
            assert!(!text.contains(API_KEY), "an error shows the key: {text}");
        }
    }

    let stats = server.stats();
    assert_eq!(
        stats.requests,
        sent.load(Ordering::Relaxed),
        "the server saw exactly what the client sent"
    );
    assert!(stats.hangs > 0 && stats.resets > 0 && stats.status(503) > 0 && stats.status(529) > 0);
    assert_eq!(
        stats.limited, 0,
        "the limiter kept the client under the provider's limit"
    );

    let transitions = transitions.lock().unwrap().clone();
    assert!(
        transitions.iter().any(|(at, to)| *to == BreakerState::Open
            && *at >= Duration::from_secs(3)
            && *at < Duration::from_secs(6)),
        "the breaker opened during the outage: {transitions:?}"
    );
    assert_eq!(
        breaker_handle.snapshot().state,
        BreakerState::Closed,
        "and closed after it"
    );

    tokio::time::sleep(Duration::from_secs(60)).await;
    let snapshot = limiter_handle.snapshot();
    assert_eq!(snapshot.in_flight, 0, "no leaked permits");
    assert_eq!(snapshot.queued, 0);
    assert_eq!(
        snapshot.requests_available,
        Some(100),
        "back to full capacity when idle"
    );

    let logs = logs.text();
    assert!(logs.contains("retrying AI API call"), "retries were logged");
    assert!(
        logs.contains("circuit opened"),
        "the breaker's opening was logged"
    );
    assert!(!logs.contains(API_KEY), "a log line shows the key");
    server.shutdown().await;
}
