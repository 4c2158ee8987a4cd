//! No API key in any output, for every provider preset, under every fault the mock injects: the
//! standard stack over a real hyper client against the mock on loopback, with the key sent the
//! provider's way (a header left unmarked, as a careless caller would, and Gemini's `?key=`
//! query form), and every tracing event at every level, every error (with its sources, in
//! `Display` and `Debug`), every response's `Debug` and every attempt's `Debug` checked for it.
//!
//! Time is paused and shared with the mock, so hangs, backoffs and the outage cost no real time.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::capture_logs;
use tollgate::retry::RetryInfo;
use tollgate::stack::Policy;
use tollgate::{Provider, ServiceBuilderExt};
use tollgate_e2e::http_client;
use tollgate_mock::{FaultMix, Faults, MockConfig, MockServer};
use tower::{ServiceBuilder, ServiceExt};

const KEY: &str = "sk-leak-canary-7d41c09e";
const REQUESTS: usize = 60;

/// A chat request to `base` for `provider`, its key in the provider's header (not marked
/// sensitive: the stack must do it) or, with `in_query`, in the `?key=` form Gemini accepts.
fn request(
    provider: Provider,
    base: &str,
    id: usize,
    in_query: bool,
) -> http::Request<Full<Bytes>> {
    let auth = provider.auth();
    let mut uri = format!("{base}{}", provider.chat_path());
    if in_query {
        uri.push_str(&format!("?alt=json&{}={KEY}", auth.query.unwrap()));
    }
    let body = serde_json::json!({
        "model": "some-model",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": format!("request {id}")}],
    });
    let mut builder = http::Request::post(uri).header("content-type", "application/json");
    if !in_query {
        let value = if auth.bearer {
            format!("Bearer {KEY}")
        } else {
            KEY.to_owned()
        };
        builder = builder.header(auth.header, value);
    }
    builder
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn run(provider: Provider) {
    let (logs, _logging) = capture_logs();
    let server = MockServer::spawn(MockConfig {
        api_key: Some(KEY.into()),
        latency: Duration::from_millis(20),
        faults: Faults {
            rate: 0.5,
            mix: FaultMix::default(),
            hang: Duration::from_secs(30),
            outages: vec![(Duration::from_secs(2), Duration::from_secs(4))],
        },
        seed: 7,
        ..MockConfig::default()
    })
    .await
    .unwrap();

    let mut policy = Policy::preset(provider);
    policy.retry.attempt_timeout = Some(Duration::from_secs(2));
    policy.retry.max_attempts = 3;
    let stack = ServiceBuilder::new()
        .tollgate(&policy)
        .unwrap()
        .map_request(|request: http::Request<Full<Bytes>>| {
            // What a client's own debug logging would print of each attempt.
            if request.uri().query().is_some() {
                tracing::debug!(uri = %tollgate::redact_uri(request.uri()), headers = ?request.headers(), "attempt");
            } else {
                tracing::debug!(?request, "attempt");
            }
            request
        })
        .service(http_client());
    tracing::debug!(?stack, "the stack");

    let mut seen = String::new();
    for id in 0..REQUESTS {
        let in_query = provider.auth().query.is_some() && id % 2 == 1;
        let request = request(provider, &server.url(), id, in_query);
        match stack.clone().oneshot(request).await {
            Ok(response) => {
                seen.push_str(&format!(
                    "{response:?} {:?}\n",
                    response.extensions().get::<RetryInfo>()
                ));
                let body = response.into_body().collect().await.unwrap().to_bytes();
                seen.push_str(&String::from_utf8_lossy(&body));
            }
            Err(error) => {
                seen.push_str(&format!("{error} / {error:?}\n"));
                let mut source = std::error::Error::source(&error);
                while let Some(cause) = source {
                    seen.push_str(&format!("{cause} / {cause:?}\n"));
                    source = cause.source();
                }
            }
        }
    }

    let stats = server.stats();
    let injected = [
        ("a 5xx", (500..=504).map(|s| stats.status(s)).sum::<u64>()),
        ("a 529", stats.status(529)),
        ("a 429", stats.status(429)),
        ("a reset", stats.resets),
        ("a hang", stats.hangs),
        ("a 401 the key passed", stats.status(401)),
    ];
    for (fault, count) in injected {
        if fault.starts_with("a 401") {
            assert_eq!(count, 0, "{provider}: the key reached the mock every time");
        } else {
            assert!(count > 0, "{provider}: the run met {fault}: {stats:?}");
        }
    }
    assert!(stats.successes() > 0, "{provider}: some requests succeeded");
    let logs = logs.text();
    assert!(
        logs.contains("attempt"),
        "{provider}: the attempts were logged"
    );
    assert!(!logs.contains(KEY), "{provider}: a log line shows the key");
    assert!(
        !seen.contains(KEY),
        "{provider}: a response or error shows the key"
    );
}

#[tokio::test(start_paused = true)]
async fn no_preset_leaks_the_key_under_any_fault() {
    for provider in Provider::ALL {
        run(provider).await;
    }
}
