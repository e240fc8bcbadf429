//! The decoder against synthetic pgoutput messages.

use super::*;
use crate::catalog::KeyColumn;
use pg_walstream::protocol::ColumnInfo;

fn catalog() -> Arc<Catalog> {
    let mut catalog = Catalog::default();
    let config = crate::catalog::default_tables()
        .into_iter()
        .find(|t| t.entity == "ticket")
        .expect("tickets in the default mapping");
    catalog.push(TableSpec::new(
        config,
        "public.tickets".into(),
        "\"public\".\"tickets\"".into(),
        vec![KeyColumn {
            name: "id".into(),
            sql_type: "bigint".into(),
        }],
        vec!["id".into(), "subject".into()],
    ));
    Arc::new(catalog)
}

/// The tickets relation with its key column only (how the tests of old rows use it).
fn relation(d: &mut Decoder) {
    relation_with(d, vec![ColumnInfo::new(1, "id".into(), 20, -1)]);
}

fn relation_with(d: &mut Decoder, columns: Vec<ColumnInfo>) {
    d.set_installed(HashMap::from([(
        "public.tickets".to_string(),
        vec!["id".to_string(), "subject".to_string(), "tags".to_string()],
    )]));
    d.message(LogicalReplicationMessage::Relation {
        relation_id: 16400,
        namespace: "public".into(),
        relation_name: "tickets".into(),
        replica_identity: b'd',
        columns,
    })
    .unwrap();
    let facts: HashMap<u32, TypeFacts> = [
        (20, "bigint", None),
        (25, "text", None),
        (1009, "text[]", Some(25)),
    ]
    .into_iter()
    .map(|(oid, name, element)| {
        (
            oid,
            TypeFacts {
                oid,
                name: name.into(),
                kind: b'b',
                element,
                delimiter: b',',
                base: None,
                json_cast: false,
            },
        )
    })
    .collect();
    d.add_types(&facts);
    assert!(d.types_needed().is_empty());
}

fn tuple(id: &str) -> TupleData {
    TupleData::new(vec![ColumnData::text(id.as_bytes().to_vec())])
}

/// A delete of the ticket with key `id` (the publication sends the key only).
fn delete(id: &str) -> LogicalReplicationMessage {
    LogicalReplicationMessage::Delete {
        relation_id: 16400,
        old_tuple: tuple(id),
        key_type: 'K',
    }
}

#[test]
fn keys_are_rendered_like_to_jsonb() {
    let text = |s: &str| ColumnData::text(s.as_bytes().to_vec());
    assert_eq!(
        value(&text("42"), &Render::Number),
        Some(serde_json::json!(42))
    );
    assert_eq!(
        value(&text("t"), &Render::Bool),
        Some(serde_json::json!(true))
    );
    assert_eq!(
        value(&text("0b4a…"), &Render::Text),
        Some(serde_json::json!("0b4a…"))
    );
    assert_eq!(
        value(&ColumnData::null(), &Render::Number),
        Some(Value::Null)
    );
}

