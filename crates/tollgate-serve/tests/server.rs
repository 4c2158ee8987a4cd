//! The server over real loopback sockets, in front of the mock provider: slow clients are cut
//! off, connections are bounded, a shutdown lets the requests in flight finish. Time is paused:
//! the timeouts are exact.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tollgate::stack::Policy;
use tollgate::Provider;
use tollgate_mock::{MockConfig, MockServer};
use tollgate_serve::{Gateway, ServeConfig, ServerHandle};
use tower::Layer;

async fn start(mock: &MockServer, tweak: impl FnOnce(&mut ServeConfig)) -> ServerHandle {
    let mut config = ServeConfig::default();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.header_timeout = Duration::from_secs(5);
    config.body_timeout = Duration::from_secs(7);
    tweak(&mut config);
    let stack = Policy::preset(Provider::OpenAi)
        .layer()
        .unwrap()
        .layer(tollgate_e2e::http_client());
    let gateway = Gateway::builder(Provider::OpenAi, &mock.url())
        .provider_key("sk-provider-0123456789")
        .config(&config)
        .build(stack)
        .unwrap();
    tollgate_serve::spawn(gateway, config).await.unwrap()
}

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

fn request_text() -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{CHAT}",
        CHAT.len()
    )
}

/// Reads until the peer closes or a whole response head and some body arrived.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut buffer = vec![0u8; 4096];
    let mut text = String::new();
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return text,
            Ok(n) => {
                text.push_str(&String::from_utf8_lossy(&buffer[..n]));
                if text.contains("\r\n\r\n") && text.ends_with('}') {
                    return text;
                }
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_slow_to_send_its_headers_is_disconnected() {
    let mock = MockServer::spawn(MockConfig::default()).await.unwrap();
    let server = start(&mock, |_| {}).await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    stream
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_answer(&mut stream).await;
    let waited = started.elapsed();
    assert!(!answer.contains("200 OK"), "{answer}");
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "cut off after {waited:?}"
    );
    assert_eq!(mock.stats().requests, 0);
}

#[tokio::test(start_paused = true)]
async fn a_client_slow_to_send_its_body_gets_408() {
    let mock = MockServer::spawn(MockConfig::default()).await.unwrap();
    let server = start(&mock, |_| {}).await;
    let mut stream = TcpStream::connect(server.local_addr()).await.unwrap();
    let text = request_text();
    stream
        .write_all(&text.as_bytes()[..text.len() - 10])
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("invalid_request_error"), "{answer}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(7) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    assert_eq!(mock.stats().requests, 0);
}

#[tokio::test(start_paused = true)]
async fn connections_beyond_the_bound_wait_for_a_free_one() {
    let mock = MockServer::spawn(MockConfig::default()).await.unwrap();
    let server = start(&mock, |config| config.max_connections = 2).await;
    let mut first = TcpStream::connect(server.local_addr()).await.unwrap();
    first.write_all(request_text().as_bytes()).await.unwrap();
    let answer = read_answer(&mut first).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let _second = TcpStream::connect(server.local_addr()).await.unwrap();
    // Two connections held open: a third is accepted by the kernel but not served.
    let mut third = TcpStream::connect(server.local_addr()).await.unwrap();
    third.write_all(request_text().as_bytes()).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_secs(1), read_answer(&mut third)).await;
    assert!(waiting.is_err(), "served beyond the bound: {waiting:?}");
    drop(first);
    let answer = tokio::time::timeout(Duration::from_secs(1), read_answer(&mut third))
        .await
        .expect("served once a connection closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_the_requests_in_flight_finish_and_refuses_new_ones() {
    // Each answer takes 2 s.
    let mock = MockServer::spawn(MockConfig {
        latency: Duration::from_secs(2),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let server = start(&mock, |_| {}).await;
    let addr = server.local_addr();
    let body =
        r#"{"model":"gpt-4o-mini","max_tokens":80,"messages":[{"role":"user","content":"hi"}]}"#;
    let text = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(text.as_bytes()).await.unwrap();
    let in_flight = tokio::spawn(async move { read_answer(&mut stream).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mock.stats().requests, 1);
    let started = Instant::now();
    server.shutdown().await;
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "waited for the request"
    );
    let answer = in_flight.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn an_open_gateway_is_refused_anywhere_but_loopback() {
    let mock = MockServer::spawn(MockConfig::default()).await.unwrap();
    let mut config = ServeConfig::default();
    config.listen = "0.0.0.0:0".parse().unwrap();
    let error = config.check().unwrap_err();
    assert!(error.to_string().contains("client keys"), "{error}");
    // The config names a client, but the gateway was built without it: still refused.
    config
        .clients
        .push(tollgate_serve::ClientKey::new("web", "gw-web-0123456789").unwrap());
    let stack = Policy::preset(Provider::OpenAi)
        .layer()
        .unwrap()
        .layer(tollgate_e2e::http_client());
    let gateway = Gateway::builder(Provider::OpenAi, &mock.url())
        .build(stack)
        .unwrap();
    let error = tollgate_serve::spawn(gateway, config).await.unwrap_err();
    assert!(error.to_string().contains("no client keys"), "{error}");
}
