//! Sliding windows of recent outcomes: the last N calls, or the last T seconds in buckets.

use std::time::Duration;

use tokio::time::Instant;

/// Failures, slow calls and calls counted over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u32,
    pub(crate) failures: u32,
    pub(crate) slow: u32,
}

impl Counts {
    fn add(&mut self, failure: bool, slow: bool) {
        self.calls += 1;
        self.failures += u32::from(failure);
        self.slow += u32::from(slow);
    }

    fn remove(&mut self, other: Counts) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
    }
}

/// Which window a ratio is computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Window {
    /// The last `n` calls.
    Count(u32),
    /// The last `duration`, counted in `buckets` slices (older slices drop off whole).
    Time {
        /// The window's length.
        duration: Duration,
        /// How many slices it is counted in (at least 1).
        buckets: u32,
    },
}

/// In a config file a window is a number of calls (`100`) or a duration (`"30s"`, in ten
/// slices).
#[cfg(feature = "serde")]
impl serde::Serialize for Window {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Window::Count(calls) => serializer.serialize_u32(*calls),
            Window::Time { duration, .. } => {
                crate::serde_forms::duration::serialize(duration, serializer)
            }
        }
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Form;
        impl serde::de::Visitor<'_> for Form {
            type Value = Window;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of calls (100) or a duration (\"30s\")")
            }

            fn visit_u64<E: serde::de::Error>(self, calls: u64) -> Result<Window, E> {
                u32::try_from(calls)
                    .map(Window::Count)
                    .map_err(|_| E::custom(format!("{calls} calls is too many a window")))
            }

            fn visit_i64<E: serde::de::Error>(self, calls: i64) -> Result<Window, E> {
                u64::try_from(calls)
                    .map_err(|_| E::custom("a window holds a positive number of calls"))
                    .and_then(|calls| self.visit_u64(calls))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Window, E> {
                crate::serde_forms::parse(text)
                    .map(Window::time)
                    .map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Form)
    }
}

impl Window {
    /// The last `duration`, in ten slices.
    pub const fn time(duration: Duration) -> Self {
        Window::Time {
            duration,
            buckets: 10,
        }
    }
}

/// The running counts of a [`Window`]; reading them is O(1) (subtract on evict).
#[derive(Debug)]
pub(crate) enum Tally {
    Count {
        ring: Vec<(bool, bool)>,
        next: usize,
        filled: usize,
        totals: Counts,
    },
    Time {
        slice: Duration,
        slices: Vec<Counts>,
        head: usize,
        head_start: Instant,
        totals: Counts,
    },
}

impl Tally {
    pub(crate) fn new(window: Window, now: Instant) -> Self {
        match window {
            Window::Count(n) => Tally::Count {
                ring: vec![(false, false); n.max(1) as usize],
                next: 0,
                filled: 0,
                totals: Counts::default(),
            },
            Window::Time { duration, buckets } => {
                let buckets = buckets.max(1);
                Tally::Time {
                    slice: (duration / buckets).max(Duration::from_millis(1)),
                    slices: vec![Counts::default(); buckets as usize],
                    head: 0,
                    head_start: now,
                    totals: Counts::default(),
                }
            }
        }
    }

    /// Whether this window needs the clock (count windows do not).
    pub(crate) fn needs_clock(&self) -> bool {
        matches!(self, Tally::Time { .. })
    }

    pub(crate) fn record(&mut self, failure: bool, slow: bool, now: Instant) {
        self.advance(now);
        match self {
            Tally::Count {
                ring,
                next,
                filled,
                totals,
            } => {
                if *filled == ring.len() {
                    let (old_failure, old_slow) = ring[*next];
                    let mut old = Counts::default();
                    old.add(old_failure, old_slow);
                    totals.remove(old);
                } else {
                    *filled += 1;
                }
                ring[*next] = (failure, slow);
                // A wrap, not a remainder: a division on every recorded call costs more.
                *next = if *next + 1 == ring.len() {
                    0
                } else {
                    *next + 1
                };
                totals.add(failure, slow);
            }
            Tally::Time {
                slices,
                head,
                totals,
                ..
            } => {
                slices[*head].add(failure, slow);
                totals.add(failure, slow);
            }
        }
    }

    fn advance(&mut self, now: Instant) {
        if let Tally::Time {
            slice,
            slices,
            head,
            head_start,
            totals,
        } = self
        {
            let mut steps = 0;
            while now.saturating_duration_since(*head_start) >= *slice && steps < slices.len() {
                *head = (*head + 1) % slices.len();
                totals.remove(slices[*head]);
                slices[*head] = Counts::default();
                *head_start += *slice;
                steps += 1;
            }
            if now.saturating_duration_since(*head_start) >= *slice {
                // Quiet for longer than the whole window: everything has been evicted already.
                *head_start = now;
            }
        }
    }

    /// The counts over the window at `now`.
    pub(crate) fn counts(&mut self, now: Instant) -> Counts {
        self.advance(now);
        match self {
            Tally::Count { totals, .. } | Tally::Time { totals, .. } => *totals,
        }
    }

    pub(crate) fn clear(&mut self, now: Instant) {
        match self {
            Tally::Count {
                next,
                filled,
                totals,
                ..
            } => {
                *next = 0;
                *filled = 0;
                *totals = Counts::default();
            }
            Tally::Time {
                slices,
                head,
                head_start,
                totals,
                ..
            } => {
                slices.iter_mut().for_each(|s| *s = Counts::default());
                *head = 0;
                *head_start = now;
                *totals = Counts::default();
            }
        }
    }
}
