//! A bounded single-consumer queue that holds no buffer while it is empty.
//!
//! Sessions spend most of their life idle, and a tokio `mpsc` channel allocates its first
//! block of 32 slots (plus the channel itself, ~1 KB in all) when it is created. With one
//! queue per connection that is ~10 MB at 10,000 idle connections; this queue is one small
//! allocation until something is queued (docs/benchmarks.md, "memory").
//!
//! A queue may also be bounded in bytes ([`Queue::with_bytes`]): each item's weight counts
//! while it waits.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

pub struct Queue<T> {
    state: Mutex<State<T>>,
    ready: Notify,
    limit: usize,
    /// Most bytes waiting at a time (by `weigh`); one item over it is still taken into an
    /// empty queue.
    max_bytes: usize,
    weigh: fn(&T) -> usize,
}

struct State<T> {
    items: VecDeque<T>,
    /// Sum of the weights of `items`.
    bytes: usize,
    /// Closed: pushes are dropped (see [`Queue::close`]).
    closed: bool,
}

impl<T> State<T> {
    fn release_if_drained(&mut self) {
        if self.items.is_empty() && self.items.capacity() > KEEP_CAPACITY {
            self.items = VecDeque::new();
        }
    }
}

/// Buffers larger than this are released when the queue drains, so a burst does not pin
/// its peak for the rest of an idle session.
const KEEP_CAPACITY: usize = 64;

impl<T> Queue<T> {
    /// A queue that takes at most `limit` items at a time.
    pub fn new(limit: usize) -> Self {
        Queue::with_bytes(limit, usize::MAX, |_| 0)
    }

    /// A queue that takes at most `limit` items and `max_bytes` bytes (each item weighing
    /// `weigh(item)`) at a time.
    pub fn with_bytes(limit: usize, max_bytes: usize, weigh: fn(&T) -> usize) -> Self {
        Queue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                bytes: 0,
                closed: false,
            }),
            ready: Notify::new(),
            limit: limit.max(1),
            max_bytes,
            weigh,
        }
    }

    /// Bytes waiting (by the queue's `weigh`).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item`, or gives it back when `limit` items are already waiting or it would
    /// take the queue over `max_bytes`. A closed queue drops it.
    pub fn push(&self, item: T) -> Result<(), T> {
        let mut state = self.lock();
        if state.closed {
            return Ok(());
        }
        let weight = (self.weigh)(&item);
        let was_empty = state.items.is_empty();
        if state.items.len() >= self.limit
            || (!was_empty && state.bytes.saturating_add(weight) > self.max_bytes)
        {
            return Err(item);
        }
        state.bytes = state.bytes.saturating_add(weight);
        state.items.push_back(item);
        drop(state);
        // The consumer only waits after it found the queue empty.
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// The oldest item, if any.
    pub fn try_next(&self) -> Option<T> {
        let mut state = self.lock();
        let item = state.items.pop_front();
        if let Some(item) = &item {
            state.bytes = state.bytes.saturating_sub((self.weigh)(item));
        }
        state.release_if_drained();
        item
    }

    /// Moves up to `max` of the oldest items to `out`, under one lock.
    pub fn take_into(&self, out: &mut Vec<T>, max: usize) {
        let mut state = self.lock();
        let n = max.min(state.items.len());
        let start = out.len();
        out.extend(state.items.drain(..n));
        let taken: usize = out[start..].iter().map(self.weigh).sum();
        state.bytes = state.bytes.saturating_sub(taken);
        state.release_if_drained();
    }

    /// The oldest item, waiting for one if there is none. (One consumer: a push wakes it.)
    pub async fn next(&self) -> T {
        loop {
            if let Some(item) = self.try_next() {
                return item;
            }
            // A push since the check left a permit: this returns at once.
            self.ready.notified().await;
        }
    }

    /// Drops the queued items and every later push. (For items that hold what holds the
    /// queue, so they do not keep each other alive.)
    pub fn close(&self) {
        let items = {
            let mut state = self.lock();
            state.closed = true;
            state.bytes = 0;
            std::mem::take(&mut state.items)
        };
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn keeps_order_refuses_over_the_limit_and_wakes_the_consumer() {
        let q = Arc::new(Queue::new(2));
        assert_eq!(q.push(1), Ok(()));
        assert_eq!(q.push(2), Ok(()));
        assert_eq!(q.push(3), Err(3), "over the limit the item comes back");
        assert_eq!(q.next().await, 1);
        assert_eq!(q.try_next(), Some(2));
        assert_eq!(q.try_next(), None);
        for i in 5..7 {
            q.push(i).unwrap();
        }
        let mut batch = vec![];
        q.take_into(&mut batch, 1);
        q.take_into(&mut batch, 10);
        assert_eq!(batch, [5, 6], "batches keep the order");

        let consumer = tokio::spawn({
            let q = q.clone();
            async move { q.next().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!consumer.is_finished(), "waits while empty");
        q.push(4).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), consumer)
            .await
            .expect("woken by the push")
            .unwrap();
        assert_eq!(got, 4);
    }

    #[test]
    fn a_byte_bound_refuses_what_would_go_over_it_but_never_starves() {
        let q: Queue<Vec<u8>> = Queue::with_bytes(100, 1000, Vec::len);
        assert_eq!(
            q.push(vec![0; 5000]),
            Ok(()),
            "one large item fits an empty queue"
        );
        assert_eq!(
            q.push(vec![1; 1]),
            Err(vec![1; 1]),
            "nothing more until it drains"
        );
        assert_eq!(q.bytes(), 5000);
        assert_eq!(q.try_next().map(|v| v.len()), Some(5000));
        assert_eq!(q.bytes(), 0);
        for _ in 0..4 {
            q.push(vec![0; 250]).unwrap();
        }
        assert!(q.push(vec![0; 1]).is_err(), "1000 bytes are waiting");
        let mut out = vec![];
        q.take_into(&mut out, 2);
        assert_eq!(q.bytes(), 500, "taken items no longer count");
        q.push(vec![0; 500]).unwrap();
        q.close();
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn releases_a_burst_buffer_when_drained_and_drops_after_close() {
        let q = Queue::new(1000);
        for i in 0..500 {
            q.push(i).unwrap();
        }
        while q.try_next().is_some() {}
        assert_eq!(q.lock().items.capacity(), 0, "burst buffer released");

        q.push(1).unwrap();
        q.close();
        assert_eq!(q.try_next(), None, "close drops what was queued");
        assert_eq!(
            q.push(2),
            Ok(()),
            "a push after close is dropped, not refused"
        );
        assert_eq!(q.try_next(), None);
    }
}
