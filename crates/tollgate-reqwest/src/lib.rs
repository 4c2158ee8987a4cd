//! tollgate for [reqwest](https://docs.rs/reqwest): most Rust code that calls AI APIs goes
//! through it, directly or through an SDK built on it.
//!
//! Two ways in:
//!
//! - [`TollgateMiddleware`], a [`reqwest_middleware::Middleware`]: the standard stack (retry,
//!   circuit breaker, rate limit, classification) around every request a
//!   [`reqwest_middleware::ClientWithMiddleware`] sends. Use it when the code (or the SDK) takes
//!   a `ClientWithMiddleware`.
//! - [`ReqwestService`], a tower [`Service`](tower::Service) over a [`reqwest::Client`]: reqwest
//!   as the transport under any tollgate stack (or any tower middleware), for code built on
//!   tower.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tollgate::stack::Policy;
//! use tollgate::Provider;
//! use tollgate_reqwest::TollgateMiddleware;
//!
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(TollgateMiddleware::new(&Policy::preset(Provider::OpenAi))?)
//!     .build();
//! let answer = client
//!     .post("https://api.openai.com/v1/chat/completions")
//!     .bearer_auth(std::env::var("OPENAI_API_KEY")?)
//!     .body(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#)
//!     .send()
//!     .await?;
//! # let _ = answer;
//! # Ok(())
//! # }
//! ```
//!
//! **Trade-offs.** A retry needs the request again, so the middleware copies a request's body
//! (reqwest bodies held in memory are read as bytes); a streaming body cannot be replayed, and
//! such a request goes on without the stack. The stack's state (buckets, breaker, budget) lives
//! in the middleware, shared by every clone of the client. A request the stack gives up on ends
//! in [`reqwest_middleware::Error::Middleware`] holding a
//! [`RetryError`](tollgate::retry::RetryError), whose last verdict says why.
#![deny(unsafe_code)]
#![warn(missing_docs, unreachable_pub, rust_2018_idioms)]

mod middleware;
mod service;

pub use middleware::TollgateMiddleware;
pub use service::{ReqwestFuture, ReqwestService};
