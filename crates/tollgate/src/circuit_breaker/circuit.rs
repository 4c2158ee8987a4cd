//! One circuit's state machine: closed, open, half-open, isolated.
//!
//! A closed circuit admits calls with one atomic load (no lock); outcomes take a short lock to
//! update the window. Open and half-open circuits decide under the lock. The state word also
//! carries a generation, bumped on every transition, so an outcome from a call admitted before a
//! transition never counts against the new state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::config::Outcome;
use super::error::{CircuitOpen, Refusal};
use super::settings::Settings;
use super::state::{BreakerState, StateChange};
use super::window::Tally;

const CLOSED: u64 = 0;

/// Proof of admission, handed back with the outcome.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    generation: u64,
    probe: bool,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open {
        opened: Instant,
        until: Instant,
    },
    HalfOpen {
        opened: Instant,
        admitted: u32,
        succeeded: u32,
    },
    Isolated {
        since: Instant,
    },
}

impl Phase {
    fn state(&self) -> BreakerState {
        match self {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
            Phase::Isolated { .. } => BreakerState::Isolated,
        }
    }
}

/// What a circuit looks like right now, from
/// [`CircuitBreakerHandle::snapshot`](super::CircuitBreakerHandle::snapshot): its state and its
/// counts since it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The state (an elapsed break shows as half-open: what the next call finds).
    pub state: BreakerState,
    /// Outcomes recorded as successes.
    pub successes: u64,
    /// Outcomes recorded as failures.
    pub failures: u64,
    /// Calls refused while open, half-open or isolated.
    pub rejected: u64,
    /// Times the circuit opened.
    pub trips: u64,
}

/// The counts a [`Snapshot`] reports.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    successes: u64,
    failures: u64,
    rejected: u64,
    trips: u64,
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    tally: Tally,
    consecutive: u32,
    trips_in_row: u32,
    counts: Counts,
    /// A fixed instant passed where the clock is not needed (count windows).
    clock_origin: Instant,
}

#[derive(Debug)]
pub(crate) struct Circuit {
    pub(crate) settings: Arc<Settings>,
    /// `generation << 2 | state`, with state 0 for closed: the lock-free fast path.
    word: AtomicU64,
    inner: Mutex<Inner>,
}

impl Circuit {
    pub(crate) fn new(settings: Arc<Settings>, now: Instant) -> Self {
        let window = settings.config.window;
        Circuit {
            word: AtomicU64::new(CLOSED),
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                tally: Tally::new(window, now),
                consecutive: 0,
                trips_in_row: 0,
                counts: Counts::default(),
                clock_origin: now,
            }),
            settings,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a call, or refuses it with a typed error.
    pub(crate) fn admit(&self) -> Result<Ticket, CircuitOpen> {
        let word = self.word.load(Ordering::Acquire);
        if word & 3 == CLOSED {
            return Ok(Ticket {
                generation: word >> 2,
                probe: false,
            });
        }
        let now = Instant::now();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut change = None;
        let probes = self.settings.config.probes;
        let result = match inner.phase {
            Phase::Closed => Ok(self.ticket(false)),
            Phase::Open { opened, until } if now >= until => {
                let half_open = Phase::HalfOpen {
                    opened,
                    admitted: 1,
                    succeeded: 0,
                };
                change = Some(self.transition(inner, half_open));
                Ok(self.ticket(true))
            }
            Phase::Open { opened, until } => {
                inner.counts.rejected += 1;
                Err(self.refusal(Refusal::Open, now - opened, Some(until - now)))
            }
            Phase::HalfOpen {
                opened,
                admitted,
                succeeded,
            } if admitted < probes => {
                inner.phase = Phase::HalfOpen {
                    opened,
                    admitted: admitted + 1,
                    succeeded,
                };
                Ok(self.ticket(true))
            }
            Phase::HalfOpen { opened, .. } => {
                inner.counts.rejected += 1;
                // The probes' answers are due soon; a short wait is the honest hint.
                Err(self.refusal(
                    Refusal::ProbesBusy,
                    now - opened,
                    Some(Duration::from_secs(1)),
                ))
            }
            Phase::Isolated { since } => {
                inner.counts.rejected += 1;
                Err(self.refusal(Refusal::Isolated, now - since, None))
            }
        };
        drop(guard);
        self.announce(change);
        result
    }

    fn ticket(&self, probe: bool) -> Ticket {
        Ticket {
            generation: self.word.load(Ordering::Acquire) >> 2,
            probe,
        }
    }

    fn refusal(
        &self,
        refusal: Refusal,
        open_for: Duration,
        retry_after: Option<Duration>,
    ) -> CircuitOpen {
        CircuitOpen::new(refusal, self.settings.name.clone(), open_for, retry_after)
    }

