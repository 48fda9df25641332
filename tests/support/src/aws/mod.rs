//! AWS for tests: moto's server ([`Moto`]) and a proxy in front of it
//! ([`AwsProxy`]) that adds what moto lacks (lifecycle completions and
//! holds, throttling, addresses moto does not model) and counts calls.

mod moto;
mod proxy;
pub mod upstream;
mod xml;

pub use moto::{Moto, MotoError};
pub use proxy::{AwsProxy, HoldState, LifecycleCall};
