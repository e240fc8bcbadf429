//! pgoutput messages → [`Decoded`] changes, one transaction at a time, each with its row
//! rendered as `to_jsonb` would ([`super::render`]). Pure: no I/O (the consumer loads the
//! column types and the installed columns it is told about, and completes what only the
//! database can supply: [`Missing`]); tested with synthetic protocol messages.

use std::collections::HashMap;
use std::sync::Arc;

use pg_walstream::protocol::{ColumnData, LogicalReplicationMessage, TupleData};
use serde_json::{Map, Value};

use super::LogicalError;
use super::render::{self, Render};
use crate::catalog::{Catalog, TableSpec, TypeFacts};
use crate::event::Op;

/// Why a change carries no row: its relation's published columns are not the ones
/// `rowcast migrate` installed (or the trigger found the table's shape changed).
pub const SHAPE_CHANGED: &str = "shape";

/// One change decoded from the stream, before it has a `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub op: Op,
    pub table: String,
    pub pk: Value,
    pub old: Option<Value>,
    /// The row after the change (inserts and updates).
    pub data: Option<Value>,
    /// Why the change carries no row.
    pub withheld: Option<String>,
    /// Columns of `data` the stream did not carry (`null` until completed).
    pub missing: Vec<Missing>,
}

/// A value of a decoded row that only the database can supply.
#[derive(Debug, Clone, PartialEq)]
pub enum Missing {
    /// An unchanged TOASTed value (pgoutput's `u`): read from the table by key.
    Toast { column: String },
    /// A value `to_jsonb` renders through its type (composites, casts to `json`):
    /// `to_jsonb(text::<type_name>)`.
    Database {
        column: String,
        type_name: String,
        text: String,
    },
}

/// A relation announced by pgoutput.
struct Relation {
    spec: Arc<TableSpec>,
    /// Published columns: (name, type oid), in tuple order.
    columns: Vec<(String, u32)>,
    /// Tuple index of each key column, in key order.
    key: Vec<usize>,
    /// The published columns are not what `migrate` installed: rows are withheld.
    withheld: bool,
}

/// Where a change waiting for something from a later message is.
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
    /// How each column type renders; types a relation needs and this lacks are listed by
    /// [`Decoder::types_needed`].
    renders: HashMap<u32, Render>,
    /// The visible columns `migrate` installed, by table.
    installed: HashMap<String, Vec<String>>,
    /// The open transaction's changes not written yet.
    txn: Vec<Decoded>,
    /// Each delete still waiting for its old row, by (table, key).
    awaiting_old: HashMap<(String, String), Awaiting>,
    /// The latest update of each row in the open transaction, by (table, key): where the
    /// old values of its audience columns go when their message comes.
    last_update: HashMap<(String, String), Awaiting>,
    /// The latest buffered row of each key in the open transaction: an unchanged TOASTed
    /// value of a later update is taken from it.
    latest_row: HashMap<(String, String), usize>,
    /// Old rows that arrived for deletes already in the log.
    fixes: Vec<OldRowFix>,
}

impl Decoder {
    pub fn new(catalog: Arc<Catalog>) -> Decoder {
        Decoder {
            catalog,
            relations: HashMap::new(),
            renders: HashMap::new(),
            installed: HashMap::new(),
            txn: Vec::new(),
            awaiting_old: HashMap::new(),
            last_update: HashMap::new(),
            latest_row: HashMap::new(),
            fixes: Vec::new(),
        }
    }

    /// The visible columns `migrate` installed on each table (`rowcast.tables`). Relations
    /// announced later are checked against them.
    pub fn set_installed(&mut self, installed: HashMap<String, Vec<String>>) {
        self.installed = installed;
    }

    /// Column types of announced relations whose rendering is not known yet.
    pub fn types_needed(&self) -> Vec<u32> {
        let mut oids: Vec<u32> = self
            .relations
            .values()
            .flat_map(|r| r.columns.iter().map(|(_, oid)| *oid))
            .filter(|oid| !self.renders.contains_key(oid))
            .collect();
        oids.sort_unstable();
        oids.dedup();
        oids
    }

