//! Audience rules: who receives a table's rows.
//!
//! ```toml
//! [tables.audience]
//! roles = ["agent", "admin"]                 # these roles see every row
//! rows = "requester_id = $user"              # anyone else: the rows where this holds
//! ```
//!
//! A `rows` rule is a condition on the row, read once per event (never per subscriber):
//!
//! | condition | holds for |
//! |---|---|
//! | `col = $user` | the user whose `sub` is the row's `col` |
//! | `col = true`, `col != 'draft'`, `col = 3` | everyone, or nobody, by the row's value |
//! | `col is null`, `col is not null` | everyone, or nobody |
//! | `col -> schema.table` | whoever may see the row of that table whose key is `col` (its own `rows` rule); nobody when `col` is null or the row does not exist |
//! | `(a, b) -> schema.table` | the same through a composite key |
//!
//! combined with `and`, `or` and parentheses (`and` binds tighter). A table without an
//! `audience` is seen by everyone who may join its rooms; a table with `roles` but no
//! `rows` only by those roles.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::scalar_text;
use crate::event::Reach;

/// The `[tables.audience]` section as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudienceConfig {
    /// Roles that see every row of the table.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Which rows everyone else sees (see the module docs). None: only `roles`.
    #[serde(default)]
    pub rows: Option<String>,
}

/// A parsed `rows` rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    And(Vec<Rule>),
    Or(Vec<Rule>),
    /// `col = $user`
    IsUser(String),
    /// `col = literal` (`negated`: `!=`)
    Equals {
        column: String,
        value: Literal,
        negated: bool,
    },
    /// `col is [not] null`
    IsNull {
        column: String,
        negated: bool,
    },
    /// `col -> table` (or a tuple of columns for a composite key)
    Parent {
        columns: Vec<String>,
        table: String,
    },
}

/// A literal of a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Bool(bool),
    Number(f64),
    Text(String),
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Number(n) => write!(f, "{n}"),
            Literal::Text(t) => write!(f, "'{}'", t.replace('\'', "''")),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, rules: &[Rule], op: &str| -> fmt::Result {
            for (i, r) in rules.iter().enumerate() {
                if i > 0 {
                    write!(f, " {op} ")?;
                }
                match r {
                    Rule::Or(_) | Rule::And(_) => write!(f, "({r})")?,
                    _ => write!(f, "{r}")?,
                }
            }
            Ok(())
        };
        match self {
            Rule::And(rules) => join(f, rules, "and"),
            Rule::Or(rules) => join(f, rules, "or"),
            Rule::IsUser(c) => write!(f, "{c} = $user"),
            Rule::Equals {
                column,
                value,
                negated,
            } => write!(f, "{column} {} {value}", if *negated { "!=" } else { "=" }),
            Rule::IsNull { column, negated } => {
                write!(f, "{column} is {}null", if *negated { "not " } else { "" })
            }
            Rule::Parent { columns, table } if columns.len() == 1 => {
                write!(f, "{} -> {table}", columns[0])
            }
            Rule::Parent { columns, table } => write!(f, "({}) -> {table}", columns.join(", ")),
        }
    }
}

/// Why a rule does not parse. Shown to the operator with the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {at})")]
pub struct RuleError {
    pub message: String,
    pub at: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    User,
    Eq,
    Ne,
    Arrow,
    Open,
    Close,
    Comma,
    Dot,
    Number(f64),
    Text(String),
}

