//! The mock's cloud: scale sets in both orchestration modes, their VMs, NICs
//! and public IPs, and the changes a test (or an ARM control call) makes.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// How a scale set manages its VMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Uniform,
    Flexible,
}

/// The state new VMs start in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Launch {
    /// `Succeeded` + `PowerState/running` at once.
    #[default]
    Running,
    /// `Creating` + `PowerState/starting` until [`super::ArmControl::settle`].
    Creating,
}

/// A scale set to create.
#[derive(Clone, Debug)]
pub struct ScaleSetSpec {
    pub subscription: String,
    pub resource_group: String,
    pub name: String,
    pub mode: Mode,
    pub location: String,
    /// Zones new VMs are spread over, round robin; empty: regional.
    pub zones: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub capacity: u32,
    /// Each VM gets a public IPv4 on its primary IP configuration.
    pub public_ip: bool,
    /// Each VM gets a second (IPv6) IP configuration.
    pub ipv6: bool,
    /// The application health extension is installed: VMs report health.
    pub health_extension: bool,
    pub launch: Launch,
}

impl ScaleSetSpec {
    fn new(subscription: &str, resource_group: &str, name: &str, mode: Mode) -> Self {
        ScaleSetSpec {
            subscription: subscription.into(),
            resource_group: resource_group.into(),
            name: name.into(),
            mode,
            location: "westeurope".into(),
            zones: Vec::new(),
            tags: BTreeMap::new(),
            capacity: 0,
            public_ip: false,
            ipv6: false,
            health_extension: false,
            launch: Launch::Running,
        }
    }
    pub fn uniform(subscription: &str, resource_group: &str, name: &str) -> Self {
        Self::new(subscription, resource_group, name, Mode::Uniform)
    }
    pub fn flexible(subscription: &str, resource_group: &str, name: &str) -> Self {
        Self::new(subscription, resource_group, name, Mode::Flexible)
    }
    pub fn capacity(mut self, n: u32) -> Self {
        self.capacity = n;
        self
    }
    pub fn zones(mut self, zones: &[&str]) -> Self {
        self.zones = zones.iter().map(|z| z.to_string()).collect();
        self
    }
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }
    pub fn public_ip(mut self) -> Self {
        self.public_ip = true;
        self
    }
    pub fn ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }
    pub fn health_extension(mut self) -> Self {
        self.health_extension = true;
        self
    }
    pub fn launching(mut self) -> Self {
        self.launch = Launch::Creating;
        self
    }

    pub fn id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/{}",
            self.subscription, self.resource_group, self.name
        )
    }
}

/// One VM of a scale set (or a plain VM of a resource group).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockVm {
    pub name: String,
    /// Uniform members: "0", "1", ...
    pub instance_id: Option<String>,
    pub vm_id: String,
    /// `Creating`, `Succeeded`, `Updating`, `Deleting`, `Failed`.
    pub provisioning_state: String,
    /// `starting`, `running`, `stopping`, `stopped`, `deallocating`, `deallocated`.
    pub power_state: String,
    /// `healthy`, `unhealthy`, `initializing`; None: no health extension.
    pub health: Option<String>,
    pub zone: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub private_ipv4: Ipv4Addr,
    pub public_ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

#[derive(Clone, Debug)]
pub struct SetState {
    pub spec: ScaleSetSpec,
    pub next_instance: u64,
    /// In creation order.
    pub vms: Vec<MockVm>,
}

/// A VM of a resource group that belongs to no scale set.
#[derive(Clone, Debug)]
pub struct StandaloneVm {
    pub subscription: String,
    pub resource_group: String,
    pub vm: MockVm,
}

#[derive(Debug, Default)]
pub struct Cloud {
    /// By scale set name (unique within one mock).
    pub sets: BTreeMap<String, SetState>,
    pub standalone: Vec<StandaloneVm>,
    next_address: u32,
    next_vm: u64,
}

