//! meshmirror's AWS provider: Auto Scaling group members (with their EC2
//! addresses, zones and tags), lifecycle-hook answers and heartbeats, and an
//! SQS feed of EventBridge and lifecycle-hook events.
//!
//! Events are hints; the API is the truth. A pass asks Auto Scaling and EC2,
//! and an event only makes it happen sooner. The one thing an event adds is a
//! spot interruption warning, which no describe call shows per instance: it
//! moves an instance out of the mesh only if EC2 confirms that the instance
//! is a spot instance (or that it is already stopping or shutting down), so a
//! forged or stale message cannot pull an on-demand instance out.

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
pub use stats::{MessageOutcome, Observer, StatsSnapshot};

/// The SDK crates, for tools and tests that drive the same APIs.
pub use {aws_config, aws_sdk_autoscaling, aws_sdk_ec2, aws_sdk_sqs};