fn tokenize(s: &str) -> Result<Vec<(usize, Token)>, RuleError> {
    let err = |at: usize, message: String| RuleError { message, at };
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at = i;
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((at, Token::Open));
                i += 1;
            }
            ')' => {
                out.push((at, Token::Close));
                i += 1;
            }
            ',' => {
                out.push((at, Token::Comma));
                i += 1;
            }
            '.' => {
                out.push((at, Token::Dot));
                i += 1;
            }
            '=' => {
                out.push((at, Token::Eq));
                i += 1;
            }
            '!' if chars.get(i + 1) == Some(&'=') => {
                out.push((at, Token::Ne));
                i += 2;
            }
            '<' if chars.get(i + 1) == Some(&'>') => {
                out.push((at, Token::Ne));
                i += 2;
            }
            '-' if chars.get(i + 1) == Some(&'>') => {
                out.push((at, Token::Arrow));
                i += 2;
            }
            '$' => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                let name: String = chars[start..j].iter().collect();
                if name != "user" {
                    return Err(err(
                        at,
                        format!("${name} is not known; write $user (the token's sub)"),
                    ));
                }
                out.push((at, Token::User));
                i = j;
            }
            '\'' => {
                let mut text = String::new();
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => return Err(err(at, "unclosed ' in a text literal".into())),
                        Some('\'') if chars.get(j + 1) == Some(&'\'') => {
                            text.push('\'');
                            j += 2;
                        }
                        Some('\'') => break,
                        Some(c) => {
                            text.push(*c);
                            j += 1;
                        }
                    }
                }
                out.push((at, Token::Text(text)));
                i = j + 1;
            }
            '"' => {
                let mut name = String::new();
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => return Err(err(at, "unclosed \" in a quoted name".into())),
                        Some('"') if chars.get(j + 1) == Some(&'"') => {
                            name.push('"');
                            j += 2;
                        }
                        Some('"') => break,
                        Some(c) => {
                            name.push(*c);
                            j += 1;
                        }
                    }
                }
                out.push((at, Token::Ident(name)));
                i = j + 1;
            }
            c if c.is_ascii_digit() || c == '-' => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == '.') {
                    j += 1;
                }
                let text: String = chars[i..j].iter().collect();
                let n = text
                    .parse::<f64>()
                    .map_err(|_| err(at, format!("{text:?} is not a number")))?;
                out.push((at, Token::Number(n)));
                i = j;
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut j = i;
                while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                out.push((at, Token::Ident(chars[i..j].iter().collect())));
                i = j;
            }
            other => return Err(err(at, format!("unexpected {other:?}"))),
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    len: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }
    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.len, |(a, _)| *a)
    }
    fn err(&self, message: impl Into<String>) -> RuleError {
        RuleError {
            message: message.into(),
            at: self.at(),
        }
    }
    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Ident(w)) if w.eq_ignore_ascii_case(word))
    }
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        t
    }

    fn expr(&mut self) -> Result<Rule, RuleError> {
        let mut terms = vec![self.and()?];
        while self.keyword("or") {
            self.pos += 1;
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Rule::Or(terms)
        })
    }

    fn and(&mut self) -> Result<Rule, RuleError> {
        let mut terms = vec![self.atom()?];
        while self.keyword("and") {
            self.pos += 1;
            terms.push(self.atom()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Rule::And(terms)
        })
    }

    /// `( a, b ) -> table` when the parenthesis holds only column names followed by `->`.
    fn tuple_parent(&mut self) -> Option<Result<Rule, RuleError>> {
        let start = self.pos;
        self.pos += 1; // (
        let mut columns = Vec::new();
        loop {
            match self.next() {
                Some(Token::Ident(c)) if !is_keyword(&c) => columns.push(c),
                _ => {
                    self.pos = start;
                    return None;
                }
            }
            match self.next() {
                Some(Token::Comma) => continue,
                Some(Token::Close) => break,
                _ => {
                    self.pos = start;
                    return None;
                }
            }
        }
        if self.peek() != Some(&Token::Arrow) {
            self.pos = start;
            return None;
        }
        self.pos += 1;
        Some(self.table().map(|table| Rule::Parent { columns, table }))
    }

    fn atom(&mut self) -> Result<Rule, RuleError> {
        if self.peek() == Some(&Token::Open) {
            if let Some(parent) = self.tuple_parent() {
                return parent;
            }
            self.pos += 1;
            let inner = self.expr()?;
            if self.next() != Some(Token::Close) {
                self.pos -= 1;
                return Err(self.err("expected )"));
            }
            return Ok(inner);
        }
        let column = match self.next() {
            Some(Token::Ident(c)) if !is_keyword(&c) => c,
            _ => {
                self.pos -= 1;
                return Err(self.err("expected a column name"));
            }
        };
        match self.next() {
            Some(Token::Arrow) => {
                let table = self.table()?;
                Ok(Rule::Parent {
                    columns: vec![column],
                    table,
                })
            }
            Some(t @ (Token::Eq | Token::Ne)) => {
                let negated = t == Token::Ne;
                match self.next() {
                    Some(Token::User) if !negated => Ok(Rule::IsUser(column)),
                    Some(Token::User) => {
                        self.pos -= 1;
                        Err(self.err("only `column = $user` is supported, not !="))
                    }
                    Some(Token::Number(n)) => Ok(Rule::Equals {
                        column,
                        value: Literal::Number(n),
                        negated,
                    }),
                    Some(Token::Text(s)) => Ok(Rule::Equals {
                        column,
                        value: Literal::Text(s),
                        negated,
                    }),
                    Some(Token::Ident(w)) if w.eq_ignore_ascii_case("true") => Ok(Rule::Equals {
                        column,
                        value: Literal::Bool(true),
                        negated,
                    }),
                    Some(Token::Ident(w)) if w.eq_ignore_ascii_case("false") => Ok(Rule::Equals {
                        column,
                        value: Literal::Bool(false),
                        negated,
                    }),
                    Some(Token::Ident(w)) if w.eq_ignore_ascii_case("null") => {
                        self.pos -= 1;
                        Err(self.err("write `column is null`, not `= null`"))
                    }
                    _ => {
                        self.pos -= 1;
                        Err(self.err(
                            "expected $user, true, false, a number or a 'text' after the comparison",
                        ))
                    }
                }
            }
            Some(Token::Ident(w)) if w.eq_ignore_ascii_case("is") => {
                let negated = self.keyword("not");
                if negated {
                    self.pos += 1;
                }
                if !self.keyword("null") {
                    return Err(self.err("expected null after is"));
                }
                self.pos += 1;
                Ok(Rule::IsNull { column, negated })
            }
            _ => {
                self.pos -= 1;
                Err(self.err("expected =, !=, is null or -> after the column"))
            }
        }
    }

    /// `name`, `schema.name`, each part plain or "quoted".
    fn table(&mut self) -> Result<String, RuleError> {
        let mut parts = Vec::new();
        loop {
            match self.next() {
                Some(Token::Ident(p)) => parts.push(p),
                _ => {
                    self.pos -= 1;
                    return Err(self.err("expected a table name after ->"));
                }
            }
            if self.peek() == Some(&Token::Dot) && parts.len() < 2 {
                self.pos += 1;
                continue;
            }
            break;
        }
        Ok(parts.join("."))
    }
}

