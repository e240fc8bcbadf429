//! Logical capture (`capture.mode = "logical"`): the sequencer replica streams the
//! replication slot (`pgoutput`, the publication lists only key columns) and appends each
//! committed transaction's changes to `rowcast.changes`, `seq` included, in batches. The
//! application's transactions write nothing extra; deletes (and key changes) carry their old
//! row through a transactional `pg_logical_emit_message` from a small trigger that fires
//! only on those.
//!
//! Exactly once: the batch insert and the slot position (`rowcast.slot_positions`, read
//! `FOR UPDATE`) commit together, and transactions at or before the stored position are
//! skipped. The slot is acknowledged only after that commit, so a crash in between replays
//! the transactions and the stored position drops them.
//!
//! A transaction larger than `capture.batch_size` is not held until its commit message:
//! its changes are written in chunks inside one database transaction that commits with
//! the slot position once the commit arrives (a crash rolls all of it back). Deletes written
//! before their old row came get it by `seq` in the same transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use pg_walstream::protocol::{
    ColumnData, LogicalReplicationMessage, LogicalReplicationParser, TupleData,
};
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::config::CaptureConfig;
use crate::schema::{Catalog, TableSpec};

use super::log::SEQUENCED_CHANNEL;

/// Prefix of the messages the logical-mode trigger emits for deletes and key changes.
pub const MESSAGE_PREFIX: &str = "rowcast";

#[derive(Debug, thiserror::Error)]
pub enum LogicalError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("replication: {0}")]
    Replication(#[from] pgwire_replication::PgWireError),
    #[error("pgoutput: {0}")]
    Decode(String),
    #[error("replication connection: {0}")]
    Config(String),
    #[error("the replication stream ended")]
    Ended,
}

/// One change decoded from the stream, before it has a `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub op: char,
    pub table: String,
    pub pk: Value,
    pub old: Option<Value>,
}

/// A relation announced by pgoutput: its table and where its key columns sit in a tuple.
struct Relation {
    spec: Arc<TableSpec>,
    /// (index in the tuple, type oid) for each key column, in key order.
    key: Vec<(usize, u32)>,
}

/// Where a delete that waits for its old row is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Awaiting {
    /// At this index of the open transaction's buffer.
    Buffered(usize),
    /// Already in the log (a large transaction is written in chunks), with this `seq`.
    Written(i64),
}

/// An old row for a delete that is already in the log: `(seq, old row)`.
pub type OldRowFix = (i64, Value);

/// Turns pgoutput messages into [`Decoded`] changes, one transaction at a time.
pub struct Decoder {
    catalog: Arc<Catalog>,
    relations: HashMap<u32, Relation>,
    /// The open transaction's changes not written yet.
    txn: Vec<Decoded>,
    /// Each delete still waiting for its old row, by (table, key).
    awaiting_old: HashMap<(String, String), Awaiting>,
    /// Old rows that arrived for deletes already in the log.
    fixes: Vec<OldRowFix>,
}

impl Decoder {
    pub fn new(catalog: Arc<Catalog>) -> Decoder {
        Decoder {
            catalog,
            relations: HashMap::new(),
            txn: Vec::new(),
            awaiting_old: HashMap::new(),
            fixes: Vec::new(),
        }
    }

    pub fn begin(&mut self) {
        self.discard();
    }

    /// Drops what the open transaction has buffered (a transaction already in the log).
    pub fn discard(&mut self) {
        self.txn.clear();
        self.awaiting_old.clear();
        self.fixes.clear();
    }

    /// How much the open transaction holds in memory (changes and old rows to write).
    pub fn buffered(&self) -> usize {
        self.txn.len() + self.fixes.len()
    }

    /// Takes what the open transaction has buffered, to be written before its commit
    /// arrives (a large transaction). The `seq` each change gets must be passed to
    /// [`Decoder::written`] before the next message.
    pub fn take_chunk(&mut self) -> (Vec<Decoded>, Vec<OldRowFix>) {
        (
            std::mem::take(&mut self.txn),
            std::mem::take(&mut self.fixes),
        )
    }

