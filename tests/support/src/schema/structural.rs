//! The OpenAPI keywords, checked as kube-openapi's `SchemaValidator` checks
//! them and reported as apiextensions-apiserver converts its results
//! (`kubeOpenAPIResultToFieldErrors`): same checks, order, paths and words.

use super::FieldCause;
use super::formats;
use super::messages::{self, bad_value, go_float, go_quote};
use super::node::{Additional, Node};
use serde_json::{Number, Value};

/// Checks `data` against `node`; `path` is the dotted name kube-openapi
/// gives the value (`spec.ports.http`, `spec.items[0]`). Returns how many
/// checks applied: go-openapi's `MatchCount`, which picks the branch whose
/// errors `anyOf` and `oneOf` report.
pub(super) fn validate(
    node: &Node,
    data: &Value,
    path: &mut String,
    out: &mut Vec<FieldCause>,
) -> u32 {
    if data.is_null() {
        if !node.types.is_empty() && !node.nullable {
            out.push(messages::type_invalid(
                path,
                "\"null\"",
                &format!(
                    "{path} in body must be of type {}: \"null\"",
                    node.types.join(",")
                ),
            ));
        }
        check_enum(node, data, path, out);
        return 2;
    }
    let mut count = 0;
    if !node.types.is_empty() || !node.format.is_empty() {
        check_type(node, data, path, out);
        count += 1;
    }
    count += combinators(node, data, path, out);
    match data {
        Value::String(s) => {
            check_string(node, s, path, out);
            if !node.format.is_empty() && formats::known(&node.format) {
                if !formats::check(&node.format, s) {
                    out.push(messages::type_invalid(
                        path,
                        &go_quote(s),
                        &format!(
                            "{path} in body must be of type {}: {}",
                            node.format,
                            go_quote(s)
                        ),
                    ));
                }
                count += 1;
            }
            count += 1;
        }
        Value::Number(n) => {
            check_number(node, n, data, path, out);
            count += 1;
        }
        Value::Array(items) => {
            count += check_array(node, items, path, out) + 1;
        }
        _ => {}
    }
    check_enum(node, data, path, out);
    count += 1;
    if let Value::Object(map) = data {
        count += check_object(node, map, path, out) + 1;
    }
    count
}

/// The JSON type of a decoded value, and the Go format kube-openapi infers
/// for it (JSON integers decode to `int64`, other numbers to `float64`).
fn json_type(data: &Value) -> (&'static str, &'static str) {
    match data {
        Value::Null => ("null", ""),
        Value::Bool(_) => ("boolean", ""),
        Value::String(_) => ("string", ""),
        Value::Number(n) if n.is_i64() => ("integer", "int64"),
        Value::Number(_) => ("number", "float64"),
        Value::Array(_) => ("array", ""),
        Value::Object(_) => ("object", ""),
    }
}

/// `swag.IsFloat64AJSONInteger`.
fn is_json_integer(f: f64) -> bool {
    const MAX: f64 = 9_007_199_254_740_992.0; // 2^53
    f.is_finite() && f.fract() == 0.0 && f.abs() <= MAX
}

fn check_type(node: &Node, data: &Value, path: &str, out: &mut Vec<FieldCause>) {
    let (sch_type, format) = json_type(data);
    let contains = |t: &str| node.types.contains(&t);
    let is_float_int =
        sch_type == "number" && data.as_f64().is_some_and(is_json_integer) && contains("integer");
    let is_int_float = sch_type == "integer" && contains("number");
    let scalar_like = !matches!(data, Value::String(_) | Value::Array(_));
    if scalar_like
        && !node.format.is_empty()
        && !(contains(sch_type) || format == node.format || is_float_int || is_int_float)
    {
        out.push(messages::type_invalid(
            path,
            &go_quote(format),
            &format!(
                "{path} in body must be of type {}: {}",
                node.format,
                go_quote(format)
            ),
        ));
        return;
    }
    // A format on a string or array of a non-numeric schema settles the type.
    let numeric = contains("number") || contains("integer");
    let formatted_text = !node.format.is_empty() && !scalar_like;
    if formatted_text && !numeric {
        return;
    }
    if !(contains(sch_type) || is_float_int || is_int_float) {
        out.push(messages::type_invalid(
            path,
            &go_quote(sch_type),
            &format!(
                "{path} in body must be of type {}: {}",
                node.types.join(","),
                go_quote(sch_type)
            ),
        ));
    }
}

