//! `x-kubernetes-validations`: rules compiled once per schema, then evaluated
//! with `self` bound to the value at their level, as
//! apiextensions-apiserver's `schema/cel` validator does.

use super::FieldCause;
use super::cel_library::{self, FUNCTIONS, IDENTS, MATCHES};
use super::cel_value::{escape, to_val};
use super::messages::{self, go_quote};
use super::node::{Additional, ListType, Node};
use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::common::types::CelOptional;
use cel::{Context, ExecutionError};
use serde_json::Value;
use std::fmt::Write;
use std::sync::Arc;

/// `reason` of a rule: which kind of field error a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reason {
    Invalid,
    Forbidden,
    Required,
    Duplicate,
}

#[derive(Debug)]
pub(super) struct Rule {
    pub source: String,
    pub message: Option<String>,
    pub message_expression: Option<(String, IdedExpr)>,
    /// `fieldPath`, normalised to a field path relative to the rule's level.
    pub field_path: Option<String>,
    pub reason: Reason,
    pub program: IdedExpr,
    pub uses_old_self: bool,
    pub optional_old_self: bool,
}

impl Rule {
    /// `ruleErrorString`: the message if there is one, else the rule.
    fn error_string(&self) -> &str {
        self.message.as_deref().unwrap_or(self.source.trim())
    }
}

/// Compiles one entry of `x-kubernetes-validations` of `node`.
pub(super) fn compile_rule(raw: &Value, node: &Node) -> Result<Rule, String> {
    let o = raw
        .as_object()
        .ok_or("a validation rule must be an object")?;
    let text = |key: &str| o.get(key).and_then(Value::as_str);
    let source = text("rule")
        .filter(|r| !r.trim().is_empty())
        .ok_or("rule: Required value")?
        .to_owned();
    let program = compile_expr(&source, node)?;
    let message = text("message")
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_owned);
    if message.as_deref().is_some_and(|m| m.contains('\n')) {
        return Err("message: must not contain line breaks".to_owned());
    }
    let message_expression = match text("messageExpression") {
        Some(src) if !src.trim().is_empty() => Some((src.to_owned(), compile_expr(src, node)?)),
        _ => None,
    };
    let field_path = match text("fieldPath") {
        Some(fp) if !fp.is_empty() => Some(
            normalise_field_path(fp, node)
                .map_err(|e| format!("fieldPath: Invalid value: {}: {e}", go_quote(fp)))?,
        ),
        _ => None,
    };
    let reason = match text("reason") {
        None | Some("FieldValueInvalid") => Reason::Invalid,
        Some("FieldValueForbidden") => Reason::Forbidden,
        Some("FieldValueRequired") => Reason::Required,
        Some("FieldValueDuplicate") => Reason::Duplicate,
        Some(other) => return Err(format!("reason: Unsupported value: {}", go_quote(other))),
    };
    let uses_old_self = mentions(&program, "oldSelf")
        || message_expression
            .as_ref()
            .is_some_and(|(_, e)| mentions(e, "oldSelf"));
    let optional_old_self = o
        .get("optionalOldSelf")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if optional_old_self && !uses_old_self {
        return Err("optionalOldSelf: may only be set when the rule uses oldSelf".to_owned());
    }
    Ok(Rule {
        source,
        message,
        message_expression,
        field_path,
        reason,
        program,
        uses_old_self,
        optional_old_self,
    })
}

fn compile_expr(source: &str, node: &Node) -> Result<IdedExpr, String> {
    let mut expr = cel_library::env()
        .parser()
        .parse(source)
        .map_err(|e| format!("compilation failed: {e}"))?;
    rewrite_matches(&mut expr);
    let mut scope = vec!["self", "oldSelf"];
    check(&expr, node, &mut scope).map_err(|e| format!("compilation failed: {e}"))?;
    Ok(expr)
}

/// Points every `matches` call at the caching overload.
pub(super) fn rewrite_matches(expr: &mut IdedExpr) {
    visit_mut(expr, &mut |e| {
        if let Expr::Call(call) = &mut e.expr
            && call.func_name == "matches"
        {
            call.func_name = MATCHES.to_owned();
        }
    });
}

