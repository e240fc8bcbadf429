//! Audiences of a batch: the rows the tables' rules refer to (parent rows, found in the
//! batch itself or loaded once per table per batch) and each event's reach, computed once
//! per event — never per subscriber.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{EnrichError, load_rows};
use crate::catalog::{Catalog, EvalError, Parents, Step, TableSpec, scalar_text};
use crate::event::Reach;

/// Parent chains are at most this deep (the catalog refuses circles).
const MAX_DEPTH: usize = 8;

/// A row of the batch (borrowed) or loaded for it (owned).
type Row<'r> = Cow<'r, Map<String, Value>>;

/// The rows a batch's rules may refer to, by table and key.
pub struct BatchParents<'r> {
    catalog: Arc<Catalog>,
    /// The batch's own rows borrowed, loaded ones owned.
    rows: HashMap<(String, String), Row<'r>>,
}

/// A key's values as one text, whatever JSON type each value came as (`7` and `"7"` match).
fn key_text(values: &[Value]) -> String {
    values
        .iter()
        .map(|v| scalar_text(v).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

impl<'r> BatchParents<'r> {
    pub fn new(catalog: Arc<Catalog>) -> BatchParents<'r> {
        BatchParents {
            catalog,
            rows: HashMap::new(),
        }
    }

    /// A row of `spec` known in this batch (a current row, or the old row of a delete).
    pub fn add(&mut self, spec: &TableSpec, row: &'r Value) {
        if let Some(obj) = row.as_object() {
            self.insert(spec, Cow::Borrowed(obj));
        }
    }

    fn insert(&mut self, spec: &TableSpec, row: Row<'r>) {
        let key: Vec<Value> = spec
            .key
            .iter()
            .map(|k| row.get(&k.name).cloned().unwrap_or(Value::Null))
            .collect();
        self.rows
            .entry((spec.name.clone(), key_text(&key)))
            .or_insert(row);
    }

    /// Loads the parent rows the rules of `rows` refer to and the batch does not hold, one
    /// query per table per level.
    pub async fn load(
        &mut self,
        client: &deadpool_postgres::Client,
        rows: Vec<(Arc<TableSpec>, &Map<String, Value>)>,
    ) -> Result<(), EnrichError> {
        let mut frontier: Vec<(Arc<TableSpec>, Row<'_>)> = rows
            .into_iter()
            .map(|(spec, row)| (spec, Cow::Borrowed(row)))
            .collect();
        for _ in 0..MAX_DEPTH {
            let mut wanted: HashMap<String, (Arc<TableSpec>, Vec<Value>)> = HashMap::new();
            for (spec, row) in &frontier {
                for (columns, table) in spec.parent_refs() {
                    let Some(parent) = self.catalog.lookup(table) else {
                        continue;
                    };
                    let key: Option<Vec<Value>> = columns
                        .iter()
                        .map(|c| row.get(c).filter(|v| !v.is_null()).cloned())
                        .collect();
                    let Some(key) = key else { continue };
                    let text = key_text(&key);
                    if self.rows.contains_key(&(parent.name.clone(), text)) {
                        continue;
                    }
                    let entry = wanted
                        .entry(parent.name.clone())
                        .or_insert_with(|| (parent.clone(), Vec::new()));
                    let key = Value::Array(key);
                    if !entry.1.contains(&key) {
                        entry.1.push(key);
                    }
                }
            }
            if wanted.is_empty() {
                return Ok(());
            }
            let mut next = Vec::new();
            for (spec, keys) in wanted.into_values() {
                let refs: Vec<&Value> = keys.iter().collect();
                for row in load_rows(client, &spec, &refs).await? {
                    if let Value::Object(obj) = row {
                        self.insert(&spec, Cow::Owned(obj.clone()));
                        next.push((spec.clone(), Cow::Owned(obj)));
                    }
                }
            }
            frontier = next;
        }
        Ok(())
    }

    /// Who (besides the roles) sees `row` of `spec`. A rule that cannot be evaluated (a
    /// parent row that does not exist, a value of the wrong type) withholds the row from
    /// the users it concerns — the roles still see it — with a metric and one log line.
    pub fn reach_or_nobody(&self, spec: &TableSpec, row: &Value, what: &str) -> Reach {
        let Some(obj) = row.as_object() else {
            return Reach::Nobody;
        };
        match spec.reach(obj, self, None) {
            Ok(r) => r,
            Err(e) => {
                metrics::counter!("rowcast_audience_unresolved_total", "table" => spec.name.clone())
                    .increment(1);
                tracing::warn!(table = %spec.name, error = %e, what, "audience rule could not be evaluated for a row: it reaches only the roles that see every row");
                Reach::Nobody
            }
        }
    }

    /// [`TableSpec::reach`] with every step recorded (the explain endpoint).
    pub fn explain(&self, spec: &TableSpec, row: &Value) -> (Result<Reach, EvalError>, Vec<Step>) {
        let mut steps = Vec::new();
        let r = match row.as_object() {
            Some(obj) => spec.reach(obj, self, Some(&mut steps)),
            None => Ok(Reach::Nobody),
        };
        (r, steps)
    }
}

impl Parents for BatchParents<'_> {
    fn reach(
        &self,
        table: &str,
        key: &Value,
        trace: Option<&mut Vec<Step>>,
    ) -> Option<Result<Reach, EvalError>> {
        let spec = self.catalog.lookup(table)?;
        let values = key.as_array()?;
        let row = self.rows.get(&(spec.name.clone(), key_text(values)))?;
        Some(spec.reach(row, self, trace))
    }
}

/// `row` with the old values of the rule's columns put back: the row as the rule saw it
/// before the change.
pub fn with_old_values(row: &Value, old: &Value) -> Value {
    let mut before = row.clone();
    if let (Some(b), Some(o)) = (before.as_object_mut(), old.as_object()) {
        for (k, v) in o {
            b.insert(k.clone(), v.clone());
        }
    }
    before
}
