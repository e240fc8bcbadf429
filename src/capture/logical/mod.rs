//! Logical capture (`capture.mode = "logical"`): the sequencer replica streams the
//! replication slot (`pgoutput`; the publication lists every column but the hidden ones)
//! and appends each committed transaction's changes to the log with their `seq` and their
//! rows, rendered from the decoded tuples exactly as `to_jsonb` would ([`render`]), in
//! batches (one `rowcast.batches` row each, its changes packed into it): no row is read
//! back from the application's tables (only an unchanged TOASTed value the stream does not
//! carry, see [`complete`]). The application's
//! transactions write nothing extra; deletes (and key changes) carry their old row through a
//! transactional `pg_logical_emit_message` from a small trigger that fires only on those.
//! Events are the rows as of their commit, in commit order.
//!
//! Exactly once: the batch insert and the slot position (`rowcast.slot_positions`) commit
//! together, and transactions at or before the stored position are skipped. The slot is
//! acknowledged only after that commit, so a crash in between replays the transactions and
//! the stored position drops them. The writer reads the stored position when it starts
//! (a large transaction reads it again under its lock); each write then moves it from where
//! it must still be, in the write's one round trip, and fails if anyone else moved it.
//!
//! A transaction larger than `capture.batch_size` is not held until its commit message:
//! its changes are written in chunks inside one database transaction that commits with
//! the slot position once the commit arrives (a crash rolls all of it back), as a
//! `rowcast.changes` row per change: deletes written before their old row came get it by
//! `seq` in the same transaction.
mod chunked;
mod complete;
mod decode;
mod render;

use std::sync::Arc;

use futures_util::FutureExt;
use pg_walstream::protocol::LogicalReplicationParser;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent};
use time::OffsetDateTime;
use tokio::sync::Notify;

use super::CaptureConfig;
use crate::catalog::Catalog;
use crate::changelog::{self, MESSAGE_PREFIX, NewChange, SEQUENCED_CHANNEL};
use chunked::Large;
pub use decode::{Decoded, Decoder};

