//! Pure decisions: what a mirror's spec means, which entries it wants, how
//! they differ from what exists, when a lifecycle hook may be answered, which
//! mirror claims a group, and what makes an object a mirror's own. Nothing
//! here does I/O; everything is table-tested beside its code.

pub mod claims;
pub mod config;
pub mod desired;
pub mod group_names;
pub mod lifecycle;
pub mod mesh;
pub mod names;
pub mod networks;
pub mod ownership;
pub mod plan;
pub mod policy;
pub mod redact;
