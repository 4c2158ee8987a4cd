//! Daily quotas (Groq's and Gemini's requests and tokens per day): a count per calendar day that
//! resets at a fixed time, not a bucket that refills.
//!
//! A spent daily quota is not a wait of seconds: requests are refused at once with the time left
//! until the reset, so a batch stops cleanly instead of meeting a wall of 429s with hints of
//! hours. The day is anchored on the wall clock once, when the counter is made, then counted on
//! tokio's clock like every other limit (so tests can pause and advance it).

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// A day.
pub(crate) const DAY: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, Clone)]
pub(crate) struct DayCounter {
    allowance: u64,
    used: u64,
    /// When the current day ends (the next reset).
    ends: Instant,
    /// Whether a refusal was already reported today.
    told: bool,
}

/// A charge taken from a [`DayCounter`], settled against the same day only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DayHold {
    amount: u64,
    ends: Instant,
}

impl DayCounter {
    /// A fresh day's allowance; the day resets `starts_at` after midnight UTC.
    pub(crate) fn new(allowance: u64, starts_at: Duration, now: Instant) -> Self {
        let since_midnight = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(Duration::ZERO, |since| {
                Duration::from_secs(since.as_secs() % DAY.as_secs())
            });
        Self::with_time_of_day(allowance, starts_at, since_midnight, now)
    }

    /// As [`new`](Self::new), `since_midnight` into the UTC day.
    pub(crate) fn with_time_of_day(
        allowance: u64,
        starts_at: Duration,
        since_midnight: Duration,
        now: Instant,
    ) -> Self {
        let into_day = (since_midnight + DAY - starts_at.min(DAY)).as_secs() % DAY.as_secs();
        DayCounter {
            allowance,
            used: 0,
            ends: now + (DAY - Duration::from_secs(into_day)),
            told: false,
        }
    }

    /// Starts a new day if the current one is over.
    fn roll(&mut self, now: Instant) {
        if now >= self.ends {
            let days = (now - self.ends).as_secs() / DAY.as_secs() + 1;
            self.ends += DAY * days as u32;
            self.used = 0;
            self.told = false;
        }
    }

    /// `Err(time until the reset, whether it is today's first refusal)` when `cost` more does
    /// not fit today.
    pub(crate) fn check(&mut self, cost: u64, now: Instant) -> Result<(), (Duration, bool)> {
        self.roll(now);
        if self.used.saturating_add(cost) > self.allowance {
            let first = !std::mem::replace(&mut self.told, true);
            return Err((self.ends - now, first));
        }
        Ok(())
    }

    pub(crate) fn take(&mut self, cost: u64, now: Instant) -> DayHold {
        self.roll(now);
        self.used = self.used.saturating_add(cost);
        DayHold {
            amount: cost,
            ends: self.ends,
        }
    }

    /// Corrects a charge of today to what was `used`; one from a past day is forgotten with it.
    pub(crate) fn settle(&mut self, hold: &DayHold, used: u64, now: Instant) {
        self.roll(now);
        if hold.ends == self.ends {
            self.used = self.used.saturating_sub(hold.amount).saturating_add(used);
        }
    }

    /// What is left today, and the time until the reset.
    pub(crate) fn left(&mut self, now: Instant) -> (u64, Duration) {
        self.roll(now);
        (self.allowance.saturating_sub(self.used), self.ends - now)
    }

    /// Whether nothing was spent today (a new counter would start the same).
    pub(crate) fn is_unused(&mut self, now: Instant) -> bool {
        self.roll(now);
        self.used == 0
    }

    /// A new allowance; what was spent today stays spent.
    pub(crate) fn set_allowance(&mut self, allowance: u64) {
        self.allowance = allowance;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_at_the_configured_time_of_day() {
        let now = Instant::now();
        // 23:00 UTC with the day starting at 08:00 UTC (midnight in California): 9 h left.
        let mut day = DayCounter::with_time_of_day(
            3,
            Duration::from_secs(8 * 3600),
            Duration::from_secs(23 * 3600),
            now,
        );
        for _ in 0..3 {
            assert_eq!(day.check(1, now), Ok(()));
            let _ = day.take(1, now);
        }
        assert_eq!(
            day.check(1, now),
            Err((Duration::from_secs(9 * 3600), true))
        );
        assert_eq!(
            day.check(1, now),
            Err((Duration::from_secs(9 * 3600), false))
        );
        let later = now + Duration::from_secs(9 * 3600);
        assert_eq!(day.check(3, later), Ok(()), "a new day, a full allowance");
        assert_eq!(day.check(4, later), Err((DAY, true)));
    }

    #[test]
    fn settling_corrects_today_only() {
        let now = Instant::now();
        let mut day = DayCounter::with_time_of_day(1_000, Duration::ZERO, Duration::ZERO, now);
        let hold = day.take(600, now);
        day.settle(&hold, 100, now);
        assert_eq!(day.left(now).0, 900);
        let old = day.take(500, now);
        let tomorrow = now + DAY;
        day.settle(&old, 0, tomorrow);
        assert_eq!(
            day.left(tomorrow),
            (1_000, DAY),
            "yesterday's charge is gone with it"
        );
    }
}