#[derive(Debug, thiserror::Error)]
pub enum LogicalError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("replication: {0}")]
    Replication(#[from] pgwire_replication::PgWireError),
    #[error("pgoutput: {0}")]
    Decode(String),
    #[error("replication connection: {0}")]
    Config(#[from] crate::db::UrlError),
    #[error("the replication stream ended")]
    Ended,
}

impl crate::retry::Retryable for LogicalError {
    /// Decoding failures (a publication without the key column) and bad connection
    /// settings need an operator; so do refusals by the server of the kinds that mean the
    /// setup is wrong (a missing slot or publication, no REPLICATION privilege, bad
    /// credentials). A lost connection or an ended stream passes.
    fn is_retryable(&self) -> bool {
        use pgwire_replication::PgWireError;
        match self {
            LogicalError::Db(e) => e.is_retryable(),
            LogicalError::Decode(_) | LogicalError::Config(_) => false,
            LogicalError::Replication(PgWireError::Auth(_) | PgWireError::Tls(_)) => false,
            LogicalError::Replication(PgWireError::Server(m)) => {
                !["SQLSTATE 42", "SQLSTATE 28", "SQLSTATE 55000"]
                    .iter()
                    .any(|c| m.contains(c))
            }
            LogicalError::Replication(_) | LogicalError::Ended => true,
        }
    }
}

impl Decoded {
    /// The change as appended to the log, committed at `at`.
    fn at(self, at: OffsetDateTime) -> NewChange {
        NewChange {
            at,
            op: self.op,
            table: self.table,
            pk: self.pk,
            old: self.old,
            data: self.data,
            withheld: self.withheld,
        }
    }
}

/// Decoded transactions waiting to be written, with the end position of the last one.
#[derive(Default)]
struct Pending {
    /// (commit end LSN, commit time, changes) per transaction, in commit order.
    txns: Vec<(u64, OffsetDateTime, Vec<Decoded>)>,
    changes: usize,
}

/// The writer's connection, with the statements prepared on it.
struct WriterConn {
    client: tokio_postgres::Client,
    prepared: changelog::Prepared,
}

/// The batch being written while the stream is read on.
type InFlight = super::AbortOnDrop<Result<Written, LogicalError>>;

/// A committed write.
#[derive(Debug, Clone, Copy)]
struct Written {
    /// The position the slot may be acknowledged at.
    ack: Lsn,
    /// The stored position it left: the next write expects it there.
    stored: i64,
}

/// Streams the slot into `rowcast.changes` until an error. Runs on the sequencer replica
/// only (the caller holds the sequencer lock); every written batch is offered to
/// `handoff` and `wake` is poked.
pub struct SlotConsumer {
    pub config: CaptureConfig,
    pub database_url: String,
    pub tls: crate::db::Tls,
    pub ca_file: Option<std::path::PathBuf>,
    pub catalog: Arc<Catalog>,
    pub wake: Arc<Notify>,
    /// Where written batches go for this replica's reader.
    pub handoff: Arc<changelog::Handoff>,
}

impl SlotConsumer {
    pub async fn run(self) -> Result<(), LogicalError> {
        let this = Arc::new(self);
        let (client, connection) = crate::db::session(&this.database_url)?
            .connect(this.tls.clone())
            .await?;
        let driver = tokio::spawn(connection);
        let _driver = super::AbortOnDrop(tokio::spawn(async move {
            let _ = driver.await;
        }));
        // The writer's commits wait for their WAL to be flushed locally, whatever the
        // server's default: a batch and the slot position are on disk before the slot is
        // acknowledged past them, and with the application committing asynchronously the
        // flush also hands its WAL to the WAL sender (which sends only flushed WAL) at the
        // writer's pace rather than the WAL writer's (`wal_writer_delay`, 200 ms).
        client
            .batch_execute("SET synchronous_commit = local")
            .await?;
        let conn = Arc::new(WriterConn {
            prepared: changelog::Prepared::new(&client).await?,
            client,
        });
        let client = &conn.client;
        let stored = changelog::stored_position(client, &this.config.slot).await?;
        // Where the stored position is, as far as this writer knows: a write moves it from
        // there without reading it first.
        let mut known = stored as i64;
        let mut repl = ReplicationClient::connect(this.replication_config()?).await?;
        repl.wait_started().await?;
        tracing::info!(slot = %this.config.slot, position = %Lsn::from_u64(stored), "streaming the replication slot");
        let mut parser = LogicalReplicationParser::with_protocol_version(1);
        let mut decoder = Decoder::new(this.catalog.clone());
        decoder.set_installed(crate::catalog::installed_visible(client).await?);
        let mut pending = Pending::default();
        // The stream is read and decoded while a batch is written (one at a time, in
        // order): the WAL sender, this loop and the database's insert run side by side
        // instead of taking turns. Anything else on `client` waits for it first.
        let mut inflight: Option<InFlight> = None;
        let mut commit_time = OffsetDateTime::now_utc();
        let mut open = false;
        // A transaction too large to hold until its commit (`batch` changes buffered):
        // written in chunks inside one database transaction, committed with the slot
        // position when its commit arrives.
        let mut large: Option<Large> = None;
        let mut final_lsn = 0u64;
        let batch = this.config.batch_size.max(1) as usize;
        // Busy (at least `park_below` changes per second), a write starts no sooner than
        // `active_poll` after the previous one began, with everything decoded meanwhile:
        // each write is a transaction of its own (the rows, the announcement, the slot
        // position), and back to back they carried a change or two each between the large
        // ones. At light load every commit is written as soon as it is decoded.
        let mut rate = super::rate::Rate::new(this.config.idle_after);
        let mut last_start: Option<tokio::time::Instant> = None;
        loop {
            // Only decoded, complete transactions are written: the rate and the clock are
            // looked at only then, not for every message of an open transaction.
            let ready = !open && pending.changes > 0;
            let next_start = match ready && rate.reached(this.config.park_below) {
                true => last_start.map(|t| t + this.config.active_poll),
                false => None,
            };
            let due = next_start.is_none_or(|t| t <= tokio::time::Instant::now());
            // Write what is decoded as soon as no write is in flight and the stream has
            // nothing more ready right now or the previous write has just finished (under
            // sustained load a batch is what arrived during one write, not a batch_size
            // that takes longer to fill), or a batch is full; otherwise wait for the next
            // event or the write in flight. The look is `unconstrained`: tokio's
            // cooperative budget would otherwise answer "nothing ready" every 128 events
            // while the channel is full, and under sustained load every write would carry
            // a few dozen changes instead of a batch.
            let finished = inflight.as_ref().is_some_and(|w| w.0.is_finished());
            if finished && ready && due {
                settle(&mut inflight, &repl, &mut known).await?;
                inflight = Some(this.start_write(&conn, &mut pending, known));
                last_start = Some(tokio::time::Instant::now());
            }
            // Again: that write took everything pending.
            let ready = !open && pending.changes > 0;
            let event = match ready {
                true => tokio::task::unconstrained(repl.recv()).now_or_never(),
                false => None,
            };
            let event = match event {
                Some(ev) if pending.changes < batch => ev?,
                Some(ev) => {
                    settle(&mut inflight, &repl, &mut known).await?;
                    inflight = Some(this.start_write(&conn, &mut pending, known));
                    last_start = Some(tokio::time::Instant::now());
                    ev?
                }
                None if ready && inflight.is_none() && due => {
                    inflight = Some(this.start_write(&conn, &mut pending, known));
                    last_start = Some(tokio::time::Instant::now());
                    continue;
                }
                None => match (inflight.as_mut(), next_start) {
                    (Some(w), _) => tokio::select! {
                        ev = repl.recv() => ev?,
                        done = &mut w.0 => {
                            inflight = None;
                            let w = written(done)?;
                            known = w.stored;
                            repl.update_applied_lsn(w.ack);
                            continue;
                        }
                    },
                    // Ready, but not yet due: the next event or the start time.
                    (None, Some(at)) if ready => tokio::select! {
                        ev = repl.recv() => ev?,
                        _ = tokio::time::sleep_until(at) => continue,
                    },
                    (None, _) => repl.recv().await?,
                },
            };
            let Some(event) = event else {
                return Err(LogicalError::Ended);
            };
            match event {
                ReplicationEvent::Begin {
                    commit_time_micros,
                    final_lsn: lsn,
                    ..
                } => {
                    open = true;
                    decoder.begin();
                    commit_time = pg_time(commit_time_micros);
                    final_lsn = lsn.as_u64();
                }
                ReplicationEvent::XLogData { data, .. } => {
                    let msg = parser
                        .parse_wal_message_bytes(data)
                        .map_err(|e| LogicalError::Decode(e.to_string()))?;
                    let relation = matches!(
                        msg.message,
                        pg_walstream::protocol::LogicalReplicationMessage::Relation { .. }
                    );
                    if relation {
                        // A relation is (re)announced: check it against what `migrate`
                        // installed as of now, and learn how its column types render.
                        settle(&mut inflight, &repl, &mut known).await?;
                        decoder.set_installed(crate::catalog::installed_visible(client).await?);
                    }
                    decoder.message(msg.message)?;
                    if relation {
                        let needed = decoder.types_needed();
                        if !needed.is_empty() {
                            decoder.add_types(&crate::catalog::type_facts(client, &needed).await?);
                        }
                    }
                }
                ReplicationEvent::Message {
                    transactional: true,
                    prefix,
                    content,
                    ..
                } if prefix == MESSAGE_PREFIX => decoder.old_row(&content)?,
                ReplicationEvent::Message { .. } => {}
                ReplicationEvent::Commit { end_lsn, .. } if large.is_some() => {
                    open = false;
                    let l = large.take().expect("checked by the guard");
                    known = this
                        .finish_large(&conn, l, &mut decoder, commit_time, end_lsn.as_u64())
                        .await?;
                    repl.update_applied_lsn(end_lsn);
                    continue;
                }
                ReplicationEvent::Commit { end_lsn, .. } => {
                    open = false;
                    let (changes, fixes) = decoder.commit();
                    debug_assert!(fixes.is_empty(), "fixes come only from written chunks");
                    if changes.is_empty() {
                        if pending.txns.is_empty() && inflight.is_none() {
                            repl.update_applied_lsn(end_lsn);
                        }
                        continue;
                    }
                    pending.changes += changes.len();
                    rate.add(changes.len() as u64);
                    pending.txns.push((end_lsn.as_u64(), commit_time, changes));
                }
                ReplicationEvent::KeepAlive { wal_end, .. } => {
                    // Everything before the server's position has been received: with
                    // nothing in flight, the slot may move there (WAL is not retained).
                    if !open && pending.txns.is_empty() && inflight.is_none() {
                        repl.update_applied_lsn(wal_end);
                    }
                }
                ReplicationEvent::StoppedAt { .. } => return Err(LogicalError::Ended),
            }
            if open && decoder.buffered() >= batch {
                if large.is_none() {
                    // Earlier transactions first, each with its own position.
                    settle(&mut inflight, &repl, &mut known).await?;
                    if !pending.txns.is_empty() {
                        inflight = Some(this.start_write(&conn, &mut pending, known));
                        settle(&mut inflight, &repl, &mut known).await?;
                    }
                    large = Some(this.start_large(client, final_lsn).await?);
                }
                let l = large.as_mut().expect("just set");
                this.write_chunk(&conn, l, &mut decoder, commit_time)
                    .await?;
            }
        }
    }

    /// Starts writing the pending transactions; the caller has settled the previous write.
    fn start_write(
        self: &Arc<Self>,
        conn: &Arc<WriterConn>,
        pending: &mut Pending,
        known: i64,
    ) -> InFlight {
        let (this, conn, pending) = (self.clone(), conn.clone(), std::mem::take(pending));
        super::AbortOnDrop(tokio::spawn(async move {
            this.write(&conn, pending, known).await
        }))
    }

    /// Appends the pending transactions (those after the stored position) to the log with
    /// their `seq`, moves the stored position and announces them, in one transaction.
    ///
    /// One round trip: BEGIN, the rows, the announcement, the position moved from `stored`
    /// (where this writer left it), and COMMIT go out together. A position someone else
    /// moved fails the move, so the COMMIT rolls back and the error ends the stream (its
    /// retry reads the stored position again).
    async fn write(
        &self,
        conn: &WriterConn,
        mut pending: Pending,
        stored: i64,
    ) -> Result<Written, LogicalError> {
        let client = &conn.client;
        let last_lsn = pending.txns.last().map_or(0, |t| t.0);
        let mut times = Vec::with_capacity(pending.changes);
        let mut changes = Vec::with_capacity(pending.changes);
        for (_, time, txn) in pending
            .txns
            .drain(..)
            .filter(|(lsn, _, _)| *lsn as i64 > stored)
        {
            times.extend(std::iter::repeat_n(time, txn.len()));
            changes.extend(txn);
        }
        // What the decoded rows lack is read from the application's tables, before the
        // transaction (nothing of it is needed there).
        complete::complete(client, &self.catalog, &mut changes).await?;
        let n = changes.len();
        let rows: Vec<NewChange> = changes
            .into_iter()
            .zip(times)
            .map(|(c, time)| c.at(time))
            .collect();
        let begin = client.batch_execute("BEGIN");
        let notify = async {
            match n {
                0 => Ok(()),
                _ => {
                    client
                        .batch_execute(&format!("NOTIFY {SEQUENCED_CHANNEL}"))
                        .await
                }
            }
        };
        let store = async {
            match last_lsn as i64 > stored {
                true => {
                    changelog::advance_position(client, &self.config.slot, stored, last_lsn).await
                }
                false => Ok(()),
            }
        };
        let append = changelog::append(client, &rows, &conn.prepared);
        let commit = client.batch_execute("COMMIT");
        // Polled in this order, so sent in this order on the connection.
        let (begun, appended, notified, moved, committed) =
            tokio::join!(begin, append, notify, store, commit);
        let seqs = appended?;
        begun?;
        moved?;
        notified?;
        committed?;
        metrics::counter!("rowcast_capture_decoded_changes_total").increment(n as u64);
        if n > 0 {
            // Committed: this replica's reader takes the rows from here, not from the log.
            self.handoff.offer(rows, &seqs);
            self.wake.notify_one();
        }
        Ok(Written {
            ack: Lsn::from_u64(last_lsn),
            stored: stored.max(last_lsn as i64),
        })
    }

    fn replication_config(&self) -> Result<ReplicationConfig, LogicalError> {
        crate::db::replication_config(
            &self.database_url,
            self.ca_file.as_deref(),
            &self.config.slot,
            &self.config.publication,
        )
        .map_err(LogicalError::from)
    }
}

/// Waits for the write in flight, if any, and acknowledges the slot up to it.
async fn settle(
    inflight: &mut Option<InFlight>,
    repl: &ReplicationClient,
    known: &mut i64,
) -> Result<(), LogicalError> {
    if let Some(mut w) = inflight.take() {
        let w = written((&mut w.0).await)?;
        *known = w.stored;
        repl.update_applied_lsn(w.ack);
    }
    Ok(())
}

/// A finished write's result: the position it committed. A panic in the write goes on
/// here, as it did when the write ran inline (the task is only ever aborted by dropping
/// its handle, so it cannot have been cancelled).
fn written(
    done: Result<Result<Written, LogicalError>, tokio::task::JoinError>,
) -> Result<Written, LogicalError> {
    done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// PostgreSQL's timestamps count microseconds from 2000-01-01.
fn pg_time(micros: i64) -> OffsetDateTime {
    const PG_EPOCH_UNIX: i64 = 946_684_800;
    OffsetDateTime::from_unix_timestamp_nanos(
        (PG_EPOCH_UNIX as i128) * 1_000_000_000 + (micros as i128) * 1_000,
    )
    .unwrap_or_else(|_| OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_times_count_from_2000() {
        assert_eq!(pg_time(0).unix_timestamp(), 946_684_800);
        assert_eq!(pg_time(1_000_000).unix_timestamp(), 946_684_801);
    }
}