/// `allOf`, `anyOf`, `oneOf`, `not` (go-openapi's `schemaPropsValidator`).
/// Composite failures carry no field (`<nil>`), as in the real server.
fn combinators(node: &Node, data: &Value, path: &mut String, out: &mut Vec<FieldCause>) -> u32 {
    let mut count = 0;
    if !node.any_of.is_empty() {
        let mut best: Option<(u32, Vec<FieldCause>)> = None;
        let mut succeeded = false;
        for branch in &node.any_of {
            let mut errs = Vec::new();
            let matched = validate(branch, data, path, &mut errs);
            count += matched;
            if errs.is_empty() {
                succeeded = true;
                best = None;
                break;
            }
            if best.as_ref().is_none_or(|(m, _)| matched > *m) {
                best = Some((matched, errs));
            }
        }
        if !succeeded {
            out.push(messages::invalid(
                "",
                "\"\"",
                &format!(
                    "{} must validate at least one schema (anyOf)",
                    go_quote(path)
                ),
            ));
        }
        if let Some((_, errs)) = best {
            out.extend(errs);
        }
    }
    if !node.one_of.is_empty() {
        let mut best: Option<(u32, Vec<FieldCause>)> = None;
        let mut valid = 0;
        for branch in &node.one_of {
            let mut errs = Vec::new();
            let matched = validate(branch, data, path, &mut errs);
            count += matched;
            if errs.is_empty() {
                valid += 1;
                best = None;
                continue;
            }
            if valid == 0 && best.as_ref().is_none_or(|(m, _)| matched > *m) {
                best = Some((matched, errs));
            }
        }
        if valid != 1 {
            let found = if valid == 0 {
                "Found none valid".to_owned()
            } else {
                format!("Found {valid} valid alternatives")
            };
            out.push(messages::invalid(
                "",
                "\"\"",
                &format!(
                    "{} must validate one and only one schema (oneOf). {found}",
                    go_quote(path)
                ),
            ));
            if let Some((_, errs)) = best {
                out.extend(errs);
            }
        }
    }
    if !node.all_of.is_empty() {
        let mut valid = 0;
        for branch in &node.all_of {
            let before = out.len();
            count += validate(branch, data, path, out);
            if out.len() == before {
                valid += 1;
            }
        }
        if valid != node.all_of.len() {
            let none = if valid == 0 { ". None validated" } else { "" };
            out.push(messages::invalid(
                "",
                "\"\"",
                &format!(
                    "{} must validate all the schemas (allOf){none}",
                    go_quote(path)
                ),
            ));
        }
    }
    if let Some(not) = &node.not {
        let mut errs = Vec::new();
        count += validate(not, data, path, &mut errs);
        if errs.is_empty() {
            out.push(messages::invalid(
                "",
                "\"\"",
                &format!("{} must not validate the schema (not)", go_quote(path)),
            ));
        }
    }
    count + 1
}

fn check_string(node: &Node, s: &str, path: &str, out: &mut Vec<FieldCause>) {
    let needs_len = node.max_length.is_some() || node.min_length.is_some();
    let len = if needs_len {
        s.chars().count() as i64
    } else {
        0
    };
    if let Some(max) = node.max_length
        && len > max
    {
        out.push(messages::too_long(path, max));
        return;
    }
    if let Some(min) = node.min_length
        && len < min
    {
        out.push(messages::invalid(
            path,
            &go_quote(s),
            &format!("{path} in body should be at least {min} chars long"),
        ));
        return;
    }
    if let Some((pattern, re)) = &node.pattern
        && !re.is_match(s)
    {
        out.push(messages::invalid(
            path,
            &go_quote(s),
            &format!("{path} in body should match '{pattern}'"),
        ));
    }
}

