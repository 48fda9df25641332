//! From what Auto Scaling and EC2 report to an [`Instance`]: lifecycle state
//! mapping, health, addresses and tags. Pure: the SDK types are converted to
//! the plain structs here before.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use meshmirror_provider::{Health, Instance, InstanceState, LifecycleKind};

/// An instance as `DescribeAutoScalingGroups` lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AsgMember {
    pub id: String,
    pub zone: Option<String>,
    pub lifecycle_state: String,
    pub health_status: Option<String>,
}

/// What `DescribeInstances` says about an instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ec2Facts {
    pub private_ipv4: Option<Ipv4Addr>,
    pub public_ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub zone: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// `pending`, `running`, `stopping`, `stopped`, `shutting-down`, `terminated`.
    pub state: Option<String>,
    pub spot: bool,
}

/// Where an Auto Scaling lifecycle state puts an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    /// In the group as far as the mesh cares; `waiting` names the hook kind
    /// holding it (`Pending:Wait`, `Terminating:Wait`).
    Member {
        state: InstanceState,
        waiting: Option<LifecycleKind>,
    },
    /// Standby (and warm-pool states): out of the group's service.
    NotMember,
}

/// Maps an Auto Scaling lifecycle state (issue 4's table).
pub fn membership(lifecycle_state: &str) -> Membership {
    let member = |state, waiting| Membership::Member { state, waiting };
    match lifecycle_state {
        "InService" => member(InstanceState::Running, None),
        "Pending:Wait" => member(InstanceState::Pending, Some(LifecycleKind::Launch)),
        "Pending" | "Pending:Proceed" => member(InstanceState::Pending, None),
        "Terminating:Wait" => member(InstanceState::Terminating, Some(LifecycleKind::Terminate)),
        "Terminating" | "Terminating:Proceed" | "Terminated" | "Detaching" | "Detached" => {
            member(InstanceState::Terminating, None)
        }
        "Standby" | "EnteringStandby" => Membership::NotMember,
        s if s.starts_with("Warmed:") => Membership::NotMember,
        // A state added after this was written: keep it out of the mesh
        // (Pending never gets entries unless our launch hook holds it).
        _ => member(InstanceState::Pending, None),
    }
}

pub fn health(status: Option<&str>) -> Health {
    match status {
        Some(s) if s.eq_ignore_ascii_case("healthy") => Health::Healthy,
        Some(s) if s.eq_ignore_ascii_case("unhealthy") => Health::Unhealthy,
        _ => Health::Unknown,
    }
}

/// Whether EC2 says the instance is on its way out, whatever Auto Scaling
/// still reports (its view lags EC2's by a health-check interval).
pub fn ec2_leaving(state: Option<&str>) -> bool {
    matches!(
        state,
        Some("stopping" | "stopped" | "shutting-down" | "terminated")
    )
}

/// Whether a spot request status code (`DescribeSpotInstanceRequests`)
/// says EC2 is about to interrupt the instance: the instance still runs,
/// but not for long.
pub fn spot_marked(status_code: Option<&str>) -> bool {
    matches!(
        status_code,
        Some("marked-for-termination" | "marked-for-stop" | "marked-for-hibernation")
    )
}

