//! Stay under the provider's limits: requests, tokens and concurrency at once, shared by every
//! clone, waiting fairly instead of drawing 429s.
//!
//! AI providers limit requests per minute *and* tokens per minute, per model, and say on every
//! response how much quota is left. [`RateLimitLayer`] enforces the same limits on the client
//! side, so the provider's limit is never hit, and corrects itself from what the provider says.
//!
//! # How it works
//!
//! Each quota (one by default, one per key with [`RateLimitBuilder::key`]; every setting is in
//! [`LimitConfig`]) is a set of token buckets with continuous refill (capacity = burst), daily
//! counts and an in-flight count, behind one lock. A request is admitted when every limit allows
//! it, and takes from all of them at once: a request held back by one limit consumes nothing
//! from the others. Its tokens come from a [`Cost`] function, by default [`EstimateTokens`]
//! (the prompt's characters / 4, and `max_tokens`); a request that costs more than a limit ever
//! holds fails at once with a [`RateLimitError`] ([`Refusal::TooLarge`]).
//!
//! Requests that cannot go at once wait in a queue, first come first served by default, so a
//! large request is not starved by small ones; a [`Priority`] puts a request in a higher lane
//! (interactive traffic ahead of a batch, with a minimum share,
//! [`LimitConfig::low_lane_share`], so the batch never starves), and a [`Tenant`] shares its
//! lane with the other tenants by weight (start-time fair queueing: a lone tenant gets all of
//! it, an idle tenant's share goes to the others). Only the head of the queue holds a timer, set to the instant its tokens are due;
//! when admitted it wakes the next. A waiter that is dropped gives its place and its claim to the
//! next one. [`max_wait`](RateLimitBuilder::max_wait) and
//! [`max_queue`](RateLimitBuilder::max_queue) bound the wait with typed errors.
//!
//! The limiter learns from the provider: `x-ratelimit-remaining-*` / `anthropic-ratelimit-*`
//! lower the matching bucket (requests, tokens, input tokens, output tokens) when it believes it
//! has more, and a lower `limit` replaces the configured one (a token limit the headers report
//! is adopted and charged even when none was configured).
//! Concurrency permits are held until the response body ends, so streamed completions count
//! while they stream.
//!
//! # Token limits as providers meter them
//!
//! Providers count tokens differently, and each limit of [`LimitConfig`] takes the part its
//! provider counts from a request's [`TokenEstimate`] (the prompt, and `max_tokens`):
//! `tokens` (OpenAI's TPM) the greater of the two at admission, never corrected, as OpenAI
//! counts it; `input_tokens` and `output_tokens` (Anthropic's ITPM and OTPM) the prompt and
//! the whole `max_tokens`, *reserved* at admission and *settled* when the answer reports its
//! `usage`: the body is scanned as the caller reads it ([`Usage`]: OpenAI, Anthropic and
//! Gemini shapes, JSON or server-sent events), the unused part of the reservation is given
//! back and any excess charged. A 429 is charged no tokens, a failed answer no output; a body
//! dropped before its usage leaves the reservation standing. Real output is usually a small
//! share of `max_tokens`, so charging it whole paced Anthropic batches at a fraction of their
//! quota (`token-bench`: 5.5x the ideal time, against 1.12x settled).
//!
//! A refund gives back only the part of a reservation still ahead on the bucket's schedule: the
//! part behind has been refilled already, and giving it back again would admit it twice. So
//! real usage admitted over any window stays within burst + rate x window, and an answer that
//! takes longer than the bucket's burst is worth of time keeps its reservation; the input and
//! output limits therefore hold ten seconds' worth by default, not a tenth of a second.
//!
//! Daily quotas (`requests_per_day`, `tokens_per_day`: Groq's and Gemini's RPD and TPD) are
//! counts per day that reset at a fixed time ([`LimitConfig::day_starts_at`]); a spent one
//! refuses at once with [`Refusal::DailyQuotaSpent`] and the time to the reset, an exhausted
//! quota the retry layer does not wait for. A provider's own 429 about a daily quota does the
//! same until its hint, configured quota or not.
//!
//! # The server is the truth: adaptive limits
//!
//! Users rarely know their real limit: providers state limits per minute and enforce them over
//! seconds, tiers change, keys are shared, and many servers (Gemini, nginx's `limit_req`, most
//! OpenAI-compatible servers) send no rate-limit headers. So a configured request limit is a
//! ceiling and a guess: by default ([`Adaptive`], on in [`LimitConfig::default`]) the request rate
//! follows the provider's refusals below it, and without any configured rate it is found from
//! them, starting at 10 per second and doubling every 0.35 s. A refusal lowers the rate
//! to 0.95 times the provider's limit as best known (measured from the share of requests it
//! accepted once that share is clear); 64 tasks refused at once lower it once; successes grow it
//! back along a CUBIC curve. Refusals that do not stop when the rate drops (a provider shedding
//! load at random) are judged noise and the decrease is undone; 503s, 529s, 429s about tokens and
//! 429s while the headers say requests remain are not about the request rate at all. A limit the
//! headers report is adopted at once. The current rate is in [`RateLimitHandle::snapshot`], in
//! `tracing` events and in a gauge. The burst shrinks and grows with the rate adopted.
//!
//! [`RateLimitBuilder::fixed`] (or `adaptive: None`) keeps the configured rate strictly fixed;
//! a 429 then pauses the whole quota until its hint, so every task stops together. Either way a
//! hint longer than [`max_pause`](RateLimitBuilder::max_pause) (a daily quota's "retry in 10
//! hours") pauses nothing: the retry layer gives up on it and the next request asks again.
//!
//! The default burst of a [`Rate`] is a tenth of a second's worth: a whole minute's quota at once
//! is a wall of 429s against a provider that enforces it over seconds.
//!
//! # Beyond one process
//!
//! A provider's quota belongs to the API key. With [`RateLimitBuilder::store`] the buckets live
//! in a [`Store`] shared by every process on the key (`tollgate-redis` provides one on Redis):
//! the head of each process's queue asks the store, which checks and takes every limit in one
//! atomic step; 429 pauses and low `remaining` headers go to the store too, so they reach every
//! process. While the store is down, [`OnStoreError`] fails open on a fair share of each limit
//! or fails closed with a typed error, and one request a second probes the store.
//!
//! # Trade-offs
//!
//! `poll_ready` reflects only the inner service: the cost of a request is known only in `call`,
//! so the waiting happens in the response future (which owns a clone of the inner service).
//! A mutex per quota serialises admissions; it is held for a few arithmetic operations, never
//! across a wait. Quotas of keys that are idle and full again are dropped as new keys arrive, so
//! memory follows the number of keys in use, not the number ever seen.
//!
//! ```
//! use std::time::Duration;
//! use tollgate::rate_limit::Rate;
//! use tollgate::rate_limit::RateLimitLayer;
//!
//! // A ceiling of 500 RPM that the rate adapts below; 30,000 tokens per minute.
//! let layer = RateLimitLayer::builder()
//!     .requests(Rate::per_minute(500).with_burst(20))
//!     .tokens(Rate::per_minute(30_000))
//!     .max_wait(Duration::from_secs(30))
//!     .build()
//!     .unwrap();
//! // Anthropic's three buckets, and a daily quota.
//! let anthropic = RateLimitLayer::builder()
//!     .requests(Rate::per_minute(50))
//!     .input_tokens(Rate::per_minute(40_000))
//!     .output_tokens(Rate::per_minute(8_000))
//!     .requests_per_day(10_000)
//!     .cache_reads_count(false)
//!     .build()
//!     .unwrap();
//! # let _ = anthropic;
//! # let _ = layer;
//! ```

mod adaptive;
mod body;
mod bucket;
mod config;
mod cost;
mod daily;
mod error;
mod future;
mod handle;
mod lanes;
mod layer;
mod learn;
mod limiter;
mod limits;
mod partition;
mod queue;
mod quota;
mod scan;
mod service;
mod shared;
mod store;
mod usage;

pub use adaptive::Adaptive;
pub use body::RateLimitBody;
pub use config::{LimitConfig, RateLimitBuilder};
pub use cost::{Cost, EstimateTokens, PeekBody, TokenCost, TokenEstimate};
pub use error::{RateLimitError, Refusal};
pub use future::ResponseFuture;
pub use handle::RateLimitHandle;
pub use lanes::{Priority, Tenant};
pub use layer::RateLimitLayer;
pub use limits::Rate;
pub use partition::Snapshot;
pub use service::RateLimit;
pub use store::{
    Charge, Grant, OnStoreError, QuotaName, Store, StoreError, StoreFuture, StoreHold,
};
pub use usage::Usage;
