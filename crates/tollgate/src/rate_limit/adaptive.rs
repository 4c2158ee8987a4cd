//! The adaptive mode: find the provider's real request rate from its refusals.
//!
//! AWS's adaptive retry mode is the model: on a throttle the rate drops to `beta` (0.7) times the
//! lower of the current rate and the measured send rate; while answers succeed it grows back along
//! a CUBIC curve, `C (t - K)^3 + W_max` with `C` = 0.4 and `K` = cbrt(W_max (1 - beta) / C), slowly
//! near the rate that last failed and faster away from it. A burst of throttles from many tasks
//! lowers the rate once: decreases are at least one probe interval apart.

use std::time::Duration;

use tokio::time::Instant;

use crate::ConfigError;

/// Settings of the adaptive mode, in requests per second.
///
/// ```
/// use tollgate::rate_limit::Adaptive;
///
/// let adaptive = Adaptive { floor: 1.0, ..Adaptive::default() };
/// assert_eq!(adaptive.beta, 0.7);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adaptive {
    /// The rate never falls below this (default 0.5 per second, as AWS's minimum fill rate).
    pub floor: f64,
    /// The rate never rises above this (default: the configured request limit, else none).
    pub ceiling: Option<f64>,
    /// Multiplicative decrease on a throttle (default 0.7).
    pub beta: f64,
    /// CUBIC's scaling constant (default 0.4).
    pub scale: f64,
    /// Where the rate starts when no request limit is configured (default 10 per second): it
    /// doubles every half second until the provider first refuses, as TCP's slow start, so a
    /// batch of many tasks does not open with a wall of 429s.
    pub initial: f64,
}

impl Default for Adaptive {
    fn default() -> Self {
        Adaptive {
            floor: 0.5,
            ceiling: None,
            beta: 0.7,
            scale: 0.4,
            initial: 10.0,
        }
    }
}

impl Adaptive {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(self.floor.is_finite() && self.floor > 0.0) {
            return Err(ConfigError::new(
                "adaptive.floor",
                "must be a rate above zero",
            ));
        }
        if self
            .ceiling
            .is_some_and(|c| !(c.is_finite() && c >= self.floor))
        {
            return Err(ConfigError::new(
                "adaptive.ceiling",
                "must be at least the floor",
            ));
        }
        if !(self.beta > 0.0 && self.beta < 1.0) {
            return Err(ConfigError::new(
                "adaptive.beta",
                "must be between 0 and 1 (exclusive)",
            ));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(ConfigError::new("adaptive.scale", "must be above zero"));
        }
        if !(self.initial.is_finite() && self.initial >= self.floor) {
            return Err(ConfigError::new(
                "adaptive.initial",
                "must be a rate at least the floor",
            ));
        }
        Ok(())
    }
}

/// Send rate measured in half-second buckets, smoothed (AWS: 0.5 s, smoothing 0.8).
#[derive(Debug)]
struct SendRate {
    bucket_start: Instant,
    count: u64,
    rate: f64,
}

impl SendRate {
    const BUCKET: Duration = Duration::from_millis(500);
    const SMOOTHING: f64 = 0.8;

    /// The send rate, and whether a whole bucket has been measured yet (before that, the count
    /// so far over at least one bucket's time).
    fn estimate(&self, now: Instant) -> (f64, bool) {
        if self.rate > 0.0 {
            return (self.rate, true);
        }
        let elapsed = now
            .saturating_duration_since(self.bucket_start)
            .max(Self::BUCKET);
        (self.count as f64 / elapsed.as_secs_f64(), false)
    }

    fn record(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.bucket_start);
        if elapsed >= Self::BUCKET {
            let current = self.count as f64 / elapsed.as_secs_f64();
            self.rate = Self::SMOOTHING * current + (1.0 - Self::SMOOTHING) * self.rate;
            self.bucket_start = now;
            self.count = 0;
        }
        self.count += 1;
    }
}

/// The controller of one quota's request rate.
#[derive(Debug)]
pub(crate) struct Controller {
    settings: Adaptive,
    /// The admission rate.
    rate: f64,
    w_max: f64,
    last_decrease: Option<Instant>,
    /// The rate set by the last decrease.
    lowered_to: f64,
    /// Growing exponentially (slow start) until a throttle with a measured delivery rate.
    probing: bool,
    sent: SendRate,
    delivered: SendRate,
}

