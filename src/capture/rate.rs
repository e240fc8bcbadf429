//! Changes per second, measured over fixed windows of `capture.idle_after`: how capture
//! tells light load (parked sequencer, a write for every commit) from sustained load
//! (a batch every `capture.active_poll`).

use std::time::{Duration, Instant};

#[derive(Debug)]
pub(super) struct Rate {
    /// The current window: when it started, changes counted in it.
    window: (Instant, u64),
    /// Changes per second in the last complete window.
    last: f64,
    len: Duration,
}

impl Rate {
    pub(super) fn new(len: Duration) -> Rate {
        Rate {
            window: (Instant::now(), 0),
            last: 0.0,
            len: len.max(Duration::from_millis(10)),
        }
    }

    /// `n` more changes came.
    pub(super) fn add(&mut self, n: u64) {
        self.window.1 += n;
        self.roll();
    }

    /// Changes per second in the last complete window.
    pub(super) fn last(&mut self) -> f64 {
        self.roll();
        self.last
    }

    /// Whether the rate has reached `per_second`: in the last complete window, or already
    /// in the current one (its changes so far over a whole window's length).
    pub(super) fn reached(&mut self, per_second: f64) -> bool {
        self.roll();
        let current = self.window.1 as f64 / self.len.as_secs_f64();
        self.last >= per_second || current >= per_second
    }

    fn roll(&mut self) {
        let elapsed = self.window.0.elapsed();
        if elapsed >= self.len {
            self.last = self.window.1 as f64 / elapsed.as_secs_f64();
            self.window = (Instant::now(), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_reaches_the_rate_as_soon_as_its_count_does() {
        let mut r = Rate::new(Duration::from_secs(3600));
        assert!(!r.reached(10.0));
        r.add(35_999);
        assert!(!r.reached(10.0), "9.99/s over the hour so far");
        r.add(1);
        assert!(r.reached(10.0));
        assert_eq!(r.last(), 0.0, "no complete window yet");
    }

    #[test]
    fn a_complete_window_gives_the_last_rate() {
        let mut r = Rate::new(Duration::from_millis(10));
        r.add(100);
        std::thread::sleep(Duration::from_millis(20));
        let last = r.last();
        assert!(last > 0.0 && last <= 100.0 / 0.02, "{last}");
        assert!(!r.reached(last * 2.0));
    }
}
