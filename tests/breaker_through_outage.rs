//! CircuitBreakerLayer over a real hyper-util client through the mock provider's outage window:
//! during the outage the provider sees only the probes, and traffic resumes within one break
//! duration after the outage ends. Time is paused and shared with the mock.

use std::time::Duration;

use http_body_util::BodyExt;
use tokio::time::Instant;
use tollgate::circuit_breaker::BreakerState;
use tollgate::circuit_breaker::CircuitBreakerLayer;
use tollgate::classify::ClassifyLayer;
use tollgate_e2e::{chat_request, http_client};
use tollgate_mock::{Faults, MockConfig, MockServer};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::test(start_paused = true)]
async fn during_an_outage_only_probes_reach_the_provider() {
    let start = Instant::now();
    let server = MockServer::spawn(MockConfig {
        faults: Faults {
            outages: vec![(Duration::from_secs(1), Duration::from_secs(3))],
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(3)
        .break_duration(Duration::from_millis(500))
        .build()
        .unwrap();
    let handle = breaker.handle();
    let stack = ServiceBuilder::new()
        .layer(breaker)
        .layer(ClassifyLayer::new())
        .service(http_client());

    let (mut rejected, mut first_success_after_outage, mut opened_during_outage) = (0, None, false);
    // One request every 10 ms for 5 s.
    while start.elapsed() < Duration::from_secs(5) {
        let at = start.elapsed();
        match stack
            .clone()
            .oneshot(chat_request(&server.url(), "k", "hi", 5))
            .await
        {
            Ok(response) => {
                let ok = response.status() == 200;
                response.into_body().collect().await.unwrap();
                if ok && at >= Duration::from_secs(3) && first_success_after_outage.is_none() {
                    first_success_after_outage = Some(at);
                }
            }
            Err(_) => rejected += 1,
        }
        if handle.snapshot().state == BreakerState::Open && at < Duration::from_secs(3) {
            opened_during_outage = true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = server.stats();
    let during_outage: u64 = stats.timeline[1..3].iter().map(|s| s.received).sum();
    // 3 failures trip it; then one probe per 500 ms break over 2 s.
    assert!(opened_during_outage);
    assert!(
        during_outage <= 3 + 4 + 1,
        "the provider saw {during_outage} requests during the outage"
    );
    assert!(
        rejected >= 150,
        "about 200 calls fell in the outage and were refused locally, got {rejected}"
    );
    let resumed = first_success_after_outage.expect("traffic resumed");
    assert!(
        resumed <= Duration::from_millis(3_500 + 20),
        "resumed at {resumed:?}, within one break of the end"
    );
    assert_eq!(handle.snapshot().state, BreakerState::Closed);
}
