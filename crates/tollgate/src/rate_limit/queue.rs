//! The FIFO queue of one quota's waiters: their order, costs and wakers.
//!
//! Only the head of the queue holds a timer, set for the instant its tokens are due; when it is
//! admitted it wakes the next waiter, which computes its own instant. Nobody polls in a loop.

use std::collections::VecDeque;
use std::task::Waker;

#[derive(Debug)]
struct Waiter {
    id: u64,
    cost: u64,
    waker: Option<Waker>,
}

#[derive(Debug, Default)]
pub(crate) struct Queue {
    waiters: VecDeque<Waiter>,
    /// The tokens the waiters claim, so a newcomer's wait counts them.
    queued_tokens: u64,
    next_id: u64,
}

impl Queue {
    pub(crate) fn len(&self) -> usize {
        self.waiters.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// What waits ahead of a newcomer: (requests, tokens).
    pub(crate) fn ahead(&self) -> (u64, u64) {
        (self.waiters.len() as u64, self.queued_tokens)
    }

    /// Adds a waiter of `cost` at the back; returns its id.
    pub(crate) fn push(&mut self, cost: u64, waker: Waker) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.queued_tokens += cost;
        self.waiters.push_back(Waiter {
            id,
            cost,
            waker: Some(waker),
        });
        id
    }

    /// Waiter `id`'s place (0 for the head), if it is queued.
    pub(crate) fn position(&self, id: u64) -> Option<usize> {
        self.waiters.iter().position(|w| w.id == id)
    }

    /// The head's cost.
    pub(crate) fn head_cost(&self) -> Option<u64> {
        self.waiters.front().map(|w| w.cost)
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
        self.queued_tokens -= waiter.cost;
        Some(position)
    }

    /// Wakes the head, whose turn it is to compute its instant.
    pub(crate) fn wake_head(&mut self) {
        if let Some(waker) = self.waiters.front_mut().and_then(|w| w.waker.take()) {
            waker.wake();
        }
    }
}