/// A bound as go-openapi prints it next to a value: truncated to `int64`
/// for integer data, `%v` of the float otherwise.
fn bound(limit: f64, int_data: bool) -> String {
    if int_data {
        (limit as i64).to_string()
    } else {
        go_float(limit)
    }
}

fn check_number(node: &Node, n: &Number, data: &Value, path: &str, out: &mut Vec<FieldCause>) {
    let int_value = n.as_i64();
    let float_value = n.as_f64().unwrap_or(f64::NAN);
    let bad = bad_value(data);
    let mut multiple = Vec::new();
    if let Some(factor) = node.multiple_of {
        let ok = match int_value {
            Some(i) => {
                let f = factor as i64;
                f == 0 || i % f == 0
            }
            None if factor > 0.0 => {
                let mult = if factor < 1.0 {
                    1.0 / factor * float_value
                } else {
                    float_value / factor
                };
                is_json_integer(mult)
            }
            None => true,
        };
        if !ok {
            multiple.push(messages::invalid(
                path,
                &bad,
                &format!(
                    "{path} in body should be a multiple of {}",
                    bound(factor, int_value.is_some())
                ),
            ));
        }
    }
    let mut minimum = Vec::new();
    if let Some(min) = node.minimum {
        let below = match int_value {
            Some(i) => {
                let m = min as i64;
                if node.exclusive_minimum {
                    i <= m
                } else {
                    i < m
                }
            }
            None if node.exclusive_minimum => float_value <= min,
            None => float_value < min,
        };
        if below {
            let word = if node.exclusive_minimum {
                "greater than"
            } else {
                "greater than or equal to"
            };
            minimum.push(messages::invalid(
                path,
                &bad,
                &format!(
                    "{path} in body should be {word} {}",
                    bound(min, int_value.is_some())
                ),
            ));
        }
    }
    let mut maximum = Vec::new();
    if let Some(max) = node.maximum {
        let above = match int_value {
            Some(i) => {
                let m = max as i64;
                if node.exclusive_maximum {
                    i >= m
                } else {
                    i > m
                }
            }
            None if node.exclusive_maximum => float_value >= max,
            None => float_value > max,
        };
        if above {
            let word = if node.exclusive_maximum {
                "less than"
            } else {
                "less than or equal to"
            };
            maximum.push(messages::invalid(
                path,
                &bad,
                &format!(
                    "{path} in body should be {word} {}",
                    bound(max, int_value.is_some())
                ),
            ));
        }
    }
    out.extend(multiple);
    out.extend(minimum);
    out.extend(maximum);
}

fn check_array(node: &Node, items: &[Value], path: &mut String, out: &mut Vec<FieldCause>) -> u32 {
    let mut count = 0;
    if let Some(item_node) = node.items.as_deref() {
        for (i, item) in items.iter().enumerate() {
            let len = path.len();
            path.push('[');
            path.push_str(&i.to_string());
            path.push(']');
            count += validate(item_node, item, path, out);
            path.truncate(len);
        }
    }
    let size = items.len();
    if let Some(min) = node.min_items
        && (size as i64) < min
    {
        out.push(messages::invalid(
            path,
            &size.to_string(),
            &format!("{path} in body should have at least {min} items"),
        ));
    }
    if let Some(max) = node.max_items
        && (size as i64) > max
    {
        out.push(messages::too_many(path, size, max));
    }
    if node.unique_items && has_duplicates(items) {
        out.push(messages::invalid(
            path,
            "\"\"",
            &format!("{path} in body shouldn't contain duplicates"),
        ));
    }
    count
}

