//! The queue of one quota's waiters: priority lanes, weighted fair shares between tenants within
//! a lane, FIFO within a tenant.
//!
//! Only the head of the queue holds a timer, set for the instant its tokens are due; when it is
//! admitted it wakes the next head, which computes its own instant. Nobody polls in a loop.
//!
//! Which waiter is the head:
//! - **Lanes** ([`Priority`](super::Priority)): the highest lane with a waiter goes first, but a
//!   lower lane is never starved: while lower lanes wait, every admission from above earns them
//!   credit, and a lower lane with a whole admission's credit goes next, so lower lanes get at
//!   least their minimum share of the admissions ([`LimitConfig::low_lane_share`]).
//! - **Tenants** ([`Tenant`](super::Tenant)) within a lane share it by weight, by start-time fair
//!   queueing: each waiter is tagged with the virtual time its tenant's share reaches it (its
//!   tenant's last tag, or the lane's current virtual time if the tenant was idle, plus one
//!   admission divided by its weight), and the smallest tag goes first. A lone tenant gets every
//!   admission; an idle tenant's share goes to the others and is not saved up for later.
//! - Within one tenant (and without tenants) tags only grow: first come, first served.
//!
//! [`LimitConfig::low_lane_share`]: super::LimitConfig::low_lane_share

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::task::Waker;

use super::quota::Demand;

/// One admission's length in virtual time, for a tenant of weight 1.
const ONE: u64 = 1 << 20;

#[derive(Debug)]
struct Waiter {
    demand: Demand,
    lane: u8,
    waker: Option<Waker>,
}

/// One priority lane.
#[derive(Debug, Default)]
struct Lane {
    /// The waiters by (start tag, arrival), the smallest first.
    order: BTreeMap<(u64, u64), u64>,
    /// The lane's virtual time: the tag of the last waiter it admitted.
    virtual_time: u64,
    /// Each tenant's last finish tag.
    tenants: HashMap<Option<Arc<str>>, u64>,
    /// Admissions owed to this lane by the lanes above it.
    credit: f64,
    /// What its waiters claim, so a newcomer's wait counts them.
    queued: Demand,
}

#[derive(Debug)]
pub(crate) struct Queue {
    waiters: HashMap<u64, (Waiter, (u64, u64))>,
    /// The lanes, lowest first.
    lanes: BTreeMap<u8, Lane>,
    next_id: u64,
    /// Credit a lower lane earns per admission from above (`s / (1 - s)` for a share `s`).
    credit_per_admission: f64,
}

impl Default for Queue {
    fn default() -> Self {
        Queue::new(0.1)
    }
}

