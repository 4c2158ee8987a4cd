//! What a quota is made of: [`Rate`]s and a concurrency bound.

use std::time::Duration;

use crate::ConfigError;

/// A rate limit: `amount` per `interval`, with a bucket of `capacity` (the burst).
///
/// The burst is small by default: a tenth of a second's worth, at least 1. Providers state their
/// limits per minute but enforce them over much shorter windows (a leaky bucket, a few seconds),
/// so a client that sends a whole minute's quota at once draws a wall of 429s; a small burst
/// costs nothing to a steady stream. Set [`with_burst`](Self::with_burst) when you know the
/// provider allows more.
///
/// ```
/// use std::time::Duration;
/// use tollgate::rate_limit::Rate;
///
/// // 3,000 per minute is 50 per second: a burst of 5.
/// let rpm = Rate::per_minute(3_000);
/// assert_eq!(rpm.capacity, 5);
/// assert_eq!(Rate::per_minute(500).capacity, 1);
/// let bursty = Rate::per_minute(500).with_burst(100);
/// assert_eq!((bursty.amount, bursty.capacity), (500, 100));
/// assert_eq!(Rate::new(100, Duration::from_secs(1)).per_sec(), 100.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// How much is replenished per `interval`.
    pub amount: u64,
    /// The interval (a minute for the providers' RPM and TPM).
    pub interval: Duration,
    /// The bucket's capacity: how much can go at once after a quiet spell.
    pub capacity: u64,
}

impl Rate {
    /// `amount` per `interval`, with a burst of a tenth of a second's worth (at least 1).
    pub const fn new(amount: u64, interval: Duration) -> Self {
        Rate {
            amount,
            interval,
            capacity: default_burst(amount, interval),
        }
    }

    /// `amount` per minute (RPM or TPM), with a burst of a tenth of a second's worth.
    pub const fn per_minute(amount: u64) -> Self {
        Self::new(amount, Duration::from_secs(60))
    }

    /// `amount` per second, with a burst of a tenth of it.
    pub const fn per_second(amount: u64) -> Self {
        Self::new(amount, Duration::from_secs(1))
    }

    /// The same rate with a bucket of `capacity`: a smaller burst smooths the traffic.
    pub const fn with_burst(mut self, capacity: u64) -> Self {
        self.capacity = capacity;
        self
    }

    /// Refill per second.
    pub fn per_sec(&self) -> f64 {
        self.amount as f64 / self.interval.as_secs_f64()
    }

    pub(crate) fn validate(&self, field: &'static str) -> Result<(), ConfigError> {
        if self.amount == 0 {
            return Err(ConfigError::new(
                field,
                "the rate must be at least 1 per interval; leave the limit out for none",
            ));
        }
        if self.interval.is_zero() {
            return Err(ConfigError::new(
                field,
                "the interval must be longer than zero, e.g. 1 minute",
            ));
        }
        if self.capacity == 0 {
            return Err(ConfigError::new(
                field,
                "the burst (bucket capacity) must be at least 1",
            ));
        }
        Ok(())
    }
}

/// What a [`Rate`] admits at once unless told otherwise: a tenth of a second's worth, at least 1.
const fn default_burst(amount: u64, interval: Duration) -> u64 {
    let window = BURST_WINDOW.as_nanos();
    let interval = interval.as_nanos();
    if interval == 0 {
        return if amount == 0 { 1 } else { amount };
    }
    let burst = (amount as u128 * window).div_ceil(interval);
    if burst == 0 {
        1
    } else if burst > u64::MAX as u128 {
        u64::MAX
    } else {
        burst as u64
    }
}

/// The time's worth of a rate that [`Rate`] admits at once by default.
const BURST_WINDOW: Duration = Duration::from_millis(100);

/// The limits of one quota.
///
/// ```
/// use std::time::Duration;
/// use tollgate::rate_limit::{Limits, Rate};
///
/// let limits = Limits { requests: Some(Rate::per_minute(500)), ..Limits::default() };
/// assert_eq!(limits.headroom, Duration::from_millis(10));
/// // The request rate adapts to the provider's refusals below the configured ceiling...
/// assert!(limits.adaptive.is_some());
/// // ...unless it is made strictly fixed.
/// let fixed = Limits { adaptive: None, ..limits };
/// # let _ = fixed;
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Requests per interval.
    pub requests: Option<Rate>,
    /// Tokens per interval (each request costs what the cost function says).
    pub tokens: Option<Rate>,
    /// Requests in flight at once (until their response body ends).
    pub concurrency: Option<u32>,
    /// How much of the burst is held back, as time at the refill rate, for delays that vary
    /// between admission here and counting at the provider (connection setup, scheduling). A
    /// request that arrives a few milliseconds earlier than its neighbours relative to the
    /// schedule would otherwise draw a 429 from a provider enforcing the same limit. Default
    /// 10 ms: a tenth of a request at 10 requests per second.
    pub headroom: Duration,
    /// Adapt the request rate to the provider's refusals (see [`Adaptive`](super::Adaptive));
    /// a configured request limit is then the ceiling, a guess the provider corrects. On by
    /// default; `None` keeps the configured rate strictly fixed (a 429 then pauses the whole
    /// quota for its hint).
    pub adaptive: Option<super::Adaptive>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            requests: None,
            tokens: None,
            concurrency: None,
            headroom: Duration::from_millis(10),
            adaptive: Some(super::Adaptive::default()),
        }
    }
}

impl Limits {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(rate) = &self.requests {
            rate.validate("requests")?;
        }
        if let Some(rate) = &self.tokens {
            rate.validate("tokens")?;
        }
        if let Some(adaptive) = &self.adaptive {
            adaptive.validate()?;
        }
        if self.concurrency == Some(0) {
            return Err(ConfigError::new(
                "concurrency",
                "must be at least 1; leave it out for no bound",
            ));
        }
        Ok(())
    }
}
