//! The gateway's request path over an in-memory upstream: what it forwards (the provider's key in
//! place of the client's, the client as the quota's tenant), and what it answers itself, in the
//! client's provider shape.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tollgate::rate_limit::{LimitConfig, OnStoreError, Priority, Rate, Tenant};
use tollgate::stack::{Policy, StandardService};
use tollgate::Provider;
use tollgate_serve::{ClientKey, Gateway, GatewayBody, GatewayBuilder};
use tower::Layer;

const PROVIDER_KEY: &str = "sk-provider-SECRET-0123456789";
const WEB_KEY: &str = "gw-web-0123456789";

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    uri: String,
    headers: http::HeaderMap,
    tenant: Option<Tenant>,
    priority: Option<Priority>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// An upstream that records each request and answers `status`.
#[derive(Clone)]
struct Recording {
    log: Log,
    status: StatusCode,
}

impl tower::Service<Request<Full<Bytes>>> for Recording {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        self.log.lock().unwrap().push(Seen {
            uri: request.uri().to_string(),
            headers: request.headers().clone(),
            tenant: request.extensions().get::<Tenant>().cloned(),
            priority: request.extensions().get::<Priority>().copied(),
        });
        let body = match self.status {
            StatusCode::UNAUTHORIZED => format!(
                r#"{{"error":{{"message":"Incorrect API key provided: {}***789"}}}}"#,
                &PROVIDER_KEY[..12]
            ),
            _ => r#"{"object":"chat.completion"}"#.to_owned(),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = self.status;
        std::future::ready(Ok(response))
    }
}

/// A tollgate stack over a [`Recording`] upstream, and its breaker.
fn make_stack(
    policy: &Policy,
    status: StatusCode,
    log: &Log,
) -> (
    StandardService<Recording>,
    tollgate::circuit_breaker::CircuitBreakerHandle,
) {
    let layer = policy.layer().unwrap();
    let breaker = layer.breaker_handle();
    let upstream = Recording {
        log: Arc::clone(log),
        status,
    };
    (layer.layer(upstream), breaker)
}

fn post(path: &str, key: Option<(&str, &str)>, body: &'static str) -> Request<Full<Bytes>> {
    let mut request = Request::post(path).header("content-type", "application/json");
    if let Some((name, value)) = key {
        request = request.header(name, value);
    }
    request
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

async fn read<B>(
    response: Response<GatewayBody<B>>,
) -> (StatusCode, http::HeaderMap, serde_json::Value)
where
    B: http_body::Body<Data = Bytes, Error: Into<tollgate::BoxError>> + 'static,
{
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (parts.status, parts.headers, json)
}

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

/// The status of a chat request to `gateway` with `key`'s header.
async fn chat_status(
    gateway: &Gateway<StandardService<Recording>>,
    key: Option<(&str, &str)>,
) -> StatusCode {
    gateway
        .handle(post("/v1/chat/completions", key, CHAT))
        .await
        .status()
}

fn make_gateway<S>(provider: Provider, stack: S) -> Gateway<S> {
    Gateway::builder(provider, "http://127.0.0.1:9/v1")
        .provider_key(PROVIDER_KEY)
        .client(ClientKey::new("web", WEB_KEY).unwrap().weight(2))
        .build(stack)
        .unwrap()
}

#[tokio::test]
async fn the_clients_key_is_swapped_for_the_providers_and_never_forwarded() {
    let log = Log::default();
    let (stack, _) = make_stack(&Policy::preset(Provider::OpenAi), StatusCode::OK, &log);
    let gateway = make_gateway(Provider::OpenAi, stack);
    let mut request = post(
        "/v1/chat/completions?x=1",
        Some(("authorization", &format!("Bearer {WEB_KEY}"))),
        CHAT,
    );
    request
        .headers_mut()
        .insert("x-tollgate-priority", "high".parse().unwrap());
    request
        .headers_mut()
        .insert("x-api-key", WEB_KEY.parse().unwrap());
    let (status, _, body) = read(gateway.handle(request).await).await;
    assert_eq!(status, 200, "{body}");
    let seen = log.lock().unwrap()[0].clone();
    assert_eq!(seen.uri, "http://127.0.0.1:9/v1/chat/completions?x=1");
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {PROVIDER_KEY}")
    );
    assert!(seen.headers["authorization"].is_sensitive());
    assert!(
        !seen.headers.contains_key("x-api-key"),
        "the client's key stays at the gateway"
    );
    assert!(!seen.headers.contains_key("x-tollgate-priority"));
    assert_eq!(seen.priority, Some(Priority::HIGH));
    let tenant = seen.tenant.unwrap();
    assert_eq!((tenant.name(), tenant.weight()), ("web", 2));

    // Anthropic's SDK sends its key as x-api-key, and gets the provider's in the same header.
    let log = Log::default();
    let (stack, _) = make_stack(&Policy::preset(Provider::Anthropic), StatusCode::OK, &log);
    let gateway = make_gateway(Provider::Anthropic, stack);
    let request = post("/v1/messages", Some(("x-api-key", WEB_KEY)), CHAT);
    let (status, _, _) = read(gateway.handle(request).await).await;
    assert_eq!(status, 200);
    let seen = log.lock().unwrap()[0].clone();
    assert_eq!(seen.headers["x-api-key"], PROVIDER_KEY);
    assert!(seen.headers.contains_key("anthropic-version"));
    assert!(!seen.headers.contains_key("authorization"));
}

