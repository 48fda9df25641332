//! Server-side apply: field ownership per manager in `metadata.managedFields`
//! (FieldsV1), conflicts, and removal of fields a manager stopped applying.
//!
//! This follows the real API server's field manager (structured-merge-diff v4+
//! and `k8s.io/apimachinery/pkg/util/managedfields`):
//!
//! - one entry per manager identity: (manager, `Apply`, subresource) for
//!   appliers, (manager, `Update`, apiVersion, subresource) for other writes;
//!   entries whose field set becomes empty are dropped; entries are sorted as
//!   the server sorts them (operation, time, manager, apiVersion, subresource);
//! - an apply owns exactly the fields of its configuration (leaves, list
//!   items, keys of free-form maps, atomic lists as wholes); `apiVersion`,
//!   `kind`, `metadata.name`/`namespace` and server-set metadata are never
//!   recorded;
//! - an apply that changes a field another identity owns is a conflict unless
//!   forced; with force that identity loses the field; setting the value a
//!   field already has shares ownership; an applier conflicts with its own
//!   `Update` entry, as on the real server;
//! - fields the applier owned last time, no longer applies and nobody else
//!   owns are removed (a whole declared field such as `spec` goes when nobody
//!   owns anything below it any more);
//! - an update owns what it added or changed, takes it from every other
//!   identity, and fields it removed leave every set; the entry's `time`
//!   moves only when the write changed something, and a no-op apply keeps
//!   the previous `time`, so re-applying the same configuration returns an
//!   object equal to the live one (see [`same_object_ignoring_time`]);
//! - with [`Schema::with_status_subresource`], `status` is ignored in
//!   main-resource writes and `spec` in status writes (the strategy's reset
//!   fields), so neither records nor conflicts on what the server resets.
//!
//! Without a schema ([`apply`], [`record_update`]) objects merge key by key,
//! lists are atomic except `metadata.ownerReferences` (keyed by `uid`),
//! `metadata.finalizers` (a set) and `status.conditions` (keyed by `type`).
//! [`apply_with_schema`] and [`record_update_with_schema`] take a [`Schema`]
//! built from a CRD version's `openAPIV3Schema` to merge exactly as the real
//! server would for that CRD (which makes `status.conditions` atomic unless
//! the CRD declares `x-kubernetes-list-type: map`).
//!
//! Not modelled: version conversion of managed fields between API versions
//! (entries keep the apiVersion they were written with; fields are compared
//! by name whatever the version), the cap of 10 `Update` entries
//! (`ancient-changes`), the `last-applied-configuration` annotation, unions,
//! and schema changes of existing entries.

mod fieldset;
mod managers;
mod schema;
mod typed;

use std::fmt;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use fieldset::{FieldSet, display_path};
use managers::{APPLY, Entry, UPDATE};
pub use schema::Schema;

/// Who writes, and how, for the managedFields entry.
#[derive(Clone, Debug)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    /// `Some("status")` for writes through the status subresource.
    pub subresource: Option<&'a str>,
    /// RFC 3339 time for the entry.
    pub time: &'a str,
}

/// Fields owned by other managers that an apply would change.
///
/// `Display` is the real server's `Status.message`:
/// `Apply failed with 1 conflict: conflict with "mgr" using v1: .spec.address`,
/// or for several `Apply failed with 2 conflicts: conflicts with "a":\n- .x\n- .y`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyConflict {
    /// (manager name, field path like `.spec.address`), grouped by manager in
    /// the server's order.
    pub conflicts: Vec<(String, String)>,
    /// For each entry of `conflicts`, the manager as the server prints it:
    /// `"mgr"`, `"mgr" using networking.istio.io/v1`,
    /// `"mgr" with subresource "status" using v1`.
    pub printed_managers: Vec<String>,
}

/// One `details.causes` item of the 409 the server answers a conflict with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictCause {
    /// Always `FieldManagerConflict`.
    pub reason: &'static str,
    /// `conflict with "mgr" using v1`
    pub message: String,
    /// `.spec.address`
    pub field: String,
}

impl ApplyConflict {
    fn new(mut found: Vec<(Entry, FieldSet)>) -> ApplyConflict {
        found.sort_by_cached_key(|(entry, _)| entry.identifier());
        let mut conflicts = Vec::new();
        let mut printed_managers = Vec::new();
        for (entry, set) in &found {
            let printed = entry.printed();
            for path in set.paths() {
                conflicts.push((entry.manager.clone(), display_path(&path)));
                printed_managers.push(printed.clone());
            }
        }
        ApplyConflict {
            conflicts,
            printed_managers,
        }
    }

