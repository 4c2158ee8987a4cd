//! RateLimitLayer with a `Store`, under paused time, against an in-memory store whose answers
//! the test scripts: waits the store orders, max_wait, and the fail-open / fail-closed switch
//! with one probe per second while the store is down. (`tollgate-redis` tests the real thing.)

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{request, Scripted};
use tokio::time::Instant;
use tollgate::classify::LimitKind;
use tollgate::rate_limit::RateLimitLayer;
use tollgate::rate_limit::{
    Charge, Grant, OnStoreError, Rate, RateLimitError, Refusal, Store, StoreError, StoreFuture,
};
use tower::{Layer, ServiceExt};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Grant(Grant),
    Down,
}

/// Answers every acquire with the scripted answer, and counts the calls.
#[derive(Debug, Clone)]
struct FakeStore {
    answer: Arc<Mutex<Answer>>,
    charges: Arc<Mutex<Vec<Charge>>>,
}

impl FakeStore {
    fn new(answer: Answer) -> Self {
        FakeStore {
            answer: Arc::new(Mutex::new(answer)),
            charges: Arc::default(),
        }
    }

    fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn calls(&self) -> usize {
        self.charges.lock().unwrap().len()
    }
}

impl Store for FakeStore {
    fn acquire(&self, charge: Charge) -> StoreFuture<Grant> {
        self.charges.lock().unwrap().push(charge);
        let answer = *self.answer.lock().unwrap();
        Box::pin(async move {
            match answer {
                Answer::Grant(grant) => Ok(grant),
                Answer::Down => Err(StoreError::new("connection refused")),
            }
        })
    }

    fn pause(&self, _: &str, _: Duration) -> StoreFuture<()> {
        Box::pin(async { Ok(()) })
    }

    fn lower(&self, _: &str, _: LimitKind, _: Rate, _: u64) -> StoreFuture<()> {
        Box::pin(async { Ok(()) })
    }
}

fn layer(store: &FakeStore, on_error: OnStoreError) -> RateLimitLayer {
    RateLimitLayer::builder()
        .requests(Rate::per_second(10).with_burst(2))
        .tokens(Rate::per_minute(60_000))
        .headroom(Duration::ZERO)
        .max_wait(Duration::from_secs(5))
        .store(store.clone(), on_error)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn every_admission_is_the_stores_and_carries_every_limit() {
    let store = FakeStore::new(Answer::Grant(Grant::Admitted));
    let provider = Scripted::new([]);
    let service = layer(&store, OnStoreError::FailClosed).layer(provider.clone());
    // Far more than the local burst of 2: the store decides, not a local bucket.
    for _ in 0..20 {
        service.clone().oneshot(request()).await.unwrap();
    }
    assert_eq!(provider.call_count(), 20);
    assert_eq!(store.calls(), 20);
    let charge = store.charges.lock().unwrap()[0].clone();
    assert_eq!(&*charge.quota, "default");
    assert_eq!(charge.requests, Some(Rate::per_second(10).with_burst(2)));
    assert!(matches!(charge.tokens, Some((rate, _)) if rate == Rate::per_minute(60_000)));
}

#[tokio::test(start_paused = true)]
async fn a_wait_from_the_store_is_slept_exactly_then_asked_again() {
    let store = FakeStore::new(Answer::Grant(Grant::Wait {
        wait: Duration::from_millis(700),
        which: LimitKind::Tokens,
    }));
    let provider = Scripted::new([]);
    let service = layer(&store, OnStoreError::FailClosed).layer(provider.clone());
    let start = Instant::now();
    let pending = tokio::spawn(service.clone().oneshot(request()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.calls(), 1, "asked once, then sleeping the wait");
    store.answer(Answer::Grant(Grant::Admitted));
    pending.await.unwrap().unwrap();
    assert_eq!(store.calls(), 2);
    assert_eq!(provider.calls()[0] - start, Duration::from_millis(700));
}

#[tokio::test(start_paused = true)]
async fn a_store_wait_beyond_max_wait_is_refused_at_once() {
    let store = FakeStore::new(Answer::Grant(Grant::Wait {
        wait: Duration::from_secs(30),
        which: LimitKind::Paused,
    }));
    let provider = Scripted::new([]);
    let service = layer(&store, OnStoreError::FailClosed).layer(provider.clone());
    let error = service.oneshot(request()).await.unwrap_err();
    let error = error.downcast::<RateLimitError>().unwrap();
    assert_eq!(
        error.refusal(),
        Refusal::WouldWait {
            limit: LimitKind::Paused,
            wait: Duration::from_secs(30),
            max_wait: Duration::from_secs(5)
        }
    );
    assert_eq!(provider.call_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn failing_open_sends_the_fair_share_and_probes_once_a_second() {
    let store = FakeStore::new(Answer::Down);
    let provider = Scripted::new([]);
    let layer = layer(&store, OnStoreError::FailOpen { processes: 2 });
    let handle = layer.handle();
    let service = layer.layer(provider.clone());
    let start = Instant::now();
    for _ in 0..11 {
        service.clone().oneshot(request()).await.unwrap();
    }
    assert!(handle.store_down());
    // Half of 10/s with a burst of 1: 11 requests take 2 s, and the store was asked once at
    // the start and once per second after (the probes), not once per request.
    assert_eq!(Instant::now() - start, Duration::from_secs(2));
    assert_eq!(store.calls(), 3, "one call, then one probe a second");

    store.answer(Answer::Grant(Grant::Admitted));
    tokio::time::sleep(Duration::from_secs(1)).await;
    service.clone().oneshot(request()).await.unwrap();
    assert!(!handle.store_down(), "the probe's answer switches back");
    let before = store.calls();
    for _ in 0..5 {
        service.clone().oneshot(request()).await.unwrap();
    }
    assert_eq!(
        store.calls(),
        before + 5,
        "every admission is the store's again"
    );
}

#[tokio::test(start_paused = true)]
async fn failing_closed_refuses_without_a_round_trip_until_the_next_probe() {
    let store = FakeStore::new(Answer::Down);
    let provider = Scripted::new([]);
    let layer = layer(&store, OnStoreError::FailClosed);
    let handle = layer.handle();
    let service = layer.layer(provider.clone());
    for _ in 0..10 {
        let error = service.clone().oneshot(request()).await.unwrap_err();
        let error = error.downcast::<RateLimitError>().unwrap();
        assert_eq!(error.refusal(), Refusal::StoreUnavailable);
        assert_eq!(error.retry_after(), Some(Duration::from_secs(1)));
    }
    assert_eq!(
        store.calls(),
        1,
        "refused locally while the store is known down"
    );
    assert_eq!(provider.call_count(), 0);
    assert!(handle.store_down());

    store.answer(Answer::Grant(Grant::Admitted));
    tokio::time::sleep(Duration::from_secs(1)).await;
    service.clone().oneshot(request()).await.unwrap();
    assert!(!handle.store_down());
    assert_eq!(provider.call_count(), 1);
}