#[tokio::test]
async fn what_the_gateway_refuses_itself_is_in_the_clients_shape() {
    let log = Log::default();
    let (stack, _) = make_stack(&Policy::preset(Provider::OpenAi), StatusCode::OK, &log);
    let gateway = Gateway::builder(Provider::OpenAi, "http://127.0.0.1:9")
        .provider_key(PROVIDER_KEY)
        .client(ClientKey::new("web", WEB_KEY).unwrap())
        .config(&{
            let mut config = tollgate_serve::ServeConfig::default();
            config.max_body = 1024;
            config
        })
        .build(stack)
        .unwrap();
    let bearer = format!("Bearer {WEB_KEY}");
    let web = Some(("authorization", bearer.as_str()));

    // No key, a wrong key: 401, as each provider says it.
    let (status, _, body) = read(
        gateway
            .handle(post("/v1/chat/completions", None, CHAT))
            .await,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    let wrong = Some(("x-api-key", "gw-not-a-key-0000"));
    let (status, _, body) = read(gateway.handle(post("/v1/messages", wrong, CHAT)).await).await;
    assert_eq!(status, 401);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    // The provider's key is not a client key.
    let provider = format!("Bearer {PROVIDER_KEY}");
    let request = post(
        "/v1/chat/completions",
        Some(("authorization", &provider)),
        CHAT,
    );
    assert_eq!(gateway.handle(request).await.status(), 401);

    // A path outside the API.
    let (status, _, body) = read(gateway.handle(post("/admin", web, CHAT)).await).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "unknown_url");

    // Not JSON, whatever the content type says.
    let mut request = post("/v1/messages", web, "{\"model\": oops");
    request.headers_mut().insert(
        "content-type",
        "application/x-www-form-urlencoded".parse().unwrap(),
    );
    let (status, _, body) = read(gateway.handle(request).await).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));

    // Over the body limit: said by its length, or found reading it.
    let big: &'static str =
        Box::leak(format!("{{\"pad\":\"{}\"}}", "x".repeat(2000)).into_boxed_str());
    let mut request = post("/v1/chat/completions", web, big);
    request
        .headers_mut()
        .insert("content-length", big.len().into());
    let (status, _, body) = read(gateway.handle(request).await).await;
    assert_eq!(status, 413);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1024 bytes"),
        "{body}"
    );
    let (status, _, _) = read(gateway.handle(post("/v1/messages", web, big)).await).await;
    assert_eq!(status, 413);

    assert!(
        log.lock().unwrap().is_empty(),
        "none of these reached the provider"
    );
    let (status, _, _) = read(
        gateway
            .handle(post("/v1/chat/completions", web, CHAT))
            .await,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn refusals_say_when_to_come_back() {
    let log = Log::default();
    let mut policy = Policy::preset(Provider::OpenAi);
    policy.limits.requests = Some(Rate::per_minute(60).with_burst(1));
    policy.limits.adaptive = None;
    policy.limits.max_wait = Some(Duration::ZERO);
    let (stack, breaker) = make_stack(&policy, StatusCode::OK, &log);
    let gateway = make_gateway(Provider::OpenAi, stack);
    let bearer = format!("Bearer {WEB_KEY}");
    let web = Some(("authorization", bearer.as_str()));

    assert_eq!(chat_status(&gateway, web).await, 200);
    let (status, headers, body) = read(
        gateway
            .handle(post("/v1/chat/completions", web, CHAT))
            .await,
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers["retry-after"], "1");
    let millis: u64 = headers["retry-after-ms"].to_str().unwrap().parse().unwrap();
    assert!((900..=1000).contains(&millis), "{millis}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    let (status, _, body) = read(
        gateway
            .handle(post("/v1/messages", Some(("x-api-key", WEB_KEY)), CHAT))
            .await,
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");

    breaker.isolate();
    let (status, headers, body) = read(
        gateway
            .handle(post("/v1/messages", Some(("x-api-key", WEB_KEY)), CHAT))
            .await,
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["type"], "overloaded_error", "{body}");
    assert!(!headers.contains_key("retry-after") || headers["retry-after"] != "0");
    assert_eq!(
        log.lock().unwrap().len(),
        1,
        "refused requests never reached the provider"
    );
}

/// A gateway's builder with two clients: "batch", limited to 3 requests and one more a minute,
/// and "web", with no limits of its own.
fn batch_limited_and_web() -> GatewayBuilder {
    let mut own = LimitConfig::default();
    own.requests = Some(Rate::per_minute(1).with_burst(3));
    Gateway::builder(Provider::OpenAi, "http://127.0.0.1:9")
        .provider_key(PROVIDER_KEY)
        .client(
            ClientKey::new("batch", "gw-batch-0123456789")
                .unwrap()
                .limits(own),
        )
        .client(ClientKey::new("web", WEB_KEY).unwrap())
}

// Paused: the burst is taken at the instant the limiter starts, with no time to refill.
#[tokio::test(start_paused = true)]
async fn a_client_over_its_own_limit_is_refused_and_the_others_go_on() {
    let log = Log::default();
    // The provider's quota unlimited, so that only the client's own limit can hold it back.
    let mut policy = Policy::preset(Provider::OpenAi);
    policy.limits.adaptive = None;
    let (stack, _) = make_stack(&policy, StatusCode::OK, &log);
    let gateway = batch_limited_and_web().build(stack).unwrap();
    let batch = Some(("authorization", "Bearer gw-batch-0123456789"));
    let bearer = format!("Bearer {WEB_KEY}");
    let web = Some(("authorization", bearer.as_str()));
    // The whole burst at once: the gateway's own limits keep no headroom back (which would
    // make the last of the burst wait).
    let started = tokio::time::Instant::now();
    for _ in 0..3 {
        assert_eq!(chat_status(&gateway, batch).await, 200);
    }
    assert_eq!(started.elapsed(), Duration::ZERO);
    let (status, headers, _) = read(
        gateway
            .handle(post("/v1/chat/completions", batch, CHAT))
            .await,
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "60");
    for _ in 0..5 {
        assert_eq!(chat_status(&gateway, web).await, 200);
    }
    assert_eq!(log.lock().unwrap().len(), 8);
}

/// Two replicas sharing a real Redis: a client's own limit (3 requests, refilled once a minute)
/// holds across both, where each replica keeping it alone would let it have 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_a_store_share_each_clients_own_limit() {
    let redis = tollgate_e2e::redis_server::RedisServer::start();
    let store = tollgate_redis::RedisStore::builder(redis.url())
        .build()
        .unwrap();
    let log = Log::default();
    let replicas: Vec<_> = (0..2)
        .map(|_| {
            let (stack, _) = make_stack(&Policy::preset(Provider::OpenAi), StatusCode::OK, &log);
            batch_limited_and_web()
                .client_store(store.clone(), OnStoreError::FailClosed)
                .build(stack)
                .unwrap()
        })
        .collect();
    let batch = Some(("authorization", "Bearer gw-batch-0123456789"));
    let mut statuses = Vec::new();
    for round in 0..4 {
        for replica in &replicas {
            let answer = replica
                .handle(post("/v1/chat/completions", batch, CHAT))
                .await;
            statuses.push(answer.status().as_u16());
            if round == 3 {
                let (status, headers, _) = read(answer).await;
                assert_eq!(status, 429);
                assert!(
                    headers["retry-after"]
                        .to_str()
                        .unwrap()
                        .parse::<u64>()
                        .unwrap()
                        > 1,
                    "told to come back when the shared bucket has refilled: {headers:?}"
                );
            }
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429, 429, 429]);
    // The client without limits of its own is not held by the other's quota.
    let bearer = format!("Bearer {WEB_KEY}");
    for replica in &replicas {
        assert_eq!(
            chat_status(replica, Some(("authorization", &bearer))).await,
            200
        );
    }
    assert_eq!(log.lock().unwrap().len(), 5);
}

/// Clients competing for one quota get admissions in proportion to their weights; the order the
/// provider saw them in tells.
#[tokio::test(start_paused = true)]
async fn competing_clients_share_the_quota_by_weight() {
    let log = Log::default();
    let mut policy = Policy::preset(Provider::OpenAi);
    policy.limits.requests = Some(Rate::per_second(10).with_burst(1));
    policy.limits.adaptive = None;
    let (stack, _) = make_stack(&policy, StatusCode::OK, &log);
    let gateway = Gateway::builder(Provider::OpenAi, "http://127.0.0.1:9")
        .provider_key(PROVIDER_KEY)
        .client(ClientKey::new("light", "gw-light-0123456789").unwrap())
        .client(
            ClientKey::new("heavy", "gw-heavy-0123456789")
                .unwrap()
                .weight(3),
        )
        .build(stack)
        .unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for key in ["gw-light-0123456789", "gw-heavy-0123456789"] {
        for _ in 0..40 {
            let gateway = gateway.clone();
            let bearer = format!("Bearer {key}");
            calls.spawn(async move {
                let request = post(
                    "/v1/chat/completions",
                    Some(("authorization", &bearer)),
                    CHAT,
                );
                gateway.handle(request).await.status()
            });
        }
    }
    while let Some(status) = calls.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    let order: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.tenant.as_ref().unwrap().name().to_owned())
        .collect();
    assert_eq!(order.len(), 80);
    // While both wait, heavy gets three admissions for each of light's.
    let heavy = order[..40].iter().filter(|n| *n == "heavy").count();
    assert!(
        (28..=32).contains(&heavy),
        "heavy had {heavy} of the first 40: {order:?}"
    );
}

