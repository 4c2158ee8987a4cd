//! What a quota is made of: [`Rate`]s, and the limits a quota's buckets are shaped from.

use std::time::Duration;

use super::adaptive::Adaptive;
use crate::config_error::reject_if;
use crate::ConfigError;

/// A rate limit: `amount` per `interval`, with a bucket of `burst` (its capacity).
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
/// assert_eq!(rpm.burst(), 5);
/// assert_eq!(Rate::per_minute(500).burst(), 1);
/// let bursty = Rate::per_minute(500).with_burst(100);
/// assert_eq!((bursty.amount(), bursty.burst()), (500, 100));
/// assert_eq!(Rate::new(100, Duration::from_secs(1)).per_sec(), 100.0);
/// // Checked where the numbers come from input:
/// assert!(Rate::try_new(0, Duration::from_secs(60), None).is_err());
/// ```
///
/// In a config file (feature `serde`) a rate is a number per minute (`500`), a string with its
/// interval (`"500/min"`, `"50/s"`, `"10000/1h"`), or a table with its burst
/// (`{ rate = "500/min", burst = 20 }`).
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub(crate) amount: u64,
    pub(crate) interval: Duration,
    pub(crate) capacity: u64,
    /// Whether the burst is the default one (a limit may choose another default).
    pub(crate) default_burst: bool,
}

impl PartialEq for Rate {
    fn eq(&self, other: &Self) -> bool {
        (self.amount, self.interval, self.capacity)
            == (other.amount, other.interval, other.capacity)
    }
}

impl Rate {
    /// `amount` per `interval`, with a burst of a tenth of a second's worth (at least 1).
    ///
    /// The input and output token limits default to ten seconds' worth instead (see
    /// [`LimitConfig::output_tokens`](super::LimitConfig::output_tokens)).
    pub const fn new(amount: u64, interval: Duration) -> Self {
        Rate {
            amount,
            interval,
            capacity: default_burst(amount, interval, BURST_WINDOW),
            default_burst: true,
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
        self.default_burst = false;
        self
    }

    /// This rate with a burst of `window`'s worth, unless a burst was set explicitly.
    pub(crate) const fn or_burst_of(mut self, window: Duration) -> Self {
        if self.default_burst {
            self.capacity = default_burst(self.amount, self.interval, window);
        }
        self
    }

    /// `amount` per `interval` with a burst of `burst` (default a tenth of a second's worth),
    /// checked: for numbers that come from input.
    pub fn try_new(
        amount: u64,
        interval: Duration,
        burst: Option<u64>,
    ) -> Result<Self, ConfigError> {
        let rate = Rate::new(amount, interval);
        let rate = burst.map_or(rate, |burst| rate.with_burst(burst));
        rate.validate("rate")?;
        Ok(rate)
    }

    /// How much is replenished per [`interval`](Self::interval).
    pub const fn amount(&self) -> u64 {
        self.amount
    }

    /// The interval (a minute for the providers' RPM and TPM).
    pub const fn interval(&self) -> Duration {
        self.interval
    }

    /// The bucket's capacity: how much can go at once after a quiet spell.
    pub const fn burst(&self) -> u64 {
        self.capacity
    }

    /// Refill per second.
    pub fn per_sec(&self) -> f64 {
        self.amount as f64 / self.interval.as_secs_f64()
    }

    pub(crate) fn validate(&self, field: &'static str) -> Result<(), ConfigError> {
        reject_if(
            self.amount == 0,
            field,
            "the rate must be at least 1 per interval; leave the limit out for none",
        )?;
        reject_if(
            self.interval.is_zero(),
            field,
            "the interval must be longer than zero, e.g. 1 minute",
        )?;
        reject_if(
            self.capacity == 0,
            field,
            "the burst (bucket capacity) must be at least 1",
        )?;
        Ok(())
    }
}

/// What a [`Rate`] admits at once unless told otherwise: `window`'s worth, at least 1.
const fn default_burst(amount: u64, interval: Duration, window: Duration) -> u64 {
    let window = window.as_nanos();
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

/// The default burst of the input and output token limits, as time at their rate. A request's
/// `max_tokens` is held in the output bucket until its answer reports its real output, and the
/// unused part comes back only while it is still ahead on the bucket's schedule: the bucket must
/// hold the reservations of the requests in flight for as long as they run. Ten seconds covers
/// most answers; Anthropic's own buckets hold a minute's worth.
pub(crate) const RESERVATION_BURST: Duration = Duration::from_secs(10);

#[cfg(feature = "serde")]
mod forms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Rate;

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Amount {
        PerMinute(u64),
        Text(String),
    }

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Form {
        Bare(Amount),
        Table { rate: Amount, burst: Option<u64> },
    }

    impl Amount {
        fn parse(&self) -> Result<(u64, Duration), String> {
            let text = match self {
                Amount::PerMinute(amount) => return Ok((*amount, Duration::from_secs(60))),
                Amount::Text(text) => text.trim(),
            };
            let form = || {
                format!(
                    "`{text}` is not a rate: write it like 500 (per minute), \"500/min\" or \"50/s\""
                )
            };
            let (amount, per) = text.split_once('/').ok_or_else(form)?;
            let amount = amount.trim().replace('_', "");
            let amount = amount.parse::<u64>().map_err(|_| form())?;
            let per = per.trim();
            let per = if per.starts_with(|c: char| c.is_ascii_digit()) {
                per.to_owned()
            } else {
                format!("1{per}")
            };
            let interval = humantime::parse_duration(&per).map_err(|_| form())?;
            Ok((amount, interval))
        }
    }

    impl Serialize for Rate {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let rate = Amount::Text(format!(
                "{}/{}",
                self.amount,
                humantime::format_duration(self.interval)
            ));
            if self.default_burst {
                rate.serialize(serializer)
            } else {
                Form::Table {
                    rate,
                    burst: Some(self.capacity),
                }
                .serialize(serializer)
            }
        }
    }

