//! Drawing one fault (or none) per request from the seeded generator.

use rand::Rng;

use crate::config::Faults;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    ServerError(u16),
    Overloaded,
    RateLimited { hint: bool },
    Reset,
    Hang,
    MalformedHeaders,
}

/// Draws the same number of values whatever the outcome, so one request's fault does not shift
/// the draws of the requests after it.
pub(crate) fn draw_fault(rng: &mut impl Rng, faults: &Faults) -> Option<Fault> {
    let roll: f64 = rng.random();
    let pick: u32 = rng.random();
    let code: u32 = rng.random();
    if roll >= faults.rate {
        return None;
    }
    let mix = faults.mix;
    let weighted = [
        (
            mix.server_error,
            Fault::ServerError([500, 502, 503, 504][(code % 4) as usize]),
        ),
        (mix.overloaded, Fault::Overloaded),
        (
            mix.rate_limited_with_hint,
            Fault::RateLimited { hint: true },
        ),
        (mix.rate_limited_bare, Fault::RateLimited { hint: false }),
        (mix.reset, Fault::Reset),
        (mix.hang, Fault::Hang),
        (mix.malformed_headers, Fault::MalformedHeaders),
    ];
    let total: u64 = weighted.iter().map(|(w, _)| u64::from(*w)).sum();
    if total == 0 {
        return None;
    }
    let mut point = u64::from(pick) % total;
    for (weight, fault) in weighted {
        if point < u64::from(weight) {
            return Some(fault);
        }
        point -= u64::from(weight);
    }
    None
}
