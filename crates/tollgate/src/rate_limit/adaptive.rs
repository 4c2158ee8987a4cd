//! The adaptive mode: find the provider's real request rate from its refusals.
//!
//! AWS's adaptive retry mode is the model, adjusted for a provider that refuses (429) rather than
//! queues. On a refusal the rate drops to `beta` (0.95) times the best estimate of the provider's
//! limit: the share of requests it accepted at the current rate, once that share is clear. While
//! answers succeed the rate grows back along a CUBIC curve relative to the rate that last failed,
//! `W_max (1 + C (t - K)^3)` with `C` = 0.0005: back at `W_max` after `K` seconds, then probing
//! beyond it slowly; 10% past it without a refusal, that limit is gone and slow start resumes.
//!
//! Without a configured rate it starts at 10 per second and doubles every 0.35 s until a
//! quarter of the last 32 answers are refusals: a share that measures the limit, where a lone
//! refusal could be noise. A limit the provider's headers report ends the search at once.
//!
//! Three rules keep it from confusing noise with a limit:
//! - Only answers to requests sent after a decrease count for the next one, so 64 tasks refused
//!   at once lower the rate once.
//! - A decrease is verified by the next 32 answers. Refusals that stop show it found the limit.
//!   Eight refusals among them show the rate is still far above it: the share the provider
//!   accepted then measures its limit, and the rate drops to that at once (a limit 4x too high is
//!   corrected in two steps). Refusals that go on lower it again; when a second decrease leaves
//!   them as many as the first (they do not respond to the rate: a provider shedding load at
//!   random), both are undone, and that share becomes the background noise that later refusals
//!   must stand out from before they lower the rate again.
//! - The caller only reports refusals about the request rate: not 503s or 529s (overload), not a
//!   429 about tokens or one while the provider's headers say requests remain.

use std::time::Duration;

use tokio::time::Instant;

use crate::config_error::reject_if;
use crate::ConfigError;

/// Settings of the adaptive mode, in requests per second.
///
/// ```
/// use tollgate::rate_limit::Adaptive;
///
/// let mut adaptive = Adaptive::default();
/// adaptive.floor = 1.0;
/// assert_eq!(adaptive.beta, 0.95);
/// ```
///
/// In a config file (feature `serde`): `adaptive = true` (these defaults), `false` (a fixed
/// rate), or a table of the fields to change (`adaptive = { floor = 1.0 }`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct Adaptive {
    /// The rate never falls below this (default 0.5 per second, as AWS's minimum fill rate).
    pub floor: f64,
    /// The rate never rises above this (default: the configured request limit, else none).
    pub ceiling: Option<f64>,
    /// Multiplicative decrease on a refusal, applied to the best estimate of the provider's
    /// limit (default 0.95: the rate it accepted is measured, so just below it is safe, and the
    /// way back up is short).
    pub beta: f64,
    /// CUBIC's scaling constant, relative to the rate that last failed (default 0.0005: a 10%
    /// decrease is regained in 5.8 s, the rate is 10% above it 5.8 s later, and slow-starts
    /// again from there if the provider still accepts). Smaller probes less often: a probe
    /// costs the refused request its `Retry-After`.
    pub scale: f64,
    /// Where the rate starts when no request limit is configured (default 10 per second): it
    /// doubles every 0.35 s until the provider refuses a quarter of the answers, as TCP's
    /// slow start, so a batch of many tasks does not open with a wall of 429s.
    pub initial: f64,
}

impl Default for Adaptive {
    fn default() -> Self {
        Adaptive {
            floor: 0.5,
            ceiling: None,
            beta: 0.95,
            scale: 0.0005,
            initial: 10.0,
        }
    }
}

