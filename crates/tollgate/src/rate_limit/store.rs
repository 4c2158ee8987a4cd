//! [`Store`]: a quota kept outside the process, shared by every process that uses the same API
//! key (`tollgate-redis` implements it on Redis).
//!
//! With a store, the buckets live in the store: the head of each process's queue asks it to
//! check every limit and take from all of them in one atomic step ([`Store::acquire`]). The
//! queue, its order and the concurrency bound stay in the process. What the provider says
//! travels through the store too: a 429 with a hint pauses the quota for every process
//! ([`Store::pause`]), and a low `remaining` header lowers the shared bucket
//! ([`Store::lower`]). The input, output and daily token charges it holds are settled there
//! too ([`Store::settle`], without waiting for the answer), with the same rule as in process:
//! what is unused and still ahead on the schedule comes back.
//!
//! When the store cannot be reached, [`OnStoreError`] decides: fail open onto local buckets
//! sized to this process's fair share, or fail closed with
//! [`Refusal::StoreUnavailable`](super::Refusal::StoreUnavailable). While open,
//! one request per probe interval tries the store again, and the first answer switches back.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::limits::Rate;
use crate::classify::LimitKind;
use crate::BoxError;

/// The future a [`Store`] returns: a network round trip, boxed once per call (noise next to
/// the round trip itself).
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// A quota kept outside the process. Implementations must make [`acquire`](Store::acquire)
/// atomic across every process that shares the store.
///
/// ```
/// use std::time::Duration;
/// use tollgate::classify::LimitKind;
/// use tollgate::rate_limit::{Charge, Grant, Rate, Store, StoreFuture};
///
/// /// A store that refuses everything for a second (a test double).
/// #[derive(Debug)]
/// struct AlwaysWait;
///
/// impl Store for AlwaysWait {
///     fn acquire(&self, _: Charge) -> StoreFuture<Grant> {
///         Box::pin(async { Ok(Grant::Wait { wait: Duration::from_secs(1), which: LimitKind::Requests }) })
///     }
///     fn pause(&self, _: &str, _: Duration) -> StoreFuture<()> {
///         Box::pin(async { Ok(()) })
///     }
///     fn lower(&self, _: &str, _: LimitKind, _: Rate, _: u64) -> StoreFuture<()> {
///         Box::pin(async { Ok(()) })
///     }
/// }
/// # let _ = AlwaysWait;
/// ```
pub trait Store: fmt::Debug + Send + Sync + 'static {
    /// Checks every limit of `charge` and, only when all of them allow, takes from all of them;
    /// otherwise takes nothing and says how long until they would.
    fn acquire(&self, charge: Charge) -> StoreFuture<Grant>;

    /// Pauses every admission of `quota` for at least `duration` (never shortens a pause).
    fn pause(&self, quota: &str, duration: Duration) -> StoreFuture<()>;

    /// Lowers what `quota`'s bucket for `which` holds to `remaining` (never raises it).
    fn lower(&self, quota: &str, which: LimitKind, rate: Rate, remaining: u64) -> StoreFuture<()>;

    /// Corrects a charge that [`acquire`](Store::acquire) held ([`Grant::Held`]) to the `used`
    /// amount the answer reported: gives back what is unused and still ahead on the limit's
    /// schedule, or charges the excess. The default does nothing: the charge stands.
    fn settle(
        &self,
        quota: &str,
        rate: Option<Rate>,
        hold: StoreHold,
        used: u64,
    ) -> StoreFuture<()> {
        let _ = (quota, rate, hold, used);
        Box::pin(async { Ok(()) })
    }
}

/// A charge a [`Store`] took and held for settling, as [`Store::acquire`] returned it.
///
/// ```
/// use tollgate::classify::LimitKind;
/// use tollgate::rate_limit::StoreHold;
///
/// let hold = StoreHold::new(LimitKind::OutputTokens, 400, 1_700_000_000_000_000, 0);
/// assert_eq!(hold.amount, 400);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreHold {
    /// The limit it was taken from ([`LimitKind::InputTokens`], [`LimitKind::OutputTokens`] or
    /// [`LimitKind::TokensPerDay`]).
    pub which: LimitKind,
    /// How much was taken.
    pub amount: u64,
    /// Where the charge ended on the bucket's schedule (the store's clock), or the day it was
    /// counted in for a daily limit.
    pub mark: u64,
    /// What refunds had moved the bucket's schedule when it was taken.
    pub refunded: u64,
}

impl StoreHold {
    /// A hold of `amount` on `which` (the store builds them).
    pub fn new(which: LimitKind, amount: u64, mark: u64, refunded: u64) -> Self {
        StoreHold {
            which,
            amount,
            mark,
            refunded,
        }
    }
}

