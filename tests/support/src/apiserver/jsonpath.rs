//! The JSONPath of CRD printer columns, evaluated as the real server's
//! k8s.io/client-go/util/jsonpath does: fields (`.a.b`, `['a']`), indexes
//! (`[0]`, `[-1]`), `[*]`, and filters (`[?(@.type=="Ready")]`, `[?(@.x)]`,
//! with `==`, `!=`, `<`, `<=`, `>`, `>=`). A missing field yields nothing.

use std::cmp::Ordering;

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    All,
    Filter(Filter),
}

#[derive(Clone, Debug, PartialEq)]
struct Filter {
    /// The path from `@`.
    left: Vec<Step>,
    /// None: the left side only has to exist.
    right: Option<(String, Value)>,
}

/// A JSONPath the evaluator does not understand.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("unsupported JSONPath {path:?}: {why}")]
pub struct PathError {
    path: String,
    why: String,
}

/// Every value `path` selects in `obj`, in order.
pub fn find<'a>(obj: &'a Value, path: &str) -> Result<Vec<&'a Value>, PathError> {
    let err = |why: &str| PathError {
        path: path.to_string(),
        why: why.to_string(),
    };
    let inner = path.trim();
    let inner = inner
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(inner);
    let inner = inner.strip_prefix('$').unwrap_or(inner);
    let steps = parse(inner).map_err(|why| err(&why))?;
    eval(vec![obj], &steps).map_err(|why| err(&why))
}

fn parse(mut s: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    while !s.is_empty() {
        if let Some(rest) = s.strip_prefix('.') {
            if rest.starts_with('.') {
                return Err("recursive descent is not supported".into());
            }
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            if end > 0 {
                steps.push(Step::Field(rest[..end].to_string()));
            }
            s = &rest[end..];
        } else if let Some(rest) = s.strip_prefix('[') {
            let close = closing_bracket(rest).ok_or("a '[' is not closed")?;
            steps.push(bracket(&rest[..close])?);
            s = &rest[close + 1..];
        } else {
            let end = s.find(['.', '[']).unwrap_or(s.len());
            steps.push(Step::Field(s[..end].to_string()));
            s = &s[end..];
        }
    }
    Ok(steps)
}

/// The index of the `]` closing a bracket, skipping quoted strings and
/// nested brackets.
fn closing_bracket(s: &str) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') if depth == 0 => return Some(i),
            (None, ']') => depth -= 1,
            _ => {}
        }
    }
    None
}

fn bracket(inner: &str) -> Result<Step, String> {
    let inner = inner.trim();
    if inner == "*" {
        return Ok(Step::All);
    }
    if let Some(expr) = inner.strip_prefix("?(").and_then(|e| e.strip_suffix(')')) {
        return filter(expr.trim()).map(Step::Filter);
    }
    if let Some(name) = unquote(inner) {
        return Ok(Step::Field(name));
    }
    inner
        .parse::<i64>()
        .map(Step::Index)
        .map_err(|_| format!("unsupported subscript [{inner}]"))
}

fn unquote(s: &str) -> Option<String> {
    ['"', '\''].into_iter().find_map(|q| {
        s.strip_prefix(q)
            .and_then(|r| r.strip_suffix(q))
            .map(str::to_string)
    })
}

const OPERATORS: [&str; 6] = ["==", "!=", "<=", ">=", "<", ">"];

fn filter(expr: &str) -> Result<Filter, String> {
    let split = OPERATORS
        .iter()
        .filter_map(|op| expr.find(op).map(|i| (i, *op)))
        .min_by_key(|(i, op)| (*i, std::cmp::Reverse(op.len())));
    let (left, right) = match split {
        Some((i, op)) => (&expr[..i], Some((op, expr[i + op.len()..].trim()))),
        None => (expr, None),
    };
    let left = left
        .trim()
        .strip_prefix('@')
        .ok_or_else(|| format!("a filter must start with @: {expr}"))?;
    let right = match right {
        None => None,
        Some((op, lit)) => Some((op.to_string(), literal(lit)?)),
    };
    Ok(Filter {
        left: parse(left)?,
        right,
    })
}

