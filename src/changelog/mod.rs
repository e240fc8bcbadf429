//! The change log: `rowcast.changes`, its cursors and the logical slot's stored position.
//! The only module with SQL on those tables, and the owner of the names the database side
//! shares with rowcast (NOTIFY channels, advisory-lock keys, the logical message prefix).
//!
//! What a reader may rely on: every change has a position (`seq`) once sequenced; [`read`]
//! returns sequenced changes in `seq` order, and once a position has been returned no
//! change at or before it appears later (batches are recorded by one sequencer at a time,
//! each after every earlier one). Every replica sees the same `seq` for the same change.
//! Each change is written once, with its row: in trigger mode by the capture trigger,
//! numbered by the batch that covers it (`rowcast.batches`, see `sql/007_log_data.sql`);
//! in logical mode by the writer, packed into its batch's row (`sql/011_log_packed.sql`),
//! or as a row per change with its `seq` for a large transaction written in chunks. A
//! change that cannot be read (unknown op code, a row that is not JSON) is counted
//! (`rowcast_changelog_malformed_total`), logged once per read, and skipped: the reader's
//! next position moves past it.

mod changes;
mod cursors;
mod handoff;
mod packed;
mod prepared;
mod read;
mod sequencer;
mod slots;

pub use changes::{
    NewChange, append, append_rows, fix_old_rows, newest_after, oldest_unconsumed_age, prune,
    start_position,
};
pub use cursors::{Cursor, advance_outbox, cursor, init_outbox, lock_outbox};
pub use handoff::Handoff;
pub use prepared::Prepared;
pub use read::{Mark, Read, read};
pub use sequencer::{Ticked, park, snapshot_bounds, tick, try_lead, unpark};
pub use slots::{
    Slot, advance_position, lock_position, retained_bytes, slot, store_position, stored_position,
};

/// Key of the session advisory lock held by the one replica that sequences changes.
pub const SEQUENCER_LOCK: i64 = 0x726f_7763_6173_7402;

/// Key of the transaction advisory lock that serializes `rowcast migrate` runs.
pub const MIGRATE_LOCK: i64 = 0x726f_7763_6173_7401;

/// NOTIFY channel the capture triggers use as a wake-up hint while the sequencer is
/// parked; the payload is always empty.
pub const WAKE_CHANNEL: &str = "rowcast_wake";

/// NOTIFY channel on which the sequencer announces new sequenced changes (the payload is
/// the newest position; `rowcast.tick()` names the channel too).
pub const SEQUENCED_CHANNEL: &str = "rowcast_sequenced";

/// Prefix of the transactional logical messages the logical-mode trigger emits for
/// deletes and key changes (their old row).
pub const MESSAGE_PREFIX: &str = "rowcast";
