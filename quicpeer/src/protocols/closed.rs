//! The streams a protocol layer closed, remembered while their late events may still come.
//!
//! A layer that works on streams of its own (the host's negotiations and pings, the relay's hop
//! and stop streams) resets or finishes them when it is done, and the manager may report them
//! afterwards: quinn reports a peer's stop even of a stream the layer reset, and the
//! acknowledgement of a finished one. Those events are the layer's, not the application's. A
//! fixed number of remembered streams is not enough (a peer that fails a hundred negotiations
//! at once has a hundred late stops on their way), so the memory keeps every closed stream the
//! manager may still report ([`Manager::may_report`]) and is pruned when it has doubled past
//! what stayed: what it holds is bounded by quinn's own live streams, and pruning costs O(1)
//! per closed stream.

use std::collections::BTreeSet;

use crate::{Manager, StreamId};

/// Closed streams whose late events may still come. See the [module documentation](self).
#[derive(Debug)]
pub(crate) struct ClosedStreams {
    streams: BTreeSet<StreamId>,
    /// The pruning length never goes below this.
    floor: usize,
    /// Pruned once it holds this many.
    prune_at: usize,
}

impl ClosedStreams {
    /// An empty memory, first pruned at `floor` streams.
    pub(crate) fn new(floor: usize) -> Self {
        Self {
            streams: BTreeSet::new(),
            floor,
            prune_at: floor,
        }
    }

    pub(crate) fn contains(&self, stream: &StreamId) -> bool {
        self.streams.contains(stream)
    }

    /// Remembers `stream`; true when that brought the memory to its pruning length (prune it
    /// once the manager's events are drained).
    pub(crate) fn insert(&mut self, stream: StreamId) -> bool {
        self.streams.insert(stream) && self.streams.len() == self.prune_at
    }

    /// The memory is at or past its pruning length.
    pub(crate) fn is_due(&self) -> bool {
        self.streams.len() >= self.prune_at
    }

    /// Forgets the streams no event can come for any more. Only with the manager's events
    /// drained: quinn may drop a half's state in the call that queues its last event
    /// (`StreamFinished`).
    pub(crate) fn prune(&mut self, manager: &mut Manager) {
        self.streams.retain(|s| manager.may_report(*s));
        self.prune_at = self.floor.max(2 * self.streams.len());
    }
}
