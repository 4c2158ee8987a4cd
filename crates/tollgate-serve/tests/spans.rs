//! The spans a request through the gateway leaves, for an OpenTelemetry subscriber to export:
//! one `gateway.request` (client, provider, model, tokens, status) and under it one
//! `tollgate.attempt` per attempt (its number, the wait before it, its verdict).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tollgate::stack::Policy;
use tollgate::Provider;
use tollgate_serve::{ClientKey, Gateway};
use tower::Layer;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Writes each span's creation (with its parent) and each later record as a line.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let parent = span.parent().map_or("none", |p| p.name());
        let mut line = format!("new {} parent={parent}", span.name());
        attrs.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut line = format!("record {}", ctx.span(id).unwrap().name());
        values.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }
}

#[tokio::test]
async fn a_request_and_each_of_its_attempts_have_a_span() {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    // The provider fails the first attempt (503), answers the second.
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = tower::service_fn(move |_: Request<Full<Bytes>>| {
        let call = calls.fetch_add(1, Ordering::Relaxed);
        async move {
            let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
            if call == 0 {
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            Ok::<_, Infallible>(response)
        }
    });
    let mut policy = Policy::preset(Provider::OpenAi);
    policy.retry.base = std::time::Duration::from_millis(1);
    policy.retry.cap = std::time::Duration::from_millis(2);
    let stack = policy.layer().unwrap().layer(upstream);
    let gateway = Gateway::builder(Provider::OpenAi, "http://127.0.0.1:9")
        .provider_key("sk-provider-SECRET-0123456789")
        .client(ClientKey::new("web", "gw-web-0123456789").unwrap())
        .build(stack)
        .unwrap();
    let request = Request::post("/v1/chat/completions")
        .header("authorization", "Bearer gw-web-0123456789")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o-mini","max_tokens":64,"messages":[{"role":"user","content":"12345678"}]}"#,
        )))
        .unwrap();
    assert_eq!(gateway.handle(request).await.status(), 200);

    let lines = capture.0.lock().unwrap().clone();
    let text = lines.join("\n");
    let request = lines
        .iter()
        .find(|l| l.starts_with("new gateway.request"))
        .expect(&text);
    for field in [
        "client=\"web\"",
        "provider=\"openai\"",
        "model=\"gpt-4o-mini\"",
        "input_tokens=2",
        "max_output_tokens=64",
    ] {
        assert!(request.contains(field), "{field} in {request}");
    }
    let attempts: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("new tollgate.attempt"))
        .collect();
    assert_eq!(attempts.len(), 2, "{text}");
    assert!(
        attempts
            .iter()
            .all(|a| a.contains("parent=gateway.request")),
        "{text}"
    );
    assert!(attempts[1].contains("attempt=2"), "{text}");
    let verdicts: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("record tollgate.attempt"))
        .collect();
    assert!(verdicts[0].contains("verdict=\"server_error\""), "{text}");
    assert!(verdicts[1].contains("verdict=\"success\""), "{text}");
    assert!(text.contains("record gateway.request status=200"), "{text}");
    assert!(!text.contains("SECRET"), "{text}");
}
