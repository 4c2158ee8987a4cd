//! Fail fast while a provider is down, and recover by itself.
//!
//! [`CircuitBreakerLayer`] watches the [verdicts](crate::classify) of calls. While **closed** it
//! counts them; when a trip condition holds (a failure ratio over a count- or time-based [`Window`]
//! once enough calls were made, or [`consecutive_failures`](BreakerConfig::consecutive_failures) in
//! a row, or too many [`SlowCalls`]; see [`BreakerConfig`]) it **opens**: every call fails at once
//! with a typed [`CircuitOpen`] saying since when and how long until it probes, without reaching
//! the provider. After the break (30 s by default, optionally growing on repeated trips) it is
//! **half-open**: a configured number of probe calls go through; if they all succeed it closes, if
//! one fails it opens again. An operator can [isolate](CircuitBreakerHandle::isolate) and
//! [reset](CircuitBreakerHandle::reset) it.
//!
//! # What counts as a failure
//!
//! By default: overloaded answers (529), transient 5xx, timeouts and connection failures. A 429
//! is the rate limiter's business and proves the provider is up, so it counts as a success, as do
//! client errors; local rejections (a rate limiter's refusal) are ignored. Each is configurable
//! with [`CircuitBreakerBuilder::count_as_failure`].
//!
//! # Trade-offs
//!
//! A closed circuit admits with a single atomic load; recording an outcome takes a short lock on
//! that circuit's window. A generation number in the same atomic word makes outcomes of calls
//! admitted before a transition irrelevant to the new state (a slow call that fails after the
//! circuit re-closed does not count against it). Time is `tokio::time::Instant`, so tests pause
//! and advance it. With a key extractor ([`key`](CircuitBreakerBuilder::key)) each
//! host or model gets its own circuit; healthy closed circuits are dropped as new keys arrive.
//!
//! ```
//! use std::time::Duration;
//! use tollgate::circuit_breaker::Window;
//! use tollgate::circuit_breaker::CircuitBreakerLayer;
//!
//! let layer = CircuitBreakerLayer::builder()
//!     .failure_ratio(0.5)
//!     .window(Window::Count(50))
//!     .min_calls(10)
//!     .break_duration(Duration::from_secs(30))
//!     .build()
//!     .unwrap();
//! # let _ = layer;
//! ```

mod body;
mod breakers;
mod circuit;
mod config;
mod error;
mod future;
mod handle;
mod layer;
mod service;
mod settings;
mod state;
mod window;

pub use body::BreakerBody;
pub use circuit::Snapshot;
pub use config::{BreakGrowth, BreakerConfig, CircuitBreakerBuilder, SlowCalls};
pub use error::{CircuitOpen, Refusal};
pub use future::ResponseFuture;
pub use handle::CircuitBreakerHandle;
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreaker;
pub use state::{BreakerState, StateChange};
pub use window::Window;
