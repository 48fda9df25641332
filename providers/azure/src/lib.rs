//! meshmirror's Azure provider: the members of a VM Scale Set (Uniform or
//! Flexible orchestration) read from ARM with `azure_core` 1.x and typed serde
//! models of the few operations needed, plus an optional Event Grid → Storage
//! queue event feed.
//!
//! There is no maintained Compute management crate on `azure_core` 1.x
//! (`azure_mgmt_compute` is the legacy generation on an old `azure_core`;
//! `azure_resourcemanager_compute` is a placeholder), hence [`models`].

pub mod arm;
pub mod budget;
pub mod credential;
pub mod events;
pub mod mapping;
pub mod models;
pub mod provider;

pub use arm::ArmError;
pub use budget::ReadBudget;
pub use credential::{CredentialConfig, CredentialKind};
pub use provider::{
    AzureConfig, AzureError, AzureProvider, COMPUTE_API, NETWORK_API, PUBLIC_ENDPOINT,
    VMSS_NETWORK_API,
};

/// The SDK crates, re-exported so the service and its tests build on the
/// same versions (tests talk to Azurite through the queue client and to the
/// ARM mock's control calls through reqwest).
pub use azure_core;
pub use azure_core::http::Url;
pub use azure_identity;
pub use azure_storage_queue;
pub use reqwest;
