//! RateLimitLayer under paused time: exact schedules, weighted costs, several limits at once,
//! fairness, cancellation, bounds, keys, runtime changes, and learning from the provider.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use proptest::prelude::*;
use support::{request, status, with_header, Scripted, Step};
use tokio::time::Instant;
use tollgate::classify::LimitKind;
use tollgate::key::key_fn;
use tollgate::rate_limit::RateLimitLayer;
use tollgate::rate_limit::{Rate, RateLimitError, Refusal, TokenCost, TokenEstimate};
use tower::{Layer, Service, ServiceExt};

fn costed(cost: u64) -> Request<String> {
    let mut request = request();
    request.extensions_mut().insert(TokenCost(cost));
    request
}

fn offsets(calls: &[Instant], start: Instant) -> Vec<u64> {
    calls
        .iter()
        .map(|c| (*c - start).as_millis() as u64)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_requests_are_admitted_exactly_on_schedule() {
    let provider = Scripted::new([]);
    let layer = RateLimitLayer::builder()
        .headroom(Duration::ZERO)
        .requests(Rate::per_second(100).with_burst(10))
        .build()
        .unwrap();
    let service = layer.layer(provider.clone());
    let start = Instant::now();
    let calls: Vec<_> = (0..10_000)
        .map(|_| tokio::spawn(service.clone().oneshot(request())))
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let admitted = offsets(&provider.calls(), start);
    assert_eq!(admitted.len(), 10_000);
    for (i, at) in admitted.iter().enumerate() {
        // The burst goes at once; then one every 10 ms, never early and never late.
        let due = if i < 10 { 0 } else { (i as u64 - 9) * 10 };
        assert_eq!(*at, due, "request {i}");
    }
}

#[tokio::test(start_paused = true)]
async fn default_headroom_holds_back_a_little_of_the_burst() {
    let provider = Scripted::new([]);
    let layer = RateLimitLayer::builder()
        .requests(Rate::per_second(100).with_burst(10))
        .build()
        .unwrap();
    let service = layer.layer(provider.clone());
    let start = Instant::now();
    let calls: Vec<_> = (0..12)
        .map(|_| tokio::spawn(service.clone().oneshot(request())))
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    // 10 ms of headroom at 100/s is one request of the burst of 10.
    assert_eq!(
        offsets(&provider.calls(), start),
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 20, 30]
    );
}

#[tokio::test(start_paused = true)]
async fn weighted_costs_draw_on_the_token_bucket() {
    let provider = Scripted::new([]);
    let layer = RateLimitLayer::builder()
        .headroom(Duration::ZERO)
        .tokens(Rate::per_second(1_000).with_burst(1_000))
        .build()
        .unwrap();
    let service = layer.layer(provider.clone());
    let start = Instant::now();
    for cost in [600, 400, 500, 1_000] {
        service.clone().oneshot(costed(cost)).await.unwrap();
    }
    // 600 + 400 fill the burst; 500 more take 0.5 s; then 1,000 take 1 s.
    assert_eq!(offsets(&provider.calls(), start), [0, 0, 500, 1500]);
}

