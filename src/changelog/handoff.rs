//! Batches this process appended and committed, handed to its own reader so that it does
//! not read them back (logical mode: the sequencer replica's writer and its tail run side
//! by side). Only a shortcut: a reader takes a batch only if it starts right after the
//! reader's position, so a gap (a rolled-back write that used `seq`s, a batch too large to
//! hand over, a full queue) sends it back to [`super::read`], which the other replicas use
//! anyway. A batch here is exactly what the log holds for its `seq`s: it is offered only
//! after its transaction committed.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::{NewChange, Read};
use crate::event::{Change, Position};

/// Batches kept for a reader that has not taken them; older ones are dropped (read from
/// the log instead).
const KEEP: usize = 8;

#[derive(Default)]
pub struct Handoff {
    queue: Mutex<VecDeque<Read>>,
}

impl Handoff {
    /// Offers the changes just committed with `seqs` (the same order). Changes whose
    /// `seq`s are not consecutive are not offered (the log is read instead).
    pub fn offer(&self, changes: Vec<NewChange>, seqs: &[i64]) {
        let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else {
            return;
        };
        if changes.len() != seqs.len() || last - first + 1 != seqs.len() as i64 {
            return;
        }
        let read = Read {
            rows: changes.len(),
            changes: changes
                .into_iter()
                .zip(first..)
                .map(|(c, seq)| c.sequenced(Position(seq)))
                .collect(),
            last: Some(Position(last)),
            more: false,
            mark: None,
        };
        let mut queue = self.queue.lock().expect("handoff lock");
        if queue.len() >= KEEP {
            queue.pop_front();
        }
        queue.push_back(read);
    }

    /// Whether the batch that follows `after` exactly is here.
    pub fn has_next(&self, after: Position) -> bool {
        let queue = self.queue.lock().expect("handoff lock");
        queue
            .iter()
            .find(|r| r.last > Some(after))
            .and_then(|r| r.changes.first())
            .is_some_and(|c| c.pos.0 == after.0 + 1)
    }

    /// The batch that follows `after` exactly, if it is here (it holds fewer than two
    /// `capture.batch_size`s: larger transactions are written in chunks, never offered).
    /// Batches at or before `after` are dropped.
    pub fn take(&self, after: Position) -> Option<Read> {
        let mut queue = self.queue.lock().expect("handoff lock");
        while queue.front().is_some_and(|r| r.last <= Some(after)) {
            queue.pop_front();
        }
        let next = queue.front()?;
        let first = next.changes.first().map(|c: &Change| c.pos)?;
        (first.0 == after.0 + 1)
            .then(|| queue.pop_front())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Op;

    fn change(n: i64) -> NewChange {
        NewChange {
            at: time::OffsetDateTime::UNIX_EPOCH,
            op: Op::Update,
            table: "tickets".into(),
            pk: serde_json::json!([n]),
            old: None,
            data: Some(serde_json::json!({ "id": n })),
            withheld: None,
        }
    }

    #[test]
    fn a_batch_is_taken_only_right_after_the_position() {
        let h = Handoff::default();
        h.offer(vec![change(1), change(2)], &[11, 12]);
        h.offer(vec![change(3)], &[13]);
        assert!(h.take(Position(9)).is_none(), "a gap reads the log");
        let r = h.take(Position(10)).expect("follows 10");
        assert_eq!(r.last, Some(Position(12)));
        assert_eq!(
            r.changes.iter().map(|c| c.pos.0).collect::<Vec<_>>(),
            [11, 12]
        );
        assert_eq!(r.changes[1].data, Some(serde_json::json!({ "id": 2 })));
        assert!(h.has_next(Position(12)) && !h.has_next(Position(11)));
        assert_eq!(h.take(Position(12)).unwrap().last, Some(Position(13)));
        assert!(!h.has_next(Position(13)));
        assert!(h.take(Position(13)).is_none());
    }

    #[test]
    fn batches_the_reader_passed_are_dropped_and_odd_seqs_never_offered() {
        let h = Handoff::default();
        h.offer(vec![change(1)], &[5]);
        h.offer(vec![change(2), change(3)], &[6, 8]);
        h.offer(vec![change(4)], &[9]);
        assert_eq!(h.take(Position(8)).unwrap().last, Some(Position(9)));
        assert!(h.queue.lock().unwrap().is_empty());
        for n in 0..20 {
            h.offer(vec![change(n)], &[100 + n]);
        }
        assert_eq!(h.queue.lock().unwrap().len(), KEEP);
        assert!(h.take(Position(99)).is_none(), "the oldest were dropped");
        assert!(h.take(Position(111)).is_some());
    }
}
