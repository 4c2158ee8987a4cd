//! BackoffRetryLayer under paused time: exact schedules, server hints, ceilings, deadlines,
//! budgets, what is never retried, timeouts, replay, cancellation and the thundering herd.

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use support::{request, status, with_header, Scripted, Step};
use tokio::time::Instant;
use tollgate::classify::{HintSource, Kind};
use tollgate::retry::BackoffRetryLayer;
use tollgate::retry::{BudgetConfig, Jitter, OverCeiling, RetryError, RetryInfo, StopReason};
use tower::{Layer, Service, ServiceExt};

fn offsets(calls: &[Instant]) -> Vec<Duration> {
    calls.iter().map(|c| *c - calls[0]).collect()
}

fn ms(values: &[u64]) -> Vec<Duration> {
    values.iter().map(|v| Duration::from_millis(*v)).collect()
}

fn exact() -> tollgate::retry::BackoffRetryBuilder {
    BackoffRetryLayer::builder()
        .jitter(Jitter::None)
        .base(Duration::from_millis(100))
        .no_budget()
}

#[tokio::test(start_paused = true)]
async fn exponential_schedule_without_jitter_is_exact_and_capped() {
    let provider = Scripted::new(vec![status(503); 10]);
    let layer = exact()
        .max_attempts(6)
        .cap(Duration::from_millis(1000))
        .build()
        .unwrap();
    let response = layer
        .layer(provider.clone())
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the last answer is returned unchanged"
    );
    let info = response.extensions().get::<RetryInfo>().unwrap();
    assert_eq!(
        (info.attempts, info.stopped),
        (6, Some(StopReason::AttemptsExhausted))
    );
    assert_eq!(
        offsets(&provider.calls()),
        ms(&[0, 100, 300, 700, 1500, 2500])
    );
}

#[tokio::test(start_paused = true)]
async fn success_after_retries_is_stamped_with_the_attempts() {
    let provider = Scripted::new([status(500), status(502), status(529)]);
    let response = exact()
        .build()
        .unwrap()
        .layer(provider.clone())
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let info = response.extensions().get::<RetryInfo>().unwrap();
    assert_eq!((info.attempts, info.stopped), (4, None));
    assert_eq!(info.elapsed, Duration::from_millis(100 + 200 + 400));
}

#[tokio::test(start_paused = true)]
async fn retry_after_seconds_and_ms_are_obeyed_ms_first() {
    let provider = Scripted::new([
        with_header(429, "retry-after", "2"),
        Step::Status(
            429,
            vec![
                ("retry-after-ms", "1500".into()),
                ("retry-after", "5".into()),
            ],
        ),
    ]);
    let response = exact()
        .build()
        .unwrap()
        .layer(provider.clone())
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(offsets(&provider.calls()), ms(&[0, 2000, 3500]));
}

