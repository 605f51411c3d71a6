//! The queue of events waiting for [`Manager::poll_event`](super::Manager::poll_event).
//!
//! A busy stream queues an event for nearly every datagram that carries its data, and an
//! [`Event`] is as large as its largest variant (a PeerId, an address, a cause, a list): each
//! one queued and polled was copied whole twice, a tenth of what the manager adds to quinn's
//! cost per datagram (`docs/benchmarks.md`). Stream events are kept here in a few words each;
//! the others, a handful per connection's life, are boxed.

use std::collections::VecDeque;

use super::event::{Event, StreamId};

/// One queued event: stream events inline, the rest boxed.
#[derive(Debug)]
pub(super) enum Queued {
    Readable(StreamId),
    Writable(StreamId),
    Finished(StreamId),
    Stopped(StreamId, u64),
    Other(Box<Event>),
}

/// Events for the application, oldest first.
#[derive(Debug, Default)]
pub(super) struct EventQueue(VecDeque<Queued>);

impl EventQueue {
    /// Queues `event` last.
    #[inline]
    pub(super) fn push(&mut self, event: Event) {
        self.0.push_back(match event {
            Event::StreamReadable { stream } => Queued::Readable(stream),
            Event::StreamWritable { stream } => Queued::Writable(stream),
            Event::StreamFinished { stream } => Queued::Finished(stream),
            Event::StreamStopped { stream, code } => Queued::Stopped(stream, code),
            other => Queued::Other(Box::new(other)),
        });
    }

    /// Queues an event built as queued (the receive path builds stream events so).
    #[inline]
    pub(super) fn push_queued(&mut self, queued: Queued) {
        self.0.push_back(queued);
    }

    /// Takes the oldest event, skipping `StreamReadable` events of streams `read_ended` says
    /// can be read no more.
    #[inline]
    pub(super) fn pop(&mut self, read_ended: impl Fn(StreamId) -> bool) -> Option<Event> {
        // Each arm returns its own `Some`: built in one expression and returned from there,
        // the event was built on the stack and copied whole into the caller's slot.
        while let Some(queued) = self.0.pop_front() {
            match queued {
                Queued::Readable(stream) if read_ended(stream) => continue,
                Queued::Readable(stream) => return Some(Event::StreamReadable { stream }),
                Queued::Writable(stream) => return Some(Event::StreamWritable { stream }),
                Queued::Finished(stream) => return Some(Event::StreamFinished { stream }),
                Queued::Stopped(stream, code) => {
                    return Some(Event::StreamStopped { stream, code })
                }
                Queued::Other(event) => return Some(*event),
            }
        }
        None
    }

    /// Nothing is queued.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::event::ConnId;

    fn stream(conn: u64, id: u64) -> StreamId {
        StreamId {
            conn: ConnId(conn),
            id: quinn_proto::StreamId::new(quinn_proto::Side::Client, quinn_proto::Dir::Bi, id),
        }
    }

    #[test]
    fn events_come_out_in_order_and_unchanged() {
        let peer = libp2p_identity::PeerId::random();
        let events = [
            Event::StreamsAvailable {
                peer,
                conn: ConnId(1),
            },
            Event::StreamReadable {
                stream: stream(1, 0),
            },
            Event::StreamWritable {
                stream: stream(1, 4),
            },
            Event::StreamFinished {
                stream: stream(1, 8),
            },
            Event::StreamStopped {
                stream: stream(1, 12),
                code: 7,
            },
            Event::StreamOpened {
                peer,
                stream: stream(2, 1),
            },
        ];
        let mut queue = EventQueue::default();
        for event in events.iter().cloned() {
            queue.push(event);
        }
        let polled: Vec<Event> = std::iter::from_fn(|| queue.pop(|_| false)).collect();
        assert_eq!(polled, events);
        assert!(queue.is_empty());
    }

    #[test]
    fn readable_events_of_ended_streams_are_skipped() {
        let mut queue = EventQueue::default();
        for id in [0, 4, 8] {
            queue.push(Event::StreamReadable {
                stream: stream(1, id),
            });
        }
        let ended = stream(1, 4);
        let polled: Vec<Event> = std::iter::from_fn(|| queue.pop(|s| s == ended)).collect();
        assert_eq!(
            polled,
            [
                Event::StreamReadable {
                    stream: stream(1, 0)
                },
                Event::StreamReadable {
                    stream: stream(1, 8)
                },
            ]
        );
    }
}