impl Adaptive {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        reject_if(
            !(self.floor.is_finite() && self.floor > 0.0),
            "adaptive.floor",
            "must be a rate above zero",
        )?;
        if self
            .ceiling
            .is_some_and(|c| !(c.is_finite() && c >= self.floor))
        {
            return Err(ConfigError::new(
                "adaptive.ceiling",
                "must be at least the floor",
            ));
        }
        reject_if(
            !(self.beta > 0.0 && self.beta < 1.0),
            "adaptive.beta",
            "must be between 0 and 1 (exclusive)",
        )?;
        reject_if(
            !(self.scale.is_finite() && self.scale > 0.0),
            "adaptive.scale",
            "must be above zero",
        )?;
        reject_if(
            !(self.initial.is_finite() && self.initial >= self.floor),
            "adaptive.initial",
            "must be a rate at least the floor",
        )?;
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

/// Answers the recent share of refusals is counted over (a bit each in `Controller::recent`).
const RECENT: f64 = 32.0;
/// Answers to requests sent after a decrease that tell whether it helped.
const VERIFY_ANSWERS: u32 = 32;
/// Refusals among those that say the decrease was not enough (the rate is still far above the
/// provider's): the decrease stands and the next refusal lowers again.
const STILL_OVER_REFUSALS: u32 = 8;

/// Slow start doubles the rate this often.
const SLOW_START_DOUBLING: Duration = Duration::from_millis(350);

/// How far above the rate that last failed CUBIC probes before it concludes that limit is gone
/// and slow-starts again.
const PROBE_BEYOND: f64 = 0.1;

/// Refusals that go on after a decrease at more than this share of what they were before it
/// did not respond to the rate: noise.
const NOT_DROPPING: f64 = 0.7;

/// The controller's rate and curve, kept to undo decreases that turn out to be noise.
#[derive(Debug, Clone, Copy)]
struct Curve {
    rate: f64,
    w_max: f64,
    probing: bool,
    lowered_to: f64,
    last_decrease: Option<Instant>,
}

/// A decrease waiting for the answers that say whether it helped.
#[derive(Debug, Clone, Copy)]
struct Verification {
    /// The controller before the first of the decreases in a row that did not stop the
    /// refusals, to restore if they are judged noise.
    before: Curve,
    /// The share of refusals after the previous decrease, when this one followed it because
    /// refusals went on.
    previous_share: Option<f64>,
    /// Answers to requests sent after the decrease, and the refusals among them.
    answers: u32,
    refusals: u32,
}

/// What one answer changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Change {
    /// The rate was lowered on a refusal.
    Lowered(f64),
    /// A decrease did not reduce the refusals: they are not about our rate, and the rate went
    /// back to what it was.
    Restored(f64),
    /// The rate grew.
    Raised(f64),
}

impl Change {
    pub(crate) fn rate(self) -> f64 {
        match self {
            Change::Lowered(r) | Change::Restored(r) | Change::Raised(r) => r,
        }
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
    /// Growing exponentially (slow start) until the first refusal.
    probing: bool,
    sent: SendRate,
    /// The last 32 answers, a bit each, set for a refusal.
    recent: u32,
    /// Whether requests were waiting for the rate at the last answer.
    backlog: bool,
    /// Share of refusals that lowering the rate did not remove: background noise (a provider
    /// shedding load at random), not a limit.
    noise: f64,
    verifying: Option<Verification>,
}

impl Controller {
    pub(crate) fn new(settings: Adaptive, configured: Option<f64>, now: Instant) -> Self {
        // Without a configured limit, start low and slow-start up to the first refusal.
        let initial = settings
            .ceiling
            .map_or(settings.initial, |c| settings.initial.min(c));
        let empty = || SendRate {
            bucket_start: now,
            count: 0,
            rate: 0.0,
        };
        Controller {
            settings,
            rate: configured.unwrap_or(initial),
            w_max: configured.unwrap_or(0.0),
            last_decrease: configured.is_none().then_some(now),
            lowered_to: initial,
            probing: configured.is_none(),
            sent: empty(),
            recent: 0,
            backlog: false,
            noise: 0.0,
            verifying: None,
        }
    }