#[tokio::test(start_paused = true)]
async fn a_request_held_by_one_limit_takes_nothing_from_the_others() {
    let provider = Scripted::new([]);
    let layer = RateLimitLayer::builder()
        .headroom(Duration::ZERO)
        .requests(Rate::per_minute(6).with_burst(5))
        .tokens(Rate::per_second(100))
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = layer.layer(provider.clone());
    service.clone().oneshot(costed(100)).await.unwrap();
    let start = Instant::now();
    let waiting = tokio::spawn(service.clone().oneshot(costed(100)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Held by the token limit for a second: the request bucket still has 4 of its 5.
    assert!(!waiting.is_finished());
    assert_eq!(handle.snapshot().requests_available, Some(4));
    waiting.await.unwrap().unwrap();
    assert_eq!(offsets(&provider.calls()[1..], start), [1000]);
}

#[tokio::test(start_paused = true)]
async fn a_large_request_queued_first_is_not_starved_by_small_ones() {
    let provider = Scripted::new([]);
    let layer = RateLimitLayer::builder()
        .headroom(Duration::ZERO)
        .tokens(Rate::per_second(100).with_burst(100))
        .build()
        .unwrap();
    let service = layer.layer(provider.clone());
    service.clone().oneshot(costed(100)).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (name, cost) in [("big", 100), ("small-1", 1), ("small-2", 1), ("small-3", 1)] {
        let (service, order) = (service.clone(), Arc::clone(&order));
        tasks.push(tokio::spawn(async move {
            service.oneshot(costed(cost)).await.unwrap();
            order.lock().unwrap().push((name, Instant::now()));
        }));
        tokio::task::yield_now().await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    let order = order.lock().unwrap();
    let names: Vec<_> = order.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["big", "small-1", "small-2", "small-3"]);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_gives_its_place_to_the_next() {
    let provider = Scripted::new([]);
    let layer = RateLimitLayer::builder()
        .headroom(Duration::ZERO)
        .tokens(Rate::per_second(100).with_burst(100))
        .build()
        .unwrap();
    let service = layer.layer(provider.clone());
    service.clone().oneshot(costed(100)).await.unwrap();
    let start = Instant::now();
    let big = tokio::spawn(service.clone().oneshot(costed(100)));
    tokio::task::yield_now().await;
    let small = tokio::spawn(service.clone().oneshot(costed(10)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    big.abort();
    small.await.unwrap().unwrap();
    // Without the big one ahead, 10 tokens were due 100 ms after the bucket emptied.
    assert_eq!(offsets(&provider.calls()[1..], start), [100]);
}

#[tokio::test(start_paused = true)]
async fn bounds_refuse_at_once_with_typed_errors() {
    let provider = Scripted::new([]);
    let layer = RateLimitLayer::builder()
        .headroom(Duration::ZERO)
        .requests(Rate::per_second(1).with_burst(1))
        .tokens(Rate::per_minute(1_000))
        .max_wait(Duration::from_secs(3))
        .max_queue(2)
        .build()
        .unwrap();
    let service = layer.layer(provider.clone());

    let too_large = service.clone().oneshot(costed(5_000)).await.unwrap_err();
    assert_eq!(
        too_large
            .downcast_ref::<RateLimitError>()
            .unwrap()
            .refusal(),
        Refusal::TooLarge {
            limit: LimitKind::Tokens,
            cost: 5_000,
            capacity: 1_000
        }
    );
    assert!(too_large.to_string().contains("lower max_tokens"));

    service.clone().oneshot(costed(1)).await.unwrap();
    let first = tokio::spawn(service.clone().oneshot(costed(1)));
    let second = tokio::spawn(service.clone().oneshot(costed(1)));
    tokio::task::yield_now().await;
    let started = Instant::now();
    let full = service.clone().oneshot(costed(1)).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::ZERO, "refused without waiting");
    assert!(matches!(
        full.downcast_ref::<RateLimitError>()
            .map(RateLimitError::refusal),
        Some(Refusal::QueueFull { max_queue: 2, .. })
    ));
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();

    let strict = RateLimitLayer::builder()
        .headroom(Duration::ZERO)
        .requests(Rate::per_second(1).with_burst(1))
        .max_wait(Duration::from_millis(1_500))
        .build()
        .unwrap()
        .layer(provider.clone());
    strict.clone().oneshot(request()).await.unwrap();
    let queued = tokio::spawn(strict.clone().oneshot(request()));
    tokio::task::yield_now().await;
    // Behind one waiter due in 1 s, the next would wait 2 s: more than the 1.5 s allowed.
    let error = strict.clone().oneshot(request()).await.unwrap_err();
    match error
        .downcast_ref::<RateLimitError>()
        .map(RateLimitError::refusal)
    {
        Some(Refusal::WouldWait {
            limit: LimitKind::Requests,
            wait,
            ..
        }) => {
            assert_eq!(wait, Duration::from_secs(2))
        }
        other => panic!("expected WouldWait, got {other:?}"),
    }
    assert!(error.to_string().contains("would wait 2.000s"), "{error}");
    queued.await.unwrap().unwrap();
    assert_eq!(
        provider.call_count(),
        5,
        "no refused request reached the provider"
    );
}

#[tokio::test(start_paused = true)]
async fn keys_have_independent_quotas_and_idle_ones_are_dropped() {
    let provider = Scripted::new([]);
    let by_model = key_fn(|r: &Request<String>| {
        r.headers()
            .get("x-model")
            .map(|v| v.to_str().unwrap().to_owned())
    });
    let layer = RateLimitLayer::builder()
        .headroom(Duration::ZERO)
        .requests(Rate::per_second(1).with_burst(1))
        .key(by_model)
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = layer.layer(provider.clone());
    let model = |name: &str| {
        let mut r = request();
        r.headers_mut().insert("x-model", name.parse().unwrap());
        r
    };
    let start = Instant::now();
    service.clone().oneshot(model("a")).await.unwrap();
    service.clone().oneshot(model("b")).await.unwrap();
    service.clone().oneshot(model("a")).await.unwrap();
    assert_eq!(
        offsets(&provider.calls(), start),
        [0, 0, 1000],
        "b did not wait for a"
    );

    // A million distinct keys over time: memory follows the keys in use, not all ever seen.
    tokio::time::advance(Duration::from_secs(2)).await;
    let mut peak = 0;
    for i in 0..20_000u32 {
        service
            .clone()
            .oneshot(model(&format!("key-{i}")))
            .await
            .unwrap();
        if i % 100 == 0 {
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        peak = peak.max(handle.keys());
    }
    assert!(peak <= 2_048, "idle keys are swept, peak {peak}");
}

#[tokio::test(start_paused = true)]
async fn limits_change_at_runtime_without_over_admitting() {
    let provider = Scripted::new([]);
    let layer = RateLimitLayer::builder()
        .headroom(Duration::ZERO)
        .requests(Rate::per_second(10).with_burst(10))
        .build()
        .unwrap();
    let handle = layer.handle();
    let with_requests = |rate| {
        let mut limits = handle.limits();
        limits.requests = Some(rate);
        limits
    };
    let service = layer.layer(provider.clone());
    for _ in 0..5 {
        service.clone().oneshot(request()).await.unwrap();
    }
    handle
        .set_limits(with_requests(Rate::per_second(100).with_burst(100)))
        .unwrap();
    assert_eq!(
        handle.snapshot().requests_available,
        Some(5),
        "raising the limit grants nothing at once"
    );
    handle
        .set_limits(with_requests(Rate::per_second(2).with_burst(2)))
        .unwrap();
    assert_eq!(
        handle.snapshot().requests_available,
        Some(2),
        "lowering caps what is available"
    );
    assert!(handle
        .set_limits(with_requests(Rate::per_second(0)))
        .is_err());
    let mut fixed_at_build = handle.limits();
    fixed_at_build.max_queue = Some(10);
    assert_eq!(
        handle.set_limits(fixed_at_build).unwrap_err().field(),
        "max_queue",
        "a setting that is not a limit is refused, not ignored"
    );
}

#[tokio::test(start_paused = true)]
async fn concurrency_permits_are_held_until_the_body_ends() {
    use http_body_util::BodyExt;
    let inner = tower::service_fn(|_: Request<String>| async {
        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
            bytes::Bytes::from_static(b"streamed"),
        )))
    });
    let layer = RateLimitLayer::builder()
        .headroom(Duration::ZERO)
        .concurrency(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = layer.layer(inner);
    let response = service.clone().oneshot(request()).await.unwrap();
    assert_eq!(handle.snapshot().in_flight, 1);
    let blocked = tokio::spawn(service.clone().oneshot(request()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !blocked.is_finished(),
        "the second waits while the first body is unread"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "streamed");
    let second = blocked.await.unwrap().unwrap();
    assert_eq!(handle.snapshot().in_flight, 1);
    drop(second);
    assert_eq!(
        handle.snapshot().in_flight,
        0,
        "a dropped body returns its permit"
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_with_a_hint_pauses_every_task_together() {
    let provider = Scripted::new([with_header(429, "retry-after", "3")]);
    // A strictly fixed limit: the 429's hint pauses the quota (an adaptive one lowers its rate).
    let layer = RateLimitLayer::builder()
        .headroom(Duration::ZERO)
        .requests(Rate::per_second(100).with_burst(100))
        .fixed()
        .build()
        .unwrap();
    let service = layer.layer(provider.clone());
    let start = Instant::now();
    let response = service.clone().oneshot(request()).await.unwrap();
    assert_eq!(response.status(), 429);
    let calls: Vec<_> = (0..3)
        .map(|_| tokio::spawn(service.clone().oneshot(request())))
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(offsets(&provider.calls(), start), [0, 3000, 3000, 3000]);
}

#[tokio::test(start_paused = true)]
async fn provider_headers_lower_the_bucket_and_adopt_a_lower_limit() {
    let provider = Scripted::new([Step::Status(
        200,
        vec![
            ("x-ratelimit-limit-requests", "60".into()),
            ("x-ratelimit-remaining-requests", "1".into()),
        ],
    )]);
    let layer = RateLimitLayer::builder()
        .headroom(Duration::ZERO)
        .requests(Rate::per_minute(600).with_burst(600))
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = layer.layer(provider.clone());
    service.clone().oneshot(request()).await.unwrap();
    let snapshot = handle.snapshot();
    assert_eq!(
        snapshot.requests_available,
        Some(1),
        "the provider says 1 remains"
    );
    let start = Instant::now();
    for _ in 0..3 {
        service.clone().oneshot(request()).await.unwrap();
    }
    // One left, then the adopted 60/min: a request per second.
    assert_eq!(offsets(&provider.calls()[1..], start), [0, 1000, 2000]);

    let provider = Scripted::new([status(200)]);
    let quiet = RateLimitLayer::builder()
        .headroom(Duration::ZERO)
        .requests(Rate::per_minute(600).with_burst(600))
        .learn_from_provider(false)
        .build()
        .unwrap();
    quiet.layer(provider).oneshot(request()).await.unwrap();
    assert_eq!(quiet.handle().snapshot().requests_available, Some(599));
}

#[test]
fn bad_limits_are_typed_errors() {
    // Told nothing and fixed is not an error: that limiter only learns from the provider.
    let learner = RateLimitLayer::builder().fixed().build().unwrap();
    assert_eq!(learner.handle().limits().requests, None);
    assert_eq!(
        RateLimitLayer::builder()
            .headroom(Duration::ZERO)
            .requests(Rate::per_minute(0))
            .build()
            .unwrap_err()
            .field(),
        "requests"
    );
    assert_eq!(
        RateLimitLayer::builder()
            .headroom(Duration::ZERO)
            .tokens(Rate::per_minute(10).with_burst(0))
            .build()
            .unwrap_err()
            .field(),
        "tokens"
    );
    assert_eq!(
        RateLimitLayer::builder()
            .headroom(Duration::ZERO)
            .concurrency(0)
            .build()
            .unwrap_err()
            .field(),
        "concurrency"
    );
}

#[tokio::test(start_paused = true)]
async fn every_clone_and_every_built_service_shares_one_quota() {
    let provider = Scripted::new([]);
    let layer = RateLimitLayer::builder()
        .headroom(Duration::ZERO)
        .requests(Rate::per_second(1).with_burst(1))
        .build()
        .unwrap();
    let start = Instant::now();
    // As axum does: a service per connection, each cloned per request.
    for _ in 0..3 {
        layer
            .layer(provider.clone())
            .clone()
            .oneshot(request())
            .await
            .unwrap();
    }
    assert_eq!(offsets(&provider.calls(), start), [0, 1000, 2000]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Over any window, the admitted cost never exceeds burst + rate × window.
    #[test]
    fn admitted_cost_never_exceeds_burst_plus_rate_times_window(
        costs in proptest::collection::vec(1u64..=50, 1..120),
        gaps in proptest::collection::vec(0u64..40, 1..120),
        burst in 50u64..200,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        let admitted: Vec<(Instant, u64)> = runtime.block_on(async {
            let log = Arc::new(Mutex::new(Vec::new()));
            let inner_log = Arc::clone(&log);
            let inner = tower::service_fn(move |r: Request<String>| {
                let cost = r.extensions().get::<TokenCost>().unwrap().0;
                inner_log.lock().unwrap().push((Instant::now(), cost));
                async { Ok::<_, std::convert::Infallible>(Response::new(String::new())) }
            });
            let layer = RateLimitLayer::builder().headroom(Duration::ZERO).tokens(Rate::per_second(100).with_burst(burst)).build().unwrap();
            let service = layer.layer(inner);
            let mut tasks = Vec::new();
            for (i, cost) in costs.iter().enumerate() {
                tasks.push(tokio::spawn(service.clone().oneshot(costed(*cost))));
                tokio::time::sleep(Duration::from_millis(gaps[i % gaps.len()])).await;
            }
            for task in tasks {
                task.await.unwrap().unwrap();
            }
            let log = log.lock().unwrap().clone();
            log
        });
        for (i, (start, _)) in admitted.iter().enumerate() {
            for (j, (end, _)) in admitted.iter().enumerate().skip(i) {
                let window = (*end - *start).as_secs_f64();
                let total: u64 = admitted[i..=j].iter().map(|(_, c)| c).sum();
                prop_assert!(total as f64 <= burst as f64 + 100.0 * window + 1e-6,
                    "{} admitted over {}s with burst {}", total, window, burst);
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn poll_ready_reflects_the_inner_service() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<String>, Response<String>>();
    let layer = RateLimitLayer::builder()
        .headroom(Duration::ZERO)
        .requests(Rate::per_second(1))
        .build()
        .unwrap();
    let mut service = layer.layer(mock);
    handle.allow(0);
    assert!(tokio_test::task::spawn(service.ready()).poll().is_pending());
    handle.allow(1);
    let call = tokio::spawn(async move { service.ready().await.unwrap().call(request()).await });
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response(Response::new("ok".into()));
    assert_eq!(call.await.unwrap().unwrap().status(), 200);
}

#[test]
fn the_default_cost_estimates_like_the_provider_charges() {
    use tollgate::rate_limit::{Cost, EstimateTokens};
    let estimate = EstimateTokens::new();
    let cost = |body: &str| estimate.estimate_json(body.as_bytes());
    // 40 characters of prompt: 10 tokens; max_tokens wins when larger.
    let prompt = "x".repeat(40);
    assert_eq!(
        cost(&format!(
            r#"{{"max_tokens":5,"messages":[{{"role":"user","content":"{prompt}"}}]}}"#
        )),
        Some(10)
    );
    assert_eq!(
        cost(&format!(
            r#"{{"max_tokens":500,"messages":[{{"role":"user","content":"{prompt}"}}]}}"#
        )),
        Some(500)
    );
    // Content parts, a system prompt, escapes, n completions, and fields it does not know.
    let parts = r#"{"model":"m","n":2,"max_completion_tokens":30,"system":"abcd","temperature":0.2,
        "messages":[{"role":"user","content":[{"type":"text","text":"abcd\"efg"},{"type":"image_url","image_url":{"url":"http://x"}}]}]}"#;
    assert_eq!(cost(parts), Some(60));
    assert_eq!(
        EstimateTokens::new().estimate(parts.as_bytes()),
        Some(TokenEstimate::new(3, 60))
    );
    assert_eq!(cost("not json"), None);
    assert_eq!(cost("[1,2,3]"), None);
    // Unreadable bodies cost the fallback; an explicit TokenCost wins over everything.
    let fallback = EstimateTokens::new().fallback(777);
    assert_eq!(
        fallback.cost(&Request::new("{oops".to_owned())),
        TokenEstimate::from(777)
    );
    assert_eq!(fallback.cost(&costed(42)), TokenEstimate::from(42));
}