impl Cloud {
    fn next_addresses(
        &mut self,
        public: bool,
        v6: bool,
    ) -> (Ipv4Addr, Option<Ipv4Addr>, Option<Ipv6Addr>) {
        let n = self.next_address + 4;
        self.next_address += 1;
        let [_, b, c, d] = n.to_be_bytes();
        (
            Ipv4Addr::new(10, b, c, d),
            public.then_some(Ipv4Addr::new(20, b, c, d)),
            v6.then(|| Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, (n >> 16) as u16, n as u16)),
        )
    }

    fn new_vm(&mut self, set: &str) -> Option<MockVm> {
        let spec = self.sets.get(set)?.spec.clone();
        let (private, public, v6) = self.next_addresses(spec.public_ip, spec.ipv6);
        self.next_vm += 1;
        let serial = self.next_vm;
        let state = self.sets.get_mut(set)?;
        let index = state.next_instance;
        state.next_instance += 1;
        let (name, instance_id) = match spec.mode {
            Mode::Uniform => (format!("{}_{index}", spec.name), Some(index.to_string())),
            Mode::Flexible => (
                format!(
                    "{}_{:08x}",
                    spec.name,
                    serial.wrapping_mul(0x9e37_79b9) as u32
                ),
                None,
            ),
        };
        let zone =
            (!spec.zones.is_empty()).then(|| spec.zones[index as usize % spec.zones.len()].clone());
        let (provisioning, power) = match spec.launch {
            Launch::Running => ("Succeeded", "running"),
            Launch::Creating => ("Creating", "starting"),
        };
        Some(MockVm {
            name,
            instance_id,
            vm_id: format!("00000000-0000-4000-8000-{serial:012x}"),
            provisioning_state: provisioning.into(),
            power_state: power.into(),
            health: spec.health_extension.then(|| match spec.launch {
                Launch::Running => "healthy".to_string(),
                Launch::Creating => "initializing".to_string(),
            }),
            zone,
            tags: BTreeMap::new(),
            private_ipv4: private,
            public_ipv4: public,
            ipv6: v6,
        })
    }

    pub fn create(&mut self, spec: ScaleSetSpec) {
        let capacity = spec.capacity;
        let name = spec.name.clone();
        self.sets.insert(
            name.clone(),
            SetState {
                spec,
                next_instance: 0,
                vms: Vec::new(),
            },
        );
        self.scale(&name, capacity);
    }

    /// Adds VMs, or removes the newest ones at once; VMs already `Deleting`
    /// do not count. Returns false for an unknown set.
    pub fn scale(&mut self, set: &str, capacity: u32) -> bool {
        let Some(state) = self.sets.get_mut(set) else {
            return false;
        };
        state.spec.capacity = capacity;
        loop {
            let state = &self.sets[set];
            let live = state
                .vms
                .iter()
                .filter(|v| v.provisioning_state != "Deleting")
                .count() as u32;
            if live == capacity {
                return true;
            }
            if live < capacity {
                let Some(vm) = self.new_vm(set) else {
                    return false;
                };
                if let Some(s) = self.sets.get_mut(set) {
                    s.vms.push(vm);
                }
            } else if let Some(s) = self.sets.get_mut(set) {
                let newest = s
                    .vms
                    .iter()
                    .rposition(|v| v.provisioning_state != "Deleting");
                if let Some(i) = newest {
                    s.vms.remove(i);
                }
            }
        }
    }

    /// Marks VMs `Deleting` (still listed until [`Cloud::settle`]).
    pub fn mark_deleting(&mut self, set: &str, pred: impl Fn(&MockVm) -> bool) -> usize {
        let Some(state) = self.sets.get_mut(set) else {
            return 0;
        };
        let mut n = 0;
        for vm in state.vms.iter_mut().filter(|v| pred(v)) {
            vm.provisioning_state = "Deleting".into();
            n += 1;
        }
        state.spec.capacity = state
            .vms
            .iter()
            .filter(|v| v.provisioning_state != "Deleting")
            .count() as u32;
        n
    }

    /// Finishes every transition: `Deleting` VMs disappear, `Creating` ones run.
    pub fn settle(&mut self) {
        for state in self.sets.values_mut() {
            state.vms.retain(|v| v.provisioning_state != "Deleting");
            for vm in &mut state.vms {
                if vm.provisioning_state == "Creating" {
                    vm.provisioning_state = "Succeeded".into();
                    vm.power_state = "running".into();
                    if vm.health.is_some() {
                        vm.health = Some("healthy".into());
                    }
                }
            }
        }
    }

    pub fn add_standalone(&mut self, subscription: &str, resource_group: &str, name: &str) {
        let (private, _, _) = self.next_addresses(false, false);
        self.next_vm += 1;
        self.standalone.push(StandaloneVm {
            subscription: subscription.into(),
            resource_group: resource_group.into(),
            vm: MockVm {
                name: name.into(),
                instance_id: None,
                vm_id: format!("00000000-0000-4000-8000-{:012x}", self.next_vm),
                provisioning_state: "Succeeded".into(),
                power_state: "running".into(),
                health: None,
                zone: None,
                tags: BTreeMap::new(),
                private_ipv4: private,
                public_ipv4: None,
                ipv6: None,
            },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_out_and_in_keeps_ids_unique_and_removes_the_newest() {
        let mut cloud = Cloud::default();
        cloud.create(
            ScaleSetSpec::uniform("s", "rg", "web")
                .capacity(3)
                .zones(&["1", "2"]),
        );
        let names: Vec<String> = cloud.sets["web"]
            .vms
            .iter()
            .map(|v| v.name.clone())
            .collect();
        assert_eq!(names, ["web_0", "web_1", "web_2"]);
        assert_eq!(cloud.sets["web"].vms[1].zone.as_deref(), Some("2"));
        cloud.scale("web", 1);
        assert_eq!(cloud.sets["web"].vms.len(), 1);
        cloud.scale("web", 2);
        assert_eq!(
            cloud.sets["web"].vms[1].name, "web_3",
            "instance ids are not reused"
        );
        let ips: std::collections::BTreeSet<_> = cloud.sets["web"]
            .vms
            .iter()
            .map(|v| v.private_ipv4)
            .collect();
        assert_eq!(ips.len(), 2);
    }

    #[test]
    fn deleting_vms_stay_listed_until_settled() {
        let mut cloud = Cloud::default();
        cloud.create(
            ScaleSetSpec::flexible("s", "rg", "flex")
                .capacity(2)
                .launching(),
        );
        let first = cloud.sets["flex"].vms[0].name.clone();
        assert_eq!(cloud.mark_deleting("flex", |v| v.name == first), 1);
        assert_eq!(cloud.sets["flex"].vms.len(), 2);
        cloud.settle();
        assert_eq!(cloud.sets["flex"].vms.len(), 1);
        assert_eq!(cloud.sets["flex"].vms[0].power_state, "running");
    }
}
