//! [`CircuitOpen`]: the typed rejection of a call while the circuit is open.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::classify::{rejected, Classification};

/// Why the circuit refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The circuit is open: the provider failed too often.
    Open,
    /// The circuit is half-open and its probe calls are already out.
    ProbesBusy,
    /// An operator isolated the circuit; it stays open until reset.
    Isolated,
}

/// The circuit breaker refused the call without sending it: the provider is considered down.
///
/// ```
/// use std::time::Duration;
/// use tollgate::circuit_breaker::{CircuitOpen, Refusal};
///
/// let error = CircuitOpen::new(Refusal::Open, Some("openai".into()), Duration::from_secs(12), Some(Duration::from_secs(18)));
/// assert_eq!(error.to_string(), "circuit `openai` is open (opened 12.0s ago); it will probe in 18.0s");
/// assert_eq!(error.retry_after(), Some(Duration::from_secs(18)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitOpen {
    refusal: Refusal,
    name: Option<Arc<str>>,
    open_for: Duration,
    retry_after: Option<Duration>,
    verdict: Classification,
}

impl CircuitOpen {
    /// Builds the rejection (the layer does this; public for tests and adapters).
    pub fn new(
        refusal: Refusal,
        name: Option<Arc<str>>,
        open_for: Duration,
        retry_after: Option<Duration>,
    ) -> Self {
        CircuitOpen {
            refusal,
            name,
            open_for,
            retry_after,
            verdict: rejected(retry_after),
        }
    }

    /// Why the call was refused.
    pub fn refusal(&self) -> Refusal {
        self.refusal
    }

    /// The breaker's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// How long the circuit had been open when it refused the call.
    pub fn open_for(&self) -> Duration {
        self.open_for
    }

    /// How long until the circuit lets a probe through (`None` when isolated: only a reset
    /// closes it).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "circuit `{name}` ")?,
            None => f.write_str("circuit ")?,
        }
        let ago = self.open_for.as_secs_f64();
        match (self.refusal, self.retry_after) {
            (Refusal::Isolated, _) => write!(
                f,
                "is isolated (open for {ago:.1}s) until an operator resets it"
            ),
            (Refusal::ProbesBusy, _) => write!(
                f,
                "is half-open and its probe calls are out; try again shortly"
            ),
            (Refusal::Open, Some(wait)) => write!(
                f,
                "is open (opened {ago:.1}s ago); it will probe in {:.1}s",
                wait.as_secs_f64()
            ),
            (Refusal::Open, None) => write!(f, "is open (opened {ago:.1}s ago)"),
        }
    }
}

/// The source is the verdict: a local rejection, retryable after the break.
impl std::error::Error for CircuitOpen {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.verdict)
    }
}
