use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::GroupRef;

/// Where an instance is in its life, as far as the mesh cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstanceState {
    /// Booting or waiting on a launch hook: not yet serving.
    Pending,
    Running,
    /// Going away (scale-in, spot interruption, stop): leaves the mesh at once.
    Terminating,
    Stopped,
}

/// The cloud's view of an instance's health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Health {
    Healthy,
    Unhealthy,
    #[default]
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LifecycleKind {
    Launch,
    Terminate,
}

/// The answer to a lifecycle hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    Continue,
    Abandon,
}

/// A lifecycle hook that holds an instance until meshmirror completes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LifecycleAction {
    pub group: GroupRef,
    pub instance_id: String,
    pub kind: LifecycleKind,
    pub hook: String,
    /// The cloud's token for this action, when it issues one.
    pub token: Option<String>,
}

/// A lifecycle hook defined on a group, as the cloud lists it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HookDef {
    pub name: String,
    pub kind: LifecycleKind,
}

/// One member of a scaling group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The cloud's own id; stable for the instance's life and never reused.
    pub id: String,
    pub private_ipv4: Option<Ipv4Addr>,
    pub public_ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub region: Option<String>,
    pub zone: Option<String>,
    pub state: InstanceState,
    pub health: Health,
    /// Cloud tags (AWS, Azure) or labels (GCP).
    pub tags: BTreeMap<String, String>,
    /// A hook holding this instance, if any.
    pub lifecycle: Option<LifecycleAction>,
}

impl Instance {
    /// A running, healthy instance with only an id and a private address.
    pub fn running(id: impl Into<String>, private_ipv4: Ipv4Addr) -> Self {
        Instance {
            id: id.into(),
            private_ipv4: Some(private_ipv4),
            public_ipv4: None,
            ipv6: None,
            region: None,
            zone: None,
            state: InstanceState::Running,
            health: Health::Healthy,
            tags: BTreeMap::new(),
            lifecycle: None,
        }
    }
}