fn literal(s: &str) -> Result<Value, String> {
    if let Some(text) = unquote(s) {
        return Ok(Value::String(text));
    }
    match s {
        "true" => Ok(Value::Bool(true)),
        "false" => Ok(Value::Bool(false)),
        _ => serde_json::from_str::<serde_json::Number>(s)
            .map(Value::Number)
            .map_err(|_| format!("unsupported literal {s}")),
    }
}

fn eval<'a>(mut cur: Vec<&'a Value>, steps: &[Step]) -> Result<Vec<&'a Value>, String> {
    for step in steps {
        let mut next = Vec::new();
        for v in cur {
            match step {
                Step::Field(name) => next.extend(v.get(name.as_str())),
                Step::Index(i) => {
                    let Some(a) = v.as_array() else { continue };
                    let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                    next.extend(usize::try_from(idx).ok().and_then(|i| a.get(i)));
                }
                Step::All => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Step::Filter(f) => {
                    let a = v.as_array().ok_or_else(|| {
                        format!("{v} is not array or slice and cannot be filtered")
                    })?;
                    for item in a {
                        if matches(f, item)? {
                            next.push(item);
                        }
                    }
                }
            }
        }
        cur = next;
    }
    Ok(cur)
}

fn matches(f: &Filter, item: &Value) -> Result<bool, String> {
    let lefts = eval(vec![item], &f.left)?;
    let Some(left) = lefts.first() else {
        return Ok(false);
    };
    let Some((op, right)) = &f.right else {
        return Ok(true);
    };
    let ord = match (left, right) {
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Number(a), Value::Number(b)) => a.as_f64().partial_cmp(&b.as_f64()),
        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    };
    let Some(ord) = ord else {
        return Ok(op == "!=");
    };
    Ok(match op.as_str() {
        "==" => ord == Ordering::Equal,
        "!=" => ord != Ordering::Equal,
        "<" => ord == Ordering::Less,
        "<=" => ord != Ordering::Greater,
        ">" => ord == Ordering::Greater,
        _ => ord != Ordering::Less,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status() -> Value {
        json!({"status": {"members": 3, "conditions": [
            {"type": "Degraded", "status": "False"},
            {"type": "Ready", "status": "True", "n": 2},
        ]}, "a": {"b": [{"c": 1}, {"c": 2}]}})
    }

    #[test]
    fn printer_column_filters() {
        let o = status();
        let f = |p: &str| find(&o, p).unwrap();
        assert_eq!(
            f(r#".status.conditions[?(@.type=="Ready")].status"#),
            [&json!("True")]
        );
        assert_eq!(
            f(r#"{.status.conditions[?(@.type=='Degraded')].status}"#),
            [&json!("False")]
        );
        assert!(f(r#".status.conditions[?(@.type=="Other")].status"#).is_empty());
        assert_eq!(f(".status.conditions[?(@.n)].type"), [&json!("Ready")]);
        assert_eq!(f(".status.conditions[?(@.n >= 2)].type"), [&json!("Ready")]);
        assert_eq!(
            f(r#".status.conditions[?(@.type!="Ready")].type"#),
            [&json!("Degraded")]
        );
        assert_eq!(f(".status.conditions[*].type").len(), 2);
    }

    #[test]
    fn fields_and_indexes() {
        let o = status();
        let f = |p: &str| find(&o, p).unwrap();
        assert_eq!(f(".a.b[1].c"), [&json!(2)]);
        assert_eq!(f(".a.b[-1].c"), [&json!(2)]);
        assert_eq!(f("$.status['members']"), [&json!(3)]);
        assert!(f(".a.x").is_empty());
        assert!(f(".a.b[5]").is_empty());
        assert!(find(&o, ".status.members[?(@.x)]").is_err());
        assert!(find(&o, "..a").is_err());
    }
}