    /// The provider reports its limit: it becomes the ceiling when lower, and a rate still
    /// slow-starting goes straight to it (there is nothing left to find). Returns the new rate
    /// when it changed.
    pub(crate) fn cap(&mut self, per_sec: f64, now: Instant) -> Option<f64> {
        if !(per_sec.is_finite() && per_sec > 0.0) {
            return None;
        }
        let floor = self.settings.floor;
        if self.settings.ceiling.is_none_or(|c| per_sec < c) {
            self.settings.ceiling = Some(per_sec.max(floor));
        }
        let ceiling = self.settings.ceiling.unwrap_or(per_sec);
        let rate = if self.probing {
            self.probing = false;
            self.w_max = ceiling;
            self.lowered_to = ceiling;
            self.last_decrease = Some(now);
            ceiling
        } else {
            self.rate.min(ceiling)
        };
        if rate == self.rate {
            return None;
        }
        self.rate = rate;
        Some(rate)
    }

    /// The current admission rate.
    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    /// Whether a success would change nothing: no refusal in recent memory, nothing to verify,
    /// and the rate at its ceiling (or never lowered from the configured rate). The caller
    /// then skips the lock on the success path.
    pub(crate) fn settled(&self) -> bool {
        let at_ceiling =
            self.last_decrease.is_none() || self.settings.ceiling.is_some_and(|c| self.rate >= c);
        !self.probing && self.verifying.is_none() && self.recent == 0 && at_ceiling
    }

    pub(crate) fn sent(&mut self, now: Instant) {
        self.sent.record(now);
    }

    /// The answer to a request sent at `sent_at`: a refusal by the provider's rate limiter, or
    /// anything else; `backlog` says whether requests are waiting for the rate. Returns what
    /// changed, if anything.
    pub(crate) fn answered(
        &mut self,
        refused: bool,
        sent_at: Instant,
        now: Instant,
        backlog: bool,
    ) -> Option<Change> {
        self.backlog = backlog;
        self.recent = (self.recent << 1) | u32::from(refused);
        if self.probing {
            return self.slow_start(refused, now);
        }
        // Answers to requests sent before the last decrease (or at the same instant, which is
        // ambiguous) say nothing about the new rate.
        let after_decrease = self.last_decrease.is_none_or(|at| sent_at > at);
        if after_decrease {
            if let Some(change) = self.verify(refused, now) {
                return Some(change);
            }
        }
        if !refused {
            return self.grow(now);
        }
        if !after_decrease || self.verifying.is_some() || !self.above_noise() {
            return None;
        }
        Some(Change::Lowered(self.lower(None, None, now)))
    }

    /// Counts an answer towards the verification of the last decrease. When its answers are
    /// in: refusals that stopped confirm it; refusals that went on lower the rate again, and
    /// when two decreases in a row left them as many, they are judged noise and all undone.
    fn verify(&mut self, refused: bool, now: Instant) -> Option<Change> {
        let v = self.verifying.as_mut()?;
        v.answers += 1;
        v.refusals += u32::from(refused);
        let (answers, refusals) = (v.answers, v.refusals);
        if let Some(limit) = self.measured_limit(refusals, answers, 1) {
            // Far above the limit still: the share the provider accepted at this rate measures
            // its limit. Lower to that at once.
            self.verifying = None;
            return Some(Change::Lowered(self.lower(Some(limit), None, now)));
        }
        let v = self.verifying.filter(|_| answers >= VERIFY_ANSWERS)?;
        self.verifying = None;
        let after = f64::from(v.refusals) / f64::from(v.answers);
        let expected = self.noise.max(1.0 / RECENT);
        let margin = 2.0 * (expected * (1.0 - expected) / f64::from(v.answers)).sqrt();
        if after <= self.noise + margin {
            // The refusals stopped: the decrease found the limit. Noise, if any, fades.
            self.noise *= 0.5;
            return None;
        }
        let dropping = v
            .previous_share
            .is_none_or(|previous| after < NOT_DROPPING * previous);
        if dropping {
            // Refusals went on, but fewer: a little above the limit still (or too soon to
            // tell). Lower again.
            let mut v = v;
            v.previous_share = Some(after);
            return Some(Change::Lowered(self.lower(None, Some(v), now)));
        }
        // Lowering the rate did not make them fewer: they are not about our rate. Undo it all.
        self.noise = if self.noise == 0.0 {
            after
        } else {
            0.5 * (self.noise + after)
        };
        let before = v.before;
        self.rate = before.rate;
        self.w_max = before.w_max;
        self.probing = before.probing;
        self.lowered_to = before.lowered_to;
        self.last_decrease = before.last_decrease;
        Some(Change::Restored(self.rate))
    }

