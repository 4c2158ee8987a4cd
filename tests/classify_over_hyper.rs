//! ClassifyLayer over a real hyper-util client against the mock provider on loopback.

use std::time::Duration;

use http_body_util::BodyExt;
use tollgate::classify::ClassifyLayer;
use tollgate::classify::{
    response_verdict, ClassifiedError, HintSource, Kind, LimitKind, RateLimitState,
};
use tollgate_e2e::{chat_request, http_client};
use tollgate_mock::{FaultMix, Faults, MockConfig, MockServer};
use tower::{Layer, ServiceExt};

#[tokio::test]
async fn verdicts_and_rate_limit_state_from_a_real_provider_round_trip() {
    let server = MockServer::spawn(MockConfig {
        rpm: Some(60),
        burst: Some(1),
        api_key: Some("sk-test".into()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let service = ClassifyLayer::new().layer(http_client());

    let ok = service
        .clone()
        .oneshot(chat_request(&server.url(), "sk-test", "hi", 5))
        .await
        .unwrap();
    assert_eq!(response_verdict(&ok).kind(), Kind::Success);
    let state = *ok.extensions().get::<RateLimitState>().unwrap();
    // The limit per minute, as OpenAI reports it; nothing left of the burst of 1.
    assert_eq!(
        (state.requests.limit, state.requests.remaining),
        (Some(60), Some(0))
    );
    assert!(ok
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .starts_with(b"{"));

    let limited = service
        .clone()
        .oneshot(chat_request(&server.url(), "sk-test", "hi", 5))
        .await
        .unwrap();
    let verdict = response_verdict(&limited);
    assert_eq!(verdict.kind(), Kind::RateLimited);
    assert_eq!(verdict.hint_source(), Some(HintSource::RetryAfterMs));
    assert!(verdict.retry_after().unwrap() > Duration::from_millis(900));
    assert_eq!(verdict.limit(), Some(LimitKind::Requests));
    // The body read for classification is handed back whole.
    let body = limited.into_body().collect().await.unwrap().to_bytes();
    assert!(std::str::from_utf8(&body)
        .unwrap()
        .contains("rate_limit_exceeded"));

    let denied = service
        .clone()
        .oneshot(chat_request(&server.url(), "sk-wrong", "hi", 5))
        .await
        .unwrap();
    assert_eq!(response_verdict(&denied).kind(), Kind::Auth);
    assert!(!response_verdict(&denied).is_retryable());
}

#[tokio::test]
async fn a_reset_connection_is_a_classified_connection_failure() {
    let server = MockServer::spawn(MockConfig {
        faults: Faults {
            rate: 1.0,
            mix: FaultMix {
                reset: 1,
                ..FaultMix::server_errors_only()
            },
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    // Only resets: weight everything else out.
    assert_eq!(server.config().faults.mix.reset, 1);
    let service = ClassifyLayer::with_classifier(tollgate::classify::DefaultClassifier::new())
        .layer(http_client());
    let mut resets = 0;
    for _ in 0..10 {
        match service
            .clone()
            .oneshot(chat_request(&server.url(), "k", "hi", 5))
            .await
        {
            Err(error) => {
                let error: ClassifiedError = error;
                assert_eq!(error.classification().kind(), Kind::Connection);
                assert!(error.classification().is_retryable());
                resets += 1;
            }
            Ok(response) => assert!(response.status().is_server_error()),
        }
    }
    assert!(
        resets >= 1,
        "the mock's resets reach the caller as classified errors"
    );
}

#[tokio::test]
async fn anthropic_overload_is_classified_from_its_body() {
    let server = MockServer::spawn(MockConfig {
        faults: Faults {
            rate: 1.0,
            mix: FaultMix {
                server_error: 0,
                ..FaultMix::server_errors_only()
            },
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let service = ClassifyLayer::new().layer(http_client());
    let response = service
        .oneshot(chat_request(&server.url(), "k", "hi", 5))
        .await
        .unwrap();
    assert_eq!(response.status(), 529);
    assert_eq!(response_verdict(&response).kind(), Kind::Overloaded);
}
