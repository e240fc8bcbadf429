//! Enrichment: turns change-log rows into routed events carrying full rows. One
//! [`Enricher::events_after`] serves every reader of the log: capture (live), the webhook
//! outbox, and resumes older than the replay buffer ([`LogHistory`]).
//!
//! Guarantees: events carry the row the log holds for the change, as of its commit (hidden
//! columns were never written), so reading never reloads a row; events come out in commit
//! order per row, so every client converges to the latest committed state. Duplicate keys
//! inside a batch are coalesced into one event at the position of the last change; deletes
//! carry the old row. Only rules' parent rows and notifications' related rows are loaded,
//! one query per table per batch. A withheld change (its table's columns had changed since
//! `rowcast migrate`) is not delivered. Changes written by versions before the log carried
//! rows are loaded as they are now (an insert or update whose row is gone is dropped).

mod audience;
mod history;

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::Pool;
use serde_json::Value;
use tokio_postgres::GenericClient;

use crate::catalog::{Catalog, Step, TableKind, TableSpec, scalar_text};
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
    /// The previous read's mark, when it ended at `after`.
    pub mark: Option<changelog::Mark>,
    /// The read prepared on the connection the range is read through, if it has one.
    pub prepared: Option<&'a changelog::Prepared>,
}

impl LogRange<'_> {
    /// Everything after `after`.
    pub fn after(after: Position) -> LogRange<'static> {
        LogRange {
            after,
            until: None,
            tables: None,
            mark: None,
            prepared: None,
        }
    }
}

impl<'a> LogRange<'a> {
    /// Continues where a read that returned `mark` ended (if it did end at `after`).
    pub fn with_mark(self, mark: Option<changelog::Mark>) -> Self {
        LogRange { mark, ..self }
    }

