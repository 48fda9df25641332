//! An in-memory simulated cloud for meshmirror's demo and tests.
//!
//! [`SimCloud`] holds groups of instances with addresses, zones, tags, states and
//! health, an event feed, and lifecycle hooks that hold an instance until
//! meshmirror completes them. Tests drive it from code; a person drives it by
//! editing a YAML file ([`SimCloud::watch_file`]; format in the crate's README).
//! It implements [`meshmirror_provider::Provider`] for `GroupRef::Sim` groups.

mod cloud;
mod error;
mod events;
mod file;
mod instance;
mod provider;
mod watch;

pub use cloud::{LAUNCH_HOOK, SimCloud, TERMINATION_HOOK};
pub use error::SimError;
pub use file::{SimFile, SimFileGroup};
pub use instance::SimInstance;
pub use watch::WATCH_INTERVAL;
