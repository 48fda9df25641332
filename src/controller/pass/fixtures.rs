//! The mirror, members and entries the stage tests share.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use meshmirror_provider::Instance;

use crate::core::ownership::Owner;
use crate::crd::{ScalingGroupMirror, ScalingGroupMirrorSpec};
use crate::workloadentry::{ActualEntry, keys};

/// Mirror team-a/web (uid u1, generation 3) of sim group web: one workload,
/// a 45 s interval, one delete per pass; `extra` is more spec YAML.
pub fn mirror(extra: &str) -> ScalingGroupMirror {
    let yaml = format!(
        "provider: {{sim: {{group: web}}}}\nworkloads:\n- {{name: api, labels: {{app: api}}, ports: {{http: 8080}}}}\nsync: {{interval: 45s, maxDeletesPerPass: 1}}\n{extra}"
    );
    let spec: ScalingGroupMirrorSpec = serde_yaml::from_str(&yaml).unwrap();
    let mut m = ScalingGroupMirror::new("web", spec);
    m.metadata.namespace = Some("team-a".into());
    m.metadata.uid = Some("u1".into());
    m.metadata.generation = Some(3);
    m
}

pub fn owner() -> Owner {
    Owner {
        namespace: "team-a".into(),
        name: "web".into(),
        uid: "u1".into(),
    }
}

pub fn vm(id: &str, last: u8) -> Instance {
    Instance::running(id, Ipv4Addr::new(10, 0, 0, last))
}

/// An owned entry of `instance`.
pub fn entry(name: &str, instance: &str) -> ActualEntry {
    ActualEntry {
        name: name.into(),
        annotations: BTreeMap::from([(keys::INSTANCE_ID.to_string(), instance.to_string())]),
        ..ActualEntry::default()
    }
}
