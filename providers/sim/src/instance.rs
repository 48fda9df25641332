use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use meshmirror_provider::{Health, InstanceState};

/// An instance as the sim's driver describes it. The group supplies the region;
/// the sim adds any lifecycle action holding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimInstance {
    pub id: String,
    pub private_ipv4: Option<Ipv4Addr>,
    pub public_ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub zone: Option<String>,
    pub state: InstanceState,
    pub health: Health,
    pub tags: BTreeMap<String, String>,
}

impl SimInstance {
    /// A running, healthy instance with only an id and a private address.
    pub fn running(id: impl Into<String>, private_ipv4: Ipv4Addr) -> Self {
        SimInstance {
            id: id.into(),
            private_ipv4: Some(private_ipv4),
            public_ipv4: None,
            ipv6: None,
            zone: None,
            state: InstanceState::Running,
            health: Health::Healthy,
            tags: BTreeMap::new(),
        }
    }

    pub fn with_public_ipv4(mut self, addr: Ipv4Addr) -> Self {
        self.public_ipv4 = Some(addr);
        self
    }

    pub fn with_ipv6(mut self, addr: Ipv6Addr) -> Self {
        self.ipv6 = Some(addr);
        self
    }

    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    pub fn with_state(mut self, state: InstanceState) -> Self {
        self.state = state;
        self
    }

    pub fn with_health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Without a private address (an IPv6-only or misconfigured instance).
    pub fn without_private_ipv4(mut self) -> Self {
        self.private_ipv4 = None;
        self
    }
}
