//! A mock AI provider that enforces real rate limits and injects faults, for tests, demos and
//! benchmarks of tollgate (or of any other client).
//!
//! It speaks just enough of two APIs: OpenAI's `POST /v1/chat/completions` and Anthropic's
//! `POST /v1/messages`, answering valid JSON with `usage`. Like the real providers it limits each
//! API key by requests per minute and tokens per minute, with continuously refilled buckets, and
//! charges a request the greater of its `max_tokens` and its prompt's characters / 4 (OpenAI's
//! documented admission rule). Failed requests are charged too. Every answer carries the
//! provider's rate-limit headers (`x-ratelimit-*` or `anthropic-ratelimit-*`); a refusal is a 429
//! with the provider's JSON error body, `retry-after` and `retry-after-ms`.
//!
//! Faults are drawn from a seed, so a sequential run repeats exactly: server errors
//! (500/502/503/504), Anthropic's 529, 429s with and without hints, connection resets, hangs,
//! malformed rate-limit headers, and outage windows during which every request fails.
//!
//! `GET /_mock/stats` (and [`MockServer::stats`] in-process) reports what the server saw: requests
//! received, answers by status, and a per-second timeline.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use tollgate_mock::{MockConfig, MockServer};
//!
//! let server = MockServer::spawn(MockConfig { rpm: Some(600), ..MockConfig::default() }).await?;
//! println!("mock provider at {}", server.url());
//! assert_eq!(server.stats().requests, 0);
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]

mod bucket;
mod cli;
mod config;
mod faults;
mod handler;
mod meter;
mod stats;
mod stream;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

pub use cli::MockArgs;
pub use config::{FaultMix, Faults, HintStyle, MockConfig, StreamFaultMix, StreamFaults};
pub use stats::{Second, Stats};

use handler::Shared;

/// A running mock provider. Dropping it stops the server and closes its connections.
#[derive(Debug)]
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Starts a mock on a free port of 127.0.0.1.
    pub async fn spawn(config: MockConfig) -> io::Result<MockServer> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Starts a mock on `addr` (port 0 picks a free one).
    pub async fn bind(addr: SocketAddr, config: MockConfig) -> io::Result<MockServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let (shutdown, stop) = oneshot::channel();
        let task = tokio::spawn(serve(listener, Arc::clone(&shared), stop));
        Ok(MockServer {
            addr,
            shared,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the base URL to give a client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.recorder.snapshot()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &MockConfig {
        &self.shared.config
    }

    /// Stops accepting, closes every connection (hung requests included) and waits for that.
    pub async fn shutdown(mut self) {
        self.stop();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    // Connections live in a JoinSet so that stopping the server aborts them all, hung ones too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                // As providers do: small writes (a streamed token) leave at once.
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&shared);
                connections.spawn(async move {
                    let service = service_fn(move |request| handler::handle(Arc::clone(&shared), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}
