//! Which connection is due next, without visiting every connection.
//!
//! A driver asks [`Manager::poll_timeout`](super::Manager::poll_timeout) after every datagram
//! and every wake-up. Computed by visiting each connection, that is linear in the connections:
//! a hub with 10 000 of them, each sending a keep-alive a second, spends its core asking when
//! to wake up. This index keeps each connection's earliest deadline (quinn's own timers, the
//! handshake deadline, the liveness probe, the suspicion deadline) in a min-heap, so the next
//! deadline is the heap's top and the due connections are popped from it, earliest first.
//!
//! A connection's deadline can change whenever its state does. Rather than recompute it at
//! every place that touches a connection, the manager marks connections *stale* (every
//! connection it marks dirty for sending counts as stale too) and the index recomputes the
//! stale ones before it answers. Debug builds check every answer against a full scan.
//!
//! For a single busy connection it costs a push and a pop per datagram (the deadline the
//! datagram moved is pushed anew); `docs/benchmarks.md` has what that costs.
//!
//! The index is generic over what it times: the host layer keeps one of its streams'
//! negotiation and ping deadlines the same way.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::Instant;

/// A multiplicative hasher for the index's keys: connection IDs the manager numbers itself and
/// stream IDs quinn numbers in order, which no peer can choose to collide. The index looks up
/// on every datagram, and SipHash, the default, is several times the cost.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Deadlines of things named by `K` (a connection, a stream), earliest first.
///
/// A binary heap with lazy deletion: a changed deadline is pushed anew and the entry it
/// replaces is discarded when it reaches the top, so the common case (one connection's
/// deadline moving at every datagram) costs a push and a pop on a vector, with no allocation.
/// `armed` is the truth the heap's entries are checked against; the heap is rebuilt from it
/// when discarded entries outnumber live ones, which bounds it at about twice the things
/// indexed.
#[derive(Debug)]
pub(crate) struct TimerIndex<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
    /// The deadline of each indexed thing.
    armed: HashMap<K, Instant, BuildHasherDefault<IdHasher>>,
    /// Things whose deadline may have changed since it was indexed (duplicates allowed).
    stale: Vec<K>,
    /// The heap's top entry is known to be live (`armed` holds it): `next` answers without
    /// looking it up. Cleared by anything that may change the top or its liveness.
    top_live: bool,
}

impl<K> Default for TimerIndex<K> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            armed: HashMap::default(),
            stale: Vec::new(),
            top_live: false,
        }
    }
}

impl<K: Copy + Ord + Hash> TimerIndex<K> {
    /// Notes that `id`'s deadline may have changed (or that it is gone).
    pub(crate) fn touch(&mut self, id: K) {
        self.stale.push(id);
    }

    /// Re-indexes every thing marked stale at the deadline `deadline_of` gives it now
    /// (`None`: none, or gone).
    pub(crate) fn refresh(&mut self, mut deadline_of: impl FnMut(K) -> Option<Instant>) {
        let mut stale = std::mem::take(&mut self.stale);
        for id in stale.drain(..) {
            self.set(id, deadline_of(id));
        }
        self.stale = stale; // keep the allocation
    }

    /// Indexes `id` at `deadline`; `None` removes it.
    pub(crate) fn set(&mut self, id: K, deadline: Option<Instant>) {
        match deadline {
            Some(at) => match self.armed.insert(id, at) {
                Some(old) if old == at => {}
                old => {
                    // One busy thing (a bulk transfer) is usually the earliest too, and its
                    // deadline moves at every datagram: its entry at the top is moved in place
                    // (one sift on a vector) rather than pushed anew and its old one popped.
                    let mut moved = false;
                    if let (Some(old), Some(mut top)) = (old, self.heap.peek_mut()) {
                        if top.0 == (old, id) {
                            top.0 .0 = at;
                            moved = true;
                        }
                    }
                    if !moved {
                        self.heap.push(Reverse((at, id)));
                        if self.heap.len() > 2 * self.armed.len() + 32 {
                            self.compact();
                        }
                    }
                    // Whatever else is at the top now has not been checked.
                    self.top_live = self.heap.peek() == Some(&Reverse((at, id)));
                }
            },
            None => {
                // Its heap entry is discarded when it reaches the top.
                self.armed.remove(&id);
                self.top_live = false;
            }
        }
    }

