//! How a managed instance's `currentAction`, `instanceStatus` and
//! `instanceHealth` map onto the core's state and health.
//!
//! GCP has no lifecycle hooks, so an instance that is going away leaves the
//! mesh at first sight: early removal is the drain.

use meshmirror_provider::{Health, InstanceState};

/// Actions after which the instance is gone or out of service.
const LEAVING_ACTIONS: &[&str] = &[
    "DELETING",
    "ABANDONING",
    "RECREATING",
    "RESTARTING",
    "STOPPING",
    "SUSPENDING",
];

/// Actions of an instance that is not serving yet. `STARTING` and
/// `RESUMING` bring a stopped or suspended instance back, so they wait too.
const ARRIVING_ACTIONS: &[&str] = &[
    "CREATING",
    "CREATING_WITHOUT_RETRIES",
    "VERIFYING",
    "REFRESHING",
    "STARTING",
    "RESUMING",
];

/// Instance statuses on the way out (`TERMINATED` is GCE's word for stopped
/// as well as deleted: either way it serves nothing).
const LEAVING_STATUSES: &[&str] = &[
    "STOPPING",
    "TERMINATED",
    "SUSPENDING",
    "PENDING_STOP",
    "DEPROVISIONING",
];

const ARRIVING_STATUSES: &[&str] = &["PROVISIONING", "STAGING", "PENDING", "REPAIRING"];

const STOPPED_STATUSES: &[&str] = &["STOPPED", "SUSPENDED"];

/// The core's state for a managed instance. A leaving action or status wins
/// over everything; only `NONE` (or no action) with `RUNNING` is Running.
pub fn instance_state(action: Option<&str>, status: Option<&str>) -> InstanceState {
    let action = action.unwrap_or("NONE");
    let is = |set: &[&str], value: Option<&str>| value.is_some_and(|v| set.contains(&v));
    if is(LEAVING_ACTIONS, Some(action)) || is(LEAVING_STATUSES, status) {
        InstanceState::Terminating
    } else if is(ARRIVING_ACTIONS, Some(action)) || is(ARRIVING_STATUSES, status) {
        InstanceState::Pending
    } else if is(STOPPED_STATUSES, status) {
        InstanceState::Stopped
    } else if action == "NONE" && status == Some("RUNNING") {
        InstanceState::Running
    } else {
        // No status yet (the VM does not exist yet), or values newer than
        // this code: not serving.
        InstanceState::Pending
    }
}

/// The group's view of the instance's health, from its autohealing health
/// checks (`instanceHealth[].detailedHealthState`). Any failing check makes
/// it unhealthy; all passing makes it healthy; none, or only unknown ones,
/// leave it unknown.
pub fn health<'a>(states: impl IntoIterator<Item = Option<&'a str>>) -> Health {
    let mut seen_healthy = false;
    let mut seen_unknown = false;
    for state in states {
        match state {
            Some("HEALTHY") => seen_healthy = true,
            Some("UNHEALTHY" | "TIMEOUT" | "DRAINING") => return Health::Unhealthy,
            _ => seen_unknown = true,
        }
    }
    if seen_healthy && !seen_unknown {
        Health::Healthy
    } else {
        Health::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InstanceState::*;

    #[test]
    fn the_state_table_of_the_issue() {
        let cases: &[(Option<&str>, Option<&str>, InstanceState)] = &[
            (Some("NONE"), Some("RUNNING"), Running),
            (None, Some("RUNNING"), Running),
            (Some("CREATING"), None, Pending),
            (Some("CREATING_WITHOUT_RETRIES"), None, Pending),
            (Some("VERIFYING"), Some("RUNNING"), Pending),
            (Some("REFRESHING"), Some("RUNNING"), Pending),
            (Some("NONE"), Some("PROVISIONING"), Pending),
            (Some("NONE"), Some("STAGING"), Pending),
            (Some("DELETING"), Some("RUNNING"), Terminating),
            (Some("ABANDONING"), Some("RUNNING"), Terminating),
            (Some("RECREATING"), Some("RUNNING"), Terminating),
            (Some("RESTARTING"), Some("RUNNING"), Terminating),
            (Some("STOPPING"), Some("RUNNING"), Terminating),
            (Some("SUSPENDING"), Some("RUNNING"), Terminating),
            (Some("NONE"), Some("STOPPING"), Terminating),
            (Some("NONE"), Some("TERMINATED"), Terminating),
            // A leaving action wins over an arriving status and vice versa.
            (Some("DELETING"), Some("PROVISIONING"), Terminating),
            (Some("CREATING"), Some("TERMINATED"), Terminating),
            (Some("NONE"), Some("STOPPED"), Stopped),
            (Some("NONE"), Some("SUSPENDED"), Stopped),
            (Some("STARTING"), Some("STOPPED"), Pending),
            (Some("NONE"), None, Pending),
            (Some("SOMETHING_NEW"), Some("RUNNING"), Pending),
        ];
        for (action, status, want) in cases {
            assert_eq!(
                instance_state(*action, *status),
                *want,
                "action {action:?} status {status:?}"
            );
        }
    }

    #[test]
    fn health_from_the_health_checks() {
        assert_eq!(health([]), Health::Unknown);
        assert_eq!(health([Some("HEALTHY")]), Health::Healthy);
        assert_eq!(health([Some("HEALTHY"), Some("HEALTHY")]), Health::Healthy);
        assert_eq!(
            health([Some("HEALTHY"), Some("TIMEOUT")]),
            Health::Unhealthy
        );
        assert_eq!(health([Some("UNHEALTHY")]), Health::Unhealthy);
        assert_eq!(health([Some("DRAINING")]), Health::Unhealthy);
        assert_eq!(health([Some("HEALTHY"), Some("UNKNOWN")]), Health::Unknown);
        assert_eq!(health([None]), Health::Unknown);
    }
}