fn visit_mut(expr: &mut IdedExpr, f: &mut impl FnMut(&mut IdedExpr)) {
    f(expr);
    match &mut expr.expr {
        Expr::Call(call) => {
            if let Some(t) = call.target.as_deref_mut() {
                visit_mut(t, f);
            }
            for a in &mut call.args {
                visit_mut(a, f);
            }
        }
        Expr::Comprehension(c) => {
            for e in [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ] {
                visit_mut(e, f);
            }
        }
        Expr::List(l) => l.elements.iter_mut().for_each(|e| visit_mut(e, f)),
        Expr::Map(m) => {
            for entry in &mut m.entries {
                if let EntryExpr::MapEntry(me) = &mut entry.expr {
                    visit_mut(&mut me.key, f);
                    visit_mut(&mut me.value, f);
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &mut s.entries {
                if let EntryExpr::StructField(sf) = &mut entry.expr {
                    visit_mut(&mut sf.value, f);
                }
            }
        }
        Expr::Select(s) => visit_mut(&mut s.operand, f),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn mentions(expr: &IdedExpr, ident: &str) -> bool {
    let mut found = false;
    let mut copy = expr.clone();
    visit_mut(&mut copy, &mut |e| {
        if matches!(&e.expr, Expr::Ident(name) if name == ident) {
            found = true;
        }
    });
    found
}

/// What cel-go's checker would refuse and the parser lets through: unknown
/// identifiers and functions, and fields `self` does not have.
fn check<'a>(expr: &'a IdedExpr, node: &Node, scope: &mut Vec<&'a str>) -> Result<(), String> {
    match &expr.expr {
        Expr::Ident(name) => {
            if scope.contains(&name.as_str()) || IDENTS.contains(&name.as_str()) {
                Ok(())
            } else {
                Err(format!("undeclared reference to '{name}'"))
            }
        }
        Expr::Call(call) => {
            let known = call.func_name.starts_with('_')
                || call.func_name.starts_with('@')
                || call.func_name.starts_with("!_")
                || FUNCTIONS.contains(&call.func_name.as_str())
                || call
                    .func_name
                    .rsplit_once('.')
                    .is_some_and(|(_, f)| FUNCTIONS.contains(&f));
            if !known {
                return Err(format!("undeclared reference to '{}'", call.func_name));
            }
            if let Some(t) = call.target.as_deref() {
                // `strings.quote(x)`, `optional.of(x)`: a namespace, not a value.
                if !matches!(&t.expr, Expr::Ident(ns) if IDENTS.contains(&ns.as_str())) {
                    check(t, node, scope)?;
                }
            }
            call.args.iter().try_for_each(|a| check(a, node, scope))
        }
        Expr::Comprehension(c) => {
            check(&c.iter_range, node, scope)?;
            check(&c.accu_init, node, scope)?;
            let depth = scope.len();
            scope.push(&c.iter_var);
            if let Some(v2) = &c.iter_var2 {
                scope.push(v2);
            }
            scope.push(&c.accu_var);
            let inner = [&c.loop_cond, &c.loop_step, &c.result]
                .into_iter()
                .try_for_each(|e| check(e, node, scope));
            scope.truncate(depth);
            inner
        }
        Expr::Select(s) => {
            field_schema(expr, node, scope)?;
            // The operand is checked by `field_schema` when it is `self`-rooted.
            if self_rooted(&s.operand, scope) {
                Ok(())
            } else {
                check(&s.operand, node, scope)
            }
        }
        Expr::List(l) => l.elements.iter().try_for_each(|e| check(e, node, scope)),
        Expr::Map(m) => m.entries.iter().try_for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(me) => {
                check(&me.key, node, scope)?;
                check(&me.value, node, scope)
            }
            EntryExpr::StructField(sf) => check(&sf.value, node, scope),
        }),
        Expr::Struct(s) => s.entries.iter().try_for_each(|entry| match &entry.expr {
            EntryExpr::StructField(sf) => check(&sf.value, node, scope),
            EntryExpr::MapEntry(me) => check(&me.value, node, scope),
        }),
        Expr::Literal(_) | Expr::Unspecified => Ok(()),
    }
}

/// Whether `expr` is `self` (not shadowed by a comprehension variable) or a
/// field selection on it.
fn self_rooted(expr: &IdedExpr, scope: &[&str]) -> bool {
    match &expr.expr {
        Expr::Ident(name) => {
            (name == "self" || name == "oldSelf") && !scope[2..].contains(&name.as_str())
        }
        Expr::Select(s) => self_rooted(&s.operand, scope),
        _ => false,
    }
}

/// The schema of a `self`-rooted selection, failing on a field the schema
/// does not declare; `None` when the schema no longer says (maps of
/// unknown content, preserved unknown fields).
fn field_schema<'n>(
    expr: &IdedExpr,
    node: &'n Node,
    scope: &[&str],
) -> Result<Option<&'n Node>, String> {
    match &expr.expr {
        Expr::Ident(_) if self_rooted(expr, scope) => Ok(Some(node)),
        Expr::Select(s) if self_rooted(expr, scope) => {
            let Some(parent) = field_schema(&s.operand, node, scope)? else {
                return Ok(None);
            };
            if let Some(found) = parent
                .properties
                .iter()
                .find(|(k, _)| escape(k).is_some_and(|e| e == s.field))
                .map(|(_, n)| n)
            {
                return Ok(Some(found));
            }
            match &parent.additional {
                Additional::Schema(sub) => Ok(Some(sub)),
                Additional::Any => Ok(None),
                _ if parent.preserve_unknown
                    || parent.embedded_resource
                    || parent.int_or_string
                    || parent.type_name.is_empty() =>
                {
                    Ok(None)
                }
                _ if parent.type_name == "object" => Err(format!("undefined field '{}'", s.field)),
                _ => Ok(None),
            }
        }
        _ => Ok(None),
    }
}