    /// Records a call's outcome (`slow`: it took longer than the slow-call threshold).
    pub(crate) fn record(&self, ticket: Ticket, outcome: Outcome, slow: bool) {
        let mut guard = self.lock();
        // Count windows and closed-state bookkeeping need no clock; read it only when used.
        let now = if guard.tally.needs_clock() || ticket.probe {
            Instant::now()
        } else {
            guard.clock_origin
        };
        if self.word.load(Ordering::Acquire) >> 2 != ticket.generation {
            return; // Admitted before a transition: it says nothing about the current state.
        }
        let inner = &mut *guard;
        let mut change = None;
        match (inner.phase, ticket.probe) {
            (Phase::Closed, false) => {
                match outcome {
                    Outcome::Ignored => return,
                    Outcome::Success => {
                        inner.counts.successes += 1;
                        inner.consecutive = 0;
                    }
                    Outcome::Failure => {
                        inner.counts.failures += 1;
                        inner.consecutive += 1;
                    }
                }
                inner.tally.record(outcome == Outcome::Failure, slow, now);
                // Even a success can trip: it may be the call that reaches the minimum count.
                if self.should_trip(inner, now) {
                    change = Some(self.open(inner));
                }
            }
            (
                Phase::HalfOpen {
                    opened,
                    admitted,
                    succeeded,
                },
                true,
            ) => match outcome {
                // A probe that ended without an answer frees its slot for another.
                Outcome::Ignored => {
                    inner.phase = Phase::HalfOpen {
                        opened,
                        admitted: admitted.saturating_sub(1),
                        succeeded,
                    };
                }
                Outcome::Failure => {
                    inner.counts.failures += 1;
                    change = Some(self.open(inner));
                }
                Outcome::Success => {
                    inner.counts.successes += 1;
                    let succeeded = succeeded + 1;
                    if succeeded >= self.settings.config.probes {
                        inner.trips_in_row = 0;
                        inner.consecutive = 0;
                        inner.tally.clear(now);
                        change = Some(self.transition(inner, Phase::Closed));
                    } else {
                        inner.phase = Phase::HalfOpen {
                            opened,
                            admitted,
                            succeeded,
                        };
                    }
                }
            },
            _ => {}
        }
        drop(guard);
        self.announce(change);
    }

    fn should_trip(&self, inner: &mut Inner, now: Instant) -> bool {
        let counts = inner.tally.counts(now);
        let config = &self.settings.config;
        let min_calls = config.min_calls;
        let tripped = match config.consecutive_failures {
            Some(n) => inner.consecutive >= n,
            None => {
                counts.calls >= min_calls
                    && f64::from(counts.failures) >= config.failure_ratio * f64::from(counts.calls)
            }
        };
        let slow = config.slow_calls.is_some_and(|slow| {
            counts.calls >= min_calls
                && f64::from(counts.slow) >= slow.ratio * f64::from(counts.calls)
        });
        tripped || slow
    }

    fn open(&self, inner: &mut Inner) -> StateChange {
        let now = Instant::now();
        inner.trips_in_row += 1;
        inner.counts.trips += 1;
        let until = now + self.settings.break_for(inner.trips_in_row);
        self.transition(inner, Phase::Open { opened: now, until })
    }

    fn transition(&self, inner: &mut Inner, to: Phase) -> StateChange {
        let from = inner.phase.state();
        let state = to.state();
        inner.phase = to;
        let code = match state {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
            BreakerState::Isolated => 3,
        };
        let generation = (self.word.load(Ordering::Acquire) >> 2) + 1;
        self.word.store(generation << 2 | code, Ordering::Release);
        StateChange {
            name: self.settings.name.clone(),
            from,
            to: state,
        }
    }

    /// Tells the logs and the listener, outside the lock.
    fn announce(&self, change: Option<StateChange>) {
        let Some(change) = change else { return };
        let code = match change.to {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
            BreakerState::Isolated => 3,
        };
        crate::telemetry::breaker_transition(&change.name, change.to.as_str(), code);
        let name = change.name.as_deref().unwrap_or("");
        match change.to {
            BreakerState::Open | BreakerState::Isolated => {
                tracing::warn!(
                    breaker = name,
                    from = change.from.as_str(),
                    to = change.to.as_str(),
                    "circuit opened"
                )
            }
            _ => tracing::info!(
                breaker = name,
                from = change.from.as_str(),
                to = change.to.as_str(),
                "circuit changed state"
            ),
        }
        if let Some(listener) = &self.settings.listener {
            listener(&change);
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        let inner = self.lock();
        match inner.phase {
            // An elapsed break is reported as what the next call will find.
            Phase::Open { until, .. } if Instant::now() >= until => BreakerState::HalfOpen,
            ref phase => phase.state(),
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let counts = self.lock().counts;
        Snapshot {
            state: self.state(),
            successes: counts.successes,
            failures: counts.failures,
            rejected: counts.rejected,
            trips: counts.trips,
        }
    }

    pub(crate) fn isolate(&self) {
        let mut inner = self.lock();
        let change = self.transition(
            &mut inner,
            Phase::Isolated {
                since: Instant::now(),
            },
        );
        drop(inner);
        self.announce(Some(change));
    }

    pub(crate) fn reset(&self) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.tally.clear(now);
        inner.consecutive = 0;
        inner.trips_in_row = 0;
        let change = self.transition(&mut inner, Phase::Closed);
        drop(inner);
        self.announce(Some(change));
    }

    /// Closed with no recent failure: dropping it loses nothing worth keeping.
    pub(crate) fn is_idle(&self) -> bool {
        let mut inner = self.lock();
        let now = Instant::now();
        matches!(inner.phase, Phase::Closed)
            && inner.consecutive == 0
            && inner.tally.counts(now).failures == 0
    }
}
