//! The contract between meshmirror's reconciliation core and its cloud backends.
//!
//! Providers report the members of a scaling group as [`Instance`]s and, when they
//! can, push [`GroupEvent`]s that make the core reconcile a group at once. They
//! never see Kubernetes or Istio types: mapping an instance to a WorkloadEntry is
//! the core's job.

mod error;
mod event;
mod group;
mod instance;
mod observe;
mod provider;
mod retry;

pub use error::ProviderError;
pub use event::{Ack, GroupEvent, GroupEventKind};
pub use group::{GcpLocation, GroupRef};
pub use instance::{
    Health, HookDef, Instance, InstanceState, LifecycleAction, LifecycleKind, Outcome,
};
pub use observe::{Advisory, ApiStatus, FeedOutcome, NoopObserver, Observer, TracingObserver};
pub use provider::{BoxEventStream, Provider};
pub use retry::{Reconnect, RetryPolicy, Retrying};
