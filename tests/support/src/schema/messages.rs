//! Field errors worded as `k8s.io/apimachinery/pkg/util/validation/field`
//! words them, values printed as Go's `fmt`/`encoding/json` print them.

use super::FieldCause;
use serde_json::Value;
use std::fmt::Write;

pub(super) const REQUIRED: &str = "FieldValueRequired";
pub(super) const INVALID: &str = "FieldValueInvalid";
pub(super) const TYPE_INVALID: &str = "FieldValueTypeInvalid";
pub(super) const NOT_SUPPORTED: &str = "FieldValueNotSupported";
pub(super) const TOO_LONG: &str = "FieldValueTooLong";
pub(super) const TOO_MANY: &str = "FieldValueTooMany";
pub(super) const DUPLICATE: &str = "FieldValueDuplicate";
pub(super) const FORBIDDEN: &str = "FieldValueForbidden";

/// The `field` of an error raised at the object root: Go prints a nil
/// `*field.Path` as `<nil>`, and the real server sends exactly that.
pub(super) const NIL_FIELD: &str = "<nil>";

fn field_name(field: &str) -> String {
    if field.is_empty() {
        NIL_FIELD.to_owned()
    } else {
        field.to_owned()
    }
}

fn with_detail(head: String, detail: &str) -> String {
    if detail.is_empty() {
        head
    } else {
        format!("{head}: {detail}")
    }
}

/// `field.Required`: `Required value[: detail]`.
pub(super) fn required(field: &str, detail: &str) -> FieldCause {
    FieldCause {
        reason: REQUIRED,
        field: field_name(field),
        message: with_detail("Required value".to_owned(), detail),
    }
}

/// `field.Invalid`; `bad` is the value already printed (see [`bad_value`]).
pub(super) fn invalid(field: &str, bad: &str, detail: &str) -> FieldCause {
    FieldCause {
        reason: INVALID,
        field: field_name(field),
        message: with_detail(format!("Invalid value: {bad}"), detail),
    }
}

/// `field.TypeInvalid`: worded as `Invalid value`, with its own reason.
pub(super) fn type_invalid(field: &str, bad: &str, detail: &str) -> FieldCause {
    FieldCause {
        reason: TYPE_INVALID,
        field: field_name(field),
        message: with_detail(format!("Invalid value: {bad}"), detail),
    }
}

/// `field.NotSupported`: each supported value is quoted, whatever its type.
pub(super) fn not_supported(field: &str, bad: &str, supported: &[String]) -> FieldCause {
    let mut detail = String::new();
    if !supported.is_empty() {
        detail.push_str("supported values: ");
        let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
        detail.push_str(&quoted.join(", "));
    }
    FieldCause {
        reason: NOT_SUPPORTED,
        field: field_name(field),
        message: with_detail(format!("Unsupported value: {bad}"), &detail),
    }
}

/// `field.TooLong`: the value is never shown.
pub(super) fn too_long(field: &str, max: i64) -> FieldCause {
    let unit = if max == 1 { "byte" } else { "bytes" };
    FieldCause {
        reason: TOO_LONG,
        field: field_name(field),
        message: format!("Too long: may not be more than {max} {unit}"),
    }
}

/// `field.TooMany`, used for both `maxItems` and `maxProperties`.
pub(super) fn too_many(field: &str, actual: usize, max: i64) -> FieldCause {
    let unit = if max == 1 { "item" } else { "items" };
    FieldCause {
        reason: TOO_MANY,
        field: field_name(field),
        message: format!("Too many: {actual}: must have at most {max} {unit}"),
    }
}

/// `field.Duplicate`: no detail.
pub(super) fn duplicate(field: &str, bad: &str) -> FieldCause {
    FieldCause {
        reason: DUPLICATE,
        field: field_name(field),
        message: format!("Duplicate value: {bad}"),
    }
}

/// `field.Forbidden`: `Forbidden[: detail]`.
pub(super) fn forbidden(field: &str, detail: &str) -> FieldCause {
    FieldCause {
        reason: FORBIDDEN,
        field: field_name(field),
        message: with_detail("Forbidden".to_owned(), detail),
    }
}