fn has_duplicates(items: &[Value]) -> bool {
    items
        .iter()
        .enumerate()
        .any(|(i, a)| items[..i].iter().any(|b| json_equal(a, b)))
}

/// Equality after Go's decoding: `1` and `1.0` are the same number.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

fn check_enum(node: &Node, data: &Value, path: &str, out: &mut Vec<FieldCause>) {
    let Some(values) = &node.enum_values else {
        return;
    };
    if values.is_empty()
        || values
            .iter()
            .any(|v| !data.is_null() && json_equal(v, data))
    {
        return;
    }
    let supported: Vec<String> = values
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => messages::go_json(other),
        })
        .collect();
    let bad = if data.is_null() {
        "null".to_owned()
    } else {
        bad_value(data)
    };
    out.push(messages::not_supported(path, &bad, &supported));
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn check_object(
    node: &Node,
    map: &serde_json::Map<String, Value>,
    path: &mut String,
    out: &mut Vec<FieldCause>,
) -> u32 {
    let keys = map.len();
    if let Some(min) = node.min_properties
        && (keys as i64) < min
    {
        out.push(messages::invalid(
            path,
            &keys.to_string(),
            &format!("{path} in body should have at least {min} properties"),
        ));
        return 0;
    }
    if let Some(max) = node.max_properties
        && (keys as i64) > max
    {
        out.push(messages::too_many(path, keys, max));
        return 0;
    }
    let mut count = 0;
    match &node.additional {
        Additional::Forbidden => {
            for k in map.keys().filter(|k| !node.properties.contains_key(*k)) {
                out.push(messages::invalid(
                    path,
                    &go_quote(k),
                    &format!("{} in body is a forbidden property", child(path, k)),
                ));
            }
        }
        Additional::Schema(sub) => {
            for (k, v) in map
                .iter()
                .filter(|(k, _)| !node.properties.contains_key(*k))
            {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                count += validate(sub, v, path, out);
                path.truncate(len);
            }
        }
        Additional::Absent | Additional::Any => {}
    }
    for (name, prop) in &node.properties {
        if let Some(v) = map.get(name) {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(name);
            count += validate(prop, v, path, out);
            path.truncate(len);
        }
    }
    for name in &node.required {
        if !map.contains_key(name) {
            out.push(messages::required(&child(path, name), ""));
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(schema: Value, data: Value) -> Vec<String> {
        let node = Node::parse(&schema, "").unwrap();
        let mut out = Vec::new();
        let mut path = "spec.x".to_owned();
        validate(&node, &data, &mut path, &mut out);
        out.into_iter()
            .map(|c| format!("{}: {} [{}]", c.field, c.message, c.reason))
            .collect()
    }

    #[test]
    fn each_keyword_fails_with_the_real_servers_words() {
        let cases = [
            (
                json!({"type": "integer"}),
                json!("a"),
                r#"spec.x: Invalid value: "string": spec.x in body must be of type integer: "string" [FieldValueTypeInvalid]"#,
            ),
            (
                json!({"type": "string"}),
                json!(null),
                r#"spec.x: Invalid value: "null": spec.x in body must be of type string: "null" [FieldValueTypeInvalid]"#,
            ),
            (
                json!({"type": "object"}),
                json!([1]),
                r#"spec.x: Invalid value: "array": spec.x in body must be of type object: "array" [FieldValueTypeInvalid]"#,
            ),
            (
                json!({"type": "boolean"}),
                json!(1.5),
                r#"spec.x: Invalid value: "number": spec.x in body must be of type boolean: "number" [FieldValueTypeInvalid]"#,
            ),
            (
                json!({"x-kubernetes-int-or-string": true}),
                json!(true),
                r#"spec.x: Invalid value: "boolean": spec.x in body must be of type integer,string: "boolean" [FieldValueTypeInvalid]"#,
            ),
            (
                json!({"type": "string", "enum": ["a", "b"]}),
                json!("x"),
                r#"spec.x: Unsupported value: "x": supported values: "a", "b" [FieldValueNotSupported]"#,
            ),
            (
                json!({"type": "integer", "enum": [1, 2]}),
                json!(3),
                r#"spec.x: Unsupported value: 3: supported values: "1", "2" [FieldValueNotSupported]"#,
            ),
            (
                json!({"type": "string", "maxLength": 3}),
                json!("abcd"),
                "spec.x: Too long: may not be more than 3 bytes [FieldValueTooLong]",
            ),
            (
                json!({"type": "string", "minLength": 2}),
                json!("a"),
                r#"spec.x: Invalid value: "a": spec.x in body should be at least 2 chars long [FieldValueInvalid]"#,
            ),
            (
                json!({"type": "string", "pattern": "^[a-z]+$"}),
                json!("A1"),
                r#"spec.x: Invalid value: "A1": spec.x in body should match '^[a-z]+$' [FieldValueInvalid]"#,
            ),
            (
                json!({"type": "integer", "minimum": 1}),
                json!(0),
                "spec.x: Invalid value: 0: spec.x in body should be greater than or equal to 1 [FieldValueInvalid]",
            ),
            (
                json!({"type": "integer", "minimum": 1, "exclusiveMinimum": true}),
                json!(1),
                "spec.x: Invalid value: 1: spec.x in body should be greater than 1 [FieldValueInvalid]",
            ),
            (
                json!({"type": "integer", "maximum": 4294967295u64}),
                json!(4294967296u64),
                "spec.x: Invalid value: 4294967296: spec.x in body should be less than or equal to 4294967295 [FieldValueInvalid]",
            ),
            (
                json!({"type": "number", "maximum": 1.5, "exclusiveMaximum": true}),
                json!(1.5),
                "spec.x: Invalid value: 1.5: spec.x in body should be less than 1.5 [FieldValueInvalid]",
            ),
            (
                json!({"type": "integer", "multipleOf": 5}),
                json!(7),
                "spec.x: Invalid value: 7: spec.x in body should be a multiple of 5 [FieldValueInvalid]",
            ),
            (
                json!({"type": "array", "maxItems": 1}),
                json!([1, 2]),
                "spec.x: Too many: 2: must have at most 1 item [FieldValueTooMany]",
            ),
            (
                json!({"type": "array", "minItems": 1}),
                json!([]),
                "spec.x: Invalid value: 0: spec.x in body should have at least 1 items [FieldValueInvalid]",
            ),
            (
                json!({"type": "array", "uniqueItems": true}),
                json!([1, 1.0]),
                r#"spec.x: Invalid value: "": spec.x in body shouldn't contain duplicates [FieldValueInvalid]"#,
            ),
            (
                json!({"type": "object", "maxProperties": 1}),
                json!({"a": 1, "b": 2}),
                "spec.x: Too many: 2: must have at most 1 item [FieldValueTooMany]",
            ),
            (
                json!({"type": "object", "minProperties": 1}),
                json!({}),
                "spec.x: Invalid value: 0: spec.x in body should have at least 1 properties [FieldValueInvalid]",
            ),
            (
                json!({"type": "object", "required": ["a"]}),
                json!({}),
                "spec.x.a: Required value [FieldValueRequired]",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false}),
                json!({"b": 1}),
                r#"spec.x: Invalid value: "b": spec.x.b in body is a forbidden property [FieldValueInvalid]"#,
            ),
            (
                json!({"type": "object", "additionalProperties": {"type": "integer", "maximum": 9}}),
                json!({"k": 10}),
                "spec.x.k: Invalid value: 10: spec.x.k in body should be less than or equal to 9 [FieldValueInvalid]",
            ),
            (
                json!({"type": "array", "items": {"type": "string"}}),
                json!(["a", 1]),
                r#"spec.x[1]: Invalid value: "integer": spec.x[1] in body must be of type string: "integer" [FieldValueTypeInvalid]"#,
            ),
            (
                json!({"type": "string", "format": "date-time"}),
                json!("yesterday"),
                r#"spec.x: Invalid value: "yesterday": spec.x in body must be of type date-time: "yesterday" [FieldValueTypeInvalid]"#,
            ),
            (
                json!({"type": "integer", "format": "int32"}),
                json!({}),
                r#"spec.x: Invalid value: "": spec.x in body must be of type int32: "" [FieldValueTypeInvalid]"#,
            ),
            (
                json!({"not": {"required": ["a"]}}),
                json!({"a": 1}),
                r#"<nil>: Invalid value: "": "spec.x" must not validate the schema (not) [FieldValueInvalid]"#,
            ),
        ];
        for (schema, data, want) in cases {
            assert_eq!(
                errors(schema.clone(), data.clone()),
                vec![want.to_owned()],
                "{schema} {data}"
            );
        }
    }

    #[test]
    fn valid_values_pass() {
        let cases = [
            (
                json!({"type": "integer", "minimum": 0, "maximum": 4294967295u64}),
                json!(80),
            ),
            (json!({"type": "integer"}), json!(3.0)),
            (json!({"type": "number"}), json!(3)),
            (json!({"type": "string", "nullable": true}), json!(null)),
            (json!({"x-kubernetes-int-or-string": true}), json!("50%")),
            (json!({"x-kubernetes-int-or-string": true}), json!(5)),
            (
                json!({"type": "string", "format": "date-time"}),
                json!("2024-01-02T03:04:05Z"),
            ),
            (
                json!({"type": "string", "format": "uint32"}),
                json!("anything"),
            ),
            (json!({"type": "integer", "format": "int32"}), json!(1)),
            (json!({"type": "string", "enum": ["a"]}), json!("a")),
            (json!({"type": "number", "enum": [1.0]}), json!(1)),
            (
                json!({"type": "object", "additionalProperties": {"type": "string"}}),
                json!({"a": "b"}),
            ),
        ];
        for (schema, data) in cases {
            assert_eq!(
                errors(schema.clone(), data.clone()),
                Vec::<String>::new(),
                "{schema} {data}"
            );
        }
    }

    #[test]
    fn one_of_and_any_of_report_like_go_openapi() {
        // Istio's probe: at most one of the handlers.
        let probe = json!({"type": "object", "oneOf": [
            {"not": {"anyOf": [{"required": ["httpGet"]}, {"required": ["tcpSocket"]}]}},
            {"required": ["httpGet"]}, {"required": ["tcpSocket"]}]});
        assert!(errors(probe.clone(), json!({})).is_empty());
        assert!(errors(probe.clone(), json!({"httpGet": {}})).is_empty());
        assert_eq!(
            errors(probe, json!({"httpGet": {}, "tcpSocket": {}})),
            vec![
                r#"<nil>: Invalid value: "": "spec.x" must validate one and only one schema (oneOf). Found 2 valid alternatives [FieldValueInvalid]"#
            ]
        );
        let any = json!({"type": "object", "anyOf": [{"required": ["a"]}, {"required": ["b"]}]});
        assert!(errors(any.clone(), json!({"b": 1})).is_empty());
        assert_eq!(
            errors(any, json!({})),
            vec![
                r#"<nil>: Invalid value: "": "spec.x" must validate at least one schema (anyOf) [FieldValueInvalid]"#,
                "spec.x.a: Required value [FieldValueRequired]",
            ]
        );
        let all = json!({"allOf": [{"type": "string", "maxLength": 1}, {"type": "string"}]});
        assert_eq!(
            errors(all, json!("ab")),
            vec![
                "spec.x: Too long: may not be more than 1 byte [FieldValueTooLong]",
                r#"<nil>: Invalid value: "": "spec.x" must validate all the schemas (allOf) [FieldValueInvalid]"#,
            ]
        );
    }
}
