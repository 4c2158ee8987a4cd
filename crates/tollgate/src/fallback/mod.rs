//! Fallback chains: when one target cannot serve a request, the next one does.
//!
//! A [`FallbackLayer`] holds an ordered list of [`Target`]s, each with its own stack (its own
//! breaker, limiter and retries: one per deployment or provider) and its own base URL, and
//! optionally a model to put in the request body. A request goes to the first target; it moves
//! on to the next when that one's breaker is open, its quota refuses (exhausted, or a wait longer
//! than its `max_wait`), its retries gave up on a transient verdict (overloaded, server error,
//! timeout, connection, rate limited, quota exhausted), or, with
//! [`context_fallback`](FallbackLayer::context_fallback), when the prompt is too long for its
//! model's context window. It never moves on for the request's own faults (a bad key, an invalid
//! request): another target would refuse them too. The last target's answer is the caller's,
//! whatever it is.
//!
//! Every request starts at the first target, so the primary is tried again as soon as its
//! breaker lets a probe through, and used again once it recovers; while its breaker is open,
//! skipping it costs nothing. The response records which target served it and why the others
//! were skipped ([`ServedBy`]).
//!
//! The targets must speak the same API (OpenAI, Azure OpenAI and OpenAI-compatible servers with
//! each other; Anthropic models with each other): requests are not translated between shapes.
//! The request body must be in memory (`http_body_util::Full<Bytes>`), since each target may
//! be sent it.
//!
//! ```
//! use tollgate::fallback::{FallbackLayer, Target};
//! use tollgate::stack::Policy;
//! use tollgate::Provider;
//!
//! let primary = Policy::preset(Provider::OpenAi).layer()?;
//! let secondary = Policy::preset(Provider::OpenAiCompatible).layer()?;
//! let layer = FallbackLayer::new(vec![
//!     (Target::new("openai", "https://api.openai.com")?, primary),
//!     (Target::new("local", "http://127.0.0.1:8000")?.model("llama-3.1-8b"), secondary),
//! ])?;
//! # let _ = layer;
//! # Ok::<(), tollgate::ConfigError>(())
//! ```

mod future;
mod layer;
mod service;
mod target;

pub use future::ResponseFuture;
pub use layer::FallbackLayer;
pub use service::Fallback;
pub use target::{ServedBy, Skipped, Target};
