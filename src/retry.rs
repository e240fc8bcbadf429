//! The retry policy every long-running loop uses (capture, the webhook outbox writer, the
//! delivery worker's claims and result writes): exponential backoff with jitter for
//! failures that may pass, the longest delay for failures that will not pass until an
//! operator acts.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Whether retrying an operation can succeed without anyone changing anything.
pub trait Retryable {
    /// `true` for failures that may pass (a lost connection, a restart, a lock timeout);
    /// `false` for failures that need an operator (a missing table, a publication without
    /// the key column, a permission).
    fn is_retryable(&self) -> bool;
}

/// Whether a database error may pass by itself: errors without a SQLSTATE (the connection)
/// and server errors of the classes that mean "try again" do; errors in the statement or
/// the schema (undefined table or column, permissions, invalid names) do not.
pub fn db_error_is_retryable(e: &tokio_postgres::Error) -> bool {
    let Some(state) = e.code() else {
        return true;
    };
    // 42: syntax error or access rule violation; 3D, 3F: invalid catalog / schema name;
    // 28: invalid authorization; 0A: feature not supported.
    !matches!(&state.code()[..2], "42" | "3D" | "3F" | "28" | "0A")
}

impl Retryable for tokio_postgres::Error {
    fn is_retryable(&self) -> bool {
        db_error_is_retryable(self)
    }
}

impl Retryable for deadpool_postgres::PoolError {
    fn is_retryable(&self) -> bool {
        match self {
            deadpool_postgres::PoolError::Backend(e) => e.is_retryable(),
            _ => true,
        }
    }
}

/// Delays between attempts of one loop. Reset it after a success.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    current: ExponentialBackoff,
    max: Duration,
    permanent: Duration,
}

impl Backoff {
    /// Exponential from `min` to `max`, with jitter, for failures that may pass; `permanent`
    /// (at least `max`) between attempts while a failure needs an operator.
    pub fn new(min: Duration, max: Duration, permanent: Duration) -> Backoff {
        let builder = ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_jitter()
            .without_max_times();
        Backoff {
            current: builder.build(),
            builder,
            max,
            permanent: permanent.max(max),
        }
    }

    /// The delay before retrying after a failure: the next exponential step when it may
    /// pass, the permanent-failure delay when it will not.
    pub fn after<E: Retryable + ?Sized>(&mut self, error: &E) -> Duration {
        if error.is_retryable() {
            self.current.next().unwrap_or(self.max)
        } else {
            self.permanent
        }
    }

    /// After a success: the next failure starts from the shortest delay again.
    pub fn reset(&mut self) {
        self.current = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Failure(bool);
    impl Retryable for Failure {
        fn is_retryable(&self) -> bool {
            self.0
        }
    }

    #[test]
    fn transient_failures_back_off_and_permanent_ones_wait_longest() {
        let mut b = Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(10),
            Duration::from_secs(60),
        );
        let first = b.after(&Failure(true));
        assert!(first <= Duration::from_millis(200), "{first:?}");
        let mut last = first;
        for _ in 0..10 {
            last = b.after(&Failure(true));
        }
        assert!(last >= Duration::from_secs(5), "grows: {last:?}");
        assert_eq!(b.after(&Failure(false)), Duration::from_secs(60));
        b.reset();
        assert!(b.after(&Failure(true)) <= Duration::from_millis(200));
    }
}