    /// The earliest deadline indexed.
    pub(crate) fn next(&mut self) -> Option<Instant> {
        if self.top_live {
            return self.heap.peek().map(|Reverse((at, _))| *at);
        }
        while let Some(&Reverse((at, id))) = self.heap.peek() {
            if self.armed.get(&id) == Some(&at) {
                self.top_live = true;
                return Some(at);
            }
            self.heap.pop(); // replaced or removed since it was pushed
        }
        None
    }

    /// Takes out the things whose deadline is at or before `now`, earliest first, and marks
    /// them stale: the next [`refresh`](Self::refresh) indexes them at their new deadlines.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<K> {
        let mut due = Vec::new();
        while let Some(&Reverse((at, id))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            self.top_live = false;
            if self.armed.get(&id) == Some(&at) {
                self.armed.remove(&id);
                self.stale.push(id);
                due.push(id);
            }
        }
        due
    }

    /// Rebuilds the heap from the live deadlines, dropping the discarded entries.
    fn compact(&mut self) {
        let live: Vec<Reverse<(Instant, K)>> = self
            .armed
            .iter()
            .map(|(id, at)| Reverse((*at, *id)))
            .collect();
        self.heap = BinaryHeap::from(live);
        self.top_live = false;
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

        // `due` took 2 and 3 out and marked them stale: they come back with a refresh.
        assert_eq!(index.next(), Some(at(30)));
        index.refresh(|id| match id {
            ConnId(2) => Some(at(40)), // rearmed later
            _ => None,                 // 3 is gone
        });
        assert_eq!(index.next(), Some(at(30)));
        assert_eq!(index.due(at(35)), vec![ConnId(1)]);
        index.refresh(|_| Some(at(30))); // 1 unchanged
        assert_eq!(index.len(), 2);
        assert_eq!(index.due(at(100)), vec![ConnId(1), ConnId(2)]);
    }

    #[test]
    fn the_earliest_moved_in_place_keeps_the_order() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut index = TimerIndex::default();
        index.set(ConnId(1), Some(at(10)));
        index.set(ConnId(2), Some(at(20)));
        index.set(ConnId(3), Some(at(30)));
        // 1 is at the top; moving it later moves its entry, without a second one.
        index.set(ConnId(1), Some(at(25)));
        assert_eq!(index.heap.len(), 3);
        assert_eq!(index.next(), Some(at(20)));
        index.set(ConnId(1), Some(at(40)));
        assert_eq!(index.due(at(35)), vec![ConnId(2), ConnId(3)]);
        assert_eq!(index.next(), Some(at(40)));
        // Moved earlier than everything, and back to a value it had: still one live entry.
        index.set(ConnId(1), Some(at(5)));
        index.set(ConnId(1), Some(at(40)));
        assert_eq!(index.due(at(100)), vec![ConnId(1)]);
        assert_eq!(index.next(), None);
    }

    #[test]
    fn two_connections_may_share_a_deadline() {
        let t = Instant::now();
        let mut index = TimerIndex::default();
        index.set(ConnId(7), Some(t));
        index.set(ConnId(8), Some(t));
        index.set(ConnId(7), None);
        assert_eq!(index.next(), Some(t));
        assert_eq!(index.due(t), vec![ConnId(8)]);
        assert_eq!(index.next(), None);
    }

    #[test]
    fn stale_things_are_refreshed_once_per_mark() {
        let t = Instant::now();
        let mut index = TimerIndex::default();
        index.touch(ConnId(1));
        index.touch(ConnId(1));
        index.touch(ConnId(2));
        let mut asked = Vec::new();
        index.refresh(|id| {
            asked.push(id);
            Some(t)
        });
        assert_eq!(asked, vec![ConnId(1), ConnId(1), ConnId(2)]);
        index.refresh(|_| panic!("nothing is stale any more"));
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn discarded_entries_are_bounded() {
        let t0 = Instant::now();
        let mut index = TimerIndex::default();
        // One thing whose deadline moves earlier every time leaves a trail of later entries.
        for i in (0..10_000u64).rev() {
            index.set(ConnId(1), Some(t0 + Duration::from_micros(i)));
        }
        assert!(
            index.heap.len() <= 2 * index.len() + 33,
            "{}",
            index.heap.len()
        );
        assert_eq!(index.next(), Some(t0));
    }
}
