//! The change log as the hub's [`History`]: resumes older than the replay buffer.

use crate::catalog::Catalog;
use crate::changelog::{self, Cursor};
use crate::event::Position;
use crate::hub::{History, HistoryFuture, HistoryPage, ResumeError};

use super::{Enricher, LogRange};

/// Reads missed events from `rowcast.changes` (each with its row as of its commit), only of the
/// tables whose events can reach the rooms asked for.
pub struct LogHistory {
    pub enricher: Enricher,
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> ResumeError {
    ResumeError::Unavailable(Box::new(e))
}

impl History for LogHistory {
    fn page<'a>(
        &'a self,
        rooms: &'a [String],
        after: Position,
        until: Position,
        limit: usize,
    ) -> HistoryFuture<'a> {
        Box::pin(async move {
            let client = self.enricher.pool().get().await.map_err(unavailable)?;
            if let Some(pruned) = changelog::cursor(&**client, Cursor::Pruned)
                .await
                .map_err(unavailable)?
                && after < pruned
            {
                return Err(ResumeError::ResyncRequired {
                    since: after,
                    pruned,
                });
            }
            let catalog: &Catalog = self.enricher.catalog();
            let tables = catalog.tables_for_rooms(rooms);
            let limit = limit.clamp(1, 10_000) as i64;
            let range = LogRange {
                after,
                until: Some(until),
                tables: Some(&tables),
                mark: None,
                prepared: None,
            };
            let read = super::read(&**client, range, limit)
                .await
                .map_err(unavailable)?;
            // Give the connection back before enrichment takes one: many resumes at once
            // must not hold the whole pool while each waits for a second connection.
            drop(client);
            let page = self.enricher.events(read).await.map_err(unavailable)?;
            let next = page.more.then_some(page.last).flatten();
            Ok(HistoryPage {
                events: page.events,
                next,
            })
        })
    }
}
