//! CircuitBreakerLayer under paused time: trip conditions, windows, slow calls, half-open
//! probes, growth, what does not count, keys, manual control and listeners.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use support::{request, status, BoxError, Scripted, Step};
use tollgate::circuit_breaker::CircuitBreakerLayer;
use tollgate::circuit_breaker::{BreakerState, CircuitOpen, Refusal, SlowCalls, Window};
use tollgate::key::key_fn;
use tower::{Layer, ServiceExt};

type Breaker = tollgate::circuit_breaker::CircuitBreaker<Scripted, tollgate::key::NoKey>;

async fn call(service: &Breaker) -> Result<u16, BoxError> {
    service
        .clone()
        .oneshot(request())
        .await
        .map(|r| r.status().as_u16())
}

fn open_error(error: &BoxError) -> &CircuitOpen {
    error
        .downcast_ref::<CircuitOpen>()
        .expect("a CircuitOpen rejection")
}

fn consecutive(n: u32) -> tollgate::circuit_breaker::CircuitBreakerBuilder {
    CircuitBreakerLayer::builder()
        .consecutive_failures(n)
        .break_duration(Duration::from_secs(10))
}

#[tokio::test(start_paused = true)]
async fn trips_after_n_consecutive_failures_and_then_fails_fast() {
    let provider = Scripted::new([
        status(500),
        status(503),
        status(200),
        status(500),
        status(502),
        status(504),
    ]);
    let layer = consecutive(3).build().unwrap();
    let handle = layer.handle();
    let service = layer.layer(provider.clone());
    for expected in [500, 503, 200, 500, 502] {
        assert_eq!(call(&service).await.unwrap(), expected);
    }
    assert_eq!(
        handle.snapshot().state,
        BreakerState::Closed,
        "the 200 broke the run"
    );
    assert_eq!(call(&service).await.unwrap(), 504);
    assert_eq!(handle.snapshot().state, BreakerState::Open);
    tokio::time::advance(Duration::from_secs(4)).await;
    let error = call(&service).await.unwrap_err();
    let open = open_error(&error);
    assert_eq!(open.refusal(), Refusal::Open);
    assert_eq!(open.open_for(), Duration::from_secs(4));
    assert_eq!(open.retry_after(), Some(Duration::from_secs(6)));
    assert_eq!(
        provider.call_count(),
        6,
        "the rejected call never reached the provider"
    );
    assert_eq!(handle.snapshot().rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn ratio_does_not_trip_below_the_minimum_number_of_calls() {
    let provider =
        Scripted::new((0..40).map(|i| if i % 5 < 3 { status(500) } else { status(200) }));
    let layer = CircuitBreakerLayer::builder()
        .failure_ratio(0.5)
        .window(Window::Count(100))
        .min_calls(20)
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = layer.layer(provider.clone());
    for _ in 0..19 {
        call(&service).await.unwrap();
    }
    assert_eq!(
        handle.snapshot().state,
        BreakerState::Closed,
        "60% failures but only 19 calls"
    );
    call(&service).await.unwrap();
    assert_eq!(
        handle.snapshot().state,
        BreakerState::Open,
        "the 20th call makes the ratio count"
    );
}

#[tokio::test(start_paused = true)]
async fn count_window_keeps_only_the_last_n_calls() {
    let steps = [
        vec![status(500); 5],
        vec![status(200); 10],
        vec![status(500); 4],
    ]
    .concat();
    let provider = Scripted::new(steps);
    let layer = CircuitBreakerLayer::builder()
        .failure_ratio(0.5)
        .window(Window::Count(10))
        .min_calls(5)
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = layer.layer(provider);
    for _ in 0..4 {
        call(&service).await.unwrap();
    }
    assert_eq!(handle.snapshot().state, BreakerState::Closed);
    call(&service).await.unwrap();
    assert_eq!(handle.snapshot().state, BreakerState::Open, "5 of 5 failed");
    handle.reset();
    for _ in 0..14 {
        call(&service).await.unwrap();
    }
    // The last 10 calls hold 6 successes and 4 failures: 40%, under the ratio.
    assert_eq!(handle.snapshot().state, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_old_failures() {
    let steps = [
        vec![status(500); 4],
        vec![status(200); 4],
        vec![status(500); 3],
    ]
    .concat();
    let provider = Scripted::new(steps);
    let layer = CircuitBreakerLayer::builder()
        .failure_ratio(0.5)
        .window(Window::time(Duration::from_secs(10)))
        .min_calls(6)
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = layer.layer(provider);
    for _ in 0..4 {
        call(&service).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(11)).await;
    for _ in 0..7 {
        call(&service).await.unwrap();
    }
    // Counting the old failures it would be 7 of 11; within the last 10 s it is 3 of 7.
    assert_eq!(handle.snapshot().state, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_the_circuit() {
    let provider = Scripted::new(vec![Step::Slow(200, Duration::from_secs(3)); 10]);
    let layer = CircuitBreakerLayer::builder()
        .failure_ratio(0.5)
        .window(Window::Count(10))
        .min_calls(5)
        .slow_calls(SlowCalls::new(Duration::from_secs(2), 0.8))
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = layer.layer(provider);
    for _ in 0..4 {
        assert_eq!(call(&service).await.unwrap(), 200);
    }
    assert_eq!(handle.snapshot().state, BreakerState::Closed);
    call(&service).await.unwrap();
    assert_eq!(
        handle.snapshot().state,
        BreakerState::Open,
        "5 of 5 calls took 3 s"
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_probe_success_closes_and_failure_reopens_for_longer() {
    let provider = Scripted::new([status(500), status(500), status(200), status(200)]);
    let layer = consecutive(1)
        .break_growth(2.0, Duration::from_secs(60))
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = layer.layer(provider.clone());
    call(&service).await.unwrap();
    assert_eq!(handle.snapshot().state, BreakerState::Open);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(handle.snapshot().state, BreakerState::HalfOpen);
    assert_eq!(
        call(&service).await.unwrap(),
        500,
        "the probe went through and failed"
    );
    // Second trip in a row: the break doubles to 20 s.
    let error = call(&service).await.unwrap_err();
    assert_eq!(
        open_error(&error).retry_after(),
        Some(Duration::from_secs(20))
    );
    tokio::time::advance(Duration::from_secs(20)).await;
    assert_eq!(call(&service).await.unwrap(), 200);
    assert_eq!(handle.snapshot().state, BreakerState::Closed);
    assert_eq!(call(&service).await.unwrap(), 200);
    assert_eq!(handle.snapshot().trips, 2);
}

#[tokio::test(start_paused = true)]
async fn calls_beyond_the_probes_are_rejected_while_half_open() {
    let provider = Scripted::new([
        status(500),
        Step::Slow(200, Duration::from_secs(1)),
        Step::Slow(200, Duration::from_secs(1)),
    ]);
    let layer = consecutive(1).probes(2).build().unwrap();
    let service = layer.layer(provider.clone());
    call(&service).await.unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    let first = tokio::spawn({
        let s = service.clone();
        async move { call(&s).await.unwrap() }
    });
    let second = tokio::spawn({
        let s = service.clone();
        async move { call(&s).await.unwrap() }
    });
    tokio::task::yield_now().await;
    let third = call(&service).await.unwrap_err();
    assert_eq!(open_error(&third).refusal(), Refusal::ProbesBusy);
    assert_eq!((first.await.unwrap(), second.await.unwrap()), (200, 200));
    assert_eq!(
        layer.handle().snapshot().state,
        BreakerState::Closed,
        "both probes succeeded"
    );
    assert_eq!(provider.call_count(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_frees_its_slot() {
    let provider = Scripted::new([status(500), Step::Hang, status(200)]);
    let layer = consecutive(1).build().unwrap();
    let service = layer.layer(provider.clone());
    call(&service).await.unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    let hung = tokio::spawn({
        let s = service.clone();
        async move { call(&s).await }
    });
    tokio::task::yield_now().await;
    hung.abort();
    let _ = hung.await;
    assert_eq!(call(&service).await.unwrap(), 200, "another probe may go");
    assert_eq!(layer.handle().snapshot().state, BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn rate_limits_and_client_errors_do_not_trip_by_default() {
    let provider = Scripted::new([
        status(429),
        status(429),
        status(400),
        status(404),
        status(401),
        status(429),
    ]);
    let layer = consecutive(2).build().unwrap();
    let service = layer.layer(provider);
    for _ in 0..6 {
        call(&service).await.unwrap();
    }
    assert_eq!(layer.handle().snapshot().state, BreakerState::Closed);

    let provider = Scripted::new([status(429), status(429)]);
    let strict = consecutive(2)
        .count_as_failure(tollgate::classify::Kind::RateLimited, true)
        .build()
        .unwrap();
    let service = strict.layer(provider);
    call(&service).await.unwrap();
    call(&service).await.unwrap();
    assert_eq!(
        strict.handle().snapshot().state,
        BreakerState::Open,
        "configured to count 429s"
    );
}

#[tokio::test(start_paused = true)]
async fn transport_errors_and_overload_count_as_failures() {
    let provider = Scripted::new([Step::Fail("reset"), status(529)]);
    let layer = consecutive(2).build().unwrap();
    let service = layer.layer(provider);
    assert!(call(&service).await.is_err());
    assert_eq!(call(&service).await.unwrap(), 529);
    assert_eq!(layer.handle().snapshot().state, BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn keyed_circuits_are_independent() {
    let provider = Scripted::new([status(500), status(200), status(200)]);
    let by_model = key_fn(|r: &Request<String>| {
        r.headers()
            .get("x-model")
            .map(|v| v.to_str().unwrap().to_owned())
    });
    let layer = consecutive(1).key(by_model).build().unwrap();
    let handle = layer.handle();
    let service = layer.layer(provider.clone());
    let model = |name: &str| {
        let mut r = request();
        r.headers_mut().insert("x-model", name.parse().unwrap());
        r
    };
    assert_eq!(
        service.clone().oneshot(model("a")).await.unwrap().status(),
        500
    );
    assert!(
        service.clone().oneshot(model("a")).await.is_err(),
        "a is open"
    );
    assert_eq!(
        service.clone().oneshot(model("b")).await.unwrap().status(),
        200,
        "b is not"
    );
    assert_eq!(
        handle.snapshot_of(&"a".to_owned()).map(|s| s.state),
        Some(BreakerState::Open)
    );
    assert_eq!(
        handle.snapshot_of(&"b".to_owned()).map(|s| s.state),
        Some(BreakerState::Closed)
    );
    assert_eq!(
        handle.snapshot().state,
        BreakerState::Closed,
        "the default circuit is untouched"
    );
}

#[tokio::test(start_paused = true)]
async fn isolate_and_reset_by_hand_and_listeners_hear_every_change() {
    let changes = Arc::new(Mutex::new(Vec::new()));
    let heard = Arc::clone(&changes);
    let provider = Scripted::new([]);
    let layer = consecutive(1)
        .name("openai")
        .on_state_change(move |change| {
            heard
                .lock()
                .unwrap()
                .push((change.from, change.to, change.name.clone()))
        })
        .build()
        .unwrap();
    let handle = layer.handle();
    let service = layer.layer(provider.clone());
    handle.isolate();
    let error = call(&service).await.unwrap_err();
    assert_eq!(open_error(&error).refusal(), Refusal::Isolated);
    assert_eq!(open_error(&error).retry_after(), None);
    assert!(
        error.to_string().contains("circuit `openai` is isolated"),
        "{error}"
    );
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert!(call(&service).await.is_err(), "isolation does not time out");
    handle.reset();
    assert_eq!(call(&service).await.unwrap(), 200);
    assert_eq!(provider.call_count(), 1);
    let name: Option<Arc<str>> = Some("openai".into());
    assert_eq!(
        *changes.lock().unwrap(),
        vec![
            (BreakerState::Closed, BreakerState::Isolated, name.clone()),
            (BreakerState::Isolated, BreakerState::Closed, name),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn every_service_the_layer_builds_shares_the_circuit() {
    let provider = Scripted::new([status(500)]);
    let layer = consecutive(1).build().unwrap();
    // As axum does: one service per connection.
    let first = layer.layer(provider.clone());
    let second = layer.layer(provider.clone());
    call(&first).await.unwrap();
    assert!(
        call(&second).await.is_err(),
        "the other connection's service sees the open circuit"
    );
}

#[tokio::test(start_paused = true)]
async fn an_outcome_from_before_a_transition_does_not_count() {
    let provider = Scripted::new([
        Step::Slow(500, Duration::from_secs(30)),
        status(500),
        status(200),
    ]);
    let layer = consecutive(1).build().unwrap();
    let handle = layer.handle();
    let service = layer.layer(provider);
    let slow = tokio::spawn({
        let s = service.clone();
        async move { call(&s).await }
    });
    tokio::task::yield_now().await;
    call(&service).await.unwrap();
    assert_eq!(handle.snapshot().state, BreakerState::Open);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(call(&service).await.unwrap(), 200);
    assert_eq!(handle.snapshot().state, BreakerState::Closed);
    // The slow call admitted before the trip fails now: it says nothing about the new state.
    assert_eq!(slow.await.unwrap().unwrap(), 500);
    assert_eq!(handle.snapshot().state, BreakerState::Closed);
}

#[test]
fn bad_settings_are_typed_errors() {
    let field = |b: tollgate::circuit_breaker::CircuitBreakerBuilder| {
        b.build().unwrap_err().field().to_owned()
    };
    assert_eq!(
        field(CircuitBreakerLayer::builder().consecutive_failures(0)),
        "consecutive_failures"
    );
    assert_eq!(
        field(
            CircuitBreakerLayer::builder()
                .failure_ratio(1.5)
                .window(Window::Count(10))
                .min_calls(1)
        ),
        "failure_ratio"
    );
    assert_eq!(
        field(CircuitBreakerLayer::builder().break_duration(Duration::ZERO)),
        "break_duration"
    );
    assert_eq!(field(CircuitBreakerLayer::builder().probes(0)), "probes");
    assert_eq!(
        field(CircuitBreakerLayer::builder().break_growth(2.0, Duration::from_secs(1))),
        "break_growth.cap"
    );
}