    /// Learns how the types in `facts` render.
    pub fn add_types(&mut self, facts: &HashMap<u32, TypeFacts>) {
        for oid in facts.keys() {
            self.renders.insert(*oid, render::plan(*oid, facts));
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
        self.latest_row.clear();
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
        self.latest_row.clear();
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
        self.latest_row.clear();
        for ((table, pk), a) in std::mem::take(&mut self.awaiting_old) {
            if let Awaiting::Written(seq) = a {
                let pk = serde_json::from_str(&pk).unwrap_or(Value::Null);
                self.fixes.push((seq, self.key_as_row(&table, &pk)));
            }
        }
        let mut changes = std::mem::take(&mut self.txn);
        for c in &mut changes {
            if c.op == Op::Delete && c.old.is_none() && c.withheld.is_none() {
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
                let columns: Vec<(String, u32)> = columns
                    .iter()
                    .map(|c| (c.name.to_string(), c.type_id))
                    .collect();
                let mut key = Vec::with_capacity(spec.key.len());
                for k in &spec.key {
                    let i = columns.iter().position(|(c, _)| *c == k.name).ok_or_else(|| {
                        LogicalError::Decode(format!(
                            "the publication does not list key column {} of {name}: run `rowcast migrate`",
                            k.name
                        ))
                    })?;
                    key.push(i);
                }
                let withheld = match self.installed.get(&name) {
                    Some(visible) => columns.iter().any(|(c, _)| !visible.contains(c)),
                    None => true,
                };
                if withheld {
                    tracing::error!(table = %name, "the publication sends columns `rowcast migrate` did not install: the table's rows are withheld");
                }
                self.relations.insert(
                    relation_id,
                    Relation {
                        spec: spec.clone(),
                        columns,
                        key,
                        withheld,
                    },
                );
            }
            LogicalReplicationMessage::Insert { relation_id, tuple } => {
                if let Some(pk) = self.key_of(relation_id, &tuple)? {
                    self.push_row(Op::Insert, relation_id, pk, &tuple);
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
                        self.push_delete(relation_id, old_pk);
                        self.push_row(Op::Insert, relation_id, new_pk, &new_tuple);
                    }
                    None => self.push_row(Op::Update, relation_id, new_pk, &new_tuple),
                }
            }
            LogicalReplicationMessage::Delete {
                relation_id,
                old_tuple,
                ..
            } => {
                if let Some(pk) = self.key_of(relation_id, &old_tuple)? {
                    self.push_delete(relation_id, pk);
                }
            }
            _ => {}
        }
        Ok(())
    }
    /// A `rowcast` message: `{"t": table, "old": row}` for a delete or a key change,
    /// `{"t": table, "w": reason, "k": key}` for one whose row was withheld (the table's
    /// shape changed), or `{"t": table, "u": key, "old": values}` with the old values of the
    /// audience columns an update changed.
    pub fn old_row(&mut self, content: &[u8]) -> Result<(), LogicalError> {
        let v: Value = serde_json::from_slice(content)
            .map_err(|e| LogicalError::Decode(format!("rowcast message: {e}")))?;
        let Some(table) = v.get("t").and_then(Value::as_str) else {
            return Err(LogicalError::Decode("rowcast message without t".into()));
        };
        let Some(spec) = self.catalog.by_name(table) else {
            return Ok(());
        };
        if let (Some(reason), Some(pk)) = (v.get("w").and_then(Value::as_str), v.get("k")) {
            let key = (table.to_string(), pk.to_string());
            match self.awaiting_old.remove(&key) {
                Some(Awaiting::Buffered(i)) => {
                    self.txn[i].withheld = Some(reason.to_string());
                }
                // Written already without its old row: the key stands in (no row is known).
                Some(Awaiting::Written(_)) | None => {}
            }
            return Ok(());
        }
        let Some(old) = v.get("old") else {
            return Err(LogicalError::Decode(
                "rowcast message without old or w".into(),
            ));
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
                    data: None,
                    withheld: None,
                    missing: Vec::new(),
                });
            }
        }
        Ok(())
    }

    /// A delete (its old row comes as a message).
    fn push_delete(&mut self, relation_id: u32, pk: Value) {
        let rel = &self.relations[&relation_id];
        let table = rel.spec.name.clone();
        let withheld = rel.withheld.then(|| SHAPE_CHANGED.to_string());
        let key = (table.clone(), pk.to_string());
        self.latest_row.remove(&key);
        let replaced = self
            .awaiting_old
            .insert(key, Awaiting::Buffered(self.txn.len()));
        // The same key deleted again before the first delete's old row came: that one
        // never comes (as at commit, for a buffered delete, the key is its old row).
        if let Some(Awaiting::Written(seq)) = replaced {
            self.fixes.push((seq, self.key_as_row(&table, &pk)));
        }
        self.txn.push(Decoded {
            op: Op::Delete,
            table,
            pk,
            old: None,
            data: None,
            withheld,
            missing: Vec::new(),
        });
    }

    /// An insert or update with its row from `tuple`.
    fn push_row(&mut self, op: Op, relation_id: u32, pk: Value, tuple: &TupleData) {
        let rel = &self.relations[&relation_id];
        let table = rel.spec.name.clone();
        let key = (table.clone(), pk.to_string());
        let (data, withheld, missing) = if rel.withheld {
            (None, Some(SHAPE_CHANGED.to_string()), Vec::new())
        } else {
            let previous = self
                .latest_row
                .get(&key)
                .and_then(|&i| self.txn[i].data.as_ref());
            let (row, missing) = row_of(rel, tuple, &self.renders, previous);
            (Some(Value::Object(row)), None, missing)
        };
        if op == Op::Update {
            self.last_update
                .insert(key.clone(), Awaiting::Buffered(self.txn.len()));
        }
        if data.is_some() {
            self.latest_row.insert(key, self.txn.len());
        }
        self.txn.push(Decoded {
            op,
            table,
            pk,
            old: None,
            data,
            withheld,
            missing,
        });
    }

    /// The key of a tuple as a JSON array (rendered like `to_jsonb`), or `None` for a
    /// relation rowcast does not capture.
    fn key_of(&self, relation_id: u32, tuple: &TupleData) -> Result<Option<Value>, LogicalError> {
        let Some(rel) = self.relations.get(&relation_id) else {
            return Ok(None);
        };
        let mut vals = Vec::with_capacity(rel.key.len());
        for &i in &rel.key {
            let col = tuple.get_column(i).ok_or_else(|| {
                LogicalError::Decode(format!("tuple of {} lacks column {i}", rel.spec.name))
            })?;
            let render = self.renders.get(&rel.columns[i].1).unwrap_or(&Render::Text);
            vals.push(value(col, render).unwrap_or(Value::Null));
        }
        Ok(Some(Value::Array(vals)))
    }
}

