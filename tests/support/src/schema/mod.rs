//! Structural-schema validation, pruning and CEL rules of a CRD version's
//! `openAPIV3Schema`, as the real API server applies them.
//!
//! Order of a write, as in apiextensions-apiserver: [`Validator::prune`]
//! (unknown fields, disallowed nulls), [`Validator::apply_defaults`], then
//! [`Validator::validate`] (or [`Validator::validate_update`] for an update,
//! which also runs the transition rules that use `oldSelf`).

mod cel;
mod cel_library;
mod cel_value;
mod formats;
mod listtype;
mod messages;
mod node;
mod prune;
mod structural;

#[cfg(test)]
mod istio_tests;

use serde_json::Value;

/// One failed check, in the shape of a `Status` `details.causes` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldCause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueTypeInvalid`,
    /// `FieldValueNotSupported`, `FieldValueTooLong`, `FieldValueTooMany`,
    /// `FieldValueDuplicate`, `FieldValueForbidden`.
    pub reason: &'static str,
    /// The field path from the object root, as the real server writes it:
    /// `spec.ports` or `spec.ports.http` for OpenAPI keywords, `spec.ports[http]`
    /// and `spec.items[0]` for CEL rules, and `<nil>` for errors about the
    /// whole object (the real server prints a nil path that way).
    pub field: String,
    /// The message after the path, e.g. `Required value` or
    /// `Invalid value: "object": Address is required`.
    pub message: String,
}

/// A schema that cannot be used (for example a CEL rule that does not compile).
#[derive(Debug, thiserror::Error)]
#[error("invalid schema at {path}: {message}")]
pub struct SchemaError {
    pub path: String,
    pub message: String,
}

/// One CRD version's compiled `openAPIV3Schema` (CEL programs compiled once).
#[derive(Debug)]
pub struct Validator {
    root: node::Node,
}

/// Field errors that stop CEL rules from running (`hasBlockingErr`).
fn blocks_cel(cause: &FieldCause) -> bool {
    matches!(
        cause.reason,
        messages::NOT_SUPPORTED
            | messages::REQUIRED
            | messages::TOO_LONG
            | messages::TOO_MANY
            | messages::TYPE_INVALID
    )
}

impl Validator {
    /// Compiles `schema` (the `openAPIV3Schema` object): patterns, and every
    /// `x-kubernetes-validations` rule, `messageExpression` and `fieldPath`.
    pub fn new(schema: &Value) -> Result<Self, SchemaError> {
        Ok(Validator {
            root: node::Node::parse(schema, "")?,
        })
    }

    /// Removes fields the schema does not declare, unless
    /// `x-kubernetes-preserve-unknown-fields` allows them, and `null` values
    /// of properties that are neither `nullable` nor defaulted. `apiVersion`,
    /// `kind` and `metadata` are left alone (here and in embedded resources).
    pub fn prune(&self, obj: &mut Value) {
        prune::prune(Some(&self.root), obj, true);
        prune::drop_nulls(&self.root, obj);
    }

    /// Fills absent fields that have a `default` in the schema.
    pub fn apply_defaults(&self, obj: &mut Value) {
        prune::apply_defaults(&self.root, obj);
    }

    /// Every failure of `obj` against the schema and its CEL rules; empty when
    /// valid. Rules using `oldSelf` are not evaluated (see
    /// [`Validator::validate_update`]).
    pub fn validate(&self, obj: &Value) -> Vec<FieldCause> {
        self.check(obj, None)
    }

    /// As [`Validator::validate`] for an update from `old` to `new`: transition
    /// rules (those using `oldSelf`) are evaluated where an old value
    /// correlates (same property or map key, same keys in a `list-type: map`).
    pub fn validate_update(&self, old: &Value, new: &Value) -> Vec<FieldCause> {
        self.check(new, Some(old))
    }

    fn check(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldCause> {
        let mut out = Vec::new();
        let mut path = String::new();
        structural::validate(&self.root, obj, &mut path, &mut out);
        listtype::validate(&self.root, obj, &mut path, &mut out);
        if self.root.has_rules {
            if out.iter().any(blocks_cel) {
                out.push(messages::invalid(
                    "",
                    "null",
                    "some validation rules were not checked because the object was invalid; \
                     correct the existing errors to complete validation",
                ));
            } else {
                cel::validate(&self.root, &self.root, obj, old, true, &mut path, &mut out);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validator_is_shareable_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Validator>();
    }

    #[test]
    fn schema_errors_block_cel_rules() {
        let v = Validator::new(&json!({"type": "object", "required": ["spec"], "properties": {
            "spec": {"type": "object", "x-kubernetes-validations": [{"rule": "has(self.a)", "message": "a"}],
                "properties": {"a": {"type": "string"}, "n": {"type": "integer"}}}}}))
        .unwrap();
        let got = v.validate(&json!({"spec": {"n": "x"}}));
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].reason, "FieldValueTypeInvalid");
        assert_eq!(got[1].field, "<nil>");
        assert_eq!(
            got[1].message,
            "Invalid value: null: some validation rules were not checked because the object was \
             invalid; correct the existing errors to complete validation"
        );
        let got = v.validate(&json!({"spec": {"n": 1}}));
        assert_eq!(
            got,
            vec![FieldCause {
                reason: "FieldValueInvalid",
                field: "spec".into(),
                message: "Invalid value: \"object\": a".into(),
            }]
        );
    }

    #[test]
    fn update_runs_transition_rules() {
        let v = Validator::new(&json!({"type": "object", "properties": {"spec": {"type": "object",
            "properties": {"id": {"type": "string",
                "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "id is immutable"}]}}}}}))
        .unwrap();
        let old = json!({"spec": {"id": "a"}});
        let new = json!({"spec": {"id": "b"}});
        assert!(v.validate(&new).is_empty());
        let got = v.validate_update(&old, &new);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].field, "spec.id");
        assert_eq!(got[0].message, "Invalid value: \"string\": id is immutable");
        assert!(v.validate_update(&old, &old).is_empty());
    }
}
