//! The mock's world: managed instance groups and their VMs, and the
//! operations that change them.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Where a group lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Zone(String),
    Region(String),
}

/// A managed instance group's identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MigKey {
    pub project: String,
    pub scope: Scope,
    pub name: String,
}

impl MigKey {
    pub fn zonal(project: &str, zone: &str, name: &str) -> MigKey {
        MigKey {
            project: project.into(),
            scope: Scope::Zone(zone.into()),
            name: name.into(),
        }
    }

    pub fn regional(project: &str, region: &str, name: &str) -> MigKey {
        MigKey {
            project: project.into(),
            scope: Scope::Region(region.into()),
            name: name.into(),
        }
    }
}

/// What a group's new VMs look like.
#[derive(Clone, Debug, Default)]
pub struct Template {
    pub labels: BTreeMap<String, String>,
    /// Give each VM a one-to-one NAT address.
    pub public_ip: bool,
    /// Give each VM an internal IPv6 address (`ipv6Address`).
    pub ipv6: bool,
    /// Give each VM an external IPv6 address only (`ipv6AccessConfigs`).
    pub external_ipv6: bool,
    /// The `detailedHealthState` of new VMs' autohealing check, if any.
    pub health: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Mig {
    pub key: MigKey,
    pub base_instance_name: String,
    pub zones: Vec<String>,
    pub template: Template,
    pub id: u64,
}

/// One VM. `provisioned` is false while a group is still CREATING it: the
/// group lists it, but no instance exists yet.
#[derive(Clone, Debug)]
pub struct Vm {
    pub id: u64,
    pub project: String,
    pub zone: String,
    pub name: String,
    pub status: String,
    pub action: String,
    pub provisioned: bool,
    /// Whether instance listings show it (see `GceControl::set_listed`).
    pub listed: bool,
    pub mig: Option<MigKey>,
    pub network_ip: Ipv4Addr,
    pub nat_ip: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub external_ipv6: Option<Ipv6Addr>,
    pub labels: BTreeMap<String, String>,
    pub health: Option<String>,
}

#[derive(Debug, Default)]
pub struct World {
    pub migs: BTreeMap<MigKey, Mig>,
    /// By (project, zone, name): the order of every listing.
    pub vms: BTreeMap<(String, String, String), Vm>,
    /// Zones that exist without any VM (they show up in aggregated lists).
    pub extra_zones: Vec<(String, String)>,
    next_id: u64,
    next_ip: u32,
}

/// Four characters from a counter, like a group's random VM suffix.
fn suffix(n: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut n = n;
    let mut out = [b'a'; 4];
    for c in out.iter_mut().rev() {
        *c = ALPHABET[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl World {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        // GCE ids are large unsigned 64-bit numbers, sent as strings.
        4_006_034_190_819_000_000 + self.next_id
    }

    pub fn add_mig(&mut self, key: MigKey, zones: Vec<String>, template: Template) {
        let id = self.id();
        let base_instance_name = key.name.clone();
        self.migs.insert(
            key.clone(),
            Mig {
                key,
                base_instance_name,
                zones,
                template,
                id,
            },
        );
    }

    pub fn members(&self, key: &MigKey) -> Vec<&Vm> {
        self.vms
            .values()
            .filter(|vm| vm.mig.as_ref() == Some(key))
            .collect()
    }

    /// Adds a VM in `zone`, managed by `mig` or standalone.
    pub fn add_vm(
        &mut self,
        project: &str,
        zone: &str,
        name: &str,
        mig: Option<&MigKey>,
        template: &Template,
    ) -> String {
        let id = self.id();
        self.next_ip += 1;
        let n = self.next_ip;
        let vm = Vm {
            id,
            project: project.into(),
            zone: zone.into(),
            name: name.into(),
            status: "RUNNING".into(),
            action: "NONE".into(),
            provisioned: true,
            listed: true,
            mig: mig.cloned(),
            network_ip: Ipv4Addr::new(10, 128, (n >> 8) as u8, n as u8),
            nat_ip: template
                .public_ip
                .then(|| Ipv4Addr::new(34, 1, (n >> 8) as u8, n as u8)),
            ipv6: template
                .ipv6
                .then(|| Ipv6Addr::new(0xfd20, 0xb, 0, 0, 0, 0, 0, n as u16)),
            external_ipv6: template
                .external_ipv6
                .then(|| Ipv6Addr::new(0x2600, 0x1900, 0x4000, 0, 0, 0, 0, n as u16)),
            labels: template.labels.clone(),
            health: template.health.clone(),
        };
        self.vms
            .insert((project.into(), zone.into(), name.into()), vm);
        name.into()
    }

    /// Grows or shrinks the group to `size` live members. New VMs are
    /// RUNNING; the newest surplus ones get `DELETING` (gone at `settle`).
    pub fn resize(&mut self, key: &MigKey, size: usize) -> Option<Vec<String>> {
        let mig = self.migs.get(key)?.clone();
        let live: Vec<(String, String)> = self
            .members(key)
            .into_iter()
            .filter(|vm| vm.action != "DELETING")
            .map(|vm| (vm.zone.clone(), vm.name.clone()))
            .collect();
        let mut changed = Vec::new();
        if size > live.len() {
            for i in live.len()..size {
                let zone = mig.zones[i % mig.zones.len()].clone();
                let name = loop {
                    let candidate = format!(
                        "{}-{}",
                        mig.base_instance_name,
                        suffix(self.next_id * 7919 + i as u64)
                    );
                    if !self.vms.contains_key(&(
                        key.project.clone(),
                        zone.clone(),
                        candidate.clone(),
                    )) {
                        break candidate;
                    }
                    self.next_id += 1;
                };
                changed.push(self.add_vm(&key.project, &zone, &name, Some(key), &mig.template));
            }
        } else {
            for (zone, name) in live.iter().skip(size) {
                if let Some(vm) =
                    self.vms
                        .get_mut(&(key.project.clone(), zone.clone(), name.clone()))
                {
                    vm.action = "DELETING".into();
                    changed.push(name.clone());
                }
            }
        }
        Some(changed)
    }

    pub fn vm_mut(&mut self, name: &str) -> Option<&mut Vm> {
        self.vms.values_mut().find(|vm| vm.name == name)
    }

    /// Finishes what the groups were doing: DELETING VMs are gone, CREATING
    /// and VERIFYING ones run, PROVISIONING and STAGING ones run, every VM
    /// is listed.
    pub fn settle(&mut self) {
        self.vms.retain(|_, vm| vm.action != "DELETING");
        for vm in self.vms.values_mut() {
            if vm.mig.is_some() && vm.action != "NONE" {
                vm.action = "NONE".into();
            }
            vm.provisioned = true;
            vm.listed = true;
            if matches!(vm.status.as_str(), "PROVISIONING" | "STAGING") {
                vm.status = "RUNNING".into();
            }
        }
    }

    /// Every zone the world knows, by project.
    pub fn zones(&self, project: &str) -> Vec<String> {
        let mut zones: Vec<String> = self
            .migs
            .values()
            .filter(|m| m.key.project == project)
            .flat_map(|m| m.zones.clone())
            .chain(
                self.vms
                    .values()
                    .filter(|vm| vm.project == project)
                    .map(|vm| vm.zone.clone()),
            )
            .chain(
                self.extra_zones
                    .iter()
                    .filter(|(p, _)| p == project)
                    .map(|(_, z)| z.clone()),
            )
            .collect();
        zones.sort();
        zones.dedup();
        zones
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_spreads_a_regional_group_and_marks_the_surplus_deleting() {
        let mut w = World::default();
        let key = MigKey::regional("p", "us-central1", "api");
        w.add_mig(
            key.clone(),
            vec!["us-central1-a".into(), "us-central1-b".into()],
            Template::default(),
        );
        let made = w.resize(&key, 4).unwrap();
        assert_eq!(made.len(), 4);
        let zones: Vec<&str> = w.members(&key).iter().map(|v| v.zone.as_str()).collect();
        assert_eq!(zones.iter().filter(|z| **z == "us-central1-a").count(), 2);
        assert!(made.iter().all(|n| n.starts_with("api-") && n.len() == 8));
        let gone = w.resize(&key, 1).unwrap();
        assert_eq!(gone.len(), 3);
        assert_eq!(w.members(&key).len(), 4);
        w.settle();
        assert_eq!(w.members(&key).len(), 1);
        assert_eq!(suffix(0), "aaaa");
        assert_ne!(suffix(1), suffix(2));
    }
}
