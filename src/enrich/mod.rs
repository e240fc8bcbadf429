//! Enrichment: turns change-log rows into routed events carrying full rows. One
//! [`Enricher::events_after`] serves every reader of the log: capture (live), the webhook
//! outbox, and resumes older than the replay buffer ([`LogHistory`]).
//!
//! Guarantees: one query per table per batch (plus one per related table for
//! notifications); duplicate keys inside a batch are coalesced into one event at the
//! position of the last change; hidden columns are removed in the SQL that loads the row,
//! so they never reach rowcast's memory; deletes carry the old row kept by the trigger.
//! Rows are loaded as they are *now*, so every client converges to the latest committed
//! state even if it sees an older event late. An insert or update whose row no longer
//! exists is dropped: its delete follows.

mod audience;
mod history;

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::Pool;
use serde_json::Value;
use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use crate::catalog::{Catalog, Step, TableKind, TableSpec, quote_ident, scalar_text};
use crate::changelog;
use crate::event::{Change, Event, Op, Position};
use crate::retry::Retryable;
use crate::route::{self, Enriched};
pub use history::LogHistory;

#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("database error while reading changes or loading rows: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

impl Retryable for EnrichError {
    /// Enrichment fails only when the database does: the caller retries the same range.
    fn is_retryable(&self) -> bool {
        match self {
            EnrichError::Db(e) => e.is_retryable(),
            EnrichError::Pool(e) => e.is_retryable(),
        }
    }
}

/// Which part of the log to read: the changes after `after`, up to `until` if set, of
/// `tables` if set.
#[derive(Debug, Clone, Copy)]
pub struct LogRange<'a> {
    pub after: Position,
    pub until: Option<Position>,
    pub tables: Option<&'a [String]>,
}

impl LogRange<'_> {
    /// Everything after `after`.
    pub fn after(after: Position) -> LogRange<'static> {
        LogRange {
            after,
            until: None,
            tables: None,
        }
    }
}

/// What one read of the log became.
#[derive(Debug, Default)]
pub struct EventsPage {
    /// The events, in log order (coalesced: several changes to one row become one event).
    pub events: Vec<Event>,
    /// The position of the last log row read: where the next read continues. `None` when
    /// nothing was there.
    pub last: Option<Position>,
    /// Log rows read (at most the limit; fewer means the range is exhausted for now).
    pub rows: usize,
    /// Commit time of the first change read, for the capture lag.
    pub first_at: Option<time::OffsetDateTime>,
}

/// Loads full rows for changes. Cheap to clone.
#[derive(Clone)]
pub struct Enricher {
    catalog: Arc<Catalog>,
    pool: Pool,
}

/// A run of changes to one row inside a batch, coalesced.
struct Merged<'a> {
    spec: &'a Arc<TableSpec>,
    first: Op,
    last: Op,
    seq: Position,
    at: time::OffsetDateTime,
    pk: &'a Value,
    /// The last old row (a delete's).
    old: Option<&'a Value>,
    /// The first old values of the run (for an update: the rule columns it changed; for a
    /// delete: the old row): the row as its audience saw it before the run.
    first_old: Option<&'a Value>,
}

impl Merged<'_> {
    fn op(&self) -> Op {
        match (self.first, self.last) {
            (_, Op::Delete) => Op::Delete,
            (Op::Insert, _) => Op::Insert,
            (Op::Delete, Op::Insert) => Op::Update,
            (_, last) => last,
        }
    }
}

