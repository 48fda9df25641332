//! Fakes for meshmirror's tests: an in-process Kubernetes API server, and
//! (later) cloud mocks.

pub mod apiserver;
pub mod arm;
pub mod aws;
pub mod backend;
pub mod gce;
pub mod kubeproxy;
pub mod realkube;
pub mod schema;
pub mod ssa;
pub mod tools;
#[cfg(feature = "xds")]
pub mod xds;

pub use apiserver::{
    ApiServer, ApiServerBuilder, CrdError, Faults, Injected, LoggedWrite, Match, RequestCounts,
    StartError, Verb,
};
pub use backend::{Backend, TestKube};
