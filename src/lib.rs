//! Helpers shared by the workspace's runnable examples (`examples/`) and end-to-end tests
//! (`tests/`): a real hyper-util client, AI request bodies for the mock provider, and an axum
//! gateway.

pub mod gateway;
pub mod redis_server;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tower::{Service, ServiceExt};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The request body type the examples send: JSON held in memory, so retries can replay it.
pub type Body = Full<Bytes>;

/// hyper-util's pooled HTTP/1 client, as a user would build it.
pub type HttpClient = Client<HttpConnector, Body>;

/// A pooled HTTP/1 client over plain TCP (the mock provider listens on loopback).
pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A pooled HTTP/1 client over rustls with Mozilla's root certificates, for real providers
/// (feature `rustls`).
#[cfg(feature = "rustls")]
pub fn https_client() -> Client<hyper_rustls::HttpsConnector<HttpConnector>, Body> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

/// An OpenAI-style chat completion request to `base_url`, with the API key as a bearer token.
pub fn chat_request(base_url: &str, api_key: &str, prompt: &str, max_tokens: u32) -> Request<Body> {
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": prompt}],
    });
    let mut request = Request::post(format!("{base_url}/v1/chat/completions"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::AUTHORIZATION, format!("Bearer {api_key}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a request built from valid parts");
    // As every caller should: the key never shows in the request's Debug output.
    tollgate::redact_secrets(request.headers_mut());
    request
}

/// What a [`drive`] run did.
#[derive(Debug, Clone, Copy)]
pub struct Drive {
    /// Requests whose `send` returned true.
    pub successes: u64,
    /// Wall time of the whole run.
    pub wall: Duration,
}

/// Sends `n` requests from `tasks` concurrent tasks, each taking the next request as it
/// finishes one; `send` makes one request and says whether it succeeded.
pub async fn drive<F, Fut>(n: u64, tasks: usize, send: F) -> Drive
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let successes = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|_| {
            let (next, successes, send) = (next.clone(), successes.clone(), send.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    if send().await {
                        successes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    Drive {
        successes: successes.load(Ordering::Relaxed),
        wall: started.elapsed(),
    }
}

/// Sends `request` through `service` and reads the answer whole: true for a 200.
pub async fn send_ok<S, B>(service: S, request: Request<Body>) -> bool
where
    S: Service<Request<Body>, Response = http::Response<B>>,
    B: http_body::Body,
{
    match service.oneshot(request).await {
        Ok(response) => response.status() == 200 && response.into_body().collect().await.is_ok(),
        Err(_) => false,
    }
}

/// The seed articles' first answer: send, and on anything but a 200 sleep a fixed time and try
/// again, `attempts` times at most. The baseline tollgate is compared with.
pub async fn naive_send(
    client: HttpClient,
    base_url: String,
    attempts: u32,
    sleep: Duration,
) -> bool {
    for _ in 0..attempts {
        if send_ok(
            client.clone(),
            chat_request(&base_url, "sk-naive", "Classify this email.", 100),
        )
        .await
        {
            return true;
        }
        tokio::time::sleep(sleep).await;
    }
    false
}
