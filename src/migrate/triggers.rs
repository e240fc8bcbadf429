//! The capture triggers: one `SECURITY DEFINER` function per captured table, generated
//! with its key and hidden columns written in.

use crate::capture::CaptureMode;
use crate::catalog::{TableSpec, quote_ident};
use crate::changelog::{MESSAGE_PREFIX, WAKE_CHANNEL};
use crate::event::Op;

/// Trigger name installed on every captured table.
pub const TRIGGER: &str = "rowcast_capture";

pub(super) fn function_name(table: &str) -> String {
    format!("capture_{}", table.replace('.', "__"))
}

/// `ARRAY['a', 'b']::text[]`: a text array literal safe for any column name.
fn text_array(items: &[&str]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|i| format!("'{}'", i.replace('\'', "''")))
        .collect();
    format!("ARRAY[{}]::text[]", quoted.join(", "))
}

/// The trigger function for one table, generated with its key, hidden and installed
/// columns written in: no dynamic SQL, and `pg_notify` only while the sequencer is parked
/// (see `capture`). Every name is schema-qualified because the function is `SECURITY
/// DEFINER` (the application's role needs no rights on the rowcast schema).
///
/// Hidden columns fail closed: each row is checked against the columns `migrate` installed
/// (every hidden column present, no column it did not see); a row that does not match is
/// recorded without its data (`withheld`), so a renamed secret is never written.
///
/// Trigger mode writes each change once, with its row (`data`, hidden columns removed).
/// In logical mode the WAL carries inserts and updates; the trigger fires only on deletes
/// and on updates of key or audience columns, to put the old row (hidden columns removed),
/// or the old values of the audience columns, into the stream as a transactional logical
/// message.
pub fn trigger_sql(spec: &TableSpec, mode: CaptureMode) -> String {
    let func = format!("rowcast.{}", quote_ident(&function_name(&spec.name)));
    let key = |rec: &str| {
        let cols: Vec<String> = spec
            .key
            .iter()
            .map(|k| format!("{rec}.{}", quote_ident(&k.name)))
            .collect();
        cols.join(", ")
    };
    let hidden: Vec<&str> = spec.config.hidden.iter().map(String::as_str).collect();
    let installed: Vec<&str> = spec.columns.iter().map(String::as_str).collect();
    // `r` holds the whole row as JSON: its shape is checked, then hidden columns removed.
    let shape_ok = {
        let unknown = format!(
            "(r OPERATOR(pg_catalog.-) {}) OPERATOR(pg_catalog.=) '{{}}'::jsonb",
            text_array(&installed)
        );
        if hidden.is_empty() {
            unknown
        } else {
            format!(
                "r OPERATOR(pg_catalog.?&) {} AND {unknown}",
                text_array(&hidden)
            )
        }
    };
    let strip = if hidden.is_empty() {
        String::new()
    } else {
        format!(" OPERATOR(pg_catalog.-) {}", text_array(&hidden))
    };
    let name = spec.name.replace('\'', "''");
    // The audience rule's columns: an update that changes them records their old values,
    // so a row that leaves someone's view can be told from one that merely changed.
    let rule_cols = |rec: &str| {
        let cols: Vec<String> = spec
            .rule_columns()
            .iter()
            .map(|c| format!("{rec}.{}", quote_ident(c)))
            .collect();
        cols.join(", ")
    };
    let rule_old = {
        let pairs: Vec<String> = spec
            .rule_columns()
            .iter()
            .map(|c| format!("'{}', OLD.{}", c.replace('\'', "''"), quote_ident(c)))
            .collect();
        format!("pg_catalog.jsonb_build_object({})", pairs.join(", "))
    };
    let has_rules = !spec.rule_columns().is_empty();
    if mode == CaptureMode::Logical {
        let mut watched: Vec<String> = spec.key.iter().map(|k| quote_ident(&k.name)).collect();
        for c in spec.rule_columns() {
            let q = quote_ident(c);
            if !watched.contains(&q) {
                watched.push(q);
            }
        }
        let on_update = if has_rules {
            format!(
                r#"
      IF ROW({old_rules}) IS DISTINCT FROM ROW({new_rules}) THEN
        PERFORM pg_catalog.pg_logical_emit_message(true, '{prefix}',
          pg_catalog.jsonb_build_object('t', '{name}', 'u', pg_catalog.jsonb_build_array({new_key}),
                                        'old', {rule_old})::text);
      END IF;"#,
                old_rules = rule_cols("OLD"),
                new_rules = rule_cols("NEW"),
                new_key = key("NEW"),
                prefix = MESSAGE_PREFIX,
            )
        } else {
            String::new()
        };
        return format!(
            r#"
CREATE OR REPLACE FUNCTION {func}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $rowcast$
DECLARE
  r jsonb;
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF ROW({old_key}) IS NOT DISTINCT FROM ROW({new_key}) THEN{on_update}
      RETURN NULL;
    END IF;
  END IF;
  r := pg_catalog.to_jsonb(OLD);
  IF {shape_ok} THEN
    PERFORM pg_catalog.pg_logical_emit_message(true, '{prefix}',
      pg_catalog.jsonb_build_object('t', '{name}', 'old', r{strip})::text);
  ELSE
    PERFORM pg_catalog.pg_logical_emit_message(true, '{prefix}',
      pg_catalog.jsonb_build_object('t', '{name}', 'w', 'shape',
                                    'k', pg_catalog.jsonb_build_array({old_key}))::text);
  END IF;
  RETURN NULL;
END
$rowcast$;
REVOKE ALL ON FUNCTION {func}() FROM PUBLIC;
CREATE OR REPLACE TRIGGER {TRIGGER} AFTER DELETE OR UPDATE OF {watched} ON {table}
  FOR EACH ROW EXECUTE FUNCTION {func}();
"#,
            old_key = key("OLD"),
            new_key = key("NEW"),
            watched = watched.join(", "),
            table = spec.quoted,
            prefix = MESSAGE_PREFIX,
        );
    }
    format!(
        r#"
CREATE OR REPLACE FUNCTION {func}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $rowcast$
DECLARE
  r jsonb;
  w text;
BEGIN
  IF TG_OP = 'DELETE' THEN
    r := pg_catalog.to_jsonb(OLD);
  ELSE
    r := pg_catalog.to_jsonb(NEW);
  END IF;
  IF {shape_ok} THEN
    r := r{strip};
  ELSE
    r := NULL;
    w := 'shape';
  END IF;
  IF TG_OP = 'UPDATE' THEN
    IF ROW({old_key}) IS DISTINCT FROM ROW({new_key}) THEN
      INSERT INTO rowcast.changes (op, tbl, pk, old, withheld)
      VALUES ('{del}', '{name}', pg_catalog.jsonb_build_array({old_key}),
              CASE WHEN w IS NULL THEN pg_catalog.to_jsonb(OLD){strip} END, w);
      INSERT INTO rowcast.changes (op, tbl, pk, data, withheld)
      VALUES ('{ins}', '{name}', pg_catalog.jsonb_build_array({new_key}), r, w);
    ELSE
      INSERT INTO rowcast.changes (op, tbl, pk, data, withheld{old_col})
      VALUES ('{upd}', '{name}', pg_catalog.jsonb_build_array({new_key}), r, w{old_val});
    END IF;
  ELSIF TG_OP = 'INSERT' THEN
    INSERT INTO rowcast.changes (op, tbl, pk, data, withheld)
    VALUES ('{ins}', '{name}', pg_catalog.jsonb_build_array({new_key}), r, w);
  ELSE
    INSERT INTO rowcast.changes (op, tbl, pk, old, withheld)
    VALUES ('{del}', '{name}', pg_catalog.jsonb_build_array({old_key}), r, w);
  END IF;
  IF pg_catalog.pg_sequence_last_value('rowcast.parked_until'::pg_catalog.regclass)
       OPERATOR(pg_catalog.>) pg_catalog.date_part('epoch', pg_catalog.now()) THEN
    PERFORM pg_catalog.pg_notify('{WAKE_CHANNEL}', '');
  END IF;
  RETURN NULL;
END
$rowcast$;
REVOKE ALL ON FUNCTION {func}() FROM PUBLIC;
CREATE OR REPLACE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {table}
  FOR EACH ROW EXECUTE FUNCTION {func}();
"#,
        old_key = key("OLD"),
        new_key = key("NEW"),
        table = spec.quoted,
        old_col = if has_rules { ", old" } else { "" },
        old_val = if has_rules {
            format!(
                ",\n        CASE WHEN w IS NULL AND ROW({}) IS DISTINCT FROM ROW({}) THEN {rule_old} END",
                rule_cols("OLD"),
                rule_cols("NEW")
            )
        } else {
            String::new()
        },
        ins = Op::Insert.code() as char,
        upd = Op::Update.code() as char,
        del = Op::Delete.code() as char,
    )
}
