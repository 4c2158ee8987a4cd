//! The rate limiter with its buckets in Redis, as processes use it: several independent
//! clients (each with its own runtime and connection) sharing one quota, 429 pauses that reach
//! every client, and Redis dying and coming back under both failure policies.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use support::{logging_upstream, Log};
use tollgate::classify::LimitKind;
use tollgate::rate_limit::RateLimitLayer;
use tollgate::rate_limit::{OnStoreError, Rate, RateLimitError, Refusal};
use tollgate_e2e::redis_server::RedisServer;
use tollgate_redis::RedisStore;
use tower::{service_fn, Layer, Service, ServiceExt};

/// An upstream that answers 429 with `Retry-After` when the request says so.
fn provider(
) -> impl Service<Request<String>, Response = Response<String>, Error = Infallible, Future: Send>
       + Clone
       + Send {
    service_fn(|request: Request<String>| {
        let mut response = Response::new(String::new());
        if request.body() == "refuse" {
            *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            response
                .headers_mut()
                .insert("retry-after", http::HeaderValue::from_static("20"));
        }
        std::future::ready(Ok::<_, Infallible>(response))
    })
}

fn shared_layer(url: &str, on_error: OnStoreError) -> RateLimitLayer {
    let store = RedisStore::builder(url)
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    RateLimitLayer::builder()
        .requests(Rate::per_second(50).with_burst(5))
        .max_wait(Duration::from_secs(2))
        .store(store, on_error)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_429_pauses_every_client() {
    let server = RedisServer::start();
    let first = shared_layer(&server.url(), OnStoreError::FailClosed).layer(provider());
    let second = shared_layer(&server.url(), OnStoreError::FailClosed).layer(provider());
    let refused = first
        .clone()
        .oneshot(Request::new("refuse".to_string()))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    // The pause travels to Redis in the background; the other client sees it within a moment.
    let started = Instant::now();
    loop {
        let answer = second.clone().oneshot(Request::new(String::new())).await;
        match answer {
            Err(error) => {
                let error = error.downcast::<RateLimitError>().unwrap();
                assert!(
                    matches!(error.refusal(), Refusal::WouldWait { limit: LimitKind::Paused, wait, .. } if wait > Duration::from_secs(15)),
                    "{error}"
                );
                break;
            }
            Ok(_) => assert!(
                started.elapsed() < Duration::from_secs(2),
                "the other client was never paused"
            ),
        }
    }
}

/// Sends requests until `done` says stop, recording each outcome; bounded by `limit`.
async fn send_until<S>(
    service: &S,
    limit: Duration,
    mut done: impl FnMut(
        &Result<Response<tollgate::rate_limit::RateLimitBody<String>>, tollgate::BoxError>,
    ) -> bool,
) where
    S: Service<
            Request<String>,
            Response = Response<tollgate::rate_limit::RateLimitBody<String>>,
            Error = tollgate::BoxError,
        > + Clone,
{
    let started = Instant::now();
    loop {
        let answer = service.clone().oneshot(Request::new(String::new())).await;
        if done(&answer) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "condition not reached within {limit:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_open_keeps_sending_on_a_fair_share_and_returns_to_redis() {
    let mut server = RedisServer::start();
    let port = server.port();
    let log: Log = Arc::default();
    let layer = shared_layer(&server.url(), OnStoreError::FailOpen { processes: 2 });
    let handle = layer.handle();
    let service = layer.layer(logging_upstream(Arc::clone(&log)));
    for _ in 0..10 {
        service
            .clone()
            .oneshot(Request::new(String::new()))
            .await
            .unwrap();
    }
    assert!(!handle.store_down());

    server.kill();
    // Every request still ends in a response: the local bucket (25/s, burst 2) takes over.
    let outage_start = Instant::now();
    for _ in 0..30 {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            service.clone().oneshot(Request::new(String::new())),
        )
        .await
        .expect("no hang while Redis is down");
        answer.expect("failing open admits locally");
    }
    assert!(handle.store_down());
    let outage = outage_start.elapsed().as_secs_f64();
    let during = log
        .lock()
        .unwrap()
        .iter()
        .filter(|t| **t >= outage_start)
        .count();
    assert_eq!(during, 30);
    // 30 admissions at the fair share of 25 per second (burst 2) take at least 1.1 s.
    assert!(
        outage >= (30.0 - 2.0) / 25.0 - 0.01,
        "30 sent in {outage:.3}s"
    );

    let _server = RedisServer::start_on(port);
    // Back through Redis once a probe answers (one per second).
    send_until(&service, Duration::from_secs(10), |answer| {
        assert!(answer.is_ok());
        !handle.store_down()
    })
    .await;
    let mut redis = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    service
        .clone()
        .oneshot(Request::new(String::new()))
        .await
        .unwrap();
    let exists: i64 = redis::cmd("EXISTS")
        .arg("tollgate:{default}:requests")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(exists, 1, "admissions go through Redis again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_closed_refuses_with_a_typed_error_and_recovers() {
    let mut server = RedisServer::start();
    let port = server.port();
    let layer = shared_layer(&server.url(), OnStoreError::FailClosed);
    let handle = layer.handle();
    let service = layer.layer(provider());
    service
        .clone()
        .oneshot(Request::new(String::new()))
        .await
        .unwrap();

    server.kill();
    for _ in 0..20 {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            service.clone().oneshot(Request::new(String::new())),
        )
        .await
        .expect("no hang while Redis is down");
        let error = answer.expect_err("failing closed sends nothing");
        let error = error.downcast::<RateLimitError>().unwrap();
        assert_eq!(error.refusal(), Refusal::StoreUnavailable);
        assert!(error.to_string().contains("unreachable"));
    }
    assert!(handle.store_down());

    let _server = RedisServer::start_on(port);
    send_until(&service, Duration::from_secs(10), |answer| answer.is_ok()).await;
    assert!(!handle.store_down());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_remaining_header_seen_by_one_client_holds_back_the_others() {
    let server = RedisServer::start();
    let slow = |url: &str| {
        RateLimitLayer::builder()
            .requests(Rate::per_minute(600).with_burst(50))
            .max_wait(Duration::from_millis(50))
            .store(
                RedisStore::builder(url).build().unwrap(),
                OnStoreError::FailClosed,
            )
            .build()
            .unwrap()
    };
    let exhausted = service_fn(|_: Request<String>| {
        let mut response = Response::new(String::new());
        let headers = response.headers_mut();
        headers.insert(
            "x-ratelimit-limit-requests",
            http::HeaderValue::from_static("600"),
        );
        headers.insert(
            "x-ratelimit-remaining-requests",
            http::HeaderValue::from_static("0"),
        );
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let first = slow(&server.url()).layer(exhausted);
    let second = slow(&server.url()).layer(provider());
    first.oneshot(Request::new(String::new())).await.unwrap();
    // The provider says the key is spent; the other client (49 requests left in Redis until
    // then) is held back by the shared bucket once the lowering lands.
    let mut sent = 0;
    loop {
        match second.clone().oneshot(Request::new(String::new())).await {
            Err(error) => {
                let error = error.downcast::<RateLimitError>().unwrap();
                assert!(
                    matches!(
                        error.refusal(),
                        Refusal::WouldWait {
                            limit: LimitKind::Requests,
                            ..
                        }
                    ),
                    "{error}"
                );
                break;
            }
            Ok(_) => {
                sent += 1;
                assert!(
                    sent < 10,
                    "the other client spends its 49 requests: the lowering never reached Redis"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_quotas_are_named_by_key_in_redis() {
    let server = RedisServer::start();
    let layer = RateLimitLayer::builder()
        .requests(Rate::per_minute(2).with_burst(2))
        .max_wait(Duration::from_millis(100))
        .key(tollgate::key::by_host())
        .store(
            RedisStore::builder(server.url()).build().unwrap(),
            OnStoreError::FailClosed,
        )
        .build()
        .unwrap();
    let service = layer.layer(provider());
    let to = |host: &str| {
        Request::get(format!("https://{host}/v1/chat/completions"))
            .body(String::new())
            .unwrap()
    };
    for _ in 0..2 {
        service.clone().oneshot(to("api.openai.com")).await.unwrap();
    }
    let third = service.clone().oneshot(to("api.openai.com")).await;
    assert!(
        third.is_err(),
        "the third request to one host waits past max_wait"
    );
    service
        .clone()
        .oneshot(to("api.groq.com"))
        .await
        .expect("another host has its own quota");
    let mut redis = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for key in [
        "tollgate:{api.openai.com}:requests",
        "tollgate:{api.groq.com}:requests",
    ] {
        let exists: i64 = redis::cmd("EXISTS")
            .arg(key)
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(exists, 1, "{key}");
    }
}

#[test]
fn a_store_with_an_adaptive_limit_or_a_late_key_is_a_config_error() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let store = || RedisStore::builder("redis://127.0.0.1:1/").build().unwrap();
    let adaptive = RateLimitLayer::builder()
        .requests(Rate::per_minute(60))
        .adaptive(tollgate::rate_limit::Adaptive::default())
        .store(store(), OnStoreError::FailClosed)
        .build()
        .unwrap_err();
    assert_eq!(adaptive.field(), "adaptive");
    let late_key = RateLimitLayer::builder()
        .requests(Rate::per_minute(60))
        .store(store(), OnStoreError::FailClosed)
        .key(tollgate::key::by_host())
        .build()
        .unwrap_err();
    assert!(
        late_key.to_string().contains(".key() before .store()"),
        "{late_key}"
    );
    let no_share = RateLimitLayer::builder()
        .requests(Rate::per_minute(60))
        .store(store(), OnStoreError::FailOpen { processes: 0 })
        .build()
        .unwrap_err();
    assert_eq!(no_share.field(), "store");
}

/// Eight tasks send through `policy` while Redis is killed under them and started again;
/// returns (answered ok, refused as store unavailable), asserting nothing else happened.
async fn traffic_through_a_redis_crash(policy: OnStoreError) -> (u64, u64) {
    let mut server = RedisServer::start();
    let port = server.port();
    let layer = shared_layer(&server.url(), policy);
    let handle = layer.handle();
    let service = layer.layer(provider());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (service, stop) = (service.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let (mut ok, mut refused) = (0u64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let request = service.clone().oneshot(Request::new(String::new()));
                    let answer = tokio::time::timeout(Duration::from_secs(5), request)
                        .await
                        .expect("every request ends, none hangs");
                    match answer {
                        Ok(_) => ok += 1,
                        Err(error) => {
                            let error = error.downcast::<RateLimitError>().unwrap();
                            assert_eq!(error.refusal(), Refusal::StoreUnavailable);
                            refused += 1;
                        }
                    }
                }
                (ok, refused)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(handle.store_down(), "the outage was noticed");
    let _server = RedisServer::start_on(port);
    let back = Instant::now();
    while handle.store_down() {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "never went back to Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        let (o, r) = task.await.expect("no task panicked");
        ok += o;
        refused += r;
    }
    (ok, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_under_traffic_failing_open_loses_nothing() {
    let (ok, refused) =
        traffic_through_a_redis_crash(OnStoreError::FailOpen { processes: 2 }).await;
    assert_eq!(refused, 0, "failing open refuses nothing");
    assert!(ok > 50, "{ok} answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_redis_under_traffic_failing_closed_refuses_with_typed_errors() {
    let (ok, refused) = traffic_through_a_redis_crash(OnStoreError::FailClosed).await;
    assert!(refused > 0, "the outage was refused, typed");
    assert!(ok > 50, "{ok} answered before and after");
}