    /// The chunk from [`Decoder::take_chunk`] is in the log with these `seq`s, in its order:
    /// old rows that arrive later for its deletes become fixes.
    pub fn written(&mut self, seqs: &[i64]) {
        for a in self.awaiting_old.values_mut() {
            if let Awaiting::Buffered(i) = *a {
                *a = Awaiting::Written(seqs[i]);
            }
        }
    }

    /// The committed transaction's remaining changes and fixes. A delete whose old row
    /// never came (its trigger was missing) carries the key columns as its old row.
    pub fn commit(&mut self) -> (Vec<Decoded>, Vec<OldRowFix>) {
        for ((table, pk), a) in std::mem::take(&mut self.awaiting_old) {
            if let Awaiting::Written(seq) = a {
                let pk = serde_json::from_str(&pk).unwrap_or(Value::Null);
                self.fixes.push((seq, self.key_as_row(&table, &pk)));
            }
        }
        let mut changes = std::mem::take(&mut self.txn);
        for c in &mut changes {
            if c.op == 'd' && c.old.is_none() {
                c.old = Some(self.key_as_row(&c.table, &c.pk));
            }
        }
        (changes, std::mem::take(&mut self.fixes))
    }

    /// The key columns of `table` as a row: the old row of a delete whose row never came.
    fn key_as_row(&self, table: &str, pk: &Value) -> Value {
        let mut obj = Map::new();
        if let (Some(spec), Some(vals)) = (self.catalog.by_name(table), pk.as_array()) {
            for (k, v) in spec.key.iter().zip(vals) {
                obj.insert(k.name.clone(), v.clone());
            }
        }
        Value::Object(obj)
    }

