//! One token bucket, kept as a GCRA "theoretical arrival time" in exact integer arithmetic.
//!
//! Time is counted in *scaled* nanoseconds (nanoseconds × `amount`), in which one token takes
//! exactly `interval` nanoseconds to refill. Every wait is then an exact number of nanoseconds,
//! so 100 requests per second are admitted exactly 10 ms apart, never a nanosecond early, and
//! no floating-point drift accumulates over a long run.
//!
//! A charge taken before its true size is known (a request's `max_tokens`, reserved against an
//! output limit) is a [`Hold`]: a stretch of the bucket's schedule. When the real usage arrives,
//! [`Bucket::settle`] gives back only the part of the unused stretch that still lies ahead of
//! `now`: the part behind it has already been refilled, and giving it back again would admit
//! those tokens twice. Refunds only move later stretches earlier, never before `now`, so every
//! token of the schedule is spent at most once and real usage admitted over any window stays
//! within burst + rate x window (the property the tests check).

use std::cell::Cell;
use std::time::Duration;

use tokio::time::Instant;

use super::limits::Rate;

#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    /// Tokens replenished per interval.
    amount: u128,
    /// The interval in nanoseconds: the scaled cost of one token.
    per_token: u128,
    /// Capacity in tokens (the burst).
    capacity: u128,
    /// The instant that scaled times count from.
    origin: Instant,
    /// Theoretical arrival time: when the bucket would be full again, in scaled nanoseconds.
    tat: u128,
    /// Headroom in scaled nanoseconds: the burst held back for delays that vary between
    /// admission here and counting at the provider.
    headroom: u128,
    /// Everything refunds have moved the schedule earlier, in scaled nanoseconds: a hold taken
    /// before has moved at most this much since.
    refunded: u128,
    /// Changes on each reconfiguration: a hold from another rate cannot be refunded.
    epoch: u32,
    /// The last instant turned into scaled time, and what it became: an admission checks the
    /// bucket and then takes from it at the same instant, and the conversion (a subtraction of
    /// two clock readings and a 128-bit multiplication) is the costliest part of either.
    last_read: Cell<(Instant, u128)>,
}

/// A charge taken from a [`Bucket`] before its true size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hold {
    pub(crate) amount: u64,
    /// Where the charge's stretch of the schedule ended when it was taken (scaled).
    end: u128,
    /// The bucket's `refunded` when it was taken.
    refunded: u128,
    epoch: u32,
}

impl Bucket {
    /// A full bucket that holds back `headroom` of its burst (see [`Bucket::wait_for`]).
    pub(crate) fn new(rate: Rate, headroom: Duration, now: Instant) -> Self {
        let amount = u128::from(rate.amount.max(1));
        Bucket {
            amount,
            per_token: rate.interval.as_nanos().max(1),
            capacity: u128::from(rate.capacity),
            origin: now,
            tat: 0,
            headroom: headroom.as_nanos() * amount,
            refunded: 0,
            epoch: 0,
            last_read: Cell::new((now, 0)),
        }
    }

    fn scaled_now(&self, now: Instant) -> u128 {
        let (read, scaled) = self.last_read.get();
        if read == now {
            return scaled;
        }
        let scaled = now.saturating_duration_since(self.origin).as_nanos() * self.amount;
        self.last_read.set((now, scaled));
        scaled
    }

    /// Tokens available at `now`.
    pub(crate) fn level(&self, now: Instant) -> u64 {
        let now = self.scaled_now(now);
        let debt = self.tat.saturating_sub(now);
        let tolerance = self.capacity * self.per_token;
        (tolerance.saturating_sub(debt) / self.per_token).min(u128::from(u64::MAX)) as u64
    }