    /// Reads with `prepared`, which belongs to the connection the range is read through.
    pub fn prepared(self, prepared: &'a changelog::Prepared) -> Self {
        LogRange {
            prepared: Some(prepared),
            ..self
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
    /// Log rows read, malformed ones included (at most the limit).
    pub rows: usize,
    /// Whether the range may hold more after `last`.
    pub more: bool,
    /// Pass to the next read that starts at `last` ([`LogRange::with_mark`]).
    pub mark: Option<changelog::Mark>,
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
    /// The last change's row (inserts and updates).
    data: Option<&'a Value>,
    /// Why the last change carries no row.
    withheld: Option<&'a str>,
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
            more: read.more,
            mark: read.mark,
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
        let read = changelog::read(client, after, Some(seq), None, 1, None).await?;
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
                    m.data = c.data.as_ref();
                    m.withheld = c.withheld.as_deref();
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
                        data: c.data.as_ref(),
                        withheld: c.withheld.as_deref(),
                    });
                }
            }
        }
        merged.sort_by_key(|m| m.seq);

        // A change whose table's columns no longer matched what `rowcast migrate` installed
        // carries no row, and nothing of a table withheld right now is delivered.
        let withheld = self.catalog.withheld.all();
        merged.retain(|m| {
            let reason = m
                .withheld
                .map(str::to_string)
                .or_else(|| withheld.get(&m.spec.name).cloned());
            match reason {
                None => true,
                Some(reason) => {
                    metrics::counter!("rowcast_withheld_changes_total", "table" => m.spec.name.clone())
                        .increment(1);
                    tracing::debug!(table = %m.spec.name, seq = %m.seq, reason, "a withheld change is not delivered");
                    false
                }
            }
        });

        let mut conn = Conn::new(&self.pool);
        // The rows come from the log, as of each change's commit. Changes written by versions
        // before the log carried rows are loaded, one query per table (a withheld table is
        // never loaded: its live columns are not what was installed).
        let mut legacy: HashMap<&str, (&Arc<TableSpec>, Vec<&Value>)> = HashMap::new();
        for m in merged
            .iter()
            .filter(|m| m.op() != Op::Delete && m.data.is_none())
        {
            legacy
                .entry(m.spec.name.as_str())
                .or_insert_with(|| (m.spec, Vec::new()))
                .1
                .push(m.pk);
        }
        let mut rows: HashMap<(&str, String), Value> = HashMap::new();
        for (table, (spec, pks)) in &legacy {
            metrics::counter!("rowcast_changelog_reloaded_total").increment(pks.len() as u64);
            for row in load_rows(conn.get().await?, spec, pks).await? {
                rows.insert((*table, key_of(spec, &row)), row);
            }
        }
        fn row_of<'x>(
            m: &Merged<'x>,
            rows: &'x HashMap<(&str, String), Value>,
        ) -> Option<&'x Value> {
            match m.data {
                Some(d) => Some(d),
                None => rows.get(&(m.spec.name.as_str(), m.pk.to_string())),
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
                _ => row_of(m, &rows),
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
            for row in load_rows(conn.get().await?, spec, &refs).await? {
                related.insert((spec.name.clone(), normalize_key(spec, &row)), row);
            }
        }

        // The rows each event carries, and the rows its rules see before the change.
        struct Pending<'m, 'a> {
            m: &'m Merged<'a>,
            op: Op,
            row: &'m Value,
            before: Option<Value>,
            related: Option<(Arc<TableSpec>, &'m Value)>,
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
                        (old, Some(seen))
                    }
                    None => continue,
                },
                _ => match row_of(m, &rows) {
                    Some(r) => {
                        let before = match (op, m.first_old) {
                            (Op::Update, Some(first)) => Some(audience::with_old_values(r, first)),
                            _ => None,
                        };
                        (r, before)
                    }
                    None => continue, // (written before rows were logged) deleted since
                },
            };
            let related = if m.spec.kind() == TableKind::Notification {
                related_ref(m.spec, row).and_then(|(target, pk)| {
                    let id = pk
                        .as_array()
                        .and_then(|a| a.first())
                        .and_then(scalar_text)?;
                    let r = related.get(&(target.name.clone(), id))?;
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
            parents.add(p.m.spec, p.row);
            for (spec, row) in [(p.m.spec, Some(p.row)), (p.m.spec, p.before.as_ref())]
                .into_iter()
                .chain(p.related.as_ref().map(|(s, r)| (s, Some(*r))))
            {
                if let Some(Value::Object(obj)) = row
                    && !spec.parent_refs().is_empty()
                {
                    needing.push((spec.clone(), obj));
                }
            }
        }
        if !needing.is_empty() {
            parents.load(conn.get().await?, needing).await?;
        }

        let mut events = Vec::with_capacity(pending.len());
        let mut explanations = Vec::new();
        for p in &pending {
            let spec = p.m.spec;
            if explain {
                let now = match (p.op, &p.before) {
                    (Op::Delete, Some(seen)) => seen,
                    _ => p.row,
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
                _ => spec.audience(parents.reach_or_nobody(spec, p.row, what)),
            };
            let before = match (p.op, &p.before) {
                (Op::Update, Some(b)) => {
                    Some(parents.reach_or_nobody(spec, b, "row before the change"))
                        .filter(|r| *r != audience.reach)
                }
                _ => None,
            };
            let related = p.related.as_ref().map(|&(ref target, row)| {
                target.audience(parents.reach_or_nobody(target, row, "related row"))
            });
            let e = Enriched {
                spec,
                seq: p.m.seq,
                op: p.op,
                pk: p.m.pk,
                row: p.row,
                committed_at: p.m.at,
                related: p.related.as_ref().map(|(_, r)| *r),
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

/// Up to `limit` change-log rows of `range`, in log order (of `range.tables` only, when
/// set; `rows`, `last` and `more` still count every row read).
pub async fn read<C: GenericClient>(
    client: &C,
    range: LogRange<'_>,
    limit: i64,
) -> Result<changelog::Read, tokio_postgres::Error> {
    let mut read = changelog::read(
        client,
        range.after,
        range.until,
        range.mark,
        limit,
        range.prepared,
    )
    .await?;
    if let Some(tables) = range.tables {
        read.changes.retain(|c| tables.contains(&c.table));
    }
    Ok(read)
}

/// A pooled connection taken when first needed: a batch whose rows all come from the log
/// and that needs no parent or related rows takes none.
struct Conn<'p> {
    pool: &'p Pool,
    client: Option<deadpool_postgres::Client>,
}

impl<'p> Conn<'p> {
    fn new(pool: &'p Pool) -> Self {
        Conn { pool, client: None }
    }

    async fn get(&mut self) -> Result<&deadpool_postgres::Client, EnrichError> {
        if self.client.is_none() {
            self.client = Some(self.pool.get().await?);
        }
        Ok(self.client.as_ref().expect("just set"))
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
    let hidden: Vec<String> = spec.config.hidden.clone();
    let rows = crate::catalog::rows_by_keys(
        &***client,
        spec,
        "pg_catalog.to_jsonb(t) OPERATOR(pg_catalog.-) $1::text[]",
        Some(&hidden),
        pks,
    )
    .await?;
    Ok(rows.iter().map(|r| r.get::<_, Value>(0)).collect())
}
