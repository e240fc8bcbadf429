//! Facts about the types of captured columns, as `to_jsonb` sees them: what logical
//! capture needs to render a column's text value exactly as `to_jsonb` would.

use std::collections::HashMap;

use tokio_postgres::GenericClient;

/// One type from `pg_type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeFacts {
    pub oid: u32,
    /// `format_type(oid, NULL)`: safe to splice into SQL as a cast target.
    pub name: String,
    /// `typtype`: `b` base, `c` composite, `d` domain, `e` enum, `r` range, …
    pub kind: u8,
    /// A true array (subscripted like an array): its element type.
    pub element: Option<u32>,
    /// The array delimiter of this type (as an element).
    pub delimiter: u8,
    /// Domains: the base type.
    pub base: Option<u32>,
    /// A user-defined type with a function cast to `json` (`to_jsonb` uses it).
    pub json_cast: bool,
}

/// The facts of `oids` and of every element and base type they lead to.
pub async fn type_facts<C: GenericClient>(
    client: &C,
    oids: &[u32],
) -> Result<HashMap<u32, TypeFacts>, tokio_postgres::Error> {
    let rows = client
        .query(
            "WITH RECURSIVE ts(oid) AS (
                SELECT unnest($1::oid[])
                UNION
                SELECT v.x FROM ts JOIN pg_catalog.pg_type t ON t.oid = ts.oid,
                       LATERAL (VALUES (t.typelem), (t.typbasetype)) v(x)
                 WHERE v.x <> 0)
             SELECT t.oid, pg_catalog.format_type(t.oid, NULL), t.typtype::text,
                    CASE WHEN t.typsubscript = 'pg_catalog.array_subscript_handler'::regproc
                         THEN t.typelem END,
                    t.typdelim::text, NULLIF(t.typbasetype, 0),
                    t.oid >= 16384 AND EXISTS (
                        SELECT 1 FROM pg_catalog.pg_cast c
                         WHERE c.castsource = t.oid AND c.casttarget = 'pg_catalog.json'::regtype
                           AND c.castmethod = 'f')
               FROM pg_catalog.pg_type t JOIN ts USING (oid)",
            &[&oids],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let byte = |i: usize| r.get::<_, String>(i).bytes().next().unwrap_or(b',');
            let facts = TypeFacts {
                oid: r.get(0),
                name: r.get(1),
                kind: byte(2),
                element: r.get(3),
                delimiter: byte(4),
                base: r.get(5),
                json_cast: r.get(6),
            };
            (facts.oid, facts)
        })
        .collect())
}