#[tokio::test]
async fn the_providers_refusal_of_the_gateways_key_leaks_nothing() {
    let log = Log::default();
    let (stack, _) = make_stack(
        &Policy::preset(Provider::OpenAi),
        StatusCode::UNAUTHORIZED,
        &log,
    );
    let gateway = make_gateway(Provider::OpenAi, stack);
    let bearer = format!("Bearer {WEB_KEY}");
    let request = post(
        "/v1/chat/completions",
        Some(("authorization", &bearer)),
        CHAT,
    );
    let (status, headers, body) = read(gateway.handle(request).await).await;
    assert_eq!(status, 502);
    let text = format!("{headers:?} {body}");
    assert!(!text.contains(&PROVIDER_KEY[..12]), "{text}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("gateway's API key"));
}

#[tokio::test]
async fn health_and_readiness_need_no_key() {
    let log = Log::default();
    let (stack, _) = make_stack(&Policy::preset(Provider::OpenAi), StatusCode::OK, &log);
    let gateway = make_gateway(Provider::OpenAi, stack);
    let get = |path: &str| Request::get(path).body(Full::new(Bytes::new())).unwrap();
    assert_eq!(gateway.handle(get("/healthz")).await.status(), 200);
    assert_eq!(gateway.handle(get("/readyz")).await.status(), 200);
    assert_eq!(
        gateway.handle(get("/metrics")).await.status(),
        404,
        "no recorder given"
    );
    gateway.start_draining();
    assert_eq!(gateway.handle(get("/readyz")).await.status(), 503);
    assert_eq!(gateway.handle(get("/healthz")).await.status(), 200);
}
