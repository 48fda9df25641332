//! meshmirror's `gcp` provider: the members of zonal and regional Managed
//! Instance Groups, read with the official Compute Engine client, and an
//! optional event feed of Compute Engine audit logs through Pub/Sub.

mod convert;
mod error;
mod events;
mod provider;
mod state;

pub use convert::{Unlisted, region_of};
pub use events::{
    AuditEntryError, Entry, Known, PubSubConfig, Verb, parse as parse_audit_entry, resolve,
};
pub use provider::{Auth, GcpConfig, GcpProvider, IDS_PER_CALL, id_filter, name_filter};
pub use state::{health, instance_state};
