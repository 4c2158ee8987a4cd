//! Helpers shared by the workspace's runnable examples (`examples/`) and end-to-end tests
//! (`tests/`): a real hyper-util client, AI request bodies for the mock provider, and an axum
//! gateway.

pub mod gateway;

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
