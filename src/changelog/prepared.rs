//! The log's hot statements, prepared on one connection when it opens, for a reader or
//! writer that runs them again and again (capture's tail, the logical writer): the server
//! plans each once instead of on every run, which cost more than running it.
//!
//! They are prepared up front, never on first use: a statement prepared inside a pipeline
//! would wait for its preparation while the requests after it went out first (a write's
//! `COMMIT` before its rows).

use tokio_postgres::{GenericClient, Statement};

use super::changes::{APPEND, APPEND_TYPES, INSERT, INSERT_TYPES};
use super::read::{WHOLE_BATCHES, WHOLE_BATCHES_TYPES};

/// Statements prepared on one connection: use them only with it.
#[derive(Debug)]
pub struct Prepared {
    pub(super) whole_batches: Statement,
    pub(super) insert: Statement,
    pub(super) append: Statement,
}

impl Prepared {
    /// Prepares the statements on `client` (one round trip).
    pub async fn new<C: GenericClient>(client: &C) -> Result<Prepared, tokio_postgres::Error> {
        let (whole_batches, insert, append) = tokio::join!(
            client.prepare_typed(&WHOLE_BATCHES, &WHOLE_BATCHES_TYPES),
            client.prepare_typed(INSERT, &INSERT_TYPES),
            client.prepare_typed(APPEND, &APPEND_TYPES),
        );
        Ok(Prepared {
            whole_batches: whole_batches?,
            insert: insert?,
            append: append?,
        })
    }
}