/// A tuple as a row: every published column rendered, unchanged TOASTed values taken from
/// `previous` (the row's earlier version in the same transaction) or listed as missing.
fn row_of(
    rel: &Relation,
    tuple: &TupleData,
    renders: &HashMap<u32, Render>,
    previous: Option<&Value>,
) -> (Map<String, Value>, Vec<Missing>) {
    let mut row = Map::with_capacity(rel.columns.len());
    let mut missing = Vec::new();
    for (i, (name, oid)) in rel.columns.iter().enumerate() {
        let col = tuple.get_column(i);
        let v = match col {
            None => Value::Null,
            Some(c) if c.is_unchanged() => match previous.and_then(|p| p.get(name)) {
                Some(v) => v.clone(),
                None => {
                    missing.push(Missing::Toast {
                        column: name.clone(),
                    });
                    Value::Null
                }
            },
            Some(c) => {
                let render = renders.get(oid).unwrap_or(&Render::Text);
                match value(c, render) {
                    Some(v) => v,
                    None => {
                        if let (Render::Database(type_name), Some(text)) = (render, c.as_str()) {
                            missing.push(Missing::Database {
                                column: name.clone(),
                                type_name: type_name.clone(),
                                text: text.into_owned(),
                            });
                        }
                        Value::Null
                    }
                }
            }
        };
        row.insert(name.clone(), v);
    }
    (row, missing)
}

/// A column's value rendered like `to_jsonb`; `None` when only the database can.
fn value(col: &ColumnData, render: &Render) -> Option<Value> {
    if col.is_null() {
        return Some(Value::Null);
    }
    render::render(render, &col.as_str()?)
}

#[cfg(test)]
mod tests;