    /// Applies one pgoutput message.
    pub fn message(&mut self, msg: LogicalReplicationMessage) -> Result<(), LogicalError> {
        match msg {
            LogicalReplicationMessage::Relation {
                relation_id,
                namespace,
                relation_name,
                columns,
                ..
            } => {
                let name = format!("{namespace}.{relation_name}");
                let Some(spec) = self.catalog.by_name(&name) else {
                    self.relations.remove(&relation_id);
                    return Ok(());
                };
                let mut key = Vec::with_capacity(spec.key.len());
                for k in &spec.key {
                    let i = columns
                        .iter()
                        .position(|c| *c.name == *k.name)
                        .ok_or_else(|| {
                            LogicalError::Decode(format!(
                                "the publication does not list key column {} of {name}: run `rowcast migrate`",
                                k.name
                            ))
                        })?;
                    key.push((i, columns[i].type_id));
                }
                self.relations.insert(
                    relation_id,
                    Relation {
                        spec: spec.clone(),
                        key,
                    },
                );
            }
            LogicalReplicationMessage::Insert { relation_id, tuple } => {
                if let Some(pk) = self.key_of(relation_id, &tuple)? {
                    self.push('i', relation_id, pk);
                }
            }
            LogicalReplicationMessage::Update {
                relation_id,
                old_tuple,
                new_tuple,
                ..
            } => {
                let Some(new_pk) = self.key_of(relation_id, &new_tuple)? else {
                    return Ok(());
                };
                // An old key is sent only when the key changed: a delete of the old key
                // (its old row follows as a message) and an insert of the new one.
                let old_pk = match &old_tuple {
                    Some(t) => self.key_of(relation_id, t)?.filter(|k| *k != new_pk),
                    None => None,
                };
                match old_pk {
                    Some(old_pk) => {
                        self.push('d', relation_id, old_pk);
                        self.push('i', relation_id, new_pk);
                    }
                    None => self.push('u', relation_id, new_pk),
                }
            }
            LogicalReplicationMessage::Delete {
                relation_id,
                old_tuple,
                ..
            } => {
                if let Some(pk) = self.key_of(relation_id, &old_tuple)? {
                    self.push('d', relation_id, pk);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A `rowcast` message: `{"t": table, "old": row}` for a delete or a key change.
    pub fn old_row(&mut self, content: &[u8]) -> Result<(), LogicalError> {
        let v: Value = serde_json::from_slice(content)
            .map_err(|e| LogicalError::Decode(format!("rowcast message: {e}")))?;
        let (Some(table), Some(old)) = (v.get("t").and_then(Value::as_str), v.get("old")) else {
            return Err(LogicalError::Decode(
                "rowcast message without t or old".into(),
            ));
        };
        let Some(spec) = self.catalog.by_name(table) else {
            return Ok(());
        };
        let pk = Value::Array(
            spec.key
                .iter()
                .map(|k| old.get(&k.name).cloned().unwrap_or(Value::Null))
                .collect(),
        );
        match self
            .awaiting_old
            .remove(&(table.to_string(), pk.to_string()))
        {
            Some(Awaiting::Buffered(i)) => self.txn[i].old = Some(old.clone()),
            Some(Awaiting::Written(seq)) => self.fixes.push((seq, old.clone())),
            None => {
                // The heap change was not published (or came under another key form):
                // the message alone is the delete.
                self.txn.push(Decoded {
                    op: 'd',
                    table: table.to_string(),
                    pk,
                    old: Some(old.clone()),
                });
            }
        }
        Ok(())
    }

    fn push(&mut self, op: char, relation_id: u32, pk: Value) {
        let table = self.relations[&relation_id].spec.name.clone();
        if op == 'd' {
            let replaced = self.awaiting_old.insert(
                (table.clone(), pk.to_string()),
                Awaiting::Buffered(self.txn.len()),
            );
            // The same key deleted again before the first delete's old row came: that one
            // never comes (as at commit, for a buffered delete, the key is its old row).
            if let Some(Awaiting::Written(seq)) = replaced {
                self.fixes.push((seq, self.key_as_row(&table, &pk)));
            }
        }
        self.txn.push(Decoded {
            op,
            table,
            pk,
            old: None,
        });
    }

    /// The key of a tuple as a JSON array (typed like `to_jsonb` would: numbers, booleans,
    /// strings), or `None` for a relation rowcast does not capture.
    fn key_of(&self, relation_id: u32, tuple: &TupleData) -> Result<Option<Value>, LogicalError> {
        let Some(rel) = self.relations.get(&relation_id) else {
            return Ok(None);
        };
        let mut vals = Vec::with_capacity(rel.key.len());
        for &(i, type_id) in &rel.key {
            let col = tuple.get_column(i).ok_or_else(|| {
                LogicalError::Decode(format!("tuple of {} lacks column {i}", rel.spec.name))
            })?;
            vals.push(json_value(col, type_id));
        }
        Ok(Some(Value::Array(vals)))
    }
}

/// A key column's text value as the JSON `to_jsonb` gives for its type.
fn json_value(col: &ColumnData, type_id: u32) -> Value {
    let Some(text) = col.as_str() else {
        return Value::Null;
    };
    match type_id {
        // int2, int4, int8, oid, float4, float8, numeric
        21 | 23 | 20 | 26 | 700 | 701 | 1700 => serde_json::from_str::<serde_json::Number>(&text)
            .map(Value::Number)
            .unwrap_or_else(|_| Value::String(text.into_owned())),
        16 => Value::Bool(text == "t"),
        _ => Value::String(text.into_owned()),
    }
}

/// Decoded transactions waiting to be written, with the end position of the last one.
#[derive(Default)]
struct Pending {
    /// (commit end LSN, commit time, changes) per transaction, in commit order.
    txns: Vec<(u64, OffsetDateTime, Vec<Decoded>)>,
    changes: usize,
}

/// Streams the slot into `rowcast.changes` until an error. Runs on the sequencer replica
/// only (the caller holds the sequencer lock); `wake` is poked after every written batch.
pub struct SlotConsumer {
    pub config: CaptureConfig,
    pub database_url: String,
    pub tls: crate::db::Tls,
    pub ca_file: Option<std::path::PathBuf>,
    pub catalog: Arc<Catalog>,
    pub wake: Arc<Notify>,
}

impl SlotConsumer {
    pub async fn run(self) -> Result<(), LogicalError> {
        let (mut client, connection) =
            tokio_postgres::connect(&self.database_url, self.tls.clone()).await?;
        let driver = tokio::spawn(connection);
        let _driver = super::AbortOnDrop(tokio::spawn(async move {
            let _ = driver.await;
        }));
        let stored = stored_position(&client, &self.config.slot).await?;
        let mut repl = ReplicationClient::connect(self.replication_config()?).await?;
        repl.wait_started().await?;
        tracing::info!(slot = %self.config.slot, position = %Lsn::from_u64(stored), "streaming the replication slot");
        let mut parser = LogicalReplicationParser::with_protocol_version(1);
        let mut decoder = Decoder::new(self.catalog.clone());
        let mut pending = Pending::default();
        let mut commit_time = OffsetDateTime::now_utc();
        let mut open = false;
        // A transaction too large to hold until its commit (`batch` changes buffered):
        // written in chunks inside one database transaction, committed with the slot
        // position when its commit arrives.
        let mut large: Option<Large> = None;
        let mut final_lsn = 0u64;
        let batch = self.config.batch_size.max(1) as usize;
        loop {
            // Write what is decoded as soon as the stream has nothing more ready right now
            // (or a batch is full); otherwise wait for the next event.
            let event = if !open && pending.changes > 0 {
                match repl.recv().now_or_never() {
                    Some(ev) if pending.changes < batch => ev?,
                    Some(ev) => {
                        self.write(&mut client, &mut pending, &repl).await?;
                        ev?
                    }
                    None => {
                        self.write(&mut client, &mut pending, &repl).await?;
                        continue;
                    }
                }
            } else {
                repl.recv().await?
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
                    decoder.message(msg.message)?;
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
                    self.finish_large(&client, l, &mut decoder, commit_time, end_lsn.as_u64())
                        .await?;
                    repl.update_applied_lsn(end_lsn);
                    continue;
                }
                ReplicationEvent::Commit { end_lsn, .. } => {
                    open = false;
                    let (changes, fixes) = decoder.commit();
                    debug_assert!(fixes.is_empty(), "fixes come only from written chunks");
                    if changes.is_empty() {
                        if pending.txns.is_empty() {
                            repl.update_applied_lsn(end_lsn);
                        }
                        continue;
                    }
                    pending.changes += changes.len();
                    pending.txns.push((end_lsn.as_u64(), commit_time, changes));
                }
                ReplicationEvent::KeepAlive { wal_end, .. } => {
                    // Everything before the server's position has been received: with
                    // nothing in flight, the slot may move there (WAL is not retained).
                    if !open && pending.txns.is_empty() {
                        repl.update_applied_lsn(wal_end);
                    }
                }
                ReplicationEvent::StoppedAt { .. } => return Err(LogicalError::Ended),
            }
            if open && decoder.buffered() >= batch {
                if large.is_none() {
                    // Earlier transactions first, each with its own position.
                    self.write(&mut client, &mut pending, &repl).await?;
                    large = Some(self.start_large(&client, final_lsn).await?);
                }
                let l = large.as_mut().expect("just set");
                self.write_chunk(&client, l, &mut decoder, commit_time)
                    .await?;
            }
        }
    }

    /// Opens the database transaction a large transaction is written in, holding the
    /// stored position. A transaction that begins before the stored position is in the
    /// log already (the slot sends it again after a crash): it is skipped.
    async fn start_large(
        &self,
        client: &tokio_postgres::Client,
        final_lsn: u64,
    ) -> Result<Large, LogicalError> {
        // Between chunks the transaction waits for the stream: a server-side idle timeout
        // must not end it.
        client
            .batch_execute("BEGIN; SET LOCAL idle_in_transaction_session_timeout = 0")
            .await?;
        let stored = lock_position(client, &self.config.slot).await?;
        let skip = (final_lsn as i64) < stored;
        let (transaction, stored) = (Lsn::from_u64(final_lsn), Lsn::from_u64(stored as u64));
        if skip {
            tracing::info!(%transaction, %stored, "a large transaction sent again is in the log already: skipping it");
        } else {
            tracing::info!(%transaction, "a large transaction: writing it in chunks");
        }
        Ok(Large { skip, written: 0 })
    }

    /// Writes what the large transaction has buffered, inside its database transaction.
    async fn write_chunk(
        &self,
        client: &tokio_postgres::Client,
        large: &mut Large,
        decoder: &mut Decoder,
        time: OffsetDateTime,
    ) -> Result<(), LogicalError> {
        if large.skip {
            decoder.discard();
            return Ok(());
        }
        let (changes, fixes) = decoder.take_chunk();
        large.written += changes.len();
        let seqs = append(client, changes.into_iter().map(|c| (time, c))).await?;
        decoder.written(&seqs);
        fix_old_rows(client, fixes).await?;
        Ok(())
    }

    /// The large transaction's commit: its last chunk, the stored position and the
    /// database commit together (or, for a skipped one, nothing).
    async fn finish_large(
        &self,
        client: &tokio_postgres::Client,
        mut large: Large,
        decoder: &mut Decoder,
        time: OffsetDateTime,
        end_lsn: u64,
    ) -> Result<(), LogicalError> {
        if large.skip {
            decoder.discard();
            client.batch_execute("ROLLBACK").await?;
            return Ok(());
        }
        let (changes, fixes) = decoder.commit();
        large.written += changes.len();
        append(client, changes.into_iter().map(|c| (time, c))).await?;
        fix_old_rows(client, fixes).await?;
        store_position(client, &self.config.slot, end_lsn).await?;
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
        Ok(())
    }

    /// Appends the pending transactions (those after the stored position) to the log with
    /// their `seq`, moves the stored position, announces them, then acknowledges the slot.
    async fn write(
        &self,
        client: &mut tokio_postgres::Client,
        pending: &mut Pending,
        repl: &ReplicationClient,
    ) -> Result<(), LogicalError> {
        let Some(&(last_lsn, _, _)) = pending.txns.last() else {
            return Ok(());
        };
        let tx = client.transaction().await?;
        let stored = lock_position(&tx, &self.config.slot).await?;
        let rows = pending
            .txns
            .drain(..)
            .filter(|(lsn, _, _)| *lsn as i64 > stored)
            .flat_map(|(_, time, changes)| changes.into_iter().map(move |c| (time, c)));
        let n = append(&tx, rows).await?.len();
        pending.changes = 0;
        if n > 0 {
            tx.batch_execute(&format!("NOTIFY {SEQUENCED_CHANNEL}"))
                .await?;
        }
        if last_lsn as i64 > stored {
            store_position(&tx, &self.config.slot, last_lsn).await?;
        }
        tx.commit().await?;
        repl.update_applied_lsn(Lsn::from_u64(last_lsn));
        metrics::counter!("rowcast_capture_decoded_changes_total").increment(n as u64);
        if n > 0 {
            self.wake.notify_one();
        }
        Ok(())
    }

    fn replication_config(&self) -> Result<ReplicationConfig, LogicalError> {
        replication_config(
            &self.database_url,
            self.ca_file.as_deref(),
            &self.config.slot,
            &self.config.publication,
        )
    }
}

/// The replication connection's settings, from the same `DATABASE_URL` and TLS settings as
/// every other connection.
pub fn replication_config(
    url: &str,
    ca_file: Option<&std::path::Path>,
    slot: &str,
    publication: &str,
) -> Result<ReplicationConfig, LogicalError> {
    use tokio_postgres::config::{Host, SslMode};
    let pg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| LogicalError::Config(format!("DATABASE_URL: {e}")))?;
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.to_string_lossy().into_owned(),
        None => "localhost".to_string(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let user = pg
        .get_user()
        .ok_or_else(|| LogicalError::Config("DATABASE_URL names no user".into()))?;
    let password = pg
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let dbname = pg.get_dbname().unwrap_or(user);
    let tls = match (pg.get_ssl_mode(), ca_file) {
        (SslMode::Disable, _) => TlsConfig::disabled(),
        // The replication client checks host names but cannot check an IP address
        // against the certificate: for an IP it verifies the chain only.
        (_, Some(ca)) if host.parse::<std::net::IpAddr>().is_ok() => {
            TlsConfig::verify_ca(Some(ca.to_path_buf()))
        }
        (_, Some(ca)) => TlsConfig::verify_full(Some(ca.to_path_buf())),
        (SslMode::Require, None) => TlsConfig::require(),
        (_, None) => TlsConfig {
            mode: pgwire_replication::SslMode::Prefer,
            ..TlsConfig::disabled()
        },
    };
    Ok(
        ReplicationConfig::new(host, user, password, dbname, slot, publication)
            .with_port(port)
            .with_tls(tls)
            .with_status_interval(Duration::from_secs(1))
            .with_wakeup_interval(Duration::from_secs(5))
            .with_application_name("rowcast"),
    )
}

/// WAL the slot keeps on the server (bytes from its confirmed position to the current end):
/// it grows while no rowcast consumes the slot.
pub async fn retained_bytes(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<f64, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::float8
               FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?
        .and_then(|r| r.get::<_, Option<f64>>(0))
        .unwrap_or(0.0))
}

/// The stored position of `slot` (creating its row at `0/0` the first time).
async fn stored_position(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO rowcast.slot_positions (slot, lsn) VALUES ($1, '0/0')
             ON CONFLICT (slot) DO NOTHING",
            &[&slot],
        )
        .await?;
    let v: i64 = client
        .query_one(
            "SELECT (lsn - '0/0'::pg_lsn)::bigint FROM rowcast.slot_positions WHERE slot = $1",
            &[&slot],
        )
        .await?
        .get(0);
    Ok(v as u64)
}

/// The stored position of `slot`, locked until the transaction ends.
async fn lock_position<C: tokio_postgres::GenericClient>(
    client: &C,
    slot: &str,
) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT (lsn - '0/0'::pg_lsn)::bigint FROM rowcast.slot_positions
              WHERE slot = $1 FOR UPDATE",
            &[&slot],
        )
        .await?
        .get(0))
}

