//! The standard stack: the four layers in the recommended order, from a provider preset, a
//! [`Policy`] built in code, or a config file (`tollgate::config`, feature `config`).
//!
//! Users do not want to learn four layers before their first request. [`Policy::preset`] gives
//! a provider's recommended settings (retries and hints as its official SDK handles them, a
//! breaker that ignores 429s, token accounting as the provider charges), [`Policy`]'s public
//! fields change any of it, and [`StandardLayer`] builds the stack:
//! retry → circuit breaker → rate limit → classify → client. [`Policy::layer`] checks every
//! setting and reports the first wrong one as a [`ConfigError`](crate::ConfigError).
//! [`RouteLayer`] holds one standard stack per provider and picks it per request, by host or by a
//! [`RouteTo`] extension, so one client serves several providers with separate quotas and
//! breakers.
//!
//! ```
//! use tollgate::rate_limit::Rate;
//! use tollgate::stack::Policy;
//! use tollgate::Provider;
//!
//! let mut policy = Policy::preset(Provider::OpenAi);
//! policy.limits.requests = Some(Rate::per_minute(500));
//! let layer = policy.layer()?;
//! # let _ = layer;
//! # Ok::<(), tollgate::ConfigError>(())
//! ```

mod layer;
mod policy;
mod route;

pub use layer::{StandardLayer, StandardService};
pub use policy::Policy;
pub use route::{NoRoute, RouteFuture, RouteLayer, RouteTo, Router};