/// One admission asked of a [`Store`]: the quota, and each limit with the request's cost.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Charge {
    /// The quota's name (`"default"`, or the name of its key).
    pub quota: Arc<str>,
    /// The request limit and the cost (1), if one is set.
    pub requests: Option<Rate>,
    /// The combined token limit and the request's cost in tokens, if one is set.
    pub tokens: Option<(Rate, u64)>,
    /// The input token limit and the request's prompt estimate, if one is set.
    pub input_tokens: Option<(Rate, u64)>,
    /// The output token limit and the request's `max_tokens`, if one is set.
    pub output_tokens: Option<(Rate, u64)>,
    /// The daily request allowance, if one is set (the request costs 1).
    pub requests_per_day: Option<u64>,
    /// The daily token allowance and the request's charge against it, if one is set.
    pub tokens_per_day: Option<(u64, u64)>,
    /// When the day starts, after midnight UTC.
    pub day_starts_at: Duration,
    /// Whether the input, output and daily token charges are held, to be settled with
    /// [`Store::settle`] when the answer reports its usage.
    pub held: bool,
    /// Burst held back for timing noise, as in process
    /// ([`LimitConfig::headroom`](super::LimitConfig::headroom)).
    pub headroom: Duration,
}

impl Charge {
    /// An admission of `quota` against these limits (the limiter builds them; public for a
    /// store's own tests).
    pub fn new(
        quota: impl Into<Arc<str>>,
        requests: Option<Rate>,
        tokens: Option<(Rate, u64)>,
        headroom: Duration,
    ) -> Self {
        Charge {
            quota: quota.into(),
            requests,
            tokens,
            input_tokens: None,
            output_tokens: None,
            requests_per_day: None,
            tokens_per_day: None,
            day_starts_at: Duration::ZERO,
            held: false,
            headroom,
        }
    }
}

/// A store's answer to [`Store::acquire`]. A wait on a daily limit
/// ([`LimitKind::is_daily`]) is the time until it resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Grant {
    /// Every limit allowed: the request was charged.
    Admitted,
    /// Every limit allowed: the request was charged, and these charges are held for
    /// [`Store::settle`] (at most three: input, output and daily tokens).
    Held([Option<StoreHold>; 3]),
    /// Nothing was charged; every limit allows in `wait` at the earliest.
    Wait {
        /// How long until the request could be admitted.
        wait: Duration,
        /// The limit that holds it back.
        which: LimitKind,
    },
}

/// The store could not be asked (unreachable, timed out, refused the command).
#[derive(Debug, Clone)]
pub struct StoreError(Arc<BoxError>);

impl StoreError {
    /// Wraps the store client's error.
    pub fn new(error: impl Into<BoxError>) -> Self {
        StoreError(Arc::new(error.into()))
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate-limit store unavailable: {}", self.0)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&**self.0)
    }
}

/// What the limiter does while its [`Store`] cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnStoreError {
    /// Keep sending, through local buckets holding this process's fair share of each limit
    /// (the limit divided by `processes`).
    FailOpen {
        /// How many processes share the quota.
        processes: u32,
    },
    /// Refuse every request with
    /// [`Refusal::StoreUnavailable`](super::Refusal::StoreUnavailable).
    FailClosed,
}

/// How a key names its quota in a [`Store`] (implemented for strings and integers).
///
/// ```
/// use tollgate::rate_limit::QuotaName;
/// assert_eq!("api.openai.com".to_string().quota_name(), "api.openai.com");
/// assert_eq!(42u64.quota_name(), "42");
/// ```
pub trait QuotaName {
    /// The name, unique among the keys of one limiter.
    fn quota_name(&self) -> Cow<'_, str>;
}

impl QuotaName for () {
    fn quota_name(&self) -> Cow<'_, str> {
        Cow::Borrowed("default")
    }
}

impl QuotaName for String {
    fn quota_name(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl QuotaName for &'static str {
    fn quota_name(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl QuotaName for Arc<str> {
    fn quota_name(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

macro_rules! quota_name_by_display {
    ($($t:ty),*) => {$(
        impl QuotaName for $t {
            fn quota_name(&self) -> Cow<'_, str> {
                Cow::Owned(self.to_string())
            }
        }
    )*};
}

quota_name_by_display!(u8, u16, u32, u64, usize, i32, i64);

/// The name of a key whose type is known only where the store was set.
pub(crate) fn name_of<T: QuotaName + 'static>(key: &dyn std::any::Any) -> Option<String> {
    key.downcast_ref::<T>()
        .map(|key| key.quota_name().into_owned())
}
