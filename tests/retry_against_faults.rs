//! BackoffRetryLayer + ClassifyLayer over a real hyper-util client against the mock provider
//! injecting 429s, 5xx, 529s, resets and hangs. Time is paused: the mock and the client share the
//! runtime's virtual clock, so waits and timeouts cost nothing and repeat exactly.

use std::time::Duration;

use http_body_util::BodyExt;
use tollgate::classify::ClassifyLayer;
use tollgate::retry::BackoffRetryLayer;
use tollgate::retry::{RetryError, RetryInfo};
use tollgate_e2e::{chat_request, http_client};
use tollgate_mock::{FaultMix, Faults, MockConfig, MockServer};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::test(start_paused = true)]
async fn every_request_ends_in_success_or_a_typed_error_and_attempts_match_the_server() {
    let server = MockServer::spawn(MockConfig {
        faults: Faults {
            rate: 0.3,
            mix: FaultMix {
                malformed_headers: 0,
                ..FaultMix::default()
            },
            hang: Duration::from_secs(600),
            ..Faults::default()
        },
        seed: 11,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let stack = ServiceBuilder::new()
        .layer(
            BackoffRetryLayer::builder()
                .max_attempts(4)
                .base(Duration::from_millis(100))
                .attempt_timeout(Duration::from_secs(2))
                .no_budget()
                .seed(3)
                .build()
                .unwrap(),
        )
        .layer(ClassifyLayer::new())
        .service(http_client());

    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let stack = stack.clone();
            let url = server.url();
            tokio::spawn(async move {
                stack
                    .oneshot(chat_request(&url, "k", &format!("prompt {i}"), 8))
                    .await
            })
        })
        .collect();
    let (mut successes, mut failures, mut attempts) = (0u64, 0u64, 0u64);
    for task in tasks {
        match task.await.unwrap() {
            Ok(response) => {
                attempts += u64::from(
                    response
                        .extensions()
                        .get::<RetryInfo>()
                        .map_or(1, |info| info.attempts),
                );
                if response.status() == 200 {
                    successes += 1;
                    response.into_body().collect().await.unwrap();
                } else {
                    failures += 1;
                }
            }
            Err(error) => {
                let error: RetryError = error;
                attempts += u64::from(error.attempts());
                failures += 1;
            }
        }
    }
    assert_eq!(successes + failures, 200, "nothing lost");
    assert!(
        successes >= 190,
        "30% faults, 4 attempts: nearly all succeed, got {successes}"
    );
    let stats = server.stats();
    assert_eq!(
        stats.requests, attempts,
        "the server saw exactly the attempts the client reports"
    );
    assert!(stats.hangs > 0 && stats.resets > 0 && stats.status(529) > 0 && stats.status(429) > 0);
}
