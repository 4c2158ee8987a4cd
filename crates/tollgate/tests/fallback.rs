//! When a fallback chain moves on, and when it does not (in memory, paused time).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tollgate::fallback::{FallbackLayer, ServedBy, Target};
use tollgate::rate_limit::Rate;
use tollgate::stack::Policy;
use tollgate::Provider;
use tower::{Layer, ServiceExt};

/// A provider that answers `primary` requests with `status` and `body`, the others with 200,
/// counting who asked.
fn provider(
    status: u16,
    body: &'static str,
    calls: Arc<Mutex<Vec<String>>>,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future: Send,
> + Clone {
    tower::service_fn(move |request: Request<Full<Bytes>>| {
        let host = request.uri().host().unwrap_or_default().to_owned();
        calls.lock().unwrap().push(host.clone());
        let (status, body) = if host == "primary" {
            (status, body)
        } else {
            (200, "{}")
        };
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        std::future::ready(Ok(response))
    })
}

fn chain(policy: Policy) -> FallbackLayer<tollgate::stack::StandardLayer> {
    FallbackLayer::new(vec![
        (
            Target::new("primary", "http://primary").unwrap(),
            policy.layer().unwrap(),
        ),
        (
            Target::new("secondary", "http://secondary").unwrap(),
            Policy::preset(Provider::OpenAi).layer().unwrap(),
        ),
    ])
    .unwrap()
}

fn request() -> Request<Full<Bytes>> {
    Request::post("http://gateway/v1/chat/completions")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"small","messages":[]}"#,
        )))
        .unwrap()
}

const TOO_LONG: &str = r#"{"error":{"message":"This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens.","type":"invalid_request_error","code":"context_length_exceeded"}}"#;

#[tokio::test(start_paused = true)]
async fn a_prompt_too_long_moves_on_unless_told_not_to() {
    let calls = Arc::default();
    let service =
        chain(Policy::preset(Provider::OpenAi)).layer(provider(400, TOO_LONG, Arc::clone(&calls)));
    let response = service.oneshot(request()).await.unwrap();
    assert_eq!(response.status(), 200);
    let served = response.extensions().get::<ServedBy>().unwrap();
    assert_eq!(&*served.target, "secondary");
    assert_eq!(served.skipped[0].reason, "context_window");

    let calls = Arc::default();
    let service = chain(Policy::preset(Provider::OpenAi))
        .context_fallback(false)
        .layer(provider(400, TOO_LONG, Arc::clone(&calls)));
    let response = service.oneshot(request()).await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(*calls.lock().unwrap(), ["primary"]);
}

#[tokio::test(start_paused = true)]
async fn an_invalid_request_does_not_move_on() {
    let calls = Arc::default();
    let invalid = r#"{"error":{"message":"Unrecognized request argument supplied: foo","type":"invalid_request_error"}}"#;
    let service =
        chain(Policy::preset(Provider::OpenAi)).layer(provider(400, invalid, Arc::clone(&calls)));
    let response = service.oneshot(request()).await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(*calls.lock().unwrap(), ["primary"]);
}

#[tokio::test(start_paused = true)]
async fn a_wait_longer_than_the_primarys_bound_moves_on_at_once() {
    let calls = Arc::default();
    let mut policy = Policy::preset(Provider::OpenAi);
    policy.limits.requests = Some(Rate::per_minute(1).with_burst(1));
    policy.limits.adaptive = None;
    policy.limits.max_wait = Some(Duration::from_secs(1));
    let service = chain(policy).layer(provider(200, "{}", Arc::clone(&calls)));
    let first = service.clone().oneshot(request()).await.unwrap();
    assert_eq!(first.extensions().get::<ServedBy>().unwrap().index, 0);
    let started = tokio::time::Instant::now();
    let second = service.oneshot(request()).await.unwrap();
    let served = second.extensions().get::<ServedBy>().unwrap();
    assert_eq!((served.index, served.skipped[0].reason), (1, "quota"));
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "no waiting for the primary's quota"
    );
}
