//! Priority lanes and tenants in the rate limiter's queue, under paused time: a high lane goes
//! at the next refill, a low lane keeps its minimum share, tenants share by weight, a lone
//! tenant gets the whole rate, and none of it ever breaks the quota's bound.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use proptest::prelude::*;
use tokio::time::Instant;
use tollgate::rate_limit::{Priority, Rate, RateLimitLayer, Tenant};
use tower::{Layer, ServiceExt};

/// Who was admitted when.
type Log = Arc<Mutex<Vec<(Instant, String)>>>;

/// A limiter of `per_second` (burst 1, fixed, no headroom) over an upstream that logs each
/// admission with the request's label.
fn limited(
    per_second: u64,
    low_lane_share: f64,
) -> (
    impl tower::Service<
            Request<String>,
            Response = Response<tollgate::rate_limit::RateLimitBody<String>>,
            Error = tollgate::BoxError,
            Future: Send,
        > + Clone
        + Send
        + 'static,
    Log,
) {
    let log: Log = Arc::default();
    let upstream = {
        let log = Arc::clone(&log);
        tower::service_fn(move |request: Request<String>| {
            log.lock()
                .unwrap()
                .push((Instant::now(), request.body().clone()));
            std::future::ready(Ok::<_, Infallible>(Response::new(String::new())))
        })
    };
    let layer = RateLimitLayer::builder()
        .requests(Rate::per_second(per_second).with_burst(1))
        .headroom(Duration::ZERO)
        .low_lane_share(low_lane_share)
        .fixed()
        .build()
        .unwrap();
    (layer.layer(upstream), log)
}

fn request(label: &str, priority: Priority, tenant: Option<Tenant>) -> Request<String> {
    let mut request = Request::new(label.to_owned());
    request.extensions_mut().insert(priority);
    if let Some(tenant) = tenant {
        request.extensions_mut().insert(tenant);
    }
    request
}

#[tokio::test(start_paused = true)]
async fn a_high_lane_request_goes_at_the_next_refill_behind_a_saturating_batch() {
    let (service, log) = limited(10, 0.1);
    for i in 0..100 {
        tokio::spawn(
            service
                .clone()
                .oneshot(request(&format!("low{i}"), Priority::LOW, None)),
        );
    }
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    let asked = Instant::now();
    let interactive = service
        .clone()
        .oneshot(request("high", Priority::HIGH, None))
        .await
        .unwrap();
    drop(interactive);
    let log = log.lock().unwrap().clone();
    let (admitted, _) = log.iter().find(|(_, label)| label == "high").unwrap();
    let waited = *admitted - asked;
    assert!(
        waited <= Duration::from_millis(50),
        "admitted at the next refill instant (every 100 ms): {waited:?}"
    );
    let lows_before = log.iter().take_while(|(_, l)| l != "high").count();
    assert!(
        lows_before < 15,
        "not behind the batch: {lows_before} went first"
    );
}

#[tokio::test(start_paused = true)]
async fn a_low_lane_keeps_its_minimum_share() {
    let (service, log) = limited(100, 0.2);
    for i in 0..200 {
        tokio::spawn(
            service
                .clone()
                .oneshot(request(&format!("low{i}"), Priority::LOW, None)),
        );
        tokio::spawn(
            service
                .clone()
                .oneshot(request(&format!("high{i}"), Priority::HIGH, None)),
        );
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let log = log.lock().unwrap().clone();
    let window = &log[..100];
    let lows = window.iter().filter(|(_, l)| l.starts_with("low")).count();
    assert!(
        (18..=22).contains(&lows),
        "a fifth of the first 100 admissions: {lows}"
    );
    let lows: Vec<&String> = log
        .iter()
        .map(|(_, l)| l)
        .filter(|l| l.starts_with("low"))
        .collect();
    assert!(
        lows.windows(2)
            .all(|w| w[0][3..].parse::<u32>().unwrap() < w[1][3..].parse::<u32>().unwrap()),
        "first come, first served within the lane"
    );
}

#[tokio::test(start_paused = true)]
async fn tenants_weighted_three_to_one_get_three_quarters_and_a_quarter() {
    let (service, log) = limited(100, 0.1);
    for i in 0..400 {
        for (name, weight) in [("a", 3), ("b", 1)] {
            tokio::spawn(service.clone().oneshot(request(
                &format!("{name}{i}"),
                Priority::NORMAL,
                Some(Tenant::new(name).with_weight(weight)),
            )));
        }
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let log = log.lock().unwrap().clone();
    let window = &log[..400];
    let a = window.iter().filter(|(_, l)| l.starts_with('a')).count();
    let share = a as f64 / window.len() as f64;
    assert!(
        (0.73..=0.77).contains(&share),
        "within 2 points of 75%: {share:.3}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lone_tenant_gets_the_whole_rate() {
    let (service, log) = limited(50, 0.1);
    let started = Instant::now();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            tokio::spawn(service.clone().oneshot(request(
                &format!("a{i}"),
                Priority::NORMAL,
                Some(Tenant::new("a").with_weight(1)),
            )))
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let took = started.elapsed();
    assert_eq!(log.lock().unwrap().len(), 100);
    assert!(
        took <= Duration::from_millis(1_990),
        "100 at 50/s with a burst of 1: 1.98 s, not a weight's fraction of it: {took:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Whatever the lanes, tenants and weights, admissions stay within burst + rate x window.
    #[test]
    fn lanes_and_tenants_never_break_the_quota(
        requests in proptest::collection::vec((0u8..4, 0usize..3, 1u32..5, 0u64..30), 1..60),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let log = runtime.block_on(async move {
            let (service, log) = limited(20, 0.1);
            for (i, (lane, tenant, weight, gap_ms)) in requests.into_iter().enumerate() {
                tokio::time::sleep(Duration::from_millis(gap_ms)).await;
                tokio::spawn(service.clone().oneshot(request(
                    &format!("r{i}"),
                    Priority(lane * 60),
                    Some(Tenant::new(["x", "y", "z"][tenant]).with_weight(weight)),
                )));
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
            log
        });
        let log = log.lock().unwrap().clone();
        for (i, (start, _)) in log.iter().enumerate() {
            for (j, (end, _)) in log.iter().enumerate().skip(i) {
                let window = (*end - *start).as_secs_f64();
                let admitted = (j - i + 1) as f64;
                prop_assert!(admitted <= 1.0 + 20.0 * window + 1e-9, "{admitted} in {window}s");
            }
        }
    }
}