fn is_keyword(w: &str) -> bool {
    ["and", "or", "is", "not", "null", "true", "false"]
        .iter()
        .any(|k| w.eq_ignore_ascii_case(k))
}

impl Rule {
    /// Parses a `rows` rule.
    pub fn parse(s: &str) -> Result<Rule, RuleError> {
        let tokens = tokenize(s)?;
        if tokens.is_empty() {
            return Err(RuleError {
                message: "the rule is empty".into(),
                at: 0,
            });
        }
        let mut p = Parser {
            tokens,
            pos: 0,
            len: s.chars().count(),
        };
        let rule = p.expr()?;
        if p.pos < p.tokens.len() {
            return Err(p.err("unexpected text after the rule (missing and/or?)"));
        }
        Ok(rule)
    }

    /// Every column of the row the rule reads, in first-use order.
    pub fn columns(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.visit(&mut |r| {
            let cols: Vec<&String> = match r {
                Rule::IsUser(c) => vec![c],
                Rule::Equals { column, .. } | Rule::IsNull { column, .. } => vec![column],
                Rule::Parent { columns, .. } => columns.iter().collect(),
                Rule::And(_) | Rule::Or(_) => vec![],
            };
            for c in cols {
                if !out.contains(c) {
                    out.push(c.clone());
                }
            }
        });
        out
    }

    /// The parent references: (columns, table).
    pub fn parents(&self) -> Vec<(Vec<String>, String)> {
        let mut out = Vec::new();
        self.visit(&mut |r| {
            if let Rule::Parent { columns, table } = r
                && !out.iter().any(|(c, t)| c == columns && t == table)
            {
                out.push((columns.clone(), table.clone()));
            }
        });
        out
    }

    fn visit(&self, f: &mut impl FnMut(&Rule)) {
        f(self);
        if let Rule::And(rules) | Rule::Or(rules) = self {
            for r in rules {
                r.visit(f);
            }
        }
    }
}

/// Why a rule could not be evaluated for one row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("the row has no column {0:?}")]
    MissingColumn(String),
    #[error("{table} row {key} (referenced by {column}) was not found")]
    MissingParent {
        table: String,
        key: String,
        column: String,
    },
    #[error("column {column:?} holds {value}, which cannot be compared with {literal}")]
    BadValue {
        column: String,
        value: String,
        literal: String,
    },
    #[error("table {0} has no audience rules to inherit")]
    UnknownParent(String),
}

