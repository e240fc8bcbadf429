//! A writer that keeps inserting tickets through PostgreSQL restarts and crashes, and
//! remembers which commits were acknowledged.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Writer {
    committed: Arc<Mutex<BTreeSet<i64>>>,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl Writer {
    /// Inserts a ticket `<prefix>-<n>` every ~5 ms, reconnecting whenever the server goes away.
    pub fn start(url: &str, prefix: &str) -> Writer {
        let committed: Arc<Mutex<BTreeSet<i64>>> = Arc::default();
        let stop = CancellationToken::new();
        let handle = {
            let (committed, stop, url, prefix) = (
                committed.clone(),
                stop.clone(),
                url.to_string(),
                prefix.to_string(),
            );
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.is_cancelled() {
                    let Ok((client, conn)) =
                        tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                    else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    tokio::spawn(conn);
                    while !stop.is_cancelled() {
                        n += 1;
                        let r = client
                            .query_one(
                                "INSERT INTO tickets (subject, requester_id) VALUES ($1, 3) RETURNING id",
                                &[&format!("{prefix}-{n}")],
                            )
                            .await;
                        match r {
                            Ok(row) => {
                                committed.lock().unwrap().insert(row.get(0));
                            }
                            Err(_) => break, // the server went away; reconnect
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            })
        };
        Writer {
            committed,
            stop,
            handle,
        }
    }

    /// Ids acknowledged so far.
    pub fn committed(&self) -> usize {
        self.committed.lock().unwrap().len()
    }

    /// Stops writing; every id whose commit was acknowledged.
    pub async fn stop(self) -> BTreeSet<i64> {
        self.stop.cancel();
        self.handle.await.unwrap();
        self.committed.lock().unwrap().clone()
    }
}