impl Controller {
    pub(crate) fn new(settings: Adaptive, configured: Option<f64>, now: Instant) -> Self {
        // Without a configured limit, start low and slow-start up to the first refusal.
        let initial = settings
            .ceiling
            .map_or(settings.initial, |c| settings.initial.min(c));
        Controller {
            settings,
            rate: configured.unwrap_or(initial),
            w_max: configured.unwrap_or(0.0),
            last_decrease: configured.is_none().then_some(now),
            lowered_to: initial,
            probing: configured.is_none(),
            sent: SendRate {
                bucket_start: now,
                count: 0,
                rate: 0.0,
            },
            delivered: SendRate {
                bucket_start: now,
                count: 0,
                rate: 0.0,
            },
        }
    }

    /// Lowers the ceiling to what the provider reports.
    pub(crate) fn cap(&mut self, per_sec: f64) {
        if per_sec > 0.0 && self.settings.ceiling.is_none_or(|c| per_sec < c) {
            self.settings.ceiling = Some(per_sec.max(self.settings.floor));
            if self.rate > per_sec {
                self.rate = per_sec.max(self.settings.floor);
            }
        }
    }

    /// The current admission rate.
    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    pub(crate) fn sent(&mut self, now: Instant) {
        self.sent.record(now);
    }

    /// A throttle: returns the new rate when it changes (once per burst of throttles).
    pub(crate) fn throttled(&mut self, now: Instant) -> Option<f64> {
        let floor = self.settings.floor;
        let (delivered, measured) = self.delivered.estimate(now);
        // The rate the provider has been accepting is the best estimate of its limit; before a
        // whole bucket is measured, the current rate (configured or slow-started) stands in.
        let current = if measured {
            self.rate.min(delivered.max(floor))
        } else {
            self.rate
        };
        // Throttles that answer requests sent before the last decrease say nothing new.
        let interval = Duration::from_secs_f64((1.0 / current.max(floor)).clamp(0.2, 2.0));
        if self
            .last_decrease
            .is_some_and(|at| now.saturating_duration_since(at) < interval)
        {
            return None;
        }
        self.probing = !measured;
        self.w_max = current;
        let lowered = (current * self.settings.beta).max(floor);
        self.last_decrease = Some(now);
        self.lowered_to = lowered;
        self.rate = lowered;
        Some(lowered)
    }

    /// A success: returns the new rate when it grows enough to matter (1%).
    pub(crate) fn succeeded(&mut self, now: Instant) -> Option<f64> {
        self.delivered.record(now);
        let rate = self.rate;
        let since = self.last_decrease?;
        let t = now.saturating_duration_since(since).as_secs_f64();
        let mut target = if self.probing {
            // Slow start: the limit is not known yet, so double every half second.
            self.lowered_to * 2f64.powf(t / 0.5)
        } else {
            let k = (self.w_max * (1.0 - self.settings.beta) / self.settings.scale).cbrt();
            self.settings.scale * (t - k).powi(3) + self.w_max
        };
        // Never more than twice what is actually being sent (AWS), once that is measured.
        let (measured, reliable) = self.sent.estimate(now);
        if reliable {
            target = target.min(2.0 * measured.max(self.settings.floor));
        }
        if let Some(ceiling) = self.settings.ceiling {
            target = target.min(ceiling);
        }
        target = target.max(self.settings.floor);
        if (target - rate).abs() <= rate * 0.01 {
            return None;
        }
        self.rate = target;
        Some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_throttles_lowers_the_rate_once() {
        let start = Instant::now();
        let mut controller = Controller::new(Adaptive::default(), Some(100.0), start);
        let changes: Vec<_> = (0..64)
            .filter_map(|_| controller.throttled(start))
            .collect();
        assert_eq!(changes, [70.0], "64 tasks refused at once: one decrease");
        // Later refusals, a probe interval on, lower it again.
        assert!(controller
            .throttled(start + Duration::from_secs(1))
            .is_some());
    }

    #[test]
    fn floor_and_ceiling_hold() {
        let start = Instant::now();
        let settings = Adaptive {
            floor: 2.0,
            ceiling: Some(40.0),
            ..Adaptive::default()
        };
        let mut controller = Controller::new(settings, Some(40.0), start);
        let mut now = start;
        for _ in 0..50 {
            now += Duration::from_secs(3);
            controller.throttled(now);
        }
        assert_eq!(controller.rate(), 2.0, "never below the floor");
        for _ in 0..10_000 {
            now += Duration::from_millis(10);
            controller.sent(now);
            controller.succeeded(now);
        }
        let rate = controller.rate();
        assert!(
            (39.5..=40.0).contains(&rate),
            "never above the ceiling: {rate}"
        );
        assert!(Adaptive {
            floor: 0.0,
            ..Adaptive::default()
        }
        .validate()
        .is_err());
        assert!(Adaptive {
            ceiling: Some(0.1),
            ..Adaptive::default()
        }
        .validate()
        .is_err());
        assert!(Adaptive {
            beta: 1.0,
            ..Adaptive::default()
        }
        .validate()
        .is_err());
    }
}
