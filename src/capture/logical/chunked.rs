//! Transactions larger than `capture.batch_size`: written in chunks inside one database
//! transaction that commits with the slot position once their commit arrives, so the
//! sequencer's memory stays flat. A crash rolls all of it back; a transaction the slot
//! sends again that is already in the log is skipped.

use pgwire_replication::Lsn;
use time::OffsetDateTime;

use super::decode::Decoder;
use super::{LogicalError, SlotConsumer, WriterConn};
use crate::changelog::{self, SEQUENCED_CHANNEL};

/// A large transaction being written in chunks.
pub(super) struct Large {
    /// In the log already (before the stored position): its chunks are dropped.
    skip: bool,
    /// Changes written so far.
    written: usize,
    /// The stored position, read under the transaction's lock.
    stored: i64,
}

impl SlotConsumer {
    /// Opens the database transaction a large transaction is written in, holding the
    /// stored position. A transaction that begins before the stored position is in the
    /// log already (the slot sends it again after a crash): it is skipped.
    pub(super) async fn start_large(
        &self,
        client: &tokio_postgres::Client,
        final_lsn: u64,
    ) -> Result<Large, LogicalError> {
        // Between chunks the transaction waits for the stream: a server-side idle timeout
        // must not end it.
        client
            .batch_execute("BEGIN; SET LOCAL idle_in_transaction_session_timeout = 0")
            .await?;
        let stored = changelog::lock_position(client, &self.config.slot).await?;
        let skip = (final_lsn as i64) < stored;
        let transaction = Lsn::from_u64(final_lsn);
        if skip {
            let stored = Lsn::from_u64(stored as u64);
            tracing::info!(%transaction, %stored, "a large transaction sent again is in the log already: skipping it");
        } else {
            tracing::info!(%transaction, "a large transaction: writing it in chunks");
        }
        Ok(Large {
            skip,
            written: 0,
            stored,
        })
    }

    /// Writes what the large transaction has buffered, inside its database transaction.
    pub(super) async fn write_chunk(
        &self,
        conn: &WriterConn,
        large: &mut Large,
        decoder: &mut Decoder,
        time: OffsetDateTime,
    ) -> Result<(), LogicalError> {
        if large.skip {
            decoder.discard();
            return Ok(());
        }
        let client = &conn.client;
        let (mut changes, fixes) = decoder.take_chunk();
        large.written += changes.len();
        super::complete::complete(client, &self.catalog, &mut changes).await?;
        let seqs = changelog::append_rows(
            client,
            &changes.into_iter().map(|c| c.at(time)).collect::<Vec<_>>(),
            &conn.prepared,
        )
        .await?;
        decoder.written(&seqs);
        changelog::fix_old_rows(client, fixes).await?;
        Ok(())
    }

    /// The large transaction's commit: its last chunk, the stored position and the
    /// database commit together (or, for a skipped one, nothing). Returns the stored
    /// position it leaves.
    pub(super) async fn finish_large(
        &self,
        conn: &WriterConn,
        mut large: Large,
        decoder: &mut Decoder,
        time: OffsetDateTime,
        end_lsn: u64,
    ) -> Result<i64, LogicalError> {
        let client = &conn.client;
        if large.skip {
            decoder.discard();
            client.batch_execute("ROLLBACK").await?;
            return Ok(large.stored);
        }
        let (mut changes, fixes) = decoder.commit();
        large.written += changes.len();
        super::complete::complete(client, &self.catalog, &mut changes).await?;
        changelog::append_rows(
            client,
            &changes.into_iter().map(|c| c.at(time)).collect::<Vec<_>>(),
            &conn.prepared,
        )
        .await?;
        changelog::fix_old_rows(client, fixes).await?;
        changelog::store_position(client, &self.config.slot, end_lsn).await?;
        client
            .batch_execute(&format!("NOTIFY {SEQUENCED_CHANNEL}; COMMIT"))
            .await?;
        tracing::info!(
            changes = large.written,
            "wrote a large transaction in chunks"
        );
        metrics::counter!("rowcast_capture_decoded_changes_total").increment(large.written as u64);
        metrics::counter!("rowcast_capture_large_transactions_total").increment(1);
        self.wake.notify_one();
        Ok(end_lsn as i64)
    }
}
