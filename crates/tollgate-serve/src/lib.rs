//! `tollgate serve`: an OpenAI- and Anthropic-compatible gateway in front of one AI provider,
//! so that every client, in any language, gets tollgate's rate limits, retries and circuit
//! breaker by pointing its SDK's base URL at it.
//!
//! A request to `/v1/...` (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
//! `/v1/responses`, Anthropic's `/v1/messages`, `/v1/models`, any other `/v1/` path) is checked
//! and forwarded upstream through a tollgate stack: the client's gateway key is taken off and the
//! provider's key, which only the gateway holds, put on. The answer streams back as it arrives,
//! events of a streamed completion included. When the stack refuses (the quota would make the
//! request wait longer than `max_wait`, the breaker is open) or gives up, the client gets an
//! answer in its own provider's error shape ([`Shape`]) with `Retry-After`: 429 for a quota, 503
//! for an open breaker, so its SDK retries it as it would the provider's. Such a local refusal
//! is not waited out inside the gateway ([`FailFast`](tollgate::retry::FailFast)): the client
//! waits, holding no connection to the provider meanwhile. The provider's own 429s and 5xx are
//! retried by the stack as usual.
//!
//! **One quota, shared fairly.** Every client key is a [`Tenant`](tollgate::rate_limit::Tenant)
//! of the provider's quota: when several compete, each gets admissions in proportion to its
//! weight; alone, it gets them all. A key may also have limits of its own, checked first. With
//! `--redis`, replicas share the quota through the Redis store, exactly, and each client's own
//! limits too ([`GatewayBuilder::client_store`]).
//!
//! **Guarded.** Bodies over [`ServeConfig::max_body`] get 413, bodies that are not JSON 400,
//! slow headers are cut off ([`ServeConfig::header_timeout`]) and slow bodies get 408
//! ([`ServeConfig::body_timeout`]); at most [`ServeConfig::max_connections`] connections are
//! served at once. With no client keys, the gateway refuses to listen anywhere but loopback.
//! `/healthz` (alive), `/readyz` (not draining, its Redis reachable) and `/metrics`
//! (Prometheus text) need no key. On shutdown it stops accepting and drains.
//!
//! **Trade-offs.** Request bodies are read whole before forwarding (a retry needs them again,
//! and their size and JSON are checked), so the gateway holds up to `max_body` per request in
//! flight. HTTP/1.1 only: every provider SDK speaks it. Fallback chains are not served yet.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tollgate::stack::Policy;
//! use tollgate::Provider;
//! use tollgate_serve::{ClientKey, Gateway, ServeConfig};
//! use tower::Layer;
//!
//! let mut config = ServeConfig::default();
//! config.clients.push(ClientKey::new("web", std::env::var("WEB_KEY")?)?);
//! let stack = Policy::preset(Provider::OpenAi).layer()?.layer(tollgate_e2e::http_client());
//! let gateway = Gateway::builder(Provider::OpenAi, "https://api.openai.com/v1")
//!     .provider_key(std::env::var("OPENAI_API_KEY")?)
//!     .config(&config)
//!     .build(stack)?;
//! let listener = tollgate_serve::bind(&config).await?;
//! tollgate_serve::serve(listener, gateway, &config, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]

mod client_store;
mod clients;
mod config;
mod error;
mod file;
mod gateway;
mod refuse;
mod server;
mod shape;
mod upstream;

pub use config::{ClientKey, ServeConfig};
pub use error::ServeError;
pub use file::ServeFile;
pub use gateway::{Gateway, GatewayBody, GatewayBuilder};
pub use refuse::{PRIORITY_HEADER, SERVED_BY_HEADER};
pub use server::{bind, serve, spawn, ServerHandle};
pub use shape::Shape;
pub use upstream::{upstream_client, UpstreamClient, UpstreamStack};