    /// Slow start: the rate doubles until the provider refuses a quarter of the last 32 answers,
    /// a share that measures its limit (a few isolated refusals may be noise, and stopping at
    /// them would leave the rate far below a provider that has no limit in reach).
    fn slow_start(&mut self, refused: bool, now: Instant) -> Option<Change> {
        if !refused {
            return self.grow(now);
        }
        let limit = self.measured_limit(self.recent.count_ones(), RECENT as u32, 0)?;
        Some(Change::Lowered(self.lower(Some(limit), None, now)))
    }

    /// The provider's limit measured from `refusals` among `answers` at the current rate, when
    /// they are enough to measure it: `STILL_OVER_REFUSALS` beyond the background noise. The
    /// share accepted is counted from a dozen answers or so, so it leans up by `lean` answers
    /// (too high costs a few refusals, too low a long wait on the way back up); the rate drops
    /// by three quarters at most.
    fn measured_limit(&self, refusals: u32, answers: u32, lean: u32) -> Option<f64> {
        let noise = self.noise * f64::from(answers);
        let excess = f64::from(refusals) - noise;
        if excess < f64::from(STILL_OVER_REFUSALS) {
            return None;
        }
        let accepted = (f64::from(answers) - excess + f64::from(lean)) / f64::from(answers + lean);
        Some(self.rate * accepted.clamp(0.25, 1.0))
    }

    /// Whether the recent share of refusals stands out from the background noise.
    fn above_noise(&self) -> bool {
        if self.noise == 0.0 {
            return true;
        }
        // Two and a half standard deviations of the share among the last 32 answers.
        let share = f64::from(self.recent.count_ones()) / RECENT;
        let variance = self.noise * (1.0 - self.noise) / RECENT;
        share > self.noise + 2.5 * variance.sqrt()
    }

    /// A refusal: lowers the rate to `beta` times the provider's limit as best known: `limit`
    /// when measured, else the current rate. `previous` is the verification of the decrease
    /// before it, when this one continues a streak.
    fn lower(&mut self, limit: Option<f64>, previous: Option<Verification>, now: Instant) -> f64 {
        let floor = self.settings.floor;
        let current = match limit {
            Some(limit) => self.rate.min(limit.max(floor)),
            None => self.rate,
        };
        let curve = Curve {
            rate: self.rate,
            w_max: self.w_max,
            probing: self.probing,
            lowered_to: self.lowered_to,
            last_decrease: self.last_decrease,
        };
        self.verifying = Some(Verification {
            before: previous.map_or(curve, |p| p.before),
            previous_share: previous.and_then(|p| p.previous_share),
            answers: 0,
            refusals: 0,
        });
        // Any decrease ends slow start.
        self.probing = false;
        self.w_max = current;
        let lowered = (current * self.settings.beta).max(floor);
        self.last_decrease = Some(now);
        self.lowered_to = lowered;
        self.rate = lowered;
        lowered
    }

