//! Logical mode's replication slot: its state on the server and the position up to which
//! its changes are in the log (`rowcast.slot_positions`).

use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

/// A replication slot as `pg_replication_slots` shows it.
#[derive(Debug)]
pub struct Slot {
    /// Its output plugin; `None` for a physical slot.
    pub plugin: Option<String>,
    /// A connection streams it right now.
    pub active: bool,
}

/// The replication slot `name`, if it exists.
pub async fn slot<C: GenericClient>(
    client: &C,
    name: &str,
) -> Result<Option<Slot>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            "SELECT plugin::text, active FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await?
        .map(|r| Slot {
            plugin: r.get(0),
            active: r.get(1),
        }))
}

/// WAL the slot keeps on the server (bytes from its confirmed position to the current end):
/// it grows while no rowcast consumes the slot.
pub async fn retained_bytes<C: GenericClient>(
    client: &C,
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
pub async fn stored_position<C: GenericClient>(
    client: &C,
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
pub async fn lock_position<C: GenericClient>(
    client: &C,
    slot: &str,
) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_typed_one(
            "SELECT (lsn - '0/0'::pg_lsn)::bigint FROM rowcast.slot_positions
              WHERE slot = $1 FOR UPDATE",
            &[(&slot, Type::TEXT)],
        )
        .await?
        .get(0))
}

/// Moves the stored position of `slot` to `lsn` (in the transaction that wrote up to it).
pub async fn store_position<C: GenericClient>(
    client: &C,
    slot: &str,
    lsn: u64,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute_typed(
            "UPDATE rowcast.slot_positions
                SET lsn = '0/0'::pg_lsn + $2::bigint::numeric, updated_at = now()
              WHERE slot = $1",
            &[(&slot, Type::TEXT), (&(lsn as i64), Type::INT8)],
        )
        .await?;
    Ok(())
}

/// Moves the stored position of `slot` from `expected` to `lsn` (in the transaction that
/// wrote up to it), without reading it first: if it is no longer at `expected` (another
/// writer moved it) the statement fails with `serialization_failure` and the transaction
/// aborts (`sql/009_slot_advance.sql`).
pub async fn advance_position<C: GenericClient>(
    client: &C,
    slot: &str,
    expected: i64,
    lsn: u64,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute_typed(
            "SELECT rowcast.advance_slot_position($1, $2, $3)",
            &[
                (&slot, Type::TEXT),
                (&expected, Type::INT8),
                (&(lsn as i64), Type::INT8),
            ],
        )
        .await?;
    Ok(())
}