/// Inserts and updates carry their rows; an unchanged TOASTed value comes from the row's
/// earlier version in the transaction, or is listed as missing.
#[test]
fn rows_come_from_tuples_and_unchanged_toast_is_filled_or_listed() {
    let mut d = Decoder::new(catalog());
    d.begin();
    relation_with(
        &mut d,
        vec![
            ColumnInfo::new(1, "id".into(), 20, -1),
            ColumnInfo::new(0, "subject".into(), 25, -1),
            ColumnInfo::new(0, "tags".into(), 1009, -1),
        ],
    );
    let row = |id: &str, subject: ColumnData, tags: ColumnData| {
        TupleData::new(vec![
            ColumnData::text(id.as_bytes().to_vec()),
            subject,
            tags,
        ])
    };
    let t = |s: &str| ColumnData::text(s.as_bytes().to_vec());
    d.message(LogicalReplicationMessage::Insert {
        relation_id: 16400,
        tuple: row("1", t("hello"), t(r#"{a,"b c",NULL}"#)),
    })
    .unwrap();
    let update = |tuple| LogicalReplicationMessage::Update {
        relation_id: 16400,
        old_tuple: None,
        new_tuple: tuple,
        key_type: None,
    };
    d.message(update(row("1", ColumnData::unchanged(), t("{}"))))
        .unwrap();
    d.message(update(row(
        "2",
        ColumnData::unchanged(),
        ColumnData::null(),
    )))
    .unwrap();
    let (changes, _) = d.commit();
    let rows: Vec<(Option<Value>, Vec<Missing>)> =
        changes.into_iter().map(|c| (c.data, c.missing)).collect();
    assert_eq!(
        rows,
        vec![
            (
                Some(serde_json::json!({"id": 1, "subject": "hello", "tags": ["a", "b c", null]})),
                vec![]
            ),
            (
                Some(serde_json::json!({"id": 1, "subject": "hello", "tags": []})),
                vec![]
            ),
            (
                Some(serde_json::json!({"id": 2, "subject": null, "tags": null})),
                vec![Missing::Toast {
                    column: "subject".into()
                }]
            ),
        ]
    );
}

/// A relation that publishes a column `migrate` did not install (a renamed or added
/// column) has its rows withheld; so has a delete whose trigger found the shape changed.
#[test]
fn relations_and_deletes_not_matching_what_was_installed_are_withheld() {
    let mut d = Decoder::new(catalog());
    d.begin();
    relation_with(
        &mut d,
        vec![
            ColumnInfo::new(1, "id".into(), 20, -1),
            ColumnInfo::new(0, "pw_hash".into(), 25, -1),
        ],
    );
    d.message(LogicalReplicationMessage::Insert {
        relation_id: 16400,
        tuple: TupleData::new(vec![
            ColumnData::text(b"1".to_vec()),
            ColumnData::text(b"secret".to_vec()),
        ]),
    })
    .unwrap();
    relation(&mut d);
    d.message(delete("5")).unwrap();
    d.old_row(br#"{"t":"public.tickets","w":"shape","k":[5]}"#)
        .unwrap();
    let (changes, _) = d.commit();
    let got: Vec<(Op, bool, bool, Option<String>)> = changes
        .into_iter()
        .map(|c| (c.op, c.data.is_some(), c.old.is_some(), c.withheld))
        .collect();
    assert_eq!(
        got,
        vec![
            (Op::Insert, false, false, Some("shape".into())),
            (Op::Delete, false, false, Some("shape".into())),
        ]
    );
}

#[test]
fn deletes_get_their_old_row_from_the_message_and_key_changes_split() {
    let mut d = Decoder::new(catalog());
    d.begin();
    relation(&mut d);
    d.message(LogicalReplicationMessage::Insert {
        relation_id: 16400,
        tuple: tuple("1"),
    })
    .unwrap();
    d.message(LogicalReplicationMessage::Update {
        relation_id: 16400,
        old_tuple: None,
        new_tuple: tuple("1"),
        key_type: None,
    })
    .unwrap();
    // A key change: old key 2 → new key 3; its old row arrives as a message after it.
    d.message(LogicalReplicationMessage::Update {
        relation_id: 16400,
        old_tuple: Some(tuple("2")),
        new_tuple: tuple("3"),
        key_type: Some('K'),
    })
    .unwrap();
    d.old_row(br#"{"t":"public.tickets","old":{"id":2,"subject":"two"}}"#)
        .unwrap();
    d.message(delete("1")).unwrap();
    d.old_row(br#"{"t":"public.tickets","old":{"id":1,"subject":"one"}}"#)
        .unwrap();
    // A delete whose trigger is missing: the key stands in for the old row.
    d.message(delete("9")).unwrap();
    // Changes of tables rowcast does not capture are ignored.
    d.message(LogicalReplicationMessage::Insert {
        relation_id: 99,
        tuple: tuple("5"),
    })
    .unwrap();
    d.old_row(br#"{"t":"public.other","old":{"id":5}}"#)
        .unwrap();
    let (changes, fixes) = d.commit();
    assert!(fixes.is_empty());
    let got: Vec<(Op, String, Option<String>)> = changes
        .into_iter()
        .map(|c| (c.op, c.pk.to_string(), c.old.map(|o| o.to_string())))
        .collect();
    let want = vec![
        (Op::Insert, "[1]".to_string(), None),
        (Op::Update, "[1]".to_string(), None),
        (
            Op::Delete,
            "[2]".to_string(),
            Some(r#"{"id":2,"subject":"two"}"#.to_string()),
        ),
        (Op::Insert, "[3]".to_string(), None),
        (
            Op::Delete,
            "[1]".to_string(),
            Some(r#"{"id":1,"subject":"one"}"#.to_string()),
        ),
        (
            Op::Delete,
            "[9]".to_string(),
            Some(r#"{"id":9}"#.to_string()),
        ),
    ];
    assert_eq!(got, want);
    assert!(d.commit().0.is_empty(), "a commit takes every change");
}

/// An update's trigger message carries the old values of the audience columns it
/// changed: they become the update's `old`, buffered or (large transactions) by `seq`.
#[test]
fn updates_get_the_old_values_of_their_audience_columns() {
    let mut d = Decoder::new(catalog());
    d.begin();
    relation(&mut d);
    let update = |id: &str| LogicalReplicationMessage::Update {
        relation_id: 16400,
        old_tuple: None,
        new_tuple: tuple(id),
        key_type: None,
    };
    d.message(update("1")).unwrap();
    d.message(update("2")).unwrap();
    d.old_row(br#"{"t":"public.tickets","u":[1],"old":{"requester_id":3}}"#)
        .unwrap();
    // A message for an update that was not published is dropped.
    d.old_row(br#"{"t":"public.tickets","u":[9],"old":{"requester_id":4}}"#)
        .unwrap();
    let (changes, fixes) = d.commit();
    assert!(fixes.is_empty());
    let olds: Vec<Option<String>> = changes
        .iter()
        .map(|c| c.old.as_ref().map(|o| o.to_string()))
        .collect();
    assert_eq!(olds, vec![Some(r#"{"requester_id":3}"#.into()), None]);
    assert!(changes.iter().all(|c| c.op == Op::Update));

    d.begin();
    d.message(update("5")).unwrap();
    let _ = d.take_chunk();
    d.written(&[300]);
    d.old_row(br#"{"t":"public.tickets","u":[5],"old":{"requester_id":7}}"#)
        .unwrap();
    let (changes, fixes) = d.commit();
    assert!(changes.is_empty());
    assert_eq!(fixes, vec![(300, serde_json::json!({"requester_id": 7}))]);
}

/// A large transaction written in chunks: deletes written before their old row came
/// get it as a fix by `seq`, also at commit when it never comes, and when the same
/// key is deleted again.
#[test]
fn chunks_written_early_get_their_old_rows_as_fixes() {
    let mut d = Decoder::new(catalog());
    d.begin();
    relation(&mut d);
    // A multi-row DELETE: the rows first, the AFTER trigger's messages at its end.
    for id in ["1", "2", "3"] {
        d.message(delete(id)).unwrap();
    }
    assert_eq!(d.buffered(), 3);
    let (chunk, fixes) = d.take_chunk();
    assert_eq!(chunk.len(), 3);
    assert!(fixes.is_empty());
    assert!(chunk.iter().all(|c| c.op == Op::Delete && c.old.is_none()));
    d.written(&[101, 102, 103]);
    assert_eq!(d.buffered(), 0);

    d.old_row(br#"{"t":"public.tickets","old":{"id":2,"subject":"two"}}"#)
        .unwrap();
    d.old_row(br#"{"t":"public.tickets","old":{"id":1,"subject":"one"}}"#)
        .unwrap();
    assert_eq!(d.buffered(), 2, "two fixes");
    // Ticket 3 is inserted and deleted again before its first old row came.
    d.message(LogicalReplicationMessage::Insert {
        relation_id: 16400,
        tuple: tuple("3"),
    })
    .unwrap();
    d.message(delete("3")).unwrap();
    d.old_row(br#"{"t":"public.tickets","old":{"id":3,"subject":"again"}}"#)
        .unwrap();

    let (changes, fixes) = d.commit();
    let fixes: Vec<(i64, String)> = fixes.into_iter().map(|(s, o)| (s, o.to_string())).collect();
    assert_eq!(
        fixes,
        vec![
            (102, r#"{"id":2,"subject":"two"}"#.to_string()),
            (101, r#"{"id":1,"subject":"one"}"#.to_string()),
            (103, r#"{"id":3}"#.to_string()),
        ]
    );
    let got: Vec<(Op, String, Option<String>)> = changes
        .into_iter()
        .map(|c| (c.op, c.pk.to_string(), c.old.map(|o| o.to_string())))
        .collect();
    assert_eq!(
        got,
        vec![
            (Op::Insert, "[3]".to_string(), None),
            (
                Op::Delete,
                "[3]".to_string(),
                Some(r#"{"id":3,"subject":"again"}"#.to_string())
            ),
        ]
    );

    // A delete written early whose old row never comes: the key, at commit.
    d.begin();
    d.message(delete("7")).unwrap();
    let _ = d.take_chunk();
    d.written(&[200]);
    let (changes, fixes) = d.commit();
    assert!(changes.is_empty());
    assert_eq!(fixes, vec![(200, serde_json::json!({"id": 7}))]);
}
