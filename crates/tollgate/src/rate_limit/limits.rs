//! What a quota is made of: [`Rate`]s and a concurrency bound.

use std::time::Duration;

use crate::ConfigError;

/// A rate limit: `amount` per `interval`, with a bucket of `capacity` (the burst).
///
/// ```
/// use std::time::Duration;
/// use tollgate::rate_limit::Rate;
///
/// let rpm = Rate::per_minute(500);
/// assert_eq!(rpm.capacity, 500);
/// let smooth = Rate::per_minute(500).with_burst(10);
/// assert_eq!((smooth.amount, smooth.capacity), (500, 10));
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
    /// `amount` per `interval`, with a burst of the whole `amount`.
    pub const fn new(amount: u64, interval: Duration) -> Self {
        Rate {
            amount,
            interval,
            capacity: amount,
        }
    }

    /// `amount` per minute (RPM or TPM), with a burst of the whole minute, as providers allow.
    pub const fn per_minute(amount: u64) -> Self {
        Self::new(amount, Duration::from_secs(60))
    }

    /// `amount` per second.
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

/// The limits of one quota.
///
/// ```
/// use std::time::Duration;
/// use tollgate::rate_limit::{Limits, Rate};
///
/// let limits = Limits { requests: Some(Rate::per_minute(500)), ..Limits::default() };
/// assert_eq!(limits.headroom, Duration::from_millis(10));
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
    /// Adapt the request rate to the provider's refusals (see [`Adaptive`](super::Adaptive)); a configured request
    /// limit is then the ceiling.
    pub adaptive: Option<super::Adaptive>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            requests: None,
            tokens: None,
            concurrency: None,
            headroom: Duration::from_millis(10),
            adaptive: None,
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
