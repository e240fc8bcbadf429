//! pgoutput messages → [`Decoded`] changes, one transaction at a time. Pure: no I/O, tested
//! with synthetic protocol messages.

use std::collections::HashMap;
use std::sync::Arc;

use pg_walstream::protocol::{ColumnData, LogicalReplicationMessage, TupleData};
use serde_json::{Map, Value};

use super::LogicalError;
use crate::catalog::{Catalog, TableSpec};
use crate::event::Op;

/// One change decoded from the stream, before it has a `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub op: Op,
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
    /// The latest update of each row in the open transaction, by (table, key): where the
    /// old values of its audience columns go when their message comes.
    last_update: HashMap<(String, String), Awaiting>,
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
            last_update: HashMap::new(),
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
        self.last_update.clear();
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
        for a in self
            .awaiting_old
            .values_mut()
            .chain(self.last_update.values_mut())
        {
            if let Awaiting::Buffered(i) = *a {
                *a = Awaiting::Written(seqs[i]);
            }
        }
    }

    /// The committed transaction's remaining changes and fixes. A delete whose old row
    /// never came (its trigger was missing) carries the key columns as its old row.
    pub fn commit(&mut self) -> (Vec<Decoded>, Vec<OldRowFix>) {
        self.last_update.clear();
        for ((table, pk), a) in std::mem::take(&mut self.awaiting_old) {
            if let Awaiting::Written(seq) = a {
                let pk = serde_json::from_str(&pk).unwrap_or(Value::Null);
                self.fixes.push((seq, self.key_as_row(&table, &pk)));
            }
        }
        let mut changes = std::mem::take(&mut self.txn);
        for c in &mut changes {
            if c.op == Op::Delete && c.old.is_none() {
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
                    self.push(Op::Insert, relation_id, pk);
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
                        self.push(Op::Delete, relation_id, old_pk);
                        self.push(Op::Insert, relation_id, new_pk);
                    }
                    None => self.push(Op::Update, relation_id, new_pk),
                }
            }
            LogicalReplicationMessage::Delete {
                relation_id,
                old_tuple,
                ..
            } => {
                if let Some(pk) = self.key_of(relation_id, &old_tuple)? {
                    self.push(Op::Delete, relation_id, pk);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A `rowcast` message: `{"t": table, "old": row}` for a delete or a key change, or
    /// `{"t": table, "u": key, "old": values}` with the old values of the audience columns
    /// an update changed.
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
        if let Some(key) = v.get("u") {
            // The update came before its trigger's message (AFTER ROW triggers run at the
            // end of the statement); an update not published carries nothing to attach to.
            match self.last_update.get(&(table.to_string(), key.to_string())) {
                Some(Awaiting::Buffered(i)) => self.txn[*i].old = Some(old.clone()),
                Some(Awaiting::Written(seq)) => self.fixes.push((*seq, old.clone())),
                None => {}
            }
            return Ok(());
        }
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
                    op: Op::Delete,
                    table: table.to_string(),
                    pk,
                    old: Some(old.clone()),
                });
            }
        }
        Ok(())
    }

    fn push(&mut self, op: Op, relation_id: u32, pk: Value) {
        let table = self.relations[&relation_id].spec.name.clone();
        if op == Op::Update {
            self.last_update.insert(
                (table.clone(), pk.to_string()),
                Awaiting::Buffered(self.txn.len()),
            );
        }
        if op == Op::Delete {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::KeyColumn;
    use pg_walstream::protocol::ColumnInfo;

    fn catalog() -> Arc<Catalog> {
        let mut catalog = Catalog::default();
        let config = crate::catalog::default_tables()
            .into_iter()
            .find(|t| t.entity == "ticket")
            .expect("tickets in the default mapping");
        catalog.push(TableSpec::new(
            config,
            "public.tickets".into(),
            "\"public\".\"tickets\"".into(),
            vec![KeyColumn {
                name: "id".into(),
                sql_type: "bigint".into(),
            }],
            vec!["id".into(), "subject".into()],
        ));
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
        let got: Vec<(Op, String, Option<String>)> = changes
            .into_iter()
            .map(|c| (c.op, c.pk.to_string(), c.old.map(|o| o.to_string())))
            .collect();
        let want = vec![
            (Op::Insert, "[1]".to_string(), None),
            (Op::Update, "[1]".to_string(), None),
            (
                Op::Delete,
                "[2]".to_string(),
                Some(r#"{"id":2,"subject":"two"}"#.to_string()),
            ),
            (Op::Insert, "[3]".to_string(), None),
            (
                Op::Delete,
                "[1]".to_string(),
                Some(r#"{"id":1,"subject":"one"}"#.to_string()),
            ),
            (
                Op::Delete,
                "[9]".to_string(),
                Some(r#"{"id":9}"#.to_string()),
            ),
        ];
        assert_eq!(got, want);
        assert!(d.commit().0.is_empty(), "a commit takes every change");
    }

    /// An update's trigger message carries the old values of the audience columns it
    /// changed: they become the update's `old`, buffered or (large transactions) by `seq`.
    #[test]
    fn updates_get_the_old_values_of_their_audience_columns() {
        let mut d = Decoder::new(catalog());
        d.begin();
        relation(&mut d);
        let update = |id: &str| LogicalReplicationMessage::Update {
            relation_id: 16400,
            old_tuple: None,
            new_tuple: tuple(id),
            key_type: None,
        };
        d.message(update("1")).unwrap();
        d.message(update("2")).unwrap();
        d.old_row(br#"{"t":"public.tickets","u":[1],"old":{"requester_id":3}}"#)
            .unwrap();
        // A message for an update that was not published is dropped.
        d.old_row(br#"{"t":"public.tickets","u":[9],"old":{"requester_id":4}}"#)
            .unwrap();
        let (changes, fixes) = d.commit();
        assert!(fixes.is_empty());
        let olds: Vec<Option<String>> = changes
            .iter()
            .map(|c| c.old.as_ref().map(|o| o.to_string()))
            .collect();
        assert_eq!(olds, vec![Some(r#"{"requester_id":3}"#.into()), None]);
        assert!(changes.iter().all(|c| c.op == Op::Update));

        d.begin();
        d.message(update("5")).unwrap();
        let _ = d.take_chunk();
        d.written(&[300]);
        d.old_row(br#"{"t":"public.tickets","u":[5],"old":{"requester_id":7}}"#)
            .unwrap();
        let (changes, fixes) = d.commit();
        assert!(changes.is_empty());
        assert_eq!(fixes, vec![(300, serde_json::json!({"requester_id": 7}))]);
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
        assert!(chunk.iter().all(|c| c.op == Op::Delete && c.old.is_none()));
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
        let got: Vec<(Op, String, Option<String>)> = changes
            .into_iter()
            .map(|c| (c.op, c.pk.to_string(), c.old.map(|o| o.to_string())))
            .collect();
        assert_eq!(
            got,
            vec![
                (Op::Insert, "[3]".to_string(), None),
                (
                    Op::Delete,
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
}
