//! The part of Compute Engine's list `filter` syntax the mock understands:
//! `FIELD eq|ne LITERAL` (RE2 full match), `FIELD = | != | : LITERAL`,
//! parentheses, `AND` (or juxtaposition) and `OR`. Fields of instances:
//! `name`, `status`, `id`, `zone`, `labels.KEY`; of managed instances
//! (`listManagedInstances`): `id`, `name`, `currentAction`,
//! `instanceStatus`. Anything else is refused as the API does.

use regex::Regex;

use super::state::Vm;

#[derive(Debug)]
pub enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Test {
        field: String,
        op: Op,
        value: String,
        /// `eq` and `ne`: the value as a full-match regex, compiled once
        /// (a listing tests every VM of the project).
        regex: Option<Regex>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Equals,
    NotEquals,
    Has,
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    Word(String),
    Quoted(String),
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                out.push(Token::Open);
            }
            ')' => {
                chars.next();
                out.push(Token::Close);
            }
            '"' | '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => {
                            // Keep escapes: the value may be a regex.
                            s.push('\\');
                            s.extend(chars.next());
                        }
                        Some(q) if q == c => break,
                        Some(other) => s.push(other),
                        None => return Err("unterminated quote".into()),
                    }
                }
                out.push(Token::Quoted(s));
            }
            '!' | '=' | ':' => {
                let mut op = String::new();
                while let Some(&c) = chars.peek() {
                    if matches!(c, '!' | '=' | ':') {
                        op.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Token::Word(op));
            }
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '(' | ')' | '=' | '!' | ':') {
                        break;
                    }
                    s.push(c);
                    chars.next();
                }
                out.push(Token::Word(s));
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<&Token> {
        self.at += 1;
        self.tokens.get(self.at - 1)
    }

    fn or(&mut self) -> Result<Filter, String> {
        let mut parts = vec![self.and()?];
        while matches!(self.peek(), Some(Token::Word(w)) if w == "OR") {
            self.next();
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut parts = vec![self.atom()?];
        loop {
            match self.peek() {
                None | Some(Token::Close) => break,
                Some(Token::Word(w)) if w == "OR" => break,
                Some(Token::Word(w)) if w == "AND" => {
                    self.next();
                }
                _ => {}
            }
            parts.push(self.atom()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::And(parts)
        })
    }

    fn atom(&mut self) -> Result<Filter, String> {
        match self.next() {
            Some(Token::Open) => {
                let inner = self.or()?;
                match self.next() {
                    Some(Token::Close) => Ok(inner),
                    _ => Err("missing )".into()),
                }
            }
            Some(Token::Word(field)) => {
                let field = field.clone();
                let op = match self.next() {
                    Some(Token::Word(w)) => match w.as_str() {
                        "eq" => Op::Eq,
                        "ne" => Op::Ne,
                        "=" => Op::Equals,
                        "!=" => Op::NotEquals,
                        ":" => Op::Has,
                        other => return Err(format!("unknown operator {other}")),
                    },
                    _ => return Err(format!("no operator after {field}")),
                };
                let value = match self.next() {
                    Some(Token::Word(w) | Token::Quoted(w)) => w.clone(),
                    _ => return Err(format!("no value after {field}")),
                };
                let regex = match op {
                    Op::Eq | Op::Ne => {
                        Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| e.to_string())?)
                    }
                    _ => None,
                };
                Ok(Filter::Test {
                    field,
                    op,
                    value,
                    regex,
                })
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }
}

impl Filter {
    /// A filter of instance listings (`list`, `aggregatedList`); `None`
    /// for an empty one.
    pub fn parse(text: &str) -> Result<Option<Filter>, String> {
        Self::parse_for(text, &|field| {
            matches!(field, "name" | "status" | "id" | "zone") || field.starts_with("labels.")
        })
    }

    /// A filter of `listManagedInstances`, on its entries' own fields.
    pub fn parse_managed(text: &str) -> Result<Option<Filter>, String> {
        Self::parse_for(text, &|field| {
            matches!(field, "id" | "name" | "currentAction" | "instanceStatus")
        })
    }

