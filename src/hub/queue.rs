//! A bounded single-consumer queue that holds no buffer while it is empty.
//!
//! Sessions spend most of their life idle, and a tokio `mpsc` channel allocates its first
//! block of 32 slots (plus the channel itself, ~1 KB in all) when it is created. With one
//! queue per connection that is ~10 MB at 10,000 idle connections; this queue is one small
//! allocation until something is queued (docs/benchmarks.md, "memory").

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

pub struct Queue<T> {
    state: Mutex<State<T>>,
    ready: Notify,
    limit: usize,
}

struct State<T> {
    items: VecDeque<T>,
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
        Queue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
            }),
            ready: Notify::new(),
            limit: limit.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `item`, or gives it back when `limit` items are already waiting. A closed
    /// queue drops it.
    pub fn push(&self, item: T) -> Result<(), T> {
        let mut state = self.lock();
        if state.closed {
            return Ok(());
        }
        if state.items.len() >= self.limit {
            return Err(item);
        }
        let was_empty = state.items.is_empty();
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
        state.release_if_drained();
        item
    }

    /// Moves up to `max` of the oldest items to `out`, under one lock.
    pub fn take_into(&self, out: &mut Vec<T>, max: usize) {
        let mut state = self.lock();
        let n = max.min(state.items.len());
        out.extend(state.items.drain(..n));
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