/// Moves the stored position of `slot` to `lsn` (in the transaction that wrote up to it).
async fn store_position<C: tokio_postgres::GenericClient>(
    client: &C,
    slot: &str,
    lsn: u64,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE rowcast.slot_positions
                SET lsn = '0/0'::pg_lsn + $2::bigint::numeric, updated_at = now()
              WHERE slot = $1",
            &[&slot, &(lsn as i64)],
        )
        .await?;
    Ok(())
}

/// A large transaction being written in chunks.
struct Large {
    /// In the log already (before the stored position): its chunks are dropped.
    skip: bool,
    /// Changes written so far.
    written: usize,
}

/// Appends changes to the log in their order, each with the next `seq`; returns the
/// `seq`s in the same order.
async fn append<C: tokio_postgres::GenericClient>(
    client: &C,
    rows: impl Iterator<Item = (OffsetDateTime, Decoded)>,
) -> Result<Vec<i64>, tokio_postgres::Error> {
    let (mut at, mut op, mut tbl, mut pk, mut old) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (time, c) in rows {
        at.push(time);
        op.push(c.op.to_string());
        tbl.push(c.table);
        pk.push(c.pk);
        old.push(c.old);
    }
    if at.is_empty() {
        return Ok(Vec::new());
    }
    // `unnest` yields the rows in order, so `nextval` numbers them in order too.
    let mut seqs: Vec<i64> = client
        .query(
            "INSERT INTO rowcast.changes (seq, at, op, tbl, pk, old)
             SELECT nextval('rowcast.change_seq'), u.at, u.op::\"char\", u.tbl, u.pk, u.old
               FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::jsonb[], $5::jsonb[])
                    WITH ORDINALITY AS u(at, op, tbl, pk, old, ord)
              ORDER BY u.ord
             RETURNING seq",
            &[&at, &op, &tbl, &pk, &old],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// Sets the old rows of deletes already in the log (by `seq`).
async fn fix_old_rows<C: tokio_postgres::GenericClient>(
    client: &C,
    fixes: Vec<OldRowFix>,
) -> Result<(), tokio_postgres::Error> {
    if fixes.is_empty() {
        return Ok(());
    }
    let (seqs, olds): (Vec<i64>, Vec<Value>) = fixes.into_iter().unzip();
    client
        .execute(
            "UPDATE rowcast.changes c SET old = f.old
               FROM unnest($1::int8[], $2::jsonb[]) AS f(seq, old)
              WHERE c.seq = f.seq AND c.seq IS NOT NULL",
            &[&seqs, &olds],
        )
        .await?;
    Ok(())
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
    use crate::schema::KeyColumn;
    use pg_walstream::protocol::ColumnInfo;

    fn catalog() -> Arc<Catalog> {
        let mut catalog = Catalog::default();
        let config = crate::config::default_tables()
            .into_iter()
            .find(|t| t.entity == "ticket")
            .expect("tickets in the default mapping");
        catalog.push(TableSpec {
            config,
            name: "public.tickets".into(),
            quoted: "\"public\".\"tickets\"".into(),
            key: vec![KeyColumn {
                name: "id".into(),
                sql_type: "bigint".into(),
            }],
            columns: vec!["id".into(), "subject".into()],
        });
        Arc::new(catalog)
    }

    fn relation(d: &mut Decoder) {
        d.message(LogicalReplicationMessage::Relation {
            relation_id: 16400,
            namespace: "public".into(),
            relation_name: "tickets".into(),
            replica_identity: b'd',
            columns: vec![ColumnInfo::new(1, "id".into(), 20, -1)],
        })
        .unwrap();
    }

    fn tuple(id: &str) -> TupleData {
        TupleData::new(vec![ColumnData::text(id.as_bytes().to_vec())])
    }

    /// A delete of the ticket with key `id` (the publication sends the key only).
    fn delete(id: &str) -> LogicalReplicationMessage {
        LogicalReplicationMessage::Delete {
            relation_id: 16400,
            old_tuple: tuple(id),
            key_type: 'K',
        }
    }

    #[test]
    fn keys_are_typed_like_to_jsonb() {
        let text = |s: &str| ColumnData::text(s.as_bytes().to_vec());
        assert_eq!(json_value(&text("42"), 20), serde_json::json!(42));
        assert_eq!(json_value(&text("1.5"), 1700), serde_json::json!(1.5));
        assert_eq!(json_value(&text("t"), 16), serde_json::json!(true));
        assert_eq!(json_value(&text("0b4a…"), 2950), serde_json::json!("0b4a…"));
        assert_eq!(json_value(&ColumnData::null(), 20), Value::Null);
    }

    #[test]
    fn deletes_get_their_old_row_from_the_message_and_key_changes_split() {
        let mut d = Decoder::new(catalog());
        d.begin();
        relation(&mut d);
        d.message(LogicalReplicationMessage::Insert {
            relation_id: 16400,
            tuple: tuple("1"),
        })
        .unwrap();
        d.message(LogicalReplicationMessage::Update {
            relation_id: 16400,
            old_tuple: None,
            new_tuple: tuple("1"),
            key_type: None,
        })
        .unwrap();
        // A key change: old key 2 → new key 3; its old row arrives as a message after it.
        d.message(LogicalReplicationMessage::Update {
            relation_id: 16400,
            old_tuple: Some(tuple("2")),
            new_tuple: tuple("3"),
            key_type: Some('K'),
        })
        .unwrap();
        d.old_row(br#"{"t":"public.tickets","old":{"id":2,"subject":"two"}}"#)
            .unwrap();
        d.message(delete("1")).unwrap();
        d.old_row(br#"{"t":"public.tickets","old":{"id":1,"subject":"one"}}"#)
            .unwrap();
        // A delete whose trigger is missing: the key stands in for the old row.
        d.message(delete("9")).unwrap();
        // Changes of tables rowcast does not capture are ignored.
        d.message(LogicalReplicationMessage::Insert {
            relation_id: 99,
            tuple: tuple("5"),
        })
        .unwrap();
        d.old_row(br#"{"t":"public.other","old":{"id":5}}"#)
            .unwrap();
        let (changes, fixes) = d.commit();
        assert!(fixes.is_empty());
        let got: Vec<(char, String, Option<String>)> = changes
            .into_iter()
            .map(|c| (c.op, c.pk.to_string(), c.old.map(|o| o.to_string())))
            .collect();
        let want = vec![
            ('i', "[1]".to_string(), None),
            ('u', "[1]".to_string(), None),
            (
                'd',
                "[2]".to_string(),
                Some(r#"{"id":2,"subject":"two"}"#.to_string()),
            ),
            ('i', "[3]".to_string(), None),
            (
                'd',
                "[1]".to_string(),
                Some(r#"{"id":1,"subject":"one"}"#.to_string()),
            ),
            ('d', "[9]".to_string(), Some(r#"{"id":9}"#.to_string())),
        ];
        assert_eq!(got, want);
        assert!(d.commit().0.is_empty(), "a commit takes every change");
    }

    /// A large transaction written in chunks: deletes written before their old row came
    /// get it as a fix by `seq`, also at commit when it never comes, and when the same
    /// key is deleted again.
    #[test]
    fn chunks_written_early_get_their_old_rows_as_fixes() {
        let mut d = Decoder::new(catalog());
        d.begin();
        relation(&mut d);
        // A multi-row DELETE: the rows first, the AFTER trigger's messages at its end.
        for id in ["1", "2", "3"] {
            d.message(delete(id)).unwrap();
        }
        assert_eq!(d.buffered(), 3);
        let (chunk, fixes) = d.take_chunk();
        assert_eq!(chunk.len(), 3);
        assert!(fixes.is_empty());
        assert!(chunk.iter().all(|c| c.op == 'd' && c.old.is_none()));
        d.written(&[101, 102, 103]);
        assert_eq!(d.buffered(), 0);

        d.old_row(br#"{"t":"public.tickets","old":{"id":2,"subject":"two"}}"#)
            .unwrap();
        d.old_row(br#"{"t":"public.tickets","old":{"id":1,"subject":"one"}}"#)
            .unwrap();
        assert_eq!(d.buffered(), 2, "two fixes");
        // Ticket 3 is inserted and deleted again before its first old row came.
        d.message(LogicalReplicationMessage::Insert {
            relation_id: 16400,
            tuple: tuple("3"),
        })
        .unwrap();
        d.message(delete("3")).unwrap();
        d.old_row(br#"{"t":"public.tickets","old":{"id":3,"subject":"again"}}"#)
            .unwrap();

        let (changes, fixes) = d.commit();
        let fixes: Vec<(i64, String)> =
            fixes.into_iter().map(|(s, o)| (s, o.to_string())).collect();
        assert_eq!(
            fixes,
            vec![
                (102, r#"{"id":2,"subject":"two"}"#.to_string()),
                (101, r#"{"id":1,"subject":"one"}"#.to_string()),
                (103, r#"{"id":3}"#.to_string()),
            ]
        );
        let got: Vec<(char, String, Option<String>)> = changes
            .into_iter()
            .map(|c| (c.op, c.pk.to_string(), c.old.map(|o| o.to_string())))
            .collect();
        assert_eq!(
            got,
            vec![
                ('i', "[3]".to_string(), None),
                (
                    'd',
                    "[3]".to_string(),
                    Some(r#"{"id":3,"subject":"again"}"#.to_string())
                ),
            ]
        );

        // A delete written early whose old row never comes: the key, at commit.
        d.begin();
        d.message(delete("7")).unwrap();
        let _ = d.take_chunk();
        d.written(&[200]);
        let (changes, fixes) = d.commit();
        assert!(changes.is_empty());
        assert_eq!(fixes, vec![(200, serde_json::json!({"id": 7}))]);
    }

    #[test]
    fn commit_times_count_from_2000() {
        assert_eq!(pg_time(0).unix_timestamp(), 946_684_800);
        assert_eq!(pg_time(1_000_000).unix_timestamp(), 946_684_801);
    }
}