/// A JSON value as `field.Error.ErrorBody` prints a bad value: strings
/// quoted, numbers and booleans bare, anything else as Go's JSON.
pub(super) fn bad_value(value: &Value) -> String {
    match value {
        Value::String(s) => go_quote(s),
        Value::Number(n) => go_number(n),
        Value::Bool(b) => b.to_string(),
        _ => go_json(value),
    }
}

/// A JSON number as Go holds it after decoding: `int64` when it fits, else
/// `float64`.
pub(super) fn go_number(n: &serde_json::Number) -> String {
    match n.as_i64() {
        Some(i) => i.to_string(),
        None => go_float(n.as_f64().unwrap_or(f64::NAN)),
    }
}

/// `strconv.Quote`: printable characters kept, the rest escaped.
pub(super) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                } else {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A `float64` as `%v` prints it (`%g` with the shortest digits): in
/// exponent form when the exponent is below -4 or at least 6.
pub(super) fn go_float(f: f64) -> String {
    format_float(f, 6)
}

/// The shortest digits of `f`, in exponent form (Go style, `e+06`) when the
/// decimal exponent is below -4 or at least `max_exp`.
fn format_float(f: f64, max_exp: i32) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // `{:e}` gives the shortest round-tripping digits, e.g. `4.294967295e9`.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= max_exp {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

/// Go's `json.Marshal` of a decoded JSON value: keys sorted, `<`, `>` and
/// `&` escaped, floats without a trailing `.0`.
pub(super) fn go_json(value: &Value) -> String {
    let mut out = String::new();
    write_go_json(value, &mut out);
    out
}

fn write_go_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_i64() {
            Some(i) => out.push_str(&i.to_string()),
            None => {
                let f = n.as_f64().unwrap_or(0.0);
                let abs = f.abs();
                if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
                    out.push_str(&format_float(f, 0).replace("e-0", "e-"));
                } else {
                    out.push_str(&format!("{f}"));
                }
            }
        },
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(key, out);
                out.push(':');
                write_go_json(&map[key], out);
            }
            out.push('}');
        }
    }
}

fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_print_like_go_percent_v() {
        let cases = [
            (1.5, "1.5"),
            (65535.0, "65535"),
            (4294967295.0, "4.294967295e+09"),
            (1e6, "1e+06"),
            (123456.0, "123456"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5, "-2.5"),
        ];
        for (f, want) in cases {
            assert_eq!(go_float(f), want, "{f}");
        }
    }

    #[test]
    fn quote_escapes_like_strconv_quote() {
        assert_eq!(go_quote("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(go_quote("\u{1}é"), "\"\\x01é\"");
    }

    #[test]
    fn bad_values_print_like_error_body() {
        assert_eq!(bad_value(&json!("x")), "\"x\"");
        assert_eq!(bad_value(&json!(99999)), "99999");
        assert_eq!(bad_value(&json!(1.25)), "1.25");
        assert_eq!(bad_value(&json!(true)), "true");
        assert_eq!(bad_value(&json!(null)), "null");
        assert_eq!(
            bad_value(&json!({"b": 1, "a": "<"})),
            r#"{"a":"\u003c","b":1}"#
        );
        assert_eq!(bad_value(&json!([1.0, 2])), "[1,2]");
    }

    #[test]
    fn causes_are_worded_like_field_errors() {
        assert_eq!(required("spec", "").message, "Required value");
        assert_eq!(
            too_long("spec.a", 253).message,
            "Too long: may not be more than 253 bytes"
        );
        assert_eq!(
            too_long("spec.a", 1).message,
            "Too long: may not be more than 1 byte"
        );
        assert_eq!(
            too_many("spec.a", 5, 4).message,
            "Too many: 5: must have at most 4 items"
        );
        let ns = not_supported("spec.a", "\"x\"", &["a".into(), "b".into()]);
        assert_eq!(
            ns.message,
            r#"Unsupported value: "x": supported values: "a", "b""#
        );
        assert_eq!(ns.reason, NOT_SUPPORTED);
        assert_eq!(invalid("", "\"\"", "boom").field, NIL_FIELD);
        assert_eq!(forbidden("spec", "no").message, "Forbidden: no");
        assert_eq!(
            duplicate("spec[1]", "\"a\"").message,
            "Duplicate value: \"a\""
        );
    }
}
