//! meshmirror's AWS provider: Auto Scaling group members (with their EC2
//! addresses, zones and tags), lifecycle-hook answers and heartbeats, and an
//! SQS feed of EventBridge and lifecycle-hook events.
//!
//! Events are hints; the API is the truth. A pass asks Auto Scaling and EC2,
//! and an event only makes it happen sooner. A spot interruption warning
//! too: it makes the next passes ask EC2 for the instance's spot request
//! status, and only EC2 (a `marked-for-*` status, or an instance state on the
//! way out) moves the instance out of the mesh, so a forged or stale message
//! pulls nothing out. Messages are accepted only from meshmirror's own
//! accounts and for regions it mirrors.

mod clients;
mod config;
mod describe;
mod error;
mod events;
mod heartbeat;
mod memory;
pub mod message;
mod provider;
mod rounds;
pub mod state;
mod stats;

pub use config::{AwsConfig, queue_region};
pub use describe::IDS_PER_CALL;
pub use provider::AwsProvider;
pub use stats::StatsSnapshot;

/// The SDK crates, for tools and tests that drive the same APIs.
pub use {aws_config, aws_sdk_autoscaling, aws_sdk_ec2, aws_sdk_sqs};
