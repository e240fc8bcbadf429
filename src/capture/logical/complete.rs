//! What decoded rows lack and only the database can supply ([`Missing`]): values
//! `to_jsonb` renders through their type (one query per type per write), and unchanged
//! TOASTed values (one query per table per write, reading only the missing columns).
//!
//! An unchanged TOASTed value is the same before and after the update that did not touch
//! it, so reading it from the table gives the value as of the change — unless a later
//! transaction changed it since, whose own event follows with that value (rows converge).
//! A row deleted since keeps `null` there; its delete follows.

use std::collections::HashMap;

use serde_json::Value;
use tokio_postgres::GenericClient;

use super::decode::{Decoded, Missing};
use crate::catalog::{Catalog, quote_ident, rows_by_keys};

/// Fills in every missing value of `changes`.
pub(super) async fn complete<C: GenericClient>(
    client: &C,
    catalog: &Catalog,
    changes: &mut [Decoded],
) -> Result<(), tokio_postgres::Error> {
    let mut casts: HashMap<String, Vec<(usize, String, String)>> = HashMap::new();
    let mut toast: HashMap<String, Vec<(usize, String)>> = HashMap::new();
    for (i, c) in changes.iter_mut().enumerate() {
        for m in std::mem::take(&mut c.missing) {
            match m {
                Missing::Database {
                    column,
                    type_name,
                    text,
                } => casts.entry(type_name).or_default().push((i, column, text)),
                Missing::Toast { column } => {
                    toast.entry(c.table.clone()).or_default().push((i, column))
                }
            }
        }
    }
    for (type_name, items) in casts {
        let texts: Vec<&str> = items.iter().map(|(_, _, t)| t.as_str()).collect();
        let rows = client
            .query(
                &format!(
                    "SELECT pg_catalog.to_jsonb(u.x::{type_name}) FROM unnest($1::text[])
                       WITH ORDINALITY AS u(x, i) ORDER BY u.i"
                ),
                &[&texts],
            )
            .await?;
        for ((i, column, _), row) in items.iter().zip(rows) {
            set(&mut changes[*i], column, row.get(0));
        }
    }
    for (table, items) in toast {
        let Some(spec) = catalog.by_name(&table) else {
            continue;
        };
        let mut columns: Vec<&str> = items.iter().map(|(_, c)| c.as_str()).collect();
        columns.sort_unstable();
        columns.dedup();
        let pairs: Vec<String> = columns
            .iter()
            .map(|c| format!("'{}', t.{}", c.replace('\'', "''"), quote_ident(c)))
            .collect();
        let key: Vec<String> = spec
            .key
            .iter()
            .map(|k| format!("t.{}", quote_ident(&k.name)))
            .collect();
        let select = format!(
            "pg_catalog.jsonb_build_array({})::text, pg_catalog.jsonb_build_object({})",
            key.join(", "),
            pairs.join(", ")
        );
        let pks: Vec<&Value> = items.iter().map(|(i, _)| &changes[*i].pk).collect();
        let found: HashMap<String, Value> = rows_by_keys(client, spec, &select, None, &pks)
            .await?
            .iter()
            .map(|r| {
                // The key in the same text form as `Value::to_string` of the change's key.
                let key: Value = serde_json::from_str(r.get::<_, &str>(0)).unwrap_or_default();
                (key.to_string(), r.get::<_, Value>(1))
            })
            .collect();
        for (i, column) in &items {
            let value = found
                .get(&changes[*i].pk.to_string())
                .and_then(|row| row.get(column))
                .cloned()
                .unwrap_or(Value::Null);
            set(&mut changes[*i], column, value);
        }
    }
    Ok(())
}

fn set(change: &mut Decoded, column: &str, value: Value) {
    if let Some(Value::Object(row)) = change.data.as_mut() {
        row.insert(column.to_string(), value);
    }
}