    /// A success: the rate grows (when it grows enough to matter, 1%).
    fn grow(&mut self, now: Instant) -> Option<Change> {
        let rate = self.rate;
        let since = self.last_decrease?;
        let t = now.saturating_duration_since(since).as_secs_f64();
        let mut target = if self.probing {
            // Slow start: the limit is not known yet, so double at a steady pace.
            self.lowered_to * 2f64.powf(t / SLOW_START_DOUBLING.as_secs_f64())
        } else {
            // CUBIC's plateau is `w_max`, reached `k` seconds after the decrease; the curve is
            // relative to it, so it takes as long to regain 10% at 5 requests/s as at 5,000.
            let scale = self.settings.scale;
            let k = ((1.0 - self.lowered_to / self.w_max).max(0.0) / scale).cbrt();
            self.w_max * (1.0 + scale * (t - k).powi(3))
        };
        if !self.probing && target > self.w_max * (1.0 + PROBE_BEYOND) {
            // Well past the rate that last failed without a refusal: that limit is gone (a
            // higher tier, a quieter neighbour). Find the new one as at the start.
            self.probing = true;
            self.lowered_to = target;
            self.last_decrease = Some(now);
        }
        // Without requests waiting, never grow past twice what is actually being sent (AWS),
        // once that is measured: a rate the traffic does not use proves nothing. (It never
        // lowers the rate.)
        let (measured, reliable) = self.sent.estimate(now);
        if reliable && !self.backlog {
            target = target.min((2.0 * measured).max(rate));
        }
        if let Some(ceiling) = self.settings.ceiling {
            target = target.min(ceiling);
        }
        target = target.max(self.settings.floor);
        if (target - rate).abs() <= rate * 0.01 {
            return None;
        }
        self.rate = target;
        Some(Change::Raised(target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_of_refusals_lowers_the_rate_once() {
        let start = Instant::now();
        let mut controller = Controller::new(Adaptive::default(), Some(100.0), start);
        // 64 tasks sent before the first refusal came back, all refused.
        let changes: Vec<_> = (0..64)
            .filter_map(|_| controller.answered(true, start, start + MS, false))
            .collect();
        let beta = Adaptive::default().beta;
        assert_eq!(changes, [Change::Lowered(100.0 * beta)], "one decrease");
        // Requests sent after it are refused too, two in three: far above the limit still. The
        // eighth refusal (not each) lowers again, to what the provider accepted: 5 of 13 (the
        // 12 answers and one more accepted, leaning up) of 90.
        let after = start + 2 * MS;
        let mut changes = Vec::new();
        for i in 0..12 {
            changes.extend(controller.answered(i % 3 != 0, after, after + MS, false));
        }
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(
            matches!(changes[0], Change::Lowered(r) if (r - beta * 100.0 * beta * 5.0 / 13.0).abs() < 1e-9),
            "{changes:?}"
        );
    }

    #[test]
    fn refusals_a_decrease_does_not_remove_are_noise() {
        let start = Instant::now();
        let mut controller = Controller::new(Adaptive::default(), Some(50.0), start);
        // One refusal in ten, whatever the rate: the first lowers the rate...
        let mut now = start;
        let mut changes = Vec::new();
        for i in 0..400 {
            now += 20 * MS;
            let change = controller.answered(i % 10 == 9, now - MS, now, false);
            changes.extend(change.filter(|c| !matches!(c, Change::Raised(_))));
        }
        let beta = Adaptive::default().beta;
        assert_eq!(changes[0], Change::Lowered(50.0 * beta));
        // ...refusals go on in the next 32 answers, so it lowers again; in the 32 after, they
        // are as many as before: they do not respond to the rate, and it goes back to 50. The
        // same share of refusals then lowers it no more.
        assert!(
            matches!(changes[1], Change::Lowered(r) if r < 50.0 * beta),
            "{changes:?}"
        );
        assert_eq!(changes[2], Change::Restored(50.0));
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert_eq!(controller.rate(), 50.0);
        // A real limit on top of the noise (every other request refused) is still found.
        let mut lowered = false;
        for _ in 0..64 {
            now += 20 * MS;
            lowered |= matches!(
                controller.answered(true, now - MS, now, false),
                Some(Change::Lowered(_))
            );
            now += 20 * MS;
            controller.answered(false, now - MS, now, false);
        }
        assert!(lowered, "a share well above the noise lowers the rate");
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
        for _ in 0..100 {
            now += Duration::from_secs(3);
            controller.answered(true, now - MS, now, false);
            // Every refusal is genuine: the next ones stop (the decrease is confirmed).
            for _ in 0..VERIFY_ANSWERS {
                controller.answered(false, now + MS, now + 2 * MS, false);
            }
        }
        assert_eq!(controller.rate(), 2.0, "never below the floor");
        for _ in 0..10_000 {
            now += Duration::from_millis(10);
            controller.sent(now);
            controller.answered(false, now - MS, now, false);
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