    /// Time until `ahead + cost` tokens are available; zero if they are now.
    ///
    /// The headroom is kept in reserve: a request goes when the provider, seeing it up to
    /// `headroom` later or earlier than its neighbours, still counts it within the limit. A cost
    /// larger than the burst less the headroom still fits once the bucket is full.
    pub(crate) fn wait_for(&self, ahead: u64, cost: u64, now: Instant) -> Duration {
        let now_scaled = self.scaled_now(now);
        let demand = u128::from(ahead.saturating_add(cost)) * self.per_token;
        let tolerance = (self.capacity * self.per_token)
            .saturating_sub(self.headroom)
            .max(u128::from(cost) * self.per_token);
        let after = self.tat.max(now_scaled) + demand;
        let missing = after.saturating_sub(now_scaled).saturating_sub(tolerance);
        if missing == 0 {
            return Duration::ZERO;
        }
        // Round up: a wait is never a nanosecond short.
        let nanos = missing.div_ceil(self.amount);
        Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64)
    }

    pub(crate) fn take(&mut self, cost: u64, now: Instant) -> Hold {
        let now = self.scaled_now(now);
        self.tat = self.tat.max(now) + u128::from(cost) * self.per_token;
        Hold {
            amount: cost,
            end: self.tat,
            refunded: self.refunded,
            epoch: self.epoch,
        }
    }

    /// Corrects `hold` to the `used` amount the provider metered: gives back what is unused and
    /// still ahead on the schedule, or charges the excess (never past an empty bucket: the
    /// provider's own bucket does not go deeper than empty either). Returns the correction
    /// applied, negative for a refund.
    pub(crate) fn settle(&mut self, hold: &Hold, used: u64, now: Instant) -> i64 {
        let now = self.scaled_now(now);
        if used > hold.amount {
            let excess = u128::from(used - hold.amount) * self.per_token;
            let floor = now + self.capacity * self.per_token;
            let tat = (self.tat.max(now) + excess).min(floor).max(self.tat);
            let charged = (tat - self.tat) / self.per_token;
            self.tat = tat;
            return charged.min(i64::MAX as u128) as i64;
        }
        if hold.epoch != self.epoch {
            return 0;
        }
        // The hold's stretch has moved earlier by at most what was refunded since it was taken.
        let end = hold
            .end
            .saturating_sub(self.refunded.saturating_sub(hold.refunded));
        let ahead = end.saturating_sub(now).min(self.tat.saturating_sub(now));
        let unused = u128::from(hold.amount - used) * self.per_token;
        // Whole tokens only: the schedule stays in exact steps.
        let refund = unused.min(ahead) / self.per_token * self.per_token;
        self.tat -= refund;
        self.refunded += refund;
        -((refund / self.per_token).min(i64::MAX as u128) as i64)
    }

    /// Whether a request of `cost` can ever go: it fits the burst, or at least one interval's
    /// worth (a request larger than the burst goes alone once the bucket is full).
    pub(crate) fn fits(&self, cost: u64) -> bool {
        cost <= self.max_cost()
    }

    /// The largest request that can ever go.
    pub(crate) fn max_cost(&self) -> u64 {
        self.capacity.max(self.amount).min(u128::from(u64::MAX)) as u64
    }

    pub(crate) fn is_full(&self, now: Instant) -> bool {
        self.tat <= self.scaled_now(now)
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.capacity.min(u128::from(u64::MAX)) as u64
    }

    pub(crate) fn rate(&self) -> Rate {
        Rate {
            amount: self.amount as u64,
            interval: Duration::from_nanos(self.per_token.min(u128::from(u64::MAX)) as u64),
            capacity: self.capacity(),
            default_burst: false,
        }
    }

    /// Lowers what is available at `now` to `level` tokens (never raises it).
    pub(crate) fn lower_to(&mut self, level: u64, now: Instant) {
        let now = self.scaled_now(now);
        let level = u128::from(level).min(self.capacity);
        let tat = now + (self.capacity - level) * self.per_token;
        self.tat = self.tat.max(tat);
    }

    /// Empties the bucket: the next admission waits for a refill.
    pub(crate) fn drain(&mut self, now: Instant) {
        self.lower_to(0, now);
    }

    /// Changes the rate and capacity, keeping what is available (never more than the new
    /// capacity), so a change cannot over-admit.
    pub(crate) fn reconfigure(&mut self, rate: Rate, now: Instant) {
        let available = self.level(now);
        let headroom =
            Duration::from_nanos((self.headroom / self.amount).min(u128::from(u64::MAX)) as u64);
        let epoch = self.epoch.wrapping_add(1);
        *self = Bucket::new(rate, headroom, now);
        self.epoch = epoch;
        self.lower_to(available, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_exact_integer_nanoseconds() {
        let now = Instant::now();
        let mut bucket = Bucket::new(Rate::per_second(100).with_burst(2), Duration::ZERO, now);
        let _ = bucket.take(1, now);
        let _ = bucket.take(1, now);
        assert_eq!(bucket.level(now), 0);
        assert_eq!(bucket.wait_for(0, 1, now), Duration::from_millis(10));
        assert_eq!(bucket.wait_for(2, 1, now), Duration::from_millis(30));
        let later = now + Duration::from_millis(10);
        assert_eq!(bucket.wait_for(0, 1, later), Duration::ZERO);
        // 7 per second does not divide a second evenly: the wait rounds up, never down.
        let mut odd = Bucket::new(Rate::per_second(7).with_burst(1), Duration::ZERO, now);
        let _ = odd.take(1, now);
        assert_eq!(odd.wait_for(0, 1, now), Duration::from_nanos(142_857_143));
    }

    #[test]
    fn lowering_and_reconfiguring_never_add_tokens() {
        let now = Instant::now();
        let mut bucket = Bucket::new(Rate::per_minute(600).with_burst(600), Duration::ZERO, now);
        bucket.lower_to(100, now);
        assert_eq!(bucket.level(now), 100);
        bucket.lower_to(500, now);
        assert_eq!(bucket.level(now), 100, "lowering never raises");
        bucket.reconfigure(Rate::per_minute(50).with_burst(50), now);
        assert_eq!(bucket.level(now), 50);
        bucket.reconfigure(Rate::per_minute(6_000).with_burst(6_000), now);
        assert_eq!(
            bucket.level(now),
            50,
            "a larger limit does not grant tokens at once"
        );
        assert!(!bucket.is_full(now));
        assert!(bucket.is_full(now + Duration::from_secs(60)));
    }

    #[test]
    fn headroom_holds_back_part_of_the_burst() {
        let now = Instant::now();
        // 100/s with 10 ms of headroom: one token of the burst of 10 is kept in reserve.
        let mut bucket = Bucket::new(
            Rate::per_second(100).with_burst(10),
            Duration::from_millis(10),
            now,
        );
        for _ in 0..9 {
            assert_eq!(bucket.wait_for(0, 1, now), Duration::ZERO);
            let _ = bucket.take(1, now);
        }
        assert_eq!(bucket.wait_for(0, 1, now), Duration::from_millis(10));
        // A request as large as the whole burst still goes once the bucket is full.
        let full = Bucket::new(
            Rate::per_second(100).with_burst(10),
            Duration::from_millis(10),
            now,
        );
        assert_eq!(full.wait_for(0, 10, now), Duration::ZERO);
    }

    #[test]
    fn settling_gives_back_only_what_is_still_ahead() {
        let now = Instant::now();
        // 100 per second, burst 100: a hold of 100 is a second of the schedule.
        let mut bucket = Bucket::new(Rate::per_second(100).with_burst(100), Duration::ZERO, now);
        let hold = bucket.take(100, now);
        // Settled at once to 10: 90 back, as if 10 had been charged.
        let mut quick = bucket.clone();
        assert_eq!(quick.settle(&hold, 10, now), -90);
        assert_eq!(quick.level(now), 90);
        // Settled after its whole stretch has been refilled: nothing to give back.
        let later = now + Duration::from_secs(1);
        let next = bucket.take(100, later);
        assert_eq!(bucket.settle(&hold, 0, later), 0);
        assert_eq!(
            bucket.level(later),
            0,
            "the refill already returned those tokens"
        );
        // Half-way through the next stretch, at most the half still ahead comes back.
        let half = later + Duration::from_millis(500);
        assert_eq!(bucket.settle(&next, 0, half), -50);
        assert_eq!(bucket.level(half), 100);
    }

    #[test]
    fn excess_is_charged_down_to_an_empty_bucket() {
        let now = Instant::now();
        let mut bucket = Bucket::new(Rate::per_second(100).with_burst(100), Duration::ZERO, now);
        let hold = bucket.take(10, now);
        assert_eq!(bucket.settle(&hold, 50, now), 40);
        assert_eq!(bucket.level(now), 50);
        let hold = bucket.take(10, now);
        assert_eq!(
            bucket.settle(&hold, 500, now),
            40,
            "never deeper than empty"
        );
        assert_eq!(bucket.level(now), 0);
    }

    proptest::proptest! {
        /// Whatever is reserved, used and settled when: the real usage of the requests
        /// admitted in any window stays within burst + rate x window.
        #[test]
        fn real_usage_never_exceeds_the_bound(
            capacity in 20u64..400,
            steps in proptest::collection::vec(
                (0u64..40, 1u64..400, 0u64..=100, 0u64..3_000),
                1..120,
            ),
        ) {
            let start = Instant::now();
            let rate = 100u64; // per second
            let mut bucket =
                Bucket::new(Rate::per_second(rate).with_burst(capacity), Duration::ZERO, start);
            let mut now = start;
            let mut pending: Vec<(Instant, Hold, u64)> = Vec::new();
            let mut admitted: Vec<(Instant, u64)> = Vec::new();
            for (gap_ms, reserve, used_pct, settle_after_ms) in steps {
                now += Duration::from_millis(gap_ms);
                pending.sort_by_key(|(at, _, _)| *at);
                while let Some((at, hold, used)) = pending.first().copied() {
                    if at > now {
                        break;
                    }
                    bucket.settle(&hold, used, at.max(now));
                    pending.remove(0);
                }
                let reserve = reserve.min(capacity);
                if bucket.wait_for(0, reserve, now).is_zero() {
                    let hold = bucket.take(reserve, now);
                    let used = reserve * used_pct / 100;
                    admitted.push((now, used));
                    pending.push((now + Duration::from_millis(settle_after_ms), hold, used));
                }
            }
            for (i, (a, _)) in admitted.iter().enumerate() {
                let mut used = 0;
                for (b, u) in &admitted[i..] {
                    used += u;
                    let window = (*b - *a).as_secs_f64();
                    let bound = capacity as f64 + rate as f64 * window + 1e-6;
                    proptest::prop_assert!(
                        used as f64 <= bound,
                        "{used} used in {window}s, bound {bound}"
                    );
                }
            }
        }
    }
}