impl Queue {
    /// A queue whose lower lanes get at least `low_lane_share` of the admissions while they wait.
    pub(crate) fn new(low_lane_share: f64) -> Self {
        let share = low_lane_share.clamp(0.0, 0.99);
        Queue {
            waiters: HashMap::new(),
            lanes: BTreeMap::new(),
            next_id: 0,
            credit_per_admission: share / (1.0 - share),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.waiters.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// What waits ahead of a newcomer in `lane`: the waiters of that lane and the lanes above.
    pub(crate) fn ahead(&self, lane: u8) -> (u64, Demand) {
        self.lanes
            .range(lane..)
            .fold((0, Demand::default()), |(count, demand), (_, l)| {
                (count + l.order.len() as u64, demand.plus(l.queued))
            })
    }

    /// Adds a waiter of `demand` in `lane`, for `tenant` with `weight`; returns its id.
    pub(crate) fn push(
        &mut self,
        demand: Demand,
        lane: u8,
        tenant: Option<(Arc<str>, u32)>,
        waker: Waker,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let entry = self.lanes.entry(lane).or_default();
        let (tenant, weight) = match tenant {
            Some((name, weight)) => (Some(name), weight.max(1)),
            None => (None, 1),
        };
        let last = entry.tenants.get(&tenant).copied().unwrap_or(0);
        let start = last.max(entry.virtual_time);
        entry
            .tenants
            .insert(tenant, start + ONE / u64::from(weight));
        let key = (start, id);
        entry.order.insert(key, id);
        entry.queued = entry.queued.plus(demand);
        let waiter = Waiter {
            demand,
            lane,
            waker: Some(waker),
        };
        self.waiters.insert(id, (waiter, key));
        id
    }

    /// The waiter whose turn it is.
    pub(crate) fn head(&self) -> Option<u64> {
        let mut lanes = self.lanes.iter().rev().filter(|(_, l)| !l.order.is_empty());
        let (_, top) = lanes.next()?;
        // A lower lane owed a whole admission goes first: the highest such.
        let owed = lanes.find(|(_, l)| l.credit >= 1.0).map(|(_, l)| l);
        let lane = owed.unwrap_or(top);
        lane.order.values().next().copied()
    }

    /// Whether waiter `id` is the head.
    pub(crate) fn is_head(&self, id: u64) -> bool {
        self.head() == Some(id)
    }

    /// Whether waiter `id` is queued.
    pub(crate) fn contains(&self, id: u64) -> bool {
        self.waiters.contains_key(&id)
    }

    /// The head's demand.
    pub(crate) fn head_demand(&self) -> Option<Demand> {
        let id = self.head()?;
        self.waiters.get(&id).map(|(w, _)| w.demand)
    }

    /// Keeps `waker` as the one to wake for waiter `id`.
    pub(crate) fn set_waker(&mut self, id: u64, waker: &Waker) {
        if let Some((slot, _)) = self.waiters.get_mut(&id) {
            if !slot.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                slot.waker = Some(waker.clone());
            }
        }
    }

    /// Removes waiter `id` because it was admitted: its lane's virtual time moves to its tag,
    /// and the lanes below that waited earn credit (or this lane spends what it was owed).
    pub(crate) fn admit(&mut self, id: u64) {
        let Some((waiter, key)) = self.take(id) else {
            return;
        };
        let lane = waiter.lane;
        if let Some(entry) = self.lanes.get_mut(&lane) {
            entry.virtual_time = entry.virtual_time.max(key.0);
        }
        let top = self
            .lanes
            .iter()
            .rev()
            .find(|(_, l)| !l.order.is_empty())
            .map(|(lane, _)| *lane);
        let owed = self.lanes.get(&lane).is_some_and(|l| l.credit >= 1.0);
        if owed && top.is_some_and(|top| top > lane) {
            if let Some(entry) = self.lanes.get_mut(&lane) {
                entry.credit -= 1.0;
            }
            return;
        }
        let credit = self.credit_per_admission;
        for (_, below) in self.lanes.range_mut(..lane) {
            if below.order.is_empty() {
                // An idle lane's share is not saved up.
                below.credit = 0.0;
            } else {
                below.credit += credit;
            }
        }
    }

    /// Removes a waiter that left (cancelled or refused); returns whether it was the head.
    pub(crate) fn remove(&mut self, id: u64) -> bool {
        let was_head = self.is_head(id);
        self.take(id);
        was_head
    }

    fn take(&mut self, id: u64) -> Option<(Waiter, (u64, u64))> {
        let (waiter, key) = self.waiters.remove(&id)?;
        if let Some(entry) = self.lanes.get_mut(&waiter.lane) {
            entry.order.remove(&key);
            entry.queued = entry.queued.minus(waiter.demand);
            if entry.order.is_empty() {
                // Idle tenants' tags would only grow stale: a lane at rest starts afresh.
                entry.tenants.clear();
                entry.credit = 0.0;
            }
        }
        Some((waiter, key))
    }

    /// Wakes the head, whose turn it is to compute its instant.
    pub(crate) fn wake_head(&mut self) {
        let Some(id) = self.head() else { return };
        if let Some(waker) = self.waiters.get_mut(&id).and_then(|(w, _)| w.waker.take()) {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(queue: &mut Queue, lane: u8, tenant: Option<(&str, u32)>) -> u64 {
        let tenant = tenant.map(|(name, weight)| (Arc::from(name), weight));
        queue.push(Demand::ONE, lane, tenant, Waker::noop().clone())
    }

    /// Admits the head `n` times; returns the ids in order.
    fn drain(queue: &mut Queue, n: usize) -> Vec<u64> {
        (0..n)
            .map_while(|_| {
                let head = queue.head()?;
                queue.admit(head);
                Some(head)
            })
            .collect()
    }

    #[test]
    fn one_lane_without_tenants_is_first_come_first_served() {
        let mut queue = Queue::default();
        let ids: Vec<u64> = (0..5).map(|_| push(&mut queue, 0, None)).collect();
        assert_eq!(drain(&mut queue, 5), ids);
    }

    #[test]
    fn a_higher_lane_goes_first_and_a_lower_one_keeps_its_share() {
        let mut queue = Queue::new(0.2);
        let low: Vec<u64> = (0..100).map(|_| push(&mut queue, 0, None)).collect();
        let high: Vec<u64> = (0..100).map(|_| push(&mut queue, 9, None)).collect();
        let order = drain(&mut queue, 50);
        assert_eq!(order[0], high[0], "the high lane first");
        let lows = order.iter().filter(|id| low.contains(id)).count();
        assert_eq!(lows, 10, "a fifth of the admissions: {order:?}");
        assert!(
            order
                .iter()
                .filter(|id| low.contains(id))
                .copied()
                .eq(low[..lows].iter().copied()),
            "in its own order"
        );
    }

    #[test]
    fn tenants_share_a_lane_by_weight() {
        let mut queue = Queue::default();
        let a: Vec<u64> = (0..300)
            .map(|_| push(&mut queue, 0, Some(("a", 3))))
            .collect();
        let _b: Vec<u64> = (0..300)
            .map(|_| push(&mut queue, 0, Some(("b", 1))))
            .collect();
        let order = drain(&mut queue, 200);
        let share = order.iter().filter(|id| a.contains(id)).count();
        assert!((148..=152).contains(&share), "3:1 is 150 of 200: {share}");
    }

    #[test]
    fn an_idle_tenant_saves_no_share() {
        let mut queue = Queue::default();
        for _ in 0..10 {
            push(&mut queue, 0, Some(("busy", 1)));
        }
        drain(&mut queue, 5);
        // A newcomer after the busy tenant's five admissions does not get five in a row.
        let late: Vec<u64> = (0..10)
            .map(|_| push(&mut queue, 0, Some(("late", 1))))
            .collect();
        let order = drain(&mut queue, 6);
        let lates = order.iter().filter(|id| late.contains(id)).count();
        assert_eq!(lates, 3, "alternating from now on: {order:?}");
    }

    #[test]
    fn a_cancelled_head_hands_its_turn_on() {
        let mut queue = Queue::default();
        let first = push(&mut queue, 0, None);
        let second = push(&mut queue, 0, None);
        assert!(queue.remove(first));
        assert_eq!(queue.head(), Some(second));
        assert!(!queue.remove(99));
        assert_eq!(queue.ahead(0).0, 1);
    }
}
