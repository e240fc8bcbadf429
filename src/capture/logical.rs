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

/// Turns pgoutput messages into [`Decoded`] changes, one transaction at a time.
pub struct Decoder {
    catalog: Arc<Catalog>,
    relations: HashMap<u32, Relation>,
    /// The open transaction's changes.
    txn: Vec<Decoded>,
    /// Index in `txn` of each delete still waiting for its old row, by (table, key).
    awaiting_old: HashMap<(String, String), usize>,
}

impl Decoder {
    pub fn new(catalog: Arc<Catalog>) -> Decoder {
        Decoder {
            catalog,
            relations: HashMap::new(),
            txn: Vec::new(),
            awaiting_old: HashMap::new(),
        }
    }

    pub fn begin(&mut self) {
        self.txn.clear();
        self.awaiting_old.clear();
    }

    /// The committed transaction's changes. A delete whose old row never came (its trigger
    /// was missing) carries the key columns as its old row.
    pub fn commit(&mut self) -> Vec<Decoded> {
        self.awaiting_old.clear();
        let mut changes = std::mem::take(&mut self.txn);
        for c in &mut changes {
            if c.op == 'd' && c.old.is_none() {
                let spec = self.catalog.by_name(&c.table);
                let mut obj = Map::new();
                if let (Some(spec), Some(vals)) = (spec, c.pk.as_array()) {
                    for (k, v) in spec.key.iter().zip(vals) {
                        obj.insert(k.name.clone(), v.clone());
                    }
                }
                c.old = Some(Value::Object(obj));
            }
        }
        changes
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
            Some(i) => self.txn[i].old = Some(old.clone()),
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
            self.awaiting_old
                .insert((table.clone(), pk.to_string()), self.txn.len());
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
                    commit_time_micros, ..
                } => {
                    open = true;
                    decoder.begin();
                    commit_time = pg_time(commit_time_micros);
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
                ReplicationEvent::Commit { end_lsn, .. } => {
                    open = false;
                    let changes = decoder.commit();
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
        }
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
        let stored: i64 = tx
            .query_one(
                "SELECT (lsn - '0/0'::pg_lsn)::bigint FROM rowcast.slot_positions
                  WHERE slot = $1 FOR UPDATE",
                &[&self.config.slot],
            )
            .await?
            .get(0);
        let (mut at, mut op, mut tbl, mut pk, mut old) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (lsn, time, changes) in pending.txns.drain(..) {
            if lsn as i64 <= stored {
                continue;
            }
            for c in changes {
                at.push(time);
                op.push(c.op.to_string());
                tbl.push(c.table);
                pk.push(c.pk);
                old.push(c.old);
            }
        }
        pending.changes = 0;
        let n = at.len();
        if n > 0 {
            tx.execute(
                "INSERT INTO rowcast.changes (seq, at, op, tbl, pk, old)
                 SELECT nextval('rowcast.change_seq'), u.at, u.op::\"char\", u.tbl, u.pk, u.old
                   FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::jsonb[], $5::jsonb[])
                        WITH ORDINALITY AS u(at, op, tbl, pk, old, ord)
                  ORDER BY u.ord",
                &[&at, &op, &tbl, &pk, &old],
            )
            .await?;
            tx.batch_execute(&format!("NOTIFY {SEQUENCED_CHANNEL}"))
                .await?;
        }
        if last_lsn as i64 > stored {
            tx.execute(
                "UPDATE rowcast.slot_positions
                    SET lsn = '0/0'::pg_lsn + $2::bigint::numeric, updated_at = now()
                  WHERE slot = $1",
                &[&self.config.slot, &(last_lsn as i64)],
            )
            .await?;
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
        let got: Vec<(char, String, Option<String>)> = d
            .commit()
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
        assert!(d.commit().is_empty(), "a commit takes every change");
    }

    #[test]
    fn commit_times_count_from_2000() {
        assert_eq!(pg_time(0).unix_timestamp(), 946_684_800);
        assert_eq!(pg_time(1_000_000).unix_timestamp(), 946_684_801);
    }
}
