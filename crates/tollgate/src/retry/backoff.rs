//! Delays between attempts: exponential growth and the four jitter modes.

use std::time::Duration;

use rand::Rng;

/// How a delay is randomised, so that many clients failing together do not retry together.
///
/// The variants are those of AWS's "Exponential Backoff and Jitter". With `exp` the un-jittered
/// delay `min(cap, base * factor^n)` for the n-th retry:
///
/// | mode | delay |
/// |---|---|
/// | `None` | `exp` |
/// | `Full` | uniform in `[0, exp]` |
/// | `Equal` | `exp / 2` plus uniform in `[0, exp / 2]` |
/// | `Decorrelated` | uniform in `[base, min(cap, 3 * previous delay)]` |
///
/// ```
/// use tollgate::retry::Jitter;
/// assert_eq!(Jitter::default(), Jitter::Full);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum Jitter {
    /// No randomness: every client retries at the same instants (only for tests and demos).
    None,
    /// Uniform in `[0, exp]`: the widest spread and the least total work (the default).
    #[default]
    Full,
    /// Half fixed, half random: never retries almost at once.
    Equal,
    /// Each delay drawn from `[base, 3 * previous]`, capped.
    Decorrelated,
}

/// The exponential schedule: base, growth factor, cap and jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Backoff {
    pub(crate) base: Duration,
    pub(crate) factor: f64,
    pub(crate) cap: Duration,
    pub(crate) jitter: Jitter,
}

impl Backoff {
    /// The un-jittered delay before retry number `retry` (0 for the first retry).
    pub(crate) fn exponential(&self, retry: u32) -> Duration {
        let secs = self.base.as_secs_f64() * self.factor.powi(retry.min(1_000) as i32);
        let cap = self.cap.as_secs_f64();
        if !secs.is_finite() || secs >= cap {
            return self.cap;
        }
        Duration::from_secs_f64(secs)
    }

    /// The delay before retry number `retry`, given the previous delay (for `Decorrelated`).
    pub(crate) fn delay(
        &self,
        retry: u32,
        previous: Duration,
        rng: &mut (impl Rng + ?Sized),
    ) -> Duration {
        let exp = self.exponential(retry);
        match self.jitter {
            Jitter::None => exp,
            Jitter::Full => uniform(rng, Duration::ZERO, exp),
            Jitter::Equal => exp / 2 + uniform(rng, Duration::ZERO, exp / 2),
            Jitter::Decorrelated => {
                let previous = previous.max(self.base);
                let upper = previous.saturating_mul(3).min(self.cap);
                uniform(rng, self.base.min(upper), upper)
            }
        }
    }
}

fn uniform(rng: &mut (impl Rng + ?Sized), low: Duration, high: Duration) -> Duration {
    if high <= low {
        return low;
    }
    let span = (high - low).as_nanos().min(u128::from(u64::MAX)) as u64;
    low + Duration::from_nanos(rng.random_range(0..=span))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn backoff(jitter: Jitter) -> Backoff {
        Backoff {
            base: Duration::from_millis(500),
            factor: 2.0,
            cap: Duration::from_secs(60),
            jitter,
        }
    }

    #[test]
    fn exponential_grows_by_the_factor_until_the_cap() {
        let b = backoff(Jitter::None);
        let delays: Vec<u64> = (0..10)
            .map(|n| b.exponential(n).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]
        );
        assert_eq!(b.exponential(u32::MAX), Duration::from_secs(60));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn every_jitter_mode_stays_within_its_bounds(seed: u64, retries in 1u32..12) {
            let mut rng = SmallRng::seed_from_u64(seed);
            for jitter in [Jitter::None, Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
                let b = backoff(jitter);
                let mut previous = Duration::ZERO;
                for n in 0..retries {
                    let exp = b.exponential(n);
                    let d = b.delay(n, previous, &mut rng);
                    match jitter {
                        Jitter::None => prop_assert_eq!(d, exp),
                        Jitter::Full => prop_assert!(d <= exp),
                        Jitter::Equal => prop_assert!(d >= exp / 2 && d <= exp),
                        Jitter::Decorrelated => {
                            let upper = previous.max(b.base).saturating_mul(3).min(b.cap);
                            prop_assert!(d >= b.base && d <= upper, "{:?} not in [{:?}, {:?}]", d, b.base, upper);
                        }
                    }
                    prop_assert!(d <= b.cap);
                    previous = d;
                }
            }
        }

        #[test]
        fn the_same_seed_gives_the_same_delays(seed: u64) {
            let b = backoff(Jitter::Full);
            let draw = |seed| {
                let mut rng = SmallRng::seed_from_u64(seed);
                (0..8).map(|n| b.delay(n, Duration::ZERO, &mut rng)).collect::<Vec<_>>()
            };
            prop_assert_eq!(draw(seed), draw(seed));
        }
    }

    #[test]
    fn full_jitter_uses_the_whole_range() {
        let b = backoff(Jitter::Full);
        let mut rng = SmallRng::seed_from_u64(1);
        let draws: Vec<Duration> = (0..1000)
            .map(|_| b.delay(3, Duration::ZERO, &mut rng))
            .collect();
        let exp = b.exponential(3);
        assert!(draws.iter().any(|d| *d < exp / 10));
        assert!(draws.iter().any(|d| *d > exp * 9 / 10));
    }
}
