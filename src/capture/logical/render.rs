//! pgoutput's text values → JSON exactly as `to_jsonb` renders them (PostgreSQL's
//! `jsonb_categorize_type`): booleans, numbers (NaN and infinities stay strings), `json` and
//! `jsonb` as JSON, timestamps in ISO 8601 with a `T` and a `±hh:mm` offset, arrays as JSON
//! arrays of their rendered elements, everything else as the type's text. Composite types and
//! user types with a cast to `json` are rendered by the database (the value's text cast back to
//! its type). Pure: the walsender runs with `DateStyle = ISO` (set by the replication
//! connection), which the timestamp rule relies on.

use std::collections::HashMap;

use serde_json::Value;

use crate::catalog::TypeFacts;

/// How a column's text becomes JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Render {
    Bool,
    Number,
    Json,
    Timestamp,
    Text,
    Array {
        element: Box<Render>,
        delimiter: u8,
    },
    /// Rendered by the database: `to_jsonb(text::<type>)`, the type as `format_type` names it.
    Database(String),
}

/// The rendering of type `oid`, from the facts of it and the types it leads to.
pub fn plan(oid: u32, facts: &HashMap<u32, TypeFacts>) -> Render {
    plan_depth(oid, facts, 0)
}

fn plan_depth(oid: u32, facts: &HashMap<u32, TypeFacts>, depth: u8) -> Render {
    let Some(f) = facts.get(&oid) else {
        return Render::Text;
    };
    if depth > 8 {
        return Render::Database(f.name.clone());
    }
    if let (b'd', Some(base)) = (f.kind, f.base) {
        return plan_depth(base, facts, depth + 1);
    }
    match oid {
        16 => return Render::Bool,
        20 | 21 | 23 | 700 | 701 | 1700 => return Render::Number,
        114 | 3802 => return Render::Json,
        1114 | 1184 => return Render::Timestamp,
        _ => {}
    }
    if let Some(element) = f.element {
        return match plan_depth(element, facts, depth + 1) {
            Render::Database(_) => Render::Database(f.name.clone()),
            e => Render::Array {
                delimiter: facts.get(&element).map_or(b',', |e| e.delimiter),
                element: Box::new(e),
            },
        };
    }
    if f.kind == b'c' || f.json_cast {
        return Render::Database(f.name.clone());
    }
    Render::Text
}

/// `text` rendered by `render`; `None` when only the database can render it.
pub fn render(render: &Render, text: &str) -> Option<Value> {
    Some(match render {
        Render::Bool => Value::Bool(text == "t"),
        Render::Number => number(text),
        Render::Json => serde_json::from_str(text).ok()?,
        Render::Timestamp => Value::String(xsd_timestamp(text)),
        Render::Text => Value::String(text.to_string()),
        Render::Array { element, delimiter } => {
            let parsed = ArrayParser::new(text, *delimiter).parse()?;
            array_value(&parsed, element)?
        }
        Render::Database(_) => return None,
    })
}

/// A number's text as `to_jsonb` gives it: a JSON number, or a string (`NaN`, `Infinity`).
fn number(text: &str) -> Value {
    serde_json::from_str::<serde_json::Number>(text)
        .map(Value::Number)
        .unwrap_or_else(|_| Value::String(text.to_string()))
}

/// `2024-01-02 03:04:05.5+00` (DateStyle ISO) → `2024-01-02T03:04:05.5+00:00` (XSD, as
/// `to_jsonb` writes it); `infinity` and BC dates keep their words.
fn xsd_timestamp(text: &str) -> String {
    let (body, bc) = match text.strip_suffix(" BC") {
        Some(b) => (b, " BC"),
        None => (text, ""),
    };
    let Some(space) = body.find(' ') else {
        return text.to_string(); // infinity, -infinity
    };
    let (date, time) = (&body[..space], &body[space + 1..]);
    let mut out = String::with_capacity(text.len() + 4);
    out.push_str(date);
    out.push('T');
    match time.find(['+', '-']) {
        Some(z) if !time[z..].contains(':') => {
            out.push_str(time);
            out.push_str(":00");
        }
        _ => out.push_str(time),
    }
    out.push_str(bc);
    out
}

/// An array literal's structure: nested lists of elements (`None` for NULL).
#[derive(Debug, PartialEq)]
enum Node {
    List(Vec<Node>),
    Item(Option<String>),
}

fn array_value(node: &Node, element: &Render) -> Option<Value> {
    match node {
        Node::List(items) => Some(Value::Array(
            items
                .iter()
                .map(|n| array_value(n, element))
                .collect::<Option<_>>()?,
        )),
        Node::Item(None) => Some(Value::Null),
        Node::Item(Some(text)) => render(element, text),
    }
}

/// The array output format: `{a,"b c",NULL,{1,2}}`, optionally led by bounds
/// (`[0:1]={…}`), which `to_jsonb` ignores.
struct ArrayParser<'a> {
    s: &'a [u8],
    i: usize,
    delimiter: u8,
}

impl<'a> ArrayParser<'a> {
    fn new(text: &'a str, delimiter: u8) -> Self {
        let start = match text.starts_with('[') {
            true => text.find('=').map_or(0, |i| i + 1),
            false => 0,
        };
        ArrayParser {
            s: text.as_bytes(),
            i: start,
            delimiter,
        }
    }

    fn parse(mut self) -> Option<Node> {
        let node = self.list()?;
        (self.i == self.s.len()).then_some(node)
    }