/// What a rule needs beyond the row itself: the rows it refers to.
pub trait Parents {
    /// The reach of the `table` row with key `key` (the key values as a JSON array):
    /// `None` when that row is not known. `trace` records the parent rule's steps.
    fn reach(
        &self,
        table: &str,
        key: &Value,
        trace: Option<&mut Vec<Step>>,
    ) -> Option<Result<Reach, EvalError>>;
}

/// Parents that are never known (tables without parent references).
pub struct NoParents;

impl Parents for NoParents {
    fn reach(
        &self,
        _: &str,
        _: &Value,
        _: Option<&mut Vec<Step>>,
    ) -> Option<Result<Reach, EvalError>> {
        None
    }
}

/// One step of an explanation: a condition and what it gave.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub rule: String,
    pub found: String,
    pub reach: String,
}

impl Rule {
    /// Who the rule lets see `row`. `trace`, when given, records each condition's outcome.
    pub fn reach(
        &self,
        row: &Map<String, Value>,
        parents: &dyn Parents,
        mut trace: Option<&mut Vec<Step>>,
    ) -> Result<Reach, EvalError> {
        self.eval(row, parents, &mut trace)
    }

    fn eval(
        &self,
        row: &Map<String, Value>,
        parents: &dyn Parents,
        trace: &mut Option<&mut Vec<Step>>,
    ) -> Result<Reach, EvalError> {
        let get = |c: &str| row.get(c).ok_or_else(|| EvalError::MissingColumn(c.into()));
        let (reach, found) = match self {
            Rule::And(rules) => {
                let mut acc = Reach::Everyone;
                for r in rules {
                    acc = acc.and(r.eval(row, parents, trace)?);
                }
                return Ok(acc);
            }
            Rule::Or(rules) => {
                let mut acc = Reach::Nobody;
                for r in rules {
                    acc = acc.or(r.eval(row, parents, trace)?);
                }
                return Ok(acc);
            }
            Rule::IsUser(c) => {
                let v = get(c)?;
                let reach = match scalar_text(v) {
                    Some(sub) => Reach::user(sub),
                    None => Reach::Nobody,
                };
                (reach, format!("{c} is {v}"))
            }
            Rule::Equals {
                column,
                value,
                negated,
            } => {
                let v = get(column)?;
                let equal = match (value, v) {
                    (_, Value::Null) => Some(false),
                    (Literal::Bool(b), Value::Bool(x)) => Some(b == x),
                    (Literal::Number(n), Value::Number(x)) => x.as_f64().map(|x| x == *n),
                    (Literal::Text(t), Value::String(x)) => Some(t == x),
                    (Literal::Text(t), Value::Number(x)) => Some(t == &x.to_string()),
                    (Literal::Number(n), Value::String(x)) => {
                        x.parse::<f64>().ok().map(|x| x == *n)
                    }
                    _ => None,
                };
                let Some(equal) = equal else {
                    return Err(EvalError::BadValue {
                        column: column.clone(),
                        value: v.to_string(),
                        literal: value.to_string(),
                    });
                };
                // SQL-like: a null is neither equal nor unequal.
                let holds = !v.is_null() && (equal != *negated);
                (
                    if holds {
                        Reach::Everyone
                    } else {
                        Reach::Nobody
                    },
                    format!("{column} is {v}"),
                )
            }
            Rule::IsNull { column, negated } => {
                let v = get(column)?;
                let holds = v.is_null() != *negated;
                (
                    if holds {
                        Reach::Everyone
                    } else {
                        Reach::Nobody
                    },
                    format!("{column} is {v}"),
                )
            }
            Rule::Parent { columns, table } => {
                let mut key = Vec::with_capacity(columns.len());
                for c in columns {
                    key.push(get(c)?.clone());
                }
                let key = Value::Array(key);
                if key.as_array().is_some_and(|k| k.iter().any(Value::is_null)) {
                    (Reach::Nobody, format!("{} is null", columns.join(", ")))
                } else {
                    match parents.reach(table, &key, trace.as_deref_mut()) {
                        Some(r) => (r?, format!("{table} row {key}")),
                        None => {
                            return Err(EvalError::MissingParent {
                                table: table.clone(),
                                key: key.to_string(),
                                column: columns.join(", "),
                            });
                        }
                    }
                }
            }
        };
        if let Some(t) = trace.as_deref_mut() {
            t.push(Step {
                rule: self.to_string(),
                found,
                reach: reach.to_string(),
            });
        }
        Ok(reach)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn rules_parse_and_print() {
        for (text, printed) in [
            ("requester_id = $user", "requester_id = $user"),
            ("published = true", "published = true"),
            (
                "ticket_id -> public.tickets and internal = false",
                "ticket_id -> public.tickets and internal = false",
            ),
            (
                "ticket_id -> tickets AND (comment_id IS NULL or comment_id -> comments)",
                "ticket_id -> tickets and (comment_id is null or comment_id -> comments)",
            ),
            (
                "(org_id, ticket_id) -> public.\"Ticket\"",
                "(org_id, ticket_id) -> public.Ticket",
            ),
            ("\"requesterId\" = $user", "requesterId = $user"),
            ("status != 'draft'", "status != 'draft'"),
            ("(a = 1)", "a = 1"),
        ] {
            let r = Rule::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(r.to_string(), printed);
        }
        for bad in [
            "",
            "requester_id",
            "requester_id = ",
            "requester_id != $user",
            "a = null",
            "a = $me",
            "a -> ",
            "a = 1 b = 2",
            "(a = 1",
            "a = 'x",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad:?} should not parse");
        }
        let r = Rule::parse("ticket_id -> t and (c is null or c -> u) and x = $user").unwrap();
        assert_eq!(r.columns(), vec!["ticket_id", "c", "x"]);
        assert_eq!(
            r.parents(),
            vec![
                (vec!["ticket_id".to_string()], "t".to_string()),
                (vec!["c".to_string()], "u".to_string())
            ]
        );
    }