/// `ValidFieldPath`: `.a.b`, `.a['b']` through properties and map keys.
fn normalise_field_path(path: &str, node: &Node) -> Result<String, String> {
    let mut out = String::new();
    let mut schema = node;
    let mut rest = path;
    while !rest.is_empty() {
        let name;
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            name = r[..end].to_owned();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix("['") {
            let end = r.find("']").ok_or("unexpected end of JSON path")?;
            name = r[..end].replace("\\'", "'").replace("\\\\", "\\");
            rest = &r[end + 2..];
        } else {
            return Err(format!("expected [ or . but got: {rest}"));
        }
        if name.is_empty() {
            return Err("unexpected end of JSON path".to_owned());
        }
        if !schema.properties.is_empty() {
            schema = schema
                .properties
                .get(&name)
                .ok_or("does not refer to a valid field")?;
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&name);
        } else if let Additional::Schema(sub) = &schema.additional {
            schema = sub;
            let _ = write!(out, "[{name}]");
        } else {
            return Err("does not refer to a valid field".to_owned());
        }
    }
    Ok(out)
}

/// Evaluates the rules of `rules` (and below) on `value`, converting values
/// with `schema` (the same node, except under `allOf`). `path` is a
/// `field.Path` string: `a.b`, `a[key]`, `a[0]`.
pub(super) fn validate(
    rules: &Node,
    schema: &Node,
    value: &Value,
    old: Option<&Value>,
    resource_root: bool,
    path: &mut String,
    out: &mut Vec<FieldCause>,
) {
    if !rules.has_rules || value.is_null() {
        return;
    }
    // Old values only matter where a transition rule will read them.
    let old = old.filter(|_| rules.has_transition_rules);
    if !rules.rules.is_empty() {
        evaluate(rules, schema, value, old, resource_root, path, out);
    }
    for branch in &rules.all_of {
        validate(branch, schema, value, old, resource_root, path, out);
    }
    match value {
        Value::Array(items) => {
            let Some(item_rules) = rules.items.as_deref().filter(|n| n.has_rules) else {
                return;
            };
            let item_schema = schema.items.as_deref().unwrap_or(item_rules);
            let old_items = old.and_then(Value::as_array);
            for (i, item) in items.iter().enumerate() {
                let old_item = old_items.and_then(|o| correlate(schema, item, o));
                let len = path.len();
                let _ = write!(path, "[{i}]");
                let root = item_schema.embedded_resource;
                validate(item_rules, item_schema, item, old_item, root, path, out);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            let old_map = old.and_then(Value::as_object);
            if let Additional::Schema(sub) = &rules.additional
                && sub.has_rules
            {
                let sub_schema = match &schema.additional {
                    Additional::Schema(s) => s,
                    _ => sub,
                };
                for (k, v) in map {
                    let len = path.len();
                    let _ = write!(path, "[{k}]");
                    let old_v = old_map.and_then(|o| o.get(k));
                    let root = sub_schema.embedded_resource;
                    validate(sub, sub_schema, v, old_v, root, path, out);
                    path.truncate(len);
                }
            }
            for (k, v) in map {
                let Some(prop) = rules.properties.get(k).filter(|p| p.has_rules) else {
                    continue;
                };
                let prop_schema = schema.properties.get(k).unwrap_or(prop);
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                let old_v = old_map.and_then(|o| o.get(k));
                let root = prop_schema.embedded_resource;
                validate(prop, prop_schema, v, old_v, root, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// The old item an item of a `list-type: map` list updates: the one with the
/// same keys. Other lists do not correlate, so their transition rules are
/// not evaluated, as in Kubernetes.
fn correlate<'a>(schema: &Node, item: &Value, old: &'a [Value]) -> Option<&'a Value> {
    if schema.list_type != Some(ListType::Map) {
        return None;
    }
    let keys = &schema.list_map_keys;
    old.iter()
        .find(|o| keys.iter().all(|k| o.get(k) == item.get(k)))
}

fn evaluate(
    rules: &Node,
    schema: &Node,
    value: &Value,
    old: Option<&Value>,
    resource_root: bool,
    path: &str,
    out: &mut Vec<FieldCause>,
) {
    let mut ctx = Context::with_env(Arc::clone(cel_library::env()));
    ctx.add_variable_as_val("self", to_val(value, Some(schema), resource_root));
    if let Some(old) = old {
        ctx.add_variable_as_val("oldSelf", to_val(old, Some(schema), resource_root));
    }
    let type_value = go_quote(&schema.type_name);
    for rule in &rules.rules {
        if rule.uses_old_self && old.is_none() && !rule.optional_old_self {
            continue;
        }
        let result = if rule.optional_old_self {
            let mut inner = ctx.new_inner_scope();
            let optional = match old {
                Some(old) => CelOptional::of(to_val(old, Some(schema), resource_root)),
                None => CelOptional::none(),
            };
            inner.add_variable_as_val("oldSelf", Box::new(optional));
            cel::Value::resolve(&rule.program, &inner)
        } else {
            cel::Value::resolve(&rule.program, &ctx)
        };
        match result {
            Ok(cel::Value::Bool(true)) => {}
            Ok(_) => {
                let mut field = path.to_owned();
                if let Some(fp) = &rule.field_path {
                    if !field.is_empty() && !fp.starts_with('[') {
                        field.push('.');
                    }
                    field.push_str(fp);
                }
                let detail = rule
                    .message_expression
                    .as_ref()
                    .and_then(|(_, e)| message_from(e, &ctx))
                    .unwrap_or_else(|| match &rule.message {
                        Some(m) => m.clone(),
                        None => format!("failed rule: {}", rule.error_string()),
                    });
                out.push(match rule.reason {
                    Reason::Invalid => messages::invalid(&field, &type_value, &detail),
                    Reason::Forbidden => messages::forbidden(&field, &detail),
                    Reason::Required => messages::required(&field, &detail),
                    Reason::Duplicate => messages::duplicate(&field, &type_value),
                });
            }
            Err(ExecutionError::NoSuchOverload(_)) => out.push(messages::invalid(
                path,
                &type_value,
                &format!(
                    "'no such overload': call arguments did not match a supported operator, \
                     function or macro signature for rule: {}",
                    rule.error_string()
                ),
            )),
            Err(e) => out.push(messages::invalid(
                path,
                &type_value,
                &format!(
                    "{} evaluating rule: {}",
                    error_text(&e),
                    rule.error_string()
                ),
            )),
        }
    }
}

/// A `messageExpression` result, when usable (a non-empty single-line
/// string of at most 5000 bytes); otherwise the rule's message is used.
fn message_from(expr: &IdedExpr, ctx: &Context) -> Option<String> {
    match cel::Value::resolve(expr, ctx) {
        Ok(cel::Value::String(s)) => {
            let s = s.trim();
            (!s.is_empty() && !s.contains('\n') && s.len() <= 5000).then(|| s.to_owned())
        }
        _ => None,
    }
}

/// cel-go's wording of the common runtime errors.
fn error_text(e: &ExecutionError) -> String {
    match e {
        ExecutionError::NoSuchKey(k) => format!("no such key: {k}"),
        ExecutionError::FunctionError { message, .. } => message.clone(),
        ExecutionError::DivisionByZero(_) => "division by zero".to_owned(),
        ExecutionError::RemainderByZero(_) => "modulus by zero".to_owned(),
        ExecutionError::Overflow(..) => "integer overflow".to_owned(),
        ExecutionError::IndexOutOfBounds(i) => format!("index out of bounds: {i:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(schema: Value) -> Result<Node, super::super::SchemaError> {
        Node::parse(&schema, "")
    }

    fn run(schema: Value, value: Value, old: Option<Value>) -> Vec<FieldCause> {
        let n = node(schema).unwrap();
        let mut out = Vec::new();
        let mut path = "spec".to_owned();
        validate(&n, &n, &value, old.as_ref(), false, &mut path, &mut out);
        out
    }

    #[test]
    fn rules_that_cel_go_would_refuse_do_not_compile() {
        for (rule, want) in [
            ("self.nope == 1", "undefined field 'nope'"),
            ("foo == 1", "undeclared reference to 'foo'"),
            (
                "self.a.frobnicate()",
                "undeclared reference to 'frobnicate'",
            ),
            ("self.a ==", "compilation failed"),
        ] {
            let e = node(
                json!({"type": "object", "properties": {"a": {"type": "string"}},
                "x-kubernetes-validations": [{"rule": rule}]}),
            )
            .unwrap_err();
            assert!(e.message.contains(want), "{rule}: {e}");
        }
        for rule in [
            "self.a.startsWith('x') && self.all(k, k != 'b')",
            "has(self.a) ? self.a.matches('^x') : true",
            "[1, 2].exists(x, x == 2) && strings.quote(self.a) != ''",
            "self.m.all(k, self.m[k] > 0) && self.m.k == 1",
        ] {
            node(
                json!({"type": "object", "properties": {"a": {"type": "string"},
                "m": {"type": "object", "additionalProperties": {"type": "integer"}}},
                "x-kubernetes-validations": [{"rule": rule}]}),
            )
            .unwrap_or_else(|e| panic!("{rule}: {e}"));
        }
    }

    #[test]
    fn failures_carry_message_reason_and_field_path() {
        let schema = |extra: Value| {
            let mut rule = json!({"rule": "self.a == 'ok'"});
            rule.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json!({"type": "object", "properties": {"a": {"type": "string"}},
                "x-kubernetes-validations": [rule]})
        };
        let bad = json!({"a": "no"});
        let cases = [
            (
                json!({}),
                "spec",
                "Invalid value: \"object\": failed rule: self.a == 'ok'",
            ),
            (
                json!({"message": "a must be ok"}),
                "spec",
                "Invalid value: \"object\": a must be ok",
            ),
            (
                json!({"message": "m", "messageExpression": "'a is ' + self.a"}),
                "spec",
                "Invalid value: \"object\": a is no",
            ),
            (
                json!({"message": "m", "fieldPath": ".a"}),
                "spec.a",
                "Invalid value: \"object\": m",
            ),
            (
                json!({"message": "m", "reason": "FieldValueForbidden"}),
                "spec",
                "Forbidden: m",
            ),
            (
                json!({"message": "m", "reason": "FieldValueRequired"}),
                "spec",
                "Required value: m",
            ),
            (
                json!({"message": "m", "reason": "FieldValueDuplicate"}),
                "spec",
                "Duplicate value: \"object\"",
            ),
        ];
        for (extra, field, message) in cases {
            let got = run(schema(extra.clone()), bad.clone(), None);
            assert_eq!(got.len(), 1, "{extra}");
            assert_eq!(
                (got[0].field.as_str(), got[0].message.as_str()),
                (field, message),
                "{extra}"
            );
        }
        assert!(run(schema(json!({})), json!({"a": "ok"}), None).is_empty());
    }

    #[test]
    fn map_values_and_list_items_get_key_and_index_paths() {
        let schema = json!({"type": "object", "properties": {
            "ports": {"type": "object", "additionalProperties": {"type": "integer",
                "x-kubernetes-validations": [{"rule": "self > 0", "message": "positive"}]}},
            "names": {"type": "array", "items": {"type": "string",
                "x-kubernetes-validations": [{"rule": "self != ''", "message": "empty"}]}}}});
        let got = run(
            schema,
            json!({"ports": {"http": 0}, "names": ["a", ""]}),
            None,
        );
        let got: Vec<(String, String)> = got.into_iter().map(|c| (c.field, c.message)).collect();
        assert_eq!(
            got,
            vec![
                (
                    "spec.names[1]".to_owned(),
                    "Invalid value: \"string\": empty".to_owned()
                ),
                (
                    "spec.ports[http]".to_owned(),
                    "Invalid value: \"integer\": positive".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn evaluation_errors_are_reported_like_the_real_server() {
        let schema = json!({"type": "string", "x-kubernetes-validations": [
            {"rule": "self.substring(7, 8) == '/'", "message": "UDS"}]});
        let got = run(schema, json!("unix://"), None);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].message,
            "Invalid value: \"string\": index out of range: 8 evaluating rule: UDS"
        );
    }

    #[test]
    fn transition_rules_need_an_old_value() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "string",
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "immutable"}]}}});
        assert!(run(schema.clone(), json!({"a": "x"}), None).is_empty());
        assert!(run(schema.clone(), json!({"a": "x"}), Some(json!({"a": "x"}))).is_empty());
        let got = run(schema, json!({"a": "y"}), Some(json!({"a": "x"})));
        assert_eq!(got[0].field, "spec.a");
        assert_eq!(got[0].message, "Invalid value: \"string\": immutable");

        let optional = json!({"type": "string", "x-kubernetes-validations": [{
            "rule": "!oldSelf.hasValue() || self == oldSelf.value()", "optionalOldSelf": true,
            "message": "immutable"}]});
        assert!(run(optional.clone(), json!("x"), None).is_empty());
        assert_eq!(run(optional, json!("y"), Some(json!("x"))).len(), 1);
    }

    #[test]
    fn property_names_are_escaped_and_types_follow_the_schema() {
        let schema = json!({"type": "object", "properties": {
            "x-y": {"type": "string"}, "n": {"type": "number"}, "t": {"type": "string", "format": "date-time"}},
            "x-kubernetes-validations": [{"rule":
                "self.x__dash__y == 'v' && self.n == 2.0 && self.t < timestamp('2030-01-01T00:00:00Z')"}]});
        assert!(
            run(
                schema,
                json!({"x-y": "v", "n": 2, "t": "2024-05-01T10:00:00Z"}),
                None
            )
            .is_empty()
        );
    }
}