/// One member's [`Instance`], without its lifecycle action (the caller adds
/// it). `spot_status` is the status code of the instance's spot request,
/// when one was asked for (only after a spot interruption warning: the
/// warning is a hint, EC2's own word is what takes a VM out).
pub fn instance(
    region: &str,
    member: &AsgMember,
    ec2: Option<&Ec2Facts>,
    base: InstanceState,
    spot_status: Option<&str>,
) -> Instance {
    let empty = Ec2Facts::default();
    let facts = ec2.unwrap_or(&empty);
    let mut state = base;
    if state == InstanceState::Running
        && (ec2_leaving(facts.state.as_deref()) || (facts.spot && spot_marked(spot_status)))
    {
        state = InstanceState::Terminating;
    }
    Instance {
        id: member.id.clone(),
        private_ipv4: facts.private_ipv4,
        public_ipv4: facts.public_ipv4,
        ipv6: facts.ipv6,
        region: Some(region.to_string()),
        zone: facts.zone.clone().or_else(|| member.zone.clone()),
        state,
        health: health(member.health_status.as_deref()),
        tags: facts.tags.clone(),
        lifecycle: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_states_map_as_the_issue_says() {
        use InstanceState::*;
        let member = |state, waiting| Membership::Member { state, waiting };
        let cases = [
            ("InService", member(Running, None)),
            ("Pending", member(Pending, None)),
            ("Pending:Wait", member(Pending, Some(LifecycleKind::Launch))),
            ("Pending:Proceed", member(Pending, None)),
            ("Terminating", member(Terminating, None)),
            (
                "Terminating:Wait",
                member(Terminating, Some(LifecycleKind::Terminate)),
            ),
            ("Terminating:Proceed", member(Terminating, None)),
            ("Terminated", member(Terminating, None)),
            ("Detaching", member(Terminating, None)),
            ("Detached", member(Terminating, None)),
            ("Standby", Membership::NotMember),
            ("EnteringStandby", Membership::NotMember),
            ("Warmed:Running", Membership::NotMember),
        ];
        for (aws, want) in cases {
            assert_eq!(membership(aws), want, "{aws}");
        }
    }

    #[test]
    fn health_from_health_status() {
        assert_eq!(health(Some("Healthy")), Health::Healthy);
        assert_eq!(health(Some("HEALTHY")), Health::Healthy);
        assert_eq!(health(Some("Unhealthy")), Health::Unhealthy);
        assert_eq!(health(None), Health::Unknown);
    }

    fn member() -> AsgMember {
        AsgMember {
            id: "i-1".into(),
            zone: Some("us-east-1a".into()),
            lifecycle_state: "InService".into(),
            health_status: Some("Healthy".into()),
        }
    }

    #[test]
    fn spot_request_statuses_that_mean_an_interruption() {
        let cases = [
            (Some("marked-for-termination"), true),
            (Some("marked-for-stop"), true),
            (Some("marked-for-hibernation"), true),
            (Some("fulfilled"), false),
            (Some("request-canceled-and-instance-running"), false),
            (Some("pending-evaluation"), false),
            (None, false),
        ];
        for (code, want) in cases {
            assert_eq!(spot_marked(code), want, "{code:?}");
        }
    }

    #[test]
    fn only_ec2_confirms_a_departure() {
        let running = Ec2Facts {
            state: Some("running".into()),
            ..Default::default()
        };
        let spot = Ec2Facts {
            spot: true,
            ..running.clone()
        };
        let marked = Some("marked-for-termination");
        // (facts, spot request status, want)
        let cases = [
            (&running, None, InstanceState::Running),
            (&spot, None, InstanceState::Running),
            (&spot, Some("fulfilled"), InstanceState::Running),
            (&spot, marked, InstanceState::Terminating),
            (&spot, Some("marked-for-stop"), InstanceState::Terminating),
            // A spot status for an instance EC2 calls on-demand is not believed.
            (&running, marked, InstanceState::Running),
        ];
        for (i, (facts, status, want)) in cases.into_iter().enumerate() {
            let got = instance("r", &member(), Some(facts), InstanceState::Running, status);
            assert_eq!(
                got.state, want,
                "case {i}: spot {} status {status:?}",
                facts.spot
            );
        }
        for s in ["stopping", "shutting-down", "stopped", "terminated"] {
            let facts = Ec2Facts {
                state: Some(s.into()),
                ..Default::default()
            };
            let i = instance("r", &member(), Some(&facts), InstanceState::Running, None);
            assert_eq!(i.state, InstanceState::Terminating, "{s}");
        }
    }

    #[test]
    fn addresses_zone_and_tags_come_from_ec2() {
        let facts = Ec2Facts {
            private_ipv4: Some(Ipv4Addr::new(10, 0, 0, 1)),
            public_ipv4: Some(Ipv4Addr::new(54, 0, 0, 1)),
            ipv6: Some("2600:1f18::1".parse().unwrap()),
            zone: Some("us-east-1b".into()),
            tags: BTreeMap::from([("team".into(), "a".into())]),
            state: Some("running".into()),
            spot: false,
        };
        let i = instance(
            "us-east-1",
            &member(),
            Some(&facts),
            InstanceState::Running,
            None,
        );
        assert_eq!(i.private_ipv4, facts.private_ipv4);
        assert_eq!(i.public_ipv4, facts.public_ipv4);
        assert_eq!(i.ipv6, facts.ipv6);
        assert_eq!(i.zone.as_deref(), Some("us-east-1b"));
        assert_eq!(i.region.as_deref(), Some("us-east-1"));
        assert_eq!(i.tags, facts.tags);
        assert_eq!(i.health, Health::Healthy);
        let bare = instance("us-east-1", &member(), None, InstanceState::Pending, None);
        assert_eq!(bare.zone.as_deref(), Some("us-east-1a"));
        assert_eq!(bare.private_ipv4, None);
    }
}