    fn list(&mut self) -> Option<Node> {
        if self.s.get(self.i) != Some(&b'{') {
            return None;
        }
        self.i += 1;
        let mut items = Vec::new();
        if self.s.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Some(Node::List(items));
        }
        loop {
            items.push(match self.s.get(self.i)? {
                b'{' => self.list()?,
                b'"' => self.quoted()?,
                _ => self.unquoted()?,
            });
            match *self.s.get(self.i)? {
                b'}' => {
                    self.i += 1;
                    return Some(Node::List(items));
                }
                c if c == self.delimiter => self.i += 1,
                _ => return None,
            }
        }
    }

    fn quoted(&mut self) -> Option<Node> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match *self.s.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(Node::Item(Some(String::from_utf8(out).ok()?)));
                }
                b'\\' => {
                    out.push(*self.s.get(self.i + 1)?);
                    self.i += 2;
                }
                c => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }

    fn unquoted(&mut self) -> Option<Node> {
        let start = self.i;
        while let Some(&c) = self.s.get(self.i) {
            if c == self.delimiter || c == b'}' {
                break;
            }
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).ok()?.trim();
        Some(Node::Item(
            (!text.eq_ignore_ascii_case("NULL")).then(|| text.to_string()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn arr(element: Render) -> Render {
        Render::Array {
            element: Box::new(element),
            delimiter: b',',
        }
    }

    #[test]
    fn scalars_render_like_to_jsonb() {
        assert_eq!(render(&Render::Bool, "t"), Some(json!(true)));
        assert_eq!(render(&Render::Bool, "f"), Some(json!(false)));
        assert_eq!(render(&Render::Number, "42"), Some(json!(42)));
        assert_eq!(render(&Render::Number, "-1.50"), Some(json!(-1.5)));
        assert_eq!(render(&Render::Number, "NaN"), Some(json!("NaN")));
        assert_eq!(
            render(&Render::Number, "-Infinity"),
            Some(json!("-Infinity"))
        );
        assert_eq!(
            render(&Render::Json, r#"{"a": [1, "x"]}"#),
            Some(json!({"a": [1, "x"]}))
        );
        assert_eq!(render(&Render::Text, "\\x0102"), Some(json!("\\x0102")));
        assert_eq!(render(&Render::Database("point".into()), "(1,2)"), None);
    }

    #[test]
    fn timestamps_become_xsd() {
        let t = |s: &str| render(&Render::Timestamp, s).unwrap();
        assert_eq!(t("2024-01-02 03:04:05"), json!("2024-01-02T03:04:05"));
        assert_eq!(
            t("2024-01-02 03:04:05.25+00"),
            json!("2024-01-02T03:04:05.25+00:00")
        );
        assert_eq!(
            t("2024-01-02 03:04:05-08"),
            json!("2024-01-02T03:04:05-08:00")
        );
        assert_eq!(
            t("2024-01-02 03:04:05+05:30"),
            json!("2024-01-02T03:04:05+05:30")
        );
        assert_eq!(
            t("1900-01-01 00:00:00+00:09:21"),
            json!("1900-01-01T00:00:00+00:09:21")
        );
        assert_eq!(
            t("0044-03-15 12:00:00+00 BC"),
            json!("0044-03-15T12:00:00+00:00 BC")
        );
        assert_eq!(t("infinity"), json!("infinity"));
        assert_eq!(t("-infinity"), json!("-infinity"));
    }

    #[test]
    fn arrays_parse_quotes_nulls_nesting_and_bounds() {
        let a = |r: Render, s: &str| render(&arr(r), s);
        assert_eq!(a(Render::Number, "{1,2,3}"), Some(json!([1, 2, 3])));
        assert_eq!(a(Render::Number, "{}"), Some(json!([])));
        assert_eq!(
            a(Render::Text, r#"{a,"b c","NULL",NULL,"q\"\\"}"#),
            Some(json!(["a", "b c", "NULL", null, "q\"\\"]))
        );
        assert_eq!(
            a(Render::Number, "{{1,2},{3,4}}"),
            Some(json!([[1, 2], [3, 4]]))
        );
        assert_eq!(a(Render::Number, "[0:1]={7,8}"), Some(json!([7, 8])));
        assert_eq!(a(Render::Bool, "{t,f}"), Some(json!([true, false])));
        assert_eq!(
            a(Render::Timestamp, r#"{"2024-01-02 03:04:05+00"}"#),
            Some(json!(["2024-01-02T03:04:05+00:00"]))
        );
        let boxes = Render::Array {
            element: Box::new(Render::Text),
            delimiter: b';',
        };
        assert_eq!(
            render(&boxes, "{(1,1),(0,0);(2,2),(1,1)}"),
            Some(json!(["(1,1),(0,0)", "(2,2),(1,1)"]))
        );
        assert_eq!(a(Render::Number, "{1,2"), None);
    }

    #[test]
    fn plans_follow_domains_arrays_and_composites() {
        let f = |oid, name: &str, kind, element, base| TypeFacts {
            oid,
            name: name.into(),
            kind,
            element,
            delimiter: b',',
            base,
            json_cast: false,
        };
        let facts: HashMap<u32, TypeFacts> = [
            f(23, "integer", b'b', None, None),
            f(1007, "integer[]", b'b', Some(23), None),
            f(90000, "positive", b'd', None, Some(23)),
            f(90001, "pair", b'c', None, None),
            f(90002, "pair[]", b'b', Some(90001), None),
            f(90003, "mood", b'e', None, None),
        ]
        .into_iter()
        .map(|t| (t.oid, t))
        .collect();
        assert_eq!(plan(90000, &facts), Render::Number);
        assert_eq!(plan(1007, &facts), arr(Render::Number));
        assert_eq!(plan(90001, &facts), Render::Database("pair".into()));
        assert_eq!(plan(90002, &facts), Render::Database("pair[]".into()));
        assert_eq!(plan(90003, &facts), Render::Text);
    }
}