#[tokio::test(start_paused = true)]
async fn retry_after_http_date_is_obeyed() {
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
    let provider = Scripted::new([with_header(503, "retry-after", date)]);
    exact()
        .build()
        .unwrap()
        .layer(provider.clone())
        .oneshot(request())
        .await
        .unwrap();
    let waited = offsets(&provider.calls())[1];
    // The date has one-second resolution, so "now + 3 s" written as a date is 2 to 3 s away.
    assert!(
        waited > Duration::from_secs(2) && waited <= Duration::from_secs(3),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn hint_over_the_ceiling_gives_up_or_backs_off_as_configured() {
    let provider = Scripted::new([with_header(429, "retry-after", "120")]);
    let layer = exact().ceiling(Duration::from_secs(60)).build().unwrap();
    let response = layer
        .layer(provider.clone())
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let info = response.extensions().get::<RetryInfo>().unwrap();
    assert_eq!(
        (info.attempts, info.stopped),
        (1, Some(StopReason::HintOverCeiling))
    );
    assert_eq!(provider.call_count(), 1);

    let provider = Scripted::new([with_header(429, "retry-after", "120")]);
    let layer = exact()
        .over_ceiling(OverCeiling::UseBackoff)
        .build()
        .unwrap();
    let response = layer
        .layer(provider.clone())
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(offsets(&provider.calls()), ms(&[0, 100]));
}

#[tokio::test(start_paused = true)]
async fn deadline_stops_before_a_wait_that_would_pass_it() {
    let provider = Scripted::new(vec![status(503); 10]);
    let layer = exact()
        .base(Duration::from_millis(400))
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    let response = layer
        .layer(provider.clone())
        .oneshot(request())
        .await
        .unwrap();
    let info = response.extensions().get::<RetryInfo>().unwrap();
    assert_eq!(
        (info.attempts, info.stopped),
        (2, Some(StopReason::Deadline))
    );
    assert_eq!(offsets(&provider.calls()), ms(&[0, 400]));
}

#[tokio::test(start_paused = true)]
async fn deadline_cuts_a_hung_attempt_short() {
    let provider = Scripted::new([Step::Hang]);
    let layer = exact().deadline(Duration::from_secs(2)).build().unwrap();
    let started = Instant::now();
    let error = layer.layer(provider).oneshot(request()).await.unwrap_err();
    assert_eq!(error.reason(), StopReason::Deadline);
    assert_eq!(error.last_verdict().kind(), Kind::Timeout);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_is_a_retryable_timeout() {
    let provider = Scripted::new([Step::Hang, Step::Hang]);
    let layer = exact()
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let response = layer
        .layer(provider.clone())
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(offsets(&provider.calls()), ms(&[0, 1100, 2300]));

    let provider = Scripted::new(vec![Step::Hang; 5]);
    let layer = exact()
        .attempt_timeout(Duration::from_secs(1))
        .max_attempts(2)
        .build()
        .unwrap();
    let error = layer.layer(provider).oneshot(request()).await.unwrap_err();
    assert_eq!(
        (error.reason(), error.attempts()),
        (StopReason::AttemptsExhausted, 2)
    );
    assert_eq!(error.last_verdict().kind(), Kind::Timeout);
    assert!(error.to_string().contains("timed out after 1s"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn permanent_outcomes_are_never_retried() {
    for code in [400, 401, 403, 404, 422] {
        let provider = Scripted::new([status(code)]);
        let response = exact()
            .build()
            .unwrap()
            .layer(provider.clone())
            .oneshot(request())
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), code);
        assert_eq!(provider.call_count(), 1, "status {code}");
        let info = response.extensions().get::<RetryInfo>().unwrap();
        assert_eq!(info.stopped, Some(StopReason::NotRetryable));
    }
    let provider = Scripted::new([with_header(503, "x-should-retry", "false")]);
    exact()
        .build()
        .unwrap()
        .layer(provider.clone())
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(
        provider.call_count(),
        1,
        "x-should-retry: false wins over 503"
    );

    let provider = Scripted::new([with_header(400, "x-should-retry", "true")]);
    exact()
        .build()
        .unwrap()
        .layer(provider.clone())
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(
        provider.call_count(),
        2,
        "x-should-retry: true wins over 400"
    );
}

#[tokio::test(start_paused = true)]
async fn transport_errors_end_in_a_typed_error_that_says_what_happened() {
    let provider = Scripted::new(vec![Step::Fail("connection reset by peer"); 3]);
    let layer = exact().max_attempts(3).build().unwrap();
    let error: RetryError = layer
        .layer(provider.clone())
        .oneshot(request())
        .await
        .unwrap_err();
    assert_eq!(error.reason(), StopReason::AttemptsExhausted);
    assert_eq!(error.attempts(), 3);
    assert_eq!(error.elapsed(), Duration::from_millis(300));
    assert_eq!(error.last_verdict().kind(), Kind::Connection);
    assert_eq!(
        error.to_string(),
        "gave up after 3 attempts in 0.300s: attempts exhausted; last attempt: connection reset by peer"
    );
}

#[tokio::test(start_paused = true)]
async fn budget_runs_dry_under_a_burst_of_failures() {
    // No share of traffic, a floor of 1 retry per second over 10 s: 10 retries in all.
    let budget = BudgetConfig::new(Duration::from_secs(10), 1, 0.0);
    let provider = Scripted::new(vec![status(503); 1000]);
    let layer = exact().max_attempts(3).budget(budget).build().unwrap();
    let service = layer.layer(provider.clone());
    let mut calls = Vec::new();
    for _ in 0..50 {
        let service = service.clone();
        calls.push(tokio::spawn(async move {
            service.oneshot(request()).await.unwrap()
        }));
    }
    let mut dry = 0;
    for call in calls {
        let response = call.await.unwrap();
        if response.extensions().get::<RetryInfo>().unwrap().stopped
            == Some(StopReason::BudgetExhausted)
        {
            dry += 1;
        }
    }
    assert_eq!(provider.call_count(), 50 + 10);
    assert!(dry >= 40, "most callers found the budget empty, got {dry}");
}

#[tokio::test(start_paused = true)]
async fn budget_share_grows_with_traffic() {
    let budget = BudgetConfig::new(Duration::from_secs(10), 0, 0.5);
    let provider =
        Scripted::new((0..20).map(|i| if i % 2 == 0 { status(200) } else { status(503) }));
    let service = exact()
        .max_attempts(2)
        .budget(budget)
        .build()
        .unwrap()
        .layer(provider.clone());
    // 10 calls: alternating 200 and 503 answers give 5 failures wanting a retry, with 50% of
    // the calls so far as allowance.
    for _ in 0..10 {
        service.clone().oneshot(request()).await.unwrap();
    }
    assert!(
        provider.call_count() > 10 && provider.call_count() <= 15,
        "{}",
        provider.call_count()
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_that_cannot_be_replayed_is_sent_once() {
    struct Streaming;
    impl tollgate::retry::ReplayBody for Streaming {
        fn try_replay(&self) -> Option<Self> {
            None
        }
    }
    let provider = Scripted::new([status(503)]);
    let service = exact().build().unwrap().layer(provider.clone());
    let request = http::Request::new(Streaming);
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.extensions().get::<RetryInfo>().unwrap().stopped,
        Some(StopReason::NotReplayable)
    );
    assert_eq!(provider.call_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_mid_wait_cancels_the_call() {
    let provider = Scripted::new(vec![status(503); 5]);
    let service = exact().build().unwrap().layer(provider.clone());
    let call = tokio::spawn(service.oneshot(request()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(provider.call_count(), 1);
    call.abort();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        provider.call_count(),
        1,
        "no attempt after the caller went away"
    );
}

#[tokio::test(start_paused = true)]
async fn on_retry_hook_sees_every_retry_with_its_reason_and_hint() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let hook_seen = Arc::clone(&seen);
    let provider = Scripted::new([status(500), with_header(429, "retry-after-ms", "250")]);
    let layer = exact()
        .on_retry(move |event| {
            hook_seen.lock().unwrap().push((
                event.attempt,
                event.delay,
                event.verdict.kind(),
                event.hint,
            ))
        })
        .build()
        .unwrap();
    layer.layer(provider).oneshot(request()).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (1, Duration::from_millis(100), Kind::ServerError, None),
            (
                2,
                Duration::from_millis(250),
                Kind::RateLimited,
                Some(HintSource::RetryAfterMs)
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn poll_ready_is_driven_before_every_attempt() {
    let (mock, mut handle) =
        tower_test::mock::pair::<http::Request<String>, http::Response<String>>();
    let layer = exact().build().unwrap();
    let mut service = layer.layer(mock);
    handle.allow(1);
    let call = tokio::spawn(async move { service.ready().await.unwrap().call(request()).await });
    let (_, respond) = handle.next_request().await.unwrap();
    let mut busy = http::Response::new(String::new());
    *busy.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    respond.send_response(busy);
    // The retry needs readiness again; the mock panics on a call without it, and waits for us.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!call.is_finished());
    handle.allow(1);
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response(http::Response::new("ok".to_owned()));
    assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);
}

/// A scripted provider that counts its clones.
struct CountsClones {
    inner: Scripted,
    clones: Arc<AtomicU32>,
}

impl Clone for CountsClones {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        CountsClones {
            inner: self.inner.clone(),
            clones: Arc::clone(&self.clones),
        }
    }
}

impl Service<http::Request<String>> for CountsClones {
    type Response = <Scripted as Service<http::Request<String>>>::Response;
    type Error = <Scripted as Service<http::Request<String>>>::Error;
    type Future = <Scripted as Service<http::Request<String>>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        Service::<http::Request<String>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, request: http::Request<String>) -> Self::Future {
        self.inner.call(request)
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_clones_a_service_only_to_retry() {
    let clones = Arc::new(AtomicU32::new(0));
    let provider = CountsClones {
        inner: Scripted::new([status(200), status(200), status(503), status(200)]),
        clones: Arc::clone(&clones),
    };
    let mut service = exact().build().unwrap().layer(provider);
    // The first call makes the copy retries clone from, the second clones nothing, the third
    // is retried once (503, then 200) with a clone of its own.
    for clones_after in [1, 1, 2] {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(request())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(clones.load(Ordering::SeqCst), clones_after);
    }
}

/// The largest number of retries that land in any 100 ms window.
fn densest_window(times: &[Duration]) -> usize {
    let mut sorted = times.to_vec();
    sorted.sort();
    (0..sorted.len())
        .map(|i| {
            sorted[i..]
                .iter()
                .take_while(|t| **t < sorted[i] + Duration::from_millis(100))
                .count()
        })
        .max()
        .unwrap_or(0)
}

async fn herd(jitter: Jitter) -> usize {
    let provider = Scripted::new(vec![status(429); 50]);
    let layer = BackoffRetryLayer::builder()
        .jitter(jitter)
        .base(Duration::from_secs(1))
        .seed(42)
        .no_budget()
        .build()
        .unwrap();
    let service = layer.layer(provider.clone());
    let calls: Vec<_> = (0..50)
        .map(|_| tokio::spawn(service.clone().oneshot(request())))
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    let calls = provider.calls();
    assert_eq!(calls.len(), 100);
    let start = calls[0];
    densest_window(&calls[50..].iter().map(|c| *c - start).collect::<Vec<_>>())
}

#[tokio::test(start_paused = true)]
async fn jitter_spreads_a_thundering_herd() {
    assert_eq!(
        herd(Jitter::None).await,
        50,
        "without jitter all 50 come back together"
    );
    let full = herd(Jitter::Full).await;
    assert!(
        full <= 12,
        "full jitter: at most 12 of 50 in any 100 ms, got {full}"
    );
    let decorrelated = herd(Jitter::Decorrelated).await;
    assert!(decorrelated <= 12, "decorrelated: got {decorrelated}");
}

#[test]
fn bad_settings_are_typed_errors_naming_the_field() {
    let cases = [
        (
            BackoffRetryLayer::builder().max_attempts(0).build(),
            "max_attempts",
        ),
        (
            BackoffRetryLayer::builder().base(Duration::ZERO).build(),
            "base",
        ),
        (BackoffRetryLayer::builder().factor(0.5).build(), "factor"),
        (
            BackoffRetryLayer::builder().factor(f64::NAN).build(),
            "factor",
        ),
        (
            BackoffRetryLayer::builder()
                .cap(Duration::from_millis(10))
                .build(),
            "cap",
        ),
        (
            BackoffRetryLayer::builder().hint_spread(2.0).build(),
            "hint_spread",
        ),
        (
            BackoffRetryLayer::builder()
                .deadline(Duration::ZERO)
                .build(),
            "deadline",
        ),
    ];
    for (result, field) in cases {
        assert_eq!(result.unwrap_err().field(), field);
    }
    assert_eq!(
        BackoffRetryLayer::builder()
            .budget(BudgetConfig::new(Duration::ZERO, 1, 0.1))
            .build()
            .unwrap_err()
            .field(),
        "budget.ttl"
    );
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_budget() {
    let budget = BudgetConfig::new(Duration::from_secs(10), 1, 0.0);
    let provider = Scripted::new(vec![status(503); 100]);
    let layer = exact().max_attempts(2).budget(budget).build().unwrap();
    let counter = Arc::new(AtomicU32::new(0));
    // Two services from one layer, as axum builds one per connection.
    for service in [layer.layer(provider.clone()), layer.layer(provider.clone())] {
        for _ in 0..10 {
            service.clone().oneshot(request()).await.unwrap();
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
    assert_eq!(
        provider.call_count(),
        20 + 10,
        "one budget of 10 retries across both services"
    );
}