impl Enricher {
    pub fn new(catalog: Arc<Catalog>, pool: Pool) -> Enricher {
        Enricher { catalog, pool }
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Reads up to `limit` changes of `range` through `client` (the caller's transaction,
    /// for the outbox) and turns them into events; rows are loaded through the pool.
    /// Guarantee: events come out in log order, and `last` is the position of the last row
    /// read even when it was malformed or its table is no longer configured, so a reader
    /// that continues from `last` never reads a row twice nor skips one.
    pub async fn events_after<C: GenericClient>(
        &self,
        client: &C,
        range: LogRange<'_>,
        limit: i64,
    ) -> Result<EventsPage, EnrichError> {
        let read = read(client, range, limit).await?;
        self.events(read).await
    }

    /// The events of changes already read (see [`read`]); rows are loaded through the pool.
    pub async fn events(&self, read: changelog::Read) -> Result<EventsPage, EnrichError> {
        let events = if read.changes.is_empty() {
            Vec::new()
        } else {
            self.enrich(&read.changes).await?
        };
        Ok(EventsPage {
            events,
            last: read.last,
            rows: read.rows,
            first_at: read.changes.first().map(|c| c.at),
        })
    }

    /// Enriches and routes a batch; events come out in log order.
    async fn enrich(&self, changes: &[Change]) -> Result<Vec<Event>, EnrichError> {
        Ok(self.enrich_explained(changes, false).await?.0)
    }

    /// Rebuilds the event of the change at `seq` from the log and says how its audience was
    /// decided (the explain endpoint). `None` when there is no such change (pruned, or
    /// coalesced into nothing because the row is gone).
    pub async fn explain<C: GenericClient>(
        &self,
        client: &C,
        seq: Position,
    ) -> Result<Option<(Event, Explanation)>, EnrichError> {
        let after = Position(seq.0.saturating_sub(1));
        let read = changelog::read_range(client, after, seq, None, 1).await?;
        let (events, mut explanations) = self.enrich_explained(&read.changes, true).await?;
        Ok(events.into_iter().next().zip(explanations.pop()))
    }

    /// [`Enricher::enrich`], with each event's explanation when `explain` is set.
    async fn enrich_explained(
        &self,
        changes: &[Change],
        explain: bool,
    ) -> Result<(Vec<Event>, Vec<Explanation>), EnrichError> {
        let mut merged: Vec<Merged<'_>> = Vec::with_capacity(changes.len());
        let mut index: HashMap<(&str, String), usize> = HashMap::with_capacity(changes.len());
        for c in changes {
            let Some(spec) = self.catalog.by_name(&c.table) else {
                continue; // a table dropped from the configuration; its old changes are skipped
            };
            let key = (c.table.as_str(), c.pk.to_string());
            match index.get(&key) {
                Some(&i) => {
                    let m = &mut merged[i];
                    m.last = c.op;
                    m.seq = c.pos;
                    m.at = c.at;
                    if c.old.is_some() {
                        m.old = c.old.as_ref();
                        if m.first_old.is_none() && m.first != Op::Insert {
                            m.first_old = c.old.as_ref();
                        }
                    }
                }
                None => {
                    index.insert(key, merged.len());
                    merged.push(Merged {
                        spec,
                        first: c.op,
                        last: c.op,
                        seq: c.pos,
                        at: c.at,
                        pk: &c.pk,
                        old: c.old.as_ref(),
                        first_old: c.old.as_ref(),
                    });
                }
            }
        }
        merged.sort_by_key(|m| m.seq);

        let client = self.pool.get().await?;
        // One load per table for every row that still exists.
        let mut wanted: HashMap<&str, (&Arc<TableSpec>, Vec<&Value>)> = HashMap::new();
        for m in merged.iter().filter(|m| m.op() != Op::Delete) {
            wanted
                .entry(m.spec.name.as_str())
                .or_insert_with(|| (m.spec, Vec::new()))
                .1
                .push(m.pk);
        }
        let mut rows: HashMap<(&str, String), Value> = HashMap::new();
        for (table, (spec, pks)) in &wanted {
            for row in load_rows(&client, spec, pks).await? {
                rows.insert((*table, key_of(spec, &row)), row);
            }
        }

        // Notifications: the related entity of every notification row, one load per table.
        // A notification never carries another notification.
        let related_ref = |spec: &TableSpec, row: &Value| -> Option<(Arc<TableSpec>, Value)> {
            let id = row.get(spec.config.related_id_column.as_deref()?)?;
            let target = match (&spec.config.related_table, &spec.config.related_type_column) {
                (Some(table), _) => self.catalog.lookup(table)?,
                (None, Some(ty)) => self.catalog.by_related_type(row.get(ty)?.as_str()?)?,
                (None, None) => return None,
            };
            (target.kind() == TableKind::Entity && target.key.len() == 1 && !id.is_null())
                .then(|| (target.clone(), Value::Array(vec![id.clone()])))
        };
        let mut related_wanted: HashMap<&str, (Arc<TableSpec>, Vec<Value>)> = HashMap::new();
        for m in &merged {
            if m.spec.kind() != TableKind::Notification {
                continue;
            }
            let row = match m.op() {
                Op::Delete => m.old,
                _ => rows.get(&(m.spec.name.as_str(), m.pk.to_string())),
            };
            if let Some((target, pk)) = row.and_then(|r| related_ref(m.spec, r)) {
                related_wanted
                    .entry(
                        self.catalog
                            .by_name(&target.name)
                            .map_or("", |t| t.name.as_str()),
                    )
                    .or_insert_with(|| (target.clone(), Vec::new()))
                    .1
                    .push(pk);
            }
        }
        let mut related: HashMap<(String, String), Value> = HashMap::new();
        for (spec, pks) in related_wanted.values() {
            let refs: Vec<&Value> = pks.iter().collect();
            for row in load_rows(&client, spec, &refs).await? {
                related.insert((spec.name.clone(), normalize_key(spec, &row)), row);
            }
        }

        // The rows each event carries, and the rows its rules see before the change.
        struct Pending<'m, 'a> {
            m: &'m Merged<'a>,
            op: Op,
            row: Value,
            before: Option<Value>,
            related: Option<(Arc<TableSpec>, Value)>,
        }
        let mut pending = Vec::with_capacity(merged.len());
        for m in &merged {
            let op = m.op();
            let (row, before) = match op {
                Op::Delete => match m.old {
                    Some(old) => {
                        let seen = m.first_old.map_or_else(
                            || old.clone(),
                            |first| audience::with_old_values(old, first),
                        );
                        (old.clone(), Some(seen))
                    }
                    None => continue,
                },
                _ => match rows.remove(&(m.spec.name.as_str(), m.pk.to_string())) {
                    Some(r) => {
                        let before = match (op, m.first_old) {
                            (Op::Update, Some(first)) => Some(audience::with_old_values(&r, first)),
                            _ => None,
                        };
                        (r, before)
                    }
                    None => continue, // deleted since; its delete event follows
                },
            };
            let related = if m.spec.kind() == TableKind::Notification {
                related_ref(m.spec, &row).and_then(|(target, pk)| {
                    let id = pk
                        .as_array()
                        .and_then(|a| a.first())
                        .and_then(scalar_text)?;
                    let r = related.get(&(target.name.clone(), id))?.clone();
                    Some((target, r))
                })
            } else {
                None
            };
            pending.push(Pending {
                m,
                op,
                row,
                before,
                related,
            });
        }

        // Parent rows the rules refer to: the batch's own rows first, then one load per
        // table for the rest.
        let mut parents = audience::BatchParents::new(self.catalog.clone());
        let mut needing = Vec::new();
        for p in &pending {
            parents.add(p.m.spec, &p.row);
            for (spec, row) in [(p.m.spec, Some(&p.row)), (p.m.spec, p.before.as_ref())]
                .into_iter()
                .chain(p.related.as_ref().map(|(s, r)| (s, Some(r))))
            {
                if let Some(Value::Object(obj)) = row
                    && !spec.parent_refs().is_empty()
                {
                    needing.push((spec.clone(), obj.clone()));
                }
            }
        }
        if !needing.is_empty() {
            parents.load(&client, needing).await?;
        }

        let mut events = Vec::with_capacity(pending.len());
        let mut explanations = Vec::new();
        for p in pending {
            let spec = p.m.spec;
            if explain {
                let now = match (p.op, &p.before) {
                    (Op::Delete, Some(seen)) => seen,
                    _ => &p.row,
                };
                let (_, steps) = parents.explain(spec, now);
                let before = match (p.op, &p.before) {
                    (Op::Update, Some(b)) => parents.explain(spec, b).1,
                    _ => Vec::new(),
                };
                explanations.push(Explanation {
                    rule: spec
                        .audience
                        .as_ref()
                        .and_then(|a| a.rule.as_ref())
                        .map(|r| r.to_string()),
                    steps,
                    before,
                });
            }
            let what = if p.op == Op::Delete {
                "deleted row"
            } else {
                "row"
            };
            let audience = match (p.op, &p.before) {
                // A delete reaches whoever could see the row.
                (Op::Delete, Some(seen)) => {
                    spec.audience(parents.reach_or_nobody(spec, seen, what))
                }
                _ => spec.audience(parents.reach_or_nobody(spec, &p.row, what)),
            };
            let before = match (p.op, &p.before) {
                (Op::Update, Some(b)) => {
                    Some(parents.reach_or_nobody(spec, b, "row before the change"))
                        .filter(|r| *r != audience.reach)
                }
                _ => None,
            };
            let related = p.related.as_ref().map(|(target, row)| {
                target.audience(parents.reach_or_nobody(target, row, "related row"))
            });
            let e = Enriched {
                spec,
                seq: p.m.seq,
                op: p.op,
                pk: p.m.pk,
                row: p.row,
                committed_at: p.m.at,
                related: p.related.map(|(_, r)| r),
                audience,
                before,
                related_audience: related,
            };
            events.push(match spec.kind() {
                TableKind::Entity => route::entity_event(e),
                TableKind::Notification => route::notification_event(e),
            });
        }
        Ok((events, explanations))
    }
}

/// How an event's audience was decided: the table's rule and what each of its conditions
/// found, for the row now and (an update that changed who sees it) before.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Explanation {
    pub rule: Option<String>,
    pub steps: Vec<Step>,
    pub before: Vec<Step>,
}

/// Up to `limit` change-log rows of `range`, in log order.
pub async fn read<C: GenericClient>(
    client: &C,
    range: LogRange<'_>,
    limit: i64,
) -> Result<changelog::Read, tokio_postgres::Error> {
    match range.until {
        None => changelog::read_after(client, range.after, limit).await,
        Some(until) => changelog::read_range(client, range.after, until, range.tables, limit).await,
    }
}

/// The key of a loaded row in the same text form as `Change::pk.to_string()`.
fn key_of(spec: &TableSpec, row: &Value) -> String {
    let vals: Vec<Value> = spec
        .key
        .iter()
        .map(|k| row.get(&k.name).cloned().unwrap_or(Value::Null))
        .collect();
    Value::Array(vals).to_string()
}

/// A one-column key as text, whatever JSON type the reference used (`"7"` or `7`).
fn normalize_key(spec: &TableSpec, row: &Value) -> String {
    spec.key
        .first()
        .and_then(|k| row.get(&k.name))
        .and_then(scalar_text)
        .unwrap_or_default()
}

/// Loads the current rows for `pks` (JSON arrays of key values), hidden columns removed.
async fn load_rows(
    client: &deadpool_postgres::Client,
    spec: &TableSpec,
    pks: &[&Value],
) -> Result<Vec<Value>, tokio_postgres::Error> {
    let sql = load_sql(spec);
    let stmt = client.prepare_cached(&sql).await?;
    let hidden: Vec<String> = spec.config.hidden.clone();
    let mut columns: Vec<Vec<String>> = vec![Vec::with_capacity(pks.len()); spec.key.len()];
    for pk in pks {
        let Some(vals) = pk.as_array() else { continue };
        for (i, col) in columns.iter_mut().enumerate() {
            col.push(vals.get(i).and_then(scalar_text).unwrap_or_default());
        }
    }
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&hidden];
    for c in &columns {
        params.push(c);
    }
    let rows = client.query(&stmt, &params).await?;
    Ok(rows.iter().map(|r| r.get::<_, Value>(0)).collect())
}

/// `SELECT to_jsonb(t) - hidden FROM table t WHERE key IN (…)`, cached per table.
fn load_sql(spec: &TableSpec) -> String {
    let row = "pg_catalog.to_jsonb(t) OPERATOR(pg_catalog.-) $1::text[]";
    if let [k] = spec.key.as_slice() {
        return format!(
            "SELECT {row} FROM {} t WHERE t.{} = ANY($2::text[]::{}[])",
            spec.quoted,
            quote_ident(&k.name),
            k.sql_type
        );
    }
    let casts: Vec<String> = spec
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("${}::text[]::{}[]", i + 2, k.sql_type))
        .collect();
    let names: Vec<String> = (0..spec.key.len()).map(|i| format!("k{i}")).collect();
    let on: Vec<String> = spec
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("t.{} = k.k{i}", quote_ident(&k.name)))
        .collect();
    format!(
        "SELECT {row} FROM {} t JOIN unnest({}) AS k({}) ON {}",
        spec.quoted,
        casts.join(", "),
        names.join(", "),
        on.join(" AND ")
    )
}
