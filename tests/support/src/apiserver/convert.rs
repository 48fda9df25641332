//! Objects between the version a client asks for and the stored one: for a
//! CRD (conversion strategy `None`) only `apiVersion` changes; Events go
//! through the mapping of module `events`.

use std::borrow::Cow;

use serde_json::{Value, json};

use super::events;
use super::resources::{ResourceDef, Storage};

/// A stored object as `api_version` of `res` (borrowed when it already is).
pub fn for_client<'a>(res: &ResourceDef, obj: &'a Value, api_version: &str) -> Cow<'a, Value> {
    if obj["apiVersion"] == api_version {
        return Cow::Borrowed(obj);
    }
    match res.storage {
        Storage::EventsV1 => Cow::Owned(events::v1_from_core(obj)),
        Storage::Own | Storage::CoreEvents => {
            let mut o = obj.clone();
            o["apiVersion"] = json!(api_version);
            Cow::Owned(o)
        }
    }
}

/// An object written through `res` (checked, in the request's version) as
/// it is stored.
pub fn for_storage(res: &ResourceDef, obj: Value) -> Value {
    match res.storage {
        Storage::EventsV1 => events::core_from_v1(&obj),
        Storage::CoreEvents => events::core_typed(&obj),
        Storage::Own => {
            let mut o = obj;
            o["apiVersion"] = json!(res.storage_api_version());
            o
        }
    }
}
