//! A packed batch: a batch's changes in one `rowcast.batches.changes` value, a JSON array
//! in `seq` order from the batch's `first_seq` (logical mode, see
//! `sql/011_log_packed.sql`). Each element is an object with the columns of
//! `rowcast.changes` of the same names: `at` (RFC 3339), `op` (`i`, `u`, `d`), `tbl`, `pk`
//! and, when present, `old`, `data` and `withheld`.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;

use super::NewChange;
use crate::event::{Change, Op, Position};

/// Changes as the packed value they are written as (serialized straight into the
/// statement's parameter).
pub(super) struct Pack<'a>(pub &'a [NewChange]);

impl std::fmt::Debug for Pack<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pack({} changes)", self.0.len())
    }
}

impl Serialize for Pack<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for c in self.0 {
            seq.serialize_element(&Element(c))?;
        }
        seq.end()
    }
}

struct Element<'a>(&'a NewChange);

impl Serialize for Element<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        // Microseconds, as PostgreSQL keeps a time (and as the `rowcast.log` view reads it).
        let at = c.at.replace_nanosecond(c.at.nanosecond() / 1000 * 1000);
        let at = at
            .map_err(serde::ser::Error::custom)?
            .format(&Rfc3339)
            .map_err(serde::ser::Error::custom)?;
        let op = [c.op.code()];
        let op = std::str::from_utf8(&op).expect("op codes are ASCII");
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("at", &at)?;
        map.serialize_entry("op", op)?;
        map.serialize_entry("tbl", &c.table)?;
        map.serialize_entry("pk", &c.pk)?;
        if let Some(old) = &c.old {
            map.serialize_entry("old", old)?;
        }
        if let Some(data) = &c.data {
            map.serialize_entry("data", data)?;
        }
        if let Some(withheld) = &c.withheld {
            map.serialize_entry("withheld", withheld)?;
        }
        map.end()
    }
}

/// One element as read back; checked by [`unpack`].
#[derive(Deserialize)]
struct Stored {
    at: String,
    op: String,
    tbl: String,
    pk: serde_json::Value,
    #[serde(default)]
    old: Option<serde_json::Value>,
    #[serde(default)]
    data: Option<serde_json::Value>,
    #[serde(default)]
    withheld: Option<String>,
}

/// What one element of a packed batch holds: the change, or why it cannot be read (with
/// its table, when known).
pub(super) type Unpacked = Result<Change, (Option<String>, String)>;

/// The changes of the packed batch `text` that starts at `first`, in order, one entry per
/// element; an error for the whole batch when it is not a JSON array of changes.
pub(super) fn unpack(first: i64, text: &str) -> Result<Vec<(Position, Unpacked)>, String> {
    let stored: Vec<Stored> = serde_json::from_str(text)
        .map_err(|e| format!("its packed batch is not a JSON array of changes ({e})"))?;
    Ok(stored
        .into_iter()
        .zip(first..)
        .map(|(s, seq)| (Position(seq), change(Position(seq), s)))
        .collect())
}

fn change(pos: Position, s: Stored) -> Unpacked {
    let op = match s.op.as_bytes() {
        [code] => Op::from_code(*code),
        _ => None,
    };
    let Some(op) = op else {
        return Err((Some(s.tbl), format!("unknown op code {:?}", s.op)));
    };
    let at = match time::OffsetDateTime::parse(&s.at, &Rfc3339) {
        Ok(at) => at,
        Err(e) => {
            return Err((
                Some(s.tbl),
                format!("its time {:?} is not RFC 3339 ({e})", s.at),
            ));
        }
    };
    Ok(Change {
        pos,
        at,
        op,
        table: s.tbl,
        pk: s.pk,
        old: s.old,
        data: s.data,
        withheld: s.withheld,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn new_change(op: Op, data: Option<serde_json::Value>) -> NewChange {
        NewChange {
            at: time::OffsetDateTime::parse("2026-12-03T14:00:00.123456Z", &Rfc3339).unwrap(),
            op,
            table: "public.tickets".into(),
            pk: json!([7]),
            old: None,
            data,
            withheld: None,
        }
    }

    #[test]
    fn a_packed_batch_reads_back_as_written() {
        let mut delete = new_change(Op::Delete, None);
        delete.old = Some(json!({"id": 7, "title": "gone"}));
        let mut withheld = new_change(Op::Update, None);
        withheld.withheld = Some("shape changed".into());
        let rows = vec![
            new_change(
                Op::Insert,
                Some(json!({"id": 7, "n": 1.5e300, "t": "a\"b"})),
            ),
            delete,
            withheld,
        ];
        let text = serde_json::to_string(&Pack(&rows)).unwrap();
        let back = unpack(41, &text).unwrap();
        assert_eq!(back.len(), 3);
        for ((pos, got), (want, seq)) in back.into_iter().zip(rows.iter().zip(41..)) {
            let got = got.unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(pos, Position(seq));
            assert_eq!(got.pos, Position(seq));
            assert_eq!(got.at, want.at);
            assert_eq!(got.op, want.op);
            assert_eq!(got.table, want.table);
            assert_eq!(got.pk, want.pk);
            assert_eq!(got.old, want.old);
            assert_eq!(got.data, want.data);
            assert_eq!(got.withheld, want.withheld);
        }
        // Absent columns are left out, not written as null.
        assert!(!text.contains("null"), "{text}");
    }

    #[test]
    fn a_malformed_element_is_reported_alone() {
        let text = r#"[{"at":"2026-12-03T14:00:00Z","op":"x","tbl":"public.t","pk":[1]},
                       {"at":"yesterday","op":"u","tbl":"public.t","pk":[2]},
                       {"at":"2026-12-03T14:00:00Z","op":"u","tbl":"public.t","pk":[3]}]"#;
        let back = unpack(10, text).unwrap();
        assert_eq!(back.len(), 3);
        assert!(
            matches!(&back[0].1, Err((Some(t), why)) if t == "public.t" && why.contains("op code"))
        );
        assert!(matches!(&back[1].1, Err((_, why)) if why.contains("RFC 3339")));
        assert_eq!(back[2].1.as_ref().unwrap().pk, json!([3]));
        assert_eq!(back[2].0, Position(12));
    }

    #[test]
    fn a_value_that_is_not_an_array_is_one_error() {
        assert!(unpack(5, "{\"not\": \"an array\"}").is_err());
        assert!(unpack(5, "[{\"op\": \"u\"}]").is_err());
    }
}
