//! The core's own timers, in one table: per call, a deadline for each [`CallTimer`] kind; a
//! heap orders them for [`B2bua::poll_timeout`]. Re-arming a timer leaves its old heap entry
//! behind; an entry counts only while it equals the call's deadline (lazy deletion), so
//! nothing is searched or removed per change.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::*;

/// The timers a call can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum CallTimer {
    /// The callee rang too long (`routing.no-answer-secs`).
    NoAnswer,
    /// The session timer of leg `side` (RFC 4028): refresh it, or it expired.
    Session(Side),
}

impl CallTimer {
    /// How many kinds there are.
    pub(super) const COUNT: usize = 3;

    /// The kind's slot in [`Call::deadlines`](super::call::Call::deadlines).
    pub(super) fn index(self) -> usize {
        match self {
            CallTimer::NoAnswer => 0,
            CallTimer::Session(Side::A) => 1,
            CallTimer::Session(Side::B) => 2,
        }
    }
}

/// Deadlines of every call's timers, earliest first (stale entries included, see the module
/// docs).
#[derive(Debug, Default)]
pub(super) struct TimerTable {
    heap: BinaryHeap<Reverse<(Instant, u64, CallTimer)>>,
}

impl B2bua {
    /// Arms (or re-arms) timer `kind` of call `id` at `at`.
    pub(super) fn arm(&mut self, id: u64, kind: CallTimer, at: Instant) {
        if let Some(c) = self.calls.get_mut(&id) {
            c.deadlines[kind.index()] = Some(at);
            self.timers.heap.push(Reverse((at, id, kind)));
        }
    }

    /// Disarms timer `kind` of call `id`.
    pub(super) fn disarm(&mut self, id: u64, kind: CallTimer) {
        if let Some(c) = self.calls.get_mut(&id) {
            c.deadlines[kind.index()] = None;
        }
    }

    /// The earliest call timer (possibly a stale one: the wake-up then finds nothing to do).
    pub(super) fn next_call_timer(&mut self) -> Option<Instant> {
        // Drop stale entries at the top so the shell does not wake for them.
        while let Some(Reverse((at, id, kind))) = self.timers.heap.peek().copied() {
            let live = self
                .calls
                .get(&id)
                .is_some_and(|c| c.deadlines[kind.index()] == Some(at));
            if live {
                return Some(at);
            }
            self.timers.heap.pop();
        }
        None
    }

    /// Fires every call timer due at `now`.
    pub(super) fn run_call_timers(&mut self, now: Now) {
        while let Some(Reverse((at, id, kind))) = self.timers.heap.peek().copied() {
            if at > now.mono {
                break;
            }
            self.timers.heap.pop();
            let live = self
                .calls
                .get(&id)
                .is_some_and(|c| c.deadlines[kind.index()] == Some(at));
            if !live {
                continue;
            }
            self.disarm(id, kind);
            match kind {
                CallTimer::NoAnswer => self.on_no_answer(now, id),
                CallTimer::Session(side) => self.on_session_timer(now, id, side),
            }
        }
    }
}
