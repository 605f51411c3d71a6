//! Which connection is due next, without visiting every connection.
//!
//! A driver asks [`Manager::poll_timeout`](super::Manager::poll_timeout) after every datagram
//! and every wake-up. Computed by visiting each connection, that is linear in the connections:
//! a hub with 10 000 of them, each sending a keep-alive a second, spends its core asking when
//! to wake up. This index keeps each connection's earliest deadline (quinn's own timers, the
//! handshake deadline, the liveness probe, the suspicion deadline) in an ordered set, so the
//! next deadline is the set's first entry and the due connections are a prefix of it.
//!
//! A connection's deadline can change whenever its state does. Rather than recompute it at
//! every place that touches a connection, the manager marks connections *stale* (every
//! connection it marks dirty for sending counts as stale too) and the index recomputes the
//! stale ones before it answers. Debug builds check every answer against a full scan.
//!
//! The index is generic over what it times: the host layer keeps one of its streams'
//! negotiation and ping deadlines the same way.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// Deadlines of things named by `K` (a connection, a stream), earliest first.
#[derive(Debug)]
pub(crate) struct TimerIndex<K> {
    /// Each thing's earliest deadline, ordered.
    by_time: BTreeSet<(Instant, K)>,
    /// The deadline each indexed thing has in `by_time`.
    armed: HashMap<K, Instant>,
    /// Things whose deadline may have changed since it was indexed.
    stale: BTreeSet<K>,
}

impl<K> Default for TimerIndex<K> {
    fn default() -> Self {
        Self {
            by_time: BTreeSet::new(),
            armed: HashMap::new(),
            stale: BTreeSet::new(),
        }
    }
}

impl<K: Copy + Ord + Hash> TimerIndex<K> {
    /// Notes that `id`'s deadline may have changed (or that it is gone).
    pub(crate) fn touch(&mut self, id: K) {
        self.stale.insert(id);
    }

    /// Takes the connections marked stale.
    pub(crate) fn take_stale(&mut self) -> BTreeSet<K> {
        std::mem::take(&mut self.stale)
    }

    /// Indexes `id` at `deadline`; `None` removes it.
    pub(crate) fn set(&mut self, id: K, deadline: Option<Instant>) {
        let old = match deadline {
            Some(at) => self.armed.insert(id, at),
            None => self.armed.remove(&id),
        };
        if old == deadline {
            return;
        }
        if let Some(old) = old {
            self.by_time.remove(&(old, id));
        }
        if let Some(at) = deadline {
            self.by_time.insert((at, id));
        }
    }

    /// The earliest deadline indexed.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// The things whose deadline is at or before `now`, earliest first.
    pub(crate) fn due(&self, now: Instant) -> Vec<K> {
        self.by_time
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| *id)
            .collect()
    }

    /// Things indexed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.armed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConnId;
    use std::time::Duration;

    #[test]
    fn the_first_entry_is_the_earliest_deadline_and_moves_with_it() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut index = TimerIndex::default();
        index.set(ConnId(1), Some(at(30)));
        index.set(ConnId(2), Some(at(10)));
        index.set(ConnId(3), Some(at(20)));
        assert_eq!(index.next(), Some(at(10)));
        assert_eq!(index.due(at(20)), vec![ConnId(2), ConnId(3)]);

        index.set(ConnId(2), Some(at(40))); // rearmed later
        assert_eq!(index.next(), Some(at(20)));
        index.set(ConnId(3), None); // gone
        assert_eq!(index.next(), Some(at(30)));
        assert_eq!(index.due(at(35)), vec![ConnId(1)]);
        index.set(ConnId(1), Some(at(30))); // unchanged: no duplicate
        assert_eq!(index.len(), 2);
        assert_eq!(index.due(at(100)), vec![ConnId(1), ConnId(2)]);
    }

    #[test]
    fn two_connections_may_share_a_deadline() {
        let t = Instant::now();
        let mut index = TimerIndex::default();
        index.set(ConnId(7), Some(t));
        index.set(ConnId(8), Some(t));
        assert_eq!(index.due(t), vec![ConnId(7), ConnId(8)]);
        index.set(ConnId(7), None);
        assert_eq!(index.due(t), vec![ConnId(8)]);
    }

    #[test]
    fn stale_marks_are_taken_once() {
        let mut index = TimerIndex::default();
        index.touch(ConnId(1));
        index.touch(ConnId(1));
        index.touch(ConnId(2));
        assert_eq!(index.take_stale().len(), 2);
        assert!(index.take_stale().is_empty());
    }
}