    /// The `details.causes` of the real server's 409.
    pub fn causes(&self) -> Vec<ConflictCause> {
        self.conflicts
            .iter()
            .zip(&self.printed_managers)
            .map(|((_, field), printed)| ConflictCause {
                reason: "FieldManagerConflict",
                message: format!("conflict with {printed}"),
                field: field.clone(),
            })
            .collect()
    }
}

impl fmt::Display for ApplyConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.conflicts.len();
        if n == 1 {
            return write!(
                f,
                "Apply failed with 1 conflict: conflict with {}: {}",
                self.printed_managers[0], self.conflicts[0].1
            );
        }
        write!(f, "Apply failed with {n} conflicts: ")?;
        let mut previous: Option<&str> = None;
        for (i, ((_, path), printed)) in self
            .conflicts
            .iter()
            .zip(&self.printed_managers)
            .enumerate()
        {
            if previous != Some(printed.as_str()) {
                if i > 0 {
                    f.write_str("\n")?;
                }
                write!(f, "conflicts with {printed}:")?;
                previous = Some(printed);
            }
            write!(f, "\n- {path}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApplyConflict {}

/// Server-side apply of `applied` (the client's config) onto `live` (None when the
/// object does not exist yet). Returns the new object with `metadata.managedFields`
/// updated. Without `force`, a field owned by another manager with a different
/// value is a conflict; with it, ownership moves to `writer`. Fields this manager
/// applied before and no longer applies are removed when no other manager owns them.
///
/// With `live`, the server-set metadata of `applied` (`uid`, `resourceVersion`,
/// `generation`, `creationTimestamp`, `deletionTimestamp`,
/// `deletionGracePeriodSeconds`, `selfLink`) is ignored and `live`'s kept;
/// without it the result carries whatever `applied` has, for the caller to set.
/// `metadata.managedFields` in `applied` is always ignored (the real server
/// rejects it with 400; that check is the caller's).
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    writer: &Writer<'_>,
    force: bool,
) -> Result<Value, ApplyConflict> {
    apply_with_schema(Schema::default_object(), live, applied, writer, force)
}

/// [`apply`] with the merge structure of a CRD version (see
/// [`Schema::from_openapi_v3`]).
pub fn apply_with_schema(
    schema: &Schema,
    live: Option<&Value>,
    applied: &Value,
    writer: &Writer<'_>,
    force: bool,
) -> Result<Value, ApplyConflict> {
    let mut entries = managers::decode(live);
    let empty = Value::Object(Map::new());
    let live_obj = live.unwrap_or(&empty);
    let config = config_of(applied, live.is_some());
    let ignored = schema.reset_fields(writer.subresource);
    let schema = &schema.root;
    let mut merged = typed::merge(live_obj, &config, schema);

    let subresource = writer.subresource.unwrap_or_default();
    let last = entries
        .iter()
        .position(|e| e.is(writer.manager, APPLY, "", subresource))
        .map(|i| entries.remove(i));
    let mut new_set = typed::to_field_set(&config, schema);
    if let Some(ignored) = &ignored {
        new_set = new_set.recursive_difference(ignored);
    }

    if let Some(last) = last.as_ref().filter(|l| !l.set.is_empty()) {
        let mut owned = new_set.clone();
        for entry in &entries {
            owned.union_with(&entry.set);
        }
        typed::prune(
            &mut merged,
            schema,
            &typed::ensure_named_fields_are_members(&last.set, schema),
            Some(&typed::ensure_named_fields_are_members(&owned, schema)),
        );
    }

    let mut cmp = typed::compare(live_obj, &merged, schema);
    if let Some(ignored) = &ignored {
        cmp.exclude(ignored);
    }
    let mut changed = cmp.modified;
    changed.union_with(&cmp.added);
    let found: Vec<(Entry, FieldSet)> = entries
        .iter()
        .filter_map(|e| {
            let taken = e.set.intersection(&changed);
            (!taken.is_empty()).then(|| (e.clone(), taken))
        })
        .collect();
    if !force && !found.is_empty() {
        return Err(ApplyConflict::new(found));
    }
    for entry in &mut entries {
        entry.set = entry.set.difference(&changed).difference(&cmp.removed);
    }

    let set = new_set.difference(never_owned());
    if !set.is_empty() {
        // A no-op apply leaves the entry's time alone, as the real server does.
        let time = if &merged == live_obj {
            last.and_then(|l| l.time)
        } else {
            Some(writer.time.to_owned())
        };
        entries.push(Entry {
            manager: writer.manager.to_owned(),
            operation: APPLY.to_owned(),
            api_version: writer.api_version.to_owned(),
            subresource: subresource.to_owned(),
            time,
            set,
        });
    }
    set_managed_fields(&mut merged, managers::encode(entries));
    Ok(merged)
}

/// Records a non-apply write (create, update, merge or JSON patch): the fields
/// that `new` sets or changes compared with `old` become owned by `writer`
/// (operation `Update`) and are taken from other managers. Updates
/// `new["metadata"]["managedFields"]` in place.
///
/// As on the real server, the entries come from `new` when it carries a
/// non-empty `managedFields` list on a main-resource write (a client may
/// rewrite them; `[{}]` resets them), otherwise from `old`.
pub fn record_update(old: Option<&Value>, new: &mut Value, writer: &Writer<'_>) {
    record_update_with_schema(Schema::default_object(), old, new, writer);
}

/// [`record_update`] with the merge structure of a CRD version.
pub fn record_update_with_schema(
    schema: &Schema,
    old: Option<&Value>,
    new: &mut Value,
    writer: &Writer<'_>,
) {
    let client_set_them = writer.subresource.is_none()
        && new
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .is_some_and(|list| !list.is_empty());
    let mut entries = managers::decode(if client_set_them { Some(&*new) } else { old });

    let empty = Value::Object(Map::new());
    // managedFields themselves may differ between old and new; they are in
    // `never_owned`, so that difference is ignored below.
    let mut cmp = typed::compare(old.unwrap_or(&empty), new, &schema.root);
    if let Some(ignored) = schema.reset_fields(writer.subresource) {
        cmp.exclude(&ignored);
    }
    let mut changed = cmp.modified;
    changed.union_with(&cmp.added);
    for entry in &mut entries {
        entry.set = entry.set.difference(&changed).difference(&cmp.removed);
    }

    let current = changed.difference(never_owned());
    if !current.is_empty() {
        let subresource = writer.subresource.unwrap_or_default();
        let mut set = current;
        if let Some(i) = entries
            .iter()
            .position(|e| e.is(writer.manager, UPDATE, writer.api_version, subresource))
        {
            set.union_with(&entries.remove(i).set);
        }
        entries.push(Entry {
            manager: writer.manager.to_owned(),
            operation: UPDATE.to_owned(),
            api_version: writer.api_version.to_owned(),
            subresource: subresource.to_owned(),
            time: Some(writer.time.to_owned()),
            set,
        });
    }
    set_managed_fields(new, managers::encode(entries));
}

/// Whether `a` and `b` are the same object apart from the `time` of their
/// managedFields entries. [`apply`] already keeps `time` on a no-op, so plain
/// `==` tells a no-op apply too; this is for callers that rebuild entries.
pub fn same_object_ignoring_time(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    let without_times = |v: &Value| {
        let mut v = v.clone();
        if let Some(list) = v
            .pointer_mut("/metadata/managedFields")
            .and_then(Value::as_array_mut)
        {
            for entry in list.iter_mut().filter_map(Value::as_object_mut) {
                entry.remove("time");
            }
        }
        v
    };
    without_times(a) == without_times(b)
}

/// Metadata the server sets; an apply onto a live object never changes it.
const SERVER_SET_METADATA: [&str; 8] = [
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "managedFields",
];

fn config_of(applied: &Value, live_exists: bool) -> Value {
    let mut config = applied.clone();
    if let Some(meta) = config.get_mut("metadata").and_then(Value::as_object_mut) {
        if live_exists {
            for key in SERVER_SET_METADATA {
                meta.remove(key);
            }
        } else {
            meta.remove("managedFields");
        }
    }
    config
}

/// Paths never recorded as owned: the server's strip set (`stripmeta.go`),
/// plus the deletion fields it sets outside the field manager.
fn never_owned() -> &'static FieldSet {
    static SET: OnceLock<FieldSet> = OnceLock::new();
    SET.get_or_init(|| {
        let mut set = FieldSet::default();
        for top in ["apiVersion", "kind", "metadata"] {
            set.insert(&[fieldset::field_pe(top)]);
        }
        for meta in [
            "name",
            "namespace",
            "creationTimestamp",
            "selfLink",
            "uid",
            "clusterName",
            "generation",
            "managedFields",
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            set.insert(&[fieldset::field_pe("metadata"), fieldset::field_pe(meta)]);
        }
        set
    })
}

fn set_managed_fields(object: &mut Value, entries: Vec<Value>) {
    let Some(obj) = object.as_object_mut() else {
        return;
    };
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(meta) = meta.as_object_mut() {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".to_owned(), Value::Array(entries));
        }
    }
}

#[cfg(test)]
mod tests;