    fn parse_for(text: &str, known: &dyn Fn(&str) -> bool) -> Result<Option<Filter>, String> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        let mut p = Parser {
            tokens: tokens(text)?,
            at: 0,
        };
        let f = p.or()?;
        if p.at != p.tokens.len() {
            return Err("trailing input".into());
        }
        f.check(known)?;
        Ok(Some(f))
    }

    fn check(&self, known: &dyn Fn(&str) -> bool) -> Result<(), String> {
        match self {
            Filter::And(v) | Filter::Or(v) => v.iter().try_for_each(|f| f.check(known)),
            Filter::Test { field, .. } if !known(field) => {
                Err(format!("unsupported field {field}"))
            }
            Filter::Test { .. } => Ok(()),
        }
    }

    /// Whether `vm` passes; `zone_url` is the VM's zone as a URL.
    pub fn matches(&self, vm: &Vm, zone_url: &str) -> bool {
        self.matches_fields(&|field| match field {
            "name" => vec![vm.name.clone()],
            "status" => vec![vm.status.clone()],
            "id" => vec![vm.id.to_string()],
            "zone" => vec![zone_url.to_string(), vm.zone.clone()],
            label => vec![
                vm.labels
                    .get(label.trim_start_matches("labels."))
                    .cloned()
                    .unwrap_or_default(),
            ],
        })
    }

    /// Whether `vm`'s entry in its group's `listManagedInstances` passes. A
    /// VM the group is still creating has no id and no status there, so an
    /// `id` test never matches it.
    pub fn matches_managed(&self, vm: &Vm) -> bool {
        self.matches_fields(&|field| match field {
            "id" if vm.provisioned => vec![vm.id.to_string()],
            "instanceStatus" if vm.provisioned => vec![vm.status.clone()],
            "name" => vec![vm.name.clone()],
            "currentAction" => vec![vm.action.clone()],
            _ => vec![String::new()],
        })
    }

    /// Whether the resource whose field values `actual` gives passes.
    fn matches_fields(&self, actual: &dyn Fn(&str) -> Vec<String>) -> bool {
        match self {
            Filter::And(v) => v.iter().all(|f| f.matches_fields(actual)),
            Filter::Or(v) => v.iter().any(|f| f.matches_fields(actual)),
            Filter::Test {
                field,
                op,
                value,
                regex,
            } => {
                let actual = actual(field);
                let hit = |pred: &dyn Fn(&str) -> bool| actual.iter().any(|a| pred(a));
                match op {
                    Op::Eq | Op::Ne => {
                        let m = regex.as_ref().is_some_and(|re| hit(&|a| re.is_match(a)));
                        m == (*op == Op::Eq)
                    }
                    Op::Equals => hit(&|a| a == value),
                    Op::NotEquals => !hit(&|a| a == value),
                    Op::Has => {
                        value == "*" && hit(&|a| !a.is_empty())
                            || hit(&|a| a.contains(value.as_str()))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use super::*;

    fn vm(name: &str) -> Vm {
        Vm {
            id: 42,
            project: "p".into(),
            zone: "us-central1-a".into(),
            name: name.into(),
            status: "RUNNING".into(),
            action: "NONE".into(),
            provisioned: true,
            listed: true,
            mig: None,
            network_ip: Ipv4Addr::LOCALHOST,
            nat_ip: None,
            ipv6: None,
            external_ipv6: None,
            labels: BTreeMap::from([("team".into(), "pay".into())]),
            health: None,
        }
    }

    fn m(filter: &str, name: &str) -> bool {
        Filter::parse(filter).unwrap().unwrap().matches(
            &vm(name),
            "http://x/compute/v1/projects/p/zones/us-central1-a",
        )
    }

    #[test]
    fn regex_and_comparison_forms() {
        assert!(m(r#"name eq "web-.*""#, "web-abcd"));
        assert!(!m(r#"name eq "web-.*""#, "api-abcd"));
        assert!(!m(r#"name eq "web""#, "web-abcd"), "eq is a full match");
        assert!(m("name ne 'api-.*'", "web-abcd"));
        assert!(m(r#"(name eq "web-.*") (status eq RUNNING)"#, "web-1"));
        assert!(m(r#"name = "web-1" OR name = "web-2""#, "web-2"));
        assert!(!m(r#"name = "web-1" AND status = "RUNNING""#, "web-2"));
        assert!(m("labels.team = pay", "x"));
        assert!(m(r#"zone eq ".*/zones/us-central1-a""#, "x"));
        assert!(m("zone = us-central1-a", "x"));
        assert!(Filter::parse("").unwrap().is_none());
        assert!(Filter::parse("machineType = x").is_err());
        assert!(Filter::parse("name eq").is_err());
        assert!(Filter::parse("name eq \"(\"").is_err());
    }

    #[test]
    fn ids_are_ored_comparisons() {
        assert!(m("id = 42", "x"));
        assert!(!m("id = 43", "x"));
        assert!(m("(id = 41) OR (id = 42) OR (id = 43)", "x"));
        assert!(!m("(id = 41) OR (id = 43)", "x"));
    }

    #[test]
    fn managed_instances_match_on_their_own_fields() {
        let f = |text: &str| Filter::parse_managed(text).unwrap().unwrap();
        let mut creating = vm("web-1");
        assert!(f("(id = 40) OR (id = 42)").matches_managed(&creating));
        assert!(f("currentAction = NONE").matches_managed(&creating));
        assert!(f("instanceStatus = RUNNING").matches_managed(&creating));
        creating.provisioned = false;
        creating.action = "CREATING".into();
        assert!(!f("id = 42").matches_managed(&creating), "no VM, no id");
        assert!(!f("instanceStatus = RUNNING").matches_managed(&creating));
        assert!(f("name = web-1").matches_managed(&creating));
        assert!(Filter::parse_managed("(id = 42) OR (zone = us-central1-a)").is_err());
        assert!(Filter::parse_managed("labels.team = pay").is_err());
        assert!(Filter::parse("currentAction = NONE").is_err());
        assert!(Filter::parse_managed("id =").is_err());
    }
}
