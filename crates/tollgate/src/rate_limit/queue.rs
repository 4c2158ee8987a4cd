//! The FIFO queue of one quota's waiters: their order, costs and wakers.
//!
//! Only the head of the queue holds a timer, set for the instant its tokens are due; when it is
//! admitted it wakes the next waiter, which computes its own instant. Nobody polls in a loop.

use std::collections::VecDeque;
use std::task::Waker;

use super::quota::Demand;

#[derive(Debug)]
struct Waiter {
    id: u64,
    demand: Demand,
    waker: Option<Waker>,
}

#[derive(Debug, Default)]
pub(crate) struct Queue {
    waiters: VecDeque<Waiter>,
    /// The tokens the waiters claim, so a newcomer's wait counts them.
    queued: Demand,
    next_id: u64,
}

impl Queue {
    pub(crate) fn len(&self) -> usize {
        self.waiters.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// What waits ahead of a newcomer: requests, and their tokens.
    pub(crate) fn ahead(&self) -> (u64, Demand) {
        (self.waiters.len() as u64, self.queued)
    }

    /// Adds a waiter of `demand` at the back; returns its id.
    pub(crate) fn push(&mut self, demand: Demand, waker: Waker) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.queued = self.queued.plus(demand);
        self.waiters.push_back(Waiter {
            id,
            demand,
            waker: Some(waker),
        });
        id
    }

    /// Waiter `id`'s place (0 for the head), if it is queued.
    pub(crate) fn position(&self, id: u64) -> Option<usize> {
        self.waiters.iter().position(|w| w.id == id)
    }

    /// The head's demand.
    pub(crate) fn head_demand(&self) -> Option<Demand> {
        self.waiters.front().map(|w| w.demand)
    }

    /// Keeps `waker` as the one to wake for the waiter at `position`.
    pub(crate) fn set_waker(&mut self, position: usize, waker: &Waker) {
        if let Some(slot) = self.waiters.get_mut(position) {
            if !slot.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                slot.waker = Some(waker.clone());
            }
        }
    }

    /// Removes waiter `id`; returns the place it had.
    pub(crate) fn remove(&mut self, id: u64) -> Option<usize> {
        let position = self.position(id)?;
        let waiter = self.waiters.remove(position)?;
        self.queued = self.queued.minus(waiter.demand);
        Some(position)
    }

    /// Wakes the head, whose turn it is to compute its instant.
    pub(crate) fn wake_head(&mut self) {
        if let Some(waker) = self.waiters.front_mut().and_then(|w| w.waker.take()) {
            waker.wake();
        }
    }
}