    impl<'de> Deserialize<'de> for Rate {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            let (amount, burst) = match Form::deserialize(deserializer)? {
                Form::Bare(amount) => (amount, None),
                Form::Table { rate, burst } => (rate, burst),
            };
            let (amount, interval) = amount.parse().map_err(serde::de::Error::custom)?;
            Rate::try_new(amount, interval, burst)
                .map_err(|error| serde::de::Error::custom(error.message()))
        }
    }
}

/// The request bucket of an adaptive rate: a tenth of a second's worth (the default burst), or
/// the configured burst scaled by the rate adopted when that is smaller.
pub(crate) fn adaptive_bucket_rate(per_sec: f64, configured: Option<Rate>) -> Rate {
    // Millirequests per second, so fractional rates keep their precision.
    let amount = (per_sec * 1000.0).round().max(1.0) as u64;
    let tenth = (per_sec / 10.0).ceil();
    let capacity = match configured {
        Some(rate) => (rate.capacity as f64 * per_sec / rate.per_sec())
            .round()
            .min(tenth),
        None => tenth,
    }
    .max(1.0) as u64;
    Rate {
        amount,
        interval: Duration::from_secs(1000),
        capacity,
        default_burst: false,
    }
}

/// The limits of one quota, as its buckets are shaped from a
/// [`LimitConfig`](super::LimitConfig); the handle may
/// change them at runtime.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Limits {
    pub(crate) requests: Option<Rate>,
    pub(crate) tokens: Option<Rate>,
    pub(crate) input_tokens: Option<Rate>,
    pub(crate) output_tokens: Option<Rate>,
    pub(crate) requests_per_day: Option<u64>,
    pub(crate) tokens_per_day: Option<u64>,
    pub(crate) day_starts_at: Duration,
    pub(crate) concurrency: Option<u32>,
    pub(crate) headroom: Duration,
    pub(crate) adaptive: Option<Adaptive>,
    pub(crate) metering: Metering,
    /// The least share of admissions lower priority lanes get while they wait.
    pub(crate) low_lane_share: f64,
}

impl Limits {
    /// Whether requests must be costed in tokens.
    pub(crate) fn charges_tokens(&self) -> bool {
        self.tokens.is_some()
            || self.input_tokens.is_some()
            || self.output_tokens.is_some()
            || self.tokens_per_day.is_some()
    }
}

/// How the provider meters tokens: what the combined limit is charged at admission, and what is
/// corrected when the answer's `usage` arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Metering {
    /// The combined limits take input + output, not the greater of the two.
    pub(crate) sum: bool,
    /// Charges are corrected to the real usage.
    pub(crate) reconcile: bool,
    /// Cache reads count against the input and combined limits.
    pub(crate) cache_reads_count: bool,
}
