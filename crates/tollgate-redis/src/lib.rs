//! One API key's quota shared by many processes and hosts, through Redis.
//!
//! A provider's rate limit belongs to the API key, not to the process: ten replicas that each limit
//! themselves to 500 requests per minute send 5,000. [`RedisStore`] keeps the buckets of tollgate's
//! [`RateLimitLayer`](tollgate::rate_limit::RateLimitLayer) in Redis, so every process that uses
//! the same Redis and the same quota names draws from one quota.
//!
//! # How it works
//!
//! Each limit is a GCRA bucket: one key holding the limit's *theoretical arrival time*, in
//! microseconds of Redis's own clock (`TIME`), so the clocks of the client hosts do not matter.
//! GCRA rather than a classic token bucket because its whole state is one number: a check and
//! take is one read and one write, the key expires by itself when the bucket is full again
//! (a missing key *is* a full bucket), and the wait until admission is exact, so a refused
//! process sleeps until the right microsecond instead of polling.
//!
//! Every admission is one round trip: a Lua script, loaded once and called by its SHA (loaded
//! again when Redis answers `NOSCRIPT`), checks the quota's pause key and every limit of the
//! request (requests *and* tokens) and takes from all of them only when all allow, so a request
//! refused by one limit is charged nothing by the others. A 429 with a hint sets the pause key
//! for every process; a provider's low `remaining` lowers the shared bucket.
//!
//! Keys are `{prefix}:{quota}:requests`, `{prefix}:{quota}:tokens` and `{prefix}:{quota}:pause`
//! (prefix `tollgate` by default; the braces keep one quota's keys on one Redis Cluster slot).
//! The quota is `default`, or the name of the request's key with
//! [`RateLimitBuilder::key`](tollgate::rate_limit::RateLimitBuilder::key).
//!
//! # Trade-offs
//!
//! Each process's queue stays local and only its head asks Redis, so one process admits at
//! most one request per round trip and quota (tens of thousands per second on a LAN, far above
//! any provider's limit), and its order among processes is first come at Redis. The connection
//! reconnects by itself; while Redis cannot be reached the limiter follows its
//! [`OnStoreError`](tollgate::rate_limit::OnStoreError): local buckets sized to this process's
//! fair share, or typed refusals; it probes Redis once a second and goes back when it answers.
//! Concurrency bounds stay per process.
//!
//! ```
//! use tollgate::rate_limit::{OnStoreError, Rate};
//! use tollgate::rate_limit::RateLimitLayer;
//! use tollgate_redis::RedisStore;
//!
//! # let _runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # let _guard = _runtime.enter();
//! // Connects on first use, so this runs without a server.
//! let store = RedisStore::builder("redis://127.0.0.1:6379/").prefix("myapp").build()?;
//! let limit = RateLimitLayer::builder()
//!     .requests(Rate::per_minute(500))
//!     .tokens(Rate::per_minute(200_000))
//!     .store(store, OnStoreError::FailOpen { processes: 4 })
//!     .build()?;
//! # let _ = limit;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod connection;
mod store;

pub use store::{RedisStore, RedisStoreBuilder};
