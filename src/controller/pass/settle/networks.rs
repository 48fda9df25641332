//! The networks' part of settling a synced pass: the `NetworksReachable`
//! condition and a Warning when a network the entries are on has no
//! gateway. Entries are written all the same: a gateway may come later, and
//! clients on the same network reach them without one.

use std::collections::BTreeSet;

use super::{Note, has_reason, set_condition};
use crate::core::networks::{self, NETWORK_LABEL, NetworkView};
use crate::core::redact;
use crate::crd::ScalingGroupMirrorStatus;

/// The condition's type.
pub const CONDITION: &str = "NetworksReachable";
/// Its reason when a network has no way in.
pub const WITHOUT_GATEWAY: &str = "NetworkWithoutGateway";

/// Sets or clears the condition; returns the Warning to record, if the
/// condition just turned to it.
pub fn settle(
    status: &mut ScalingGroupMirrorStatus,
    old: &ScalingGroupMirrorStatus,
    used: &BTreeSet<String>,
    view: Option<&Result<NetworkView, String>>,
    now: &str,
) -> Option<Note> {
    let (view, used) = match view {
        Some(view) if !used.is_empty() => (view, used),
        _ => {
            status.conditions.retain(|c| c.type_ != CONDITION);
            return None;
        }
    };
    let (ok, reason, message) = match view {
        Err(err) => (false, "GatewaysUnknown", redact::for_tenants(err)),
        Ok(view) => match networks::unreachable(used, view).as_slice() {
            [] => (
                true,
                "Reachable",
                format!(
                    "{} reachable (the cluster's own network or a gateway)",
                    list(used.iter())
                ),
            ),
            missing => (
                false,
                WITHOUT_GATEWAY,
                format!(
                    "no gateway for network {}: no Service labelled {NETWORK_LABEL}=<network> in namespace {}, and the cluster's own network is {}; entries are written, but only clients on the same network reach them",
                    list(missing.iter()),
                    view.namespace,
                    view.own
                        .as_deref()
                        .map_or("not labelled".to_string(), |n| format!("{n:?}")),
                ),
            ),
        },
    };
    let note = (!ok && !has_reason(old, CONDITION, reason))
        .then(|| Note::warning(WITHOUT_GATEWAY, message.clone()))
        .filter(|_| reason == WITHOUT_GATEWAY);
    set_condition(status, old, CONDITION, (ok, reason, &message), now);
    note
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    names
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::networks::Gateway;

    /// (networks used, the view, the condition, a Warning)
    type Case<'a> = (
        &'a BTreeSet<String>,
        Option<Result<NetworkView, String>>,
        Option<(&'a str, &'a str)>,
        bool,
    );

    fn view(own: Option<&str>, gateways: &[&str]) -> Result<NetworkView, String> {
        Ok(NetworkView {
            own: own.map(str::to_string),
            gateways: gateways
                .iter()
                .map(|n| Gateway {
                    network: n.to_string(),
                    namespace: "istio-system".into(),
                    name: format!("gw-{n}"),
                    port: 15443,
                })
                .collect(),
            namespace: "istio-system".into(),
        })
    }

    #[test]
    fn the_condition_names_the_networks_without_a_gateway_and_warns_once() {
        let used: BTreeSet<String> = ["vm-a".to_string(), "vm-b".to_string()].into();
        let none = BTreeSet::new();
        // (used, view, condition (status, reason) or None, a Warning)
        let cases: Vec<Case<'_>> = vec![
            (&none, Some(view(None, &[])), None, false),
            (&used, None, None, false),
            (
                &used,
                Some(view(Some("vm-a"), &["vm-b"])),
                Some(("True", "Reachable")),
                false,
            ),
            (
                &used,
                Some(view(Some("net1"), &["vm-b"])),
                Some(("False", WITHOUT_GATEWAY)),
                true,
            ),
            (
                &used,
                Some(Err("forbidden".into())),
                Some(("False", "GatewaysUnknown")),
                false,
            ),
        ];
        for (i, (used, view, want, warns)) in cases.into_iter().enumerate() {
            let mut status = ScalingGroupMirrorStatus::default();
            let old = ScalingGroupMirrorStatus::default();
            let note = settle(&mut status, &old, used, view.as_ref(), "now");
            let got = super::super::shown(&status, CONDITION);
            assert_eq!(got, want, "case {i}");
            assert_eq!(note.is_some(), warns, "case {i}");
            if let Some(note) = note {
                assert!(
                    note.message.contains("\"vm-a\"") && !note.message.contains("\"vm-b\""),
                    "{}",
                    note.message
                );
                // Already reported: no second Warning.
                let again = settle(&mut status.clone(), &status, used, view.as_ref(), "later");
                assert!(again.is_none());
            }
        }
    }
}
