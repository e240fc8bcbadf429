//! Table names as the configuration writes them: `table` (in `public`), `schema.table`, or
//! with quoted parts the way an ORM prints them (`public."Ticket"`). Names are matched
//! exactly: `public.Ticket` and `public."Ticket"` are the same table.

use std::fmt;

/// A schema-qualified table name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl TableName {
    /// Parses `table`, `schema.table`, each part bare (letters, digits, `_`, `$`) or
    /// `"quoted"` (`""` for a quote inside). `None` when it is not a table name.
    pub fn parse(s: &str) -> Option<TableName> {
        let mut parts = Vec::new();
        let mut chars = s.trim().chars().peekable();
        loop {
            let mut part = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next()? {
                        '"' if chars.peek() == Some(&'"') => {
                            chars.next();
                            part.push('"');
                        }
                        '"' => break,
                        c => part.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_alphanumeric() || c == '_' || c == '$' {
                        part.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if part.starts_with(|c: char| c.is_ascii_digit()) {
                    return None;
                }
            }
            if part.is_empty() || part.len() > 63 {
                return None;
            }
            parts.push(part);
            match chars.next() {
                None => break,
                Some('.') if parts.len() < 2 => continue,
                Some(_) => return None,
            }
        }
        let table = parts.pop()?;
        let schema = parts.pop().unwrap_or_else(|| "public".into());
        Some(TableName { schema, table })
    }

    /// `"schema"."table"`, safe to splice into SQL.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }
}

/// `schema.table`, as written to `rowcast.changes.tbl` and shown in events.
impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// An identifier quoted for SQL.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_as_orms_write_them() {
        let t = |s: &str| TableName::parse(s).map(|n| n.to_string());
        assert_eq!(t("tickets").as_deref(), Some("public.tickets"));
        assert_eq!(t("public.tickets").as_deref(), Some("public.tickets"));
        assert_eq!(t("public.Ticket").as_deref(), Some("public.Ticket"));
        assert_eq!(t("public.\"Ticket\"").as_deref(), Some("public.Ticket"));
        assert_eq!(t("\"Ticket\"").as_deref(), Some("public.Ticket"));
        assert_eq!(
            t("\"my schema\".\"a\"\"b\"").as_deref(),
            Some("my schema.a\"b")
        );
        assert_eq!(
            TableName::parse("public.\"Ticket\"").unwrap().quoted(),
            "\"public\".\"Ticket\""
        );
        for bad in ["", "a.b.c", "1abc", "\"open", "a b", "a.", ".a"] {
            assert!(TableName::parse(bad).is_none(), "{bad:?}");
        }
    }
}
