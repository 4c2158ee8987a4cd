//! The mock's own token bucket, refilled continuously, as providers enforce limits.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    capacity: f64,
    per_sec: f64,
    level: f64,
    updated: Instant,
}

impl Bucket {
    pub(crate) fn new(capacity: u32, per_minute: u32, now: Instant) -> Self {
        Bucket {
            capacity: f64::from(capacity),
            per_sec: f64::from(per_minute) / 60.0,
            level: f64::from(capacity),
            updated: now,
        }
    }

    pub(crate) fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * self.per_sec).min(self.capacity);
        self.updated = now;
    }

    /// The limit per minute, as providers report it in `x-ratelimit-limit-*`.
    pub(crate) fn per_minute(&self) -> u64 {
        (self.per_sec * 60.0).round() as u64
    }

    pub(crate) fn remaining(&self) -> u64 {
        self.level.max(0.0).floor() as u64
    }

    /// How long until `cost` is available (zero when it is now).
    pub(crate) fn wait_for(&self, cost: f64) -> Duration {
        // A hair of tolerance so that refills summed in floating point admit on the exact tick.
        let missing = cost - self.level;
        if missing <= 1e-9 || self.per_sec <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(missing / self.per_sec)
    }

    /// How long until the bucket is full again.
    pub(crate) fn time_to_full(&self) -> Duration {
        self.wait_for(self.capacity)
    }

    pub(crate) fn take(&mut self, cost: f64) {
        self.level -= cost;
    }

    pub(crate) fn fits(&self, cost: f64) -> bool {
        cost <= self.capacity
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.capacity as u64
    }

    /// Gives `amount` back (a reservation's unused part), never past full.
    pub(crate) fn give_back(&mut self, amount: f64) {
        self.level = (self.level + amount).min(self.capacity);
    }
}
