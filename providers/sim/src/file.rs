//! The sim file format. It is a contract (documented in the crate's README.md and
//! checked by tests): a person scales a group by editing this file.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use meshmirror_provider::{Health, InstanceState};
use serde::{Deserialize, Deserializer};

use crate::{SimError, SimInstance};

/// A parsed and validated sim file: every group and its instances, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimFile {
    pub groups: BTreeMap<String, SimFileGroup>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimFileGroup {
    pub region: String,
    pub instances: Vec<SimInstance>,
}

impl SimFile {
    /// Parses a sim file. Unknown fields and bad values are refused with an error
    /// naming the field, e.g. `groups.web.instances[2].state: unknown variant ...`.
    pub fn parse(text: &str) -> Result<SimFile, SimError> {
        // serde_norway's errors already start with the field's path.
        let doc: Doc =
            serde_yaml::from_str(text).map_err(|err| SimError::Invalid(err.to_string()))?;
        doc.validate()?;
        Ok(doc.into_file())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(deserialize_with = "unique_keys")]
    groups: BTreeMap<String, DocGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocGroup {
    region: String,
    /// A group scaled to zero may leave the list out.
    #[serde(default)]
    instances: Vec<DocInstance>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocInstance {
    id: String,
    #[serde(rename = "privateIPv4")]
    private_ipv4: Ipv4Addr,
    #[serde(rename = "publicIPv4", default)]
    public_ipv4: Option<Ipv4Addr>,
    #[serde(default)]
    ipv6: Option<Ipv6Addr>,
    zone: String,
    #[serde(default)]
    state: DocState,
    #[serde(default = "healthy_by_default")]
    healthy: bool,
    #[serde(default, deserialize_with = "unique_keys")]
    tags: BTreeMap<String, String>,
}

/// A map whose keys are written once: YAML parsers keep the last of duplicate
/// keys, which would silently drop a whole group from a hand-edited file.
fn unique_keys<'de, D, V>(deserializer: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Visitor<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visitor<V> {
        type Value = BTreeMap<String, V>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
                }
                let value = map.next_value()?;
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(Visitor(std::marker::PhantomData))
}

fn healthy_by_default() -> bool {
    true
}

/// The states a file may name. `Stopped` is left out on purpose: the file
/// format only promises these three.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum DocState {
    Pending,
    #[default]
    Running,
    Terminating,
}

impl<'de> Deserialize<'de> for DocState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DocState;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one of Pending, Running, Terminating")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DocState, E> {
                match v {
                    "Pending" => Ok(DocState::Pending),
                    "Running" => Ok(DocState::Running),
                    "Terminating" => Ok(DocState::Terminating),
                    other => Err(E::custom(format!(
                        "unknown variant {other:?}, expected one of Pending, Running, Terminating"
                    ))),
                }
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl Doc {
    /// What serde cannot say: empty names and ids used twice (cloud ids are unique
    /// across the whole cloud, so across groups too).
    fn validate(&self) -> Result<(), SimError> {
        let invalid = |path: String, msg: String| Err(SimError::Invalid(format!("{path}: {msg}")));
        let mut seen: HashMap<&str, String> = HashMap::new();
        for (name, group) in &self.groups {
            if name.is_empty() {
                return invalid("groups".into(), "a group name must not be empty".into());
            }
            if group.region.is_empty() {
                return invalid(format!("groups.{name}.region"), "must not be empty".into());
            }
            for (i, inst) in group.instances.iter().enumerate() {
                let at = format!("groups.{name}.instances[{i}]");
                if inst.id.is_empty() {
                    return invalid(format!("{at}.id"), "must not be empty".into());
                }
                if inst.zone.is_empty() {
                    return invalid(format!("{at}.zone"), "must not be empty".into());
                }
                if let Some(first) = seen.insert(&inst.id, at.clone()) {
                    return invalid(
                        format!("{at}.id"),
                        format!("duplicate id {:?}, already used at {first}", inst.id),
                    );
                }
            }
        }
        Ok(())
    }

    fn into_file(self) -> SimFile {
        let groups = self
            .groups
            .into_iter()
            .map(|(name, group)| {
                let instances = group
                    .instances
                    .into_iter()
                    .map(DocInstance::into_sim)
                    .collect();
                (
                    name,
                    SimFileGroup {
                        region: group.region,
                        instances,
                    },
                )
            })
            .collect();
        SimFile { groups }
    }
}

impl DocInstance {
    fn into_sim(self) -> SimInstance {
        SimInstance {
            id: self.id,
            private_ipv4: Some(self.private_ipv4),
            public_ipv4: self.public_ipv4,
            ipv6: self.ipv6,
            zone: Some(self.zone),
            state: match self.state {
                DocState::Pending => InstanceState::Pending,
                DocState::Running => InstanceState::Running,
                DocState::Terminating => InstanceState::Terminating,
            },
            health: if self.healthy {
                Health::Healthy
            } else {
                Health::Unhealthy
            },
            tags: self.tags,
        }
    }
}