    struct Tickets;
    impl Parents for Tickets {
        fn reach(
            &self,
            table: &str,
            key: &Value,
            _: Option<&mut Vec<Step>>,
        ) -> Option<Result<Reach, EvalError>> {
            (table == "tickets" && key == &json!([1])).then(|| Ok(Reach::user("3".into())))
        }
    }

    #[test]
    fn rules_give_who_sees_a_row() {
        let own = Rule::parse("requester_id = $user").unwrap();
        assert_eq!(
            own.reach(&row(json!({"requester_id": 3})), &NoParents, None),
            Ok(Reach::user("3".into()))
        );
        assert_eq!(
            own.reach(&row(json!({"requester_id": null})), &NoParents, None),
            Ok(Reach::Nobody)
        );
        let comment = Rule::parse("ticket_id -> tickets and internal = false").unwrap();
        assert_eq!(
            comment.reach(
                &row(json!({"ticket_id": 1, "internal": false})),
                &Tickets,
                None
            ),
            Ok(Reach::user("3".into()))
        );
        assert_eq!(
            comment.reach(
                &row(json!({"ticket_id": 1, "internal": true})),
                &Tickets,
                None
            ),
            Ok(Reach::Nobody)
        );
        assert!(matches!(
            comment.reach(
                &row(json!({"ticket_id": 2, "internal": false})),
                &Tickets,
                None
            ),
            Err(EvalError::MissingParent { .. })
        ));
        assert!(matches!(
            comment.reach(
                &row(json!({"ticket_id": 1, "internal": "no"})),
                &Tickets,
                None
            ),
            Err(EvalError::BadValue { .. })
        ));
        let either = Rule::parse("a = $user or b = $user").unwrap();
        assert_eq!(
            either.reach(&row(json!({"a": "x", "b": 7})), &NoParents, None),
            Ok(Reach::Users(BTreeSet::from(["x".into(), "7".into()])))
        );
        let optional = Rule::parse("c is null or c -> tickets").unwrap();
        assert_eq!(
            optional.reach(&row(json!({"c": null})), &Tickets, None),
            Ok(Reach::Everyone)
        );
        let mut trace = Vec::new();
        comment
            .reach(
                &row(json!({"ticket_id": 1, "internal": false})),
                &Tickets,
                Some(&mut trace),
            )
            .unwrap();
        assert_eq!(trace.len(), 2);
        assert_eq!(trace[0].reach, "users 3");
    }
}
