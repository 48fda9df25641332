//! The mock's JSON, shaped after the Compute Engine v1 discovery document
//! and the captured answers in `fixtures/gcp/` (Libcloud's GCE fixtures).

use serde_json::{Value, json};

use super::state::{Mig, MigKey, Scope, Vm};

/// A fixed creation time: answers are repeatable.
const CREATED: &str = "2026-01-05T10:45:23.351-08:00";
const FINGERPRINT: &str = "42WmSpB8rSM=";

pub fn zone_url(base: &str, project: &str, zone: &str) -> String {
    format!("{base}projects/{project}/zones/{zone}")
}

pub fn region_of(zone: &str) -> &str {
    zone.rsplit_once('-').map_or(zone, |(r, _)| r)
}

pub fn mig_url(base: &str, key: &MigKey) -> String {
    match &key.scope {
        Scope::Zone(z) => format!(
            "{base}projects/{}/zones/{z}/instanceGroupManagers/{}",
            key.project, key.name
        ),
        Scope::Region(r) => format!(
            "{base}projects/{}/regions/{r}/instanceGroupManagers/{}",
            key.project, key.name
        ),
    }
}

fn template_url(base: &str, key: &MigKey) -> String {
    format!(
        "{base}projects/{}/global/instanceTemplates/{}-template",
        key.project, key.name
    )
}

pub fn instance(base: &str, vm: &Vm) -> Value {
    let zone = zone_url(base, &vm.project, &vm.zone);
    let region = region_of(&vm.zone);
    let mut nic = json!({
        "kind": "compute#networkInterface",
        "network": format!("{base}projects/{}/global/networks/default", vm.project),
        "subnetwork": format!("{base}projects/{}/regions/{region}/subnetworks/default", vm.project),
        "networkIP": vm.network_ip.to_string(),
        "name": "nic0",
        "fingerprint": FINGERPRINT,
        "stackType": if vm.ipv6.is_some() || vm.external_ipv6.is_some() { "IPV4_IPV6" } else { "IPV4_ONLY" },
    });
    if let Some(nat) = vm.nat_ip {
        nic["accessConfigs"] = json!([{
            "kind": "compute#accessConfig",
            "type": "ONE_TO_ONE_NAT",
            "name": "External NAT",
            "natIP": nat.to_string(),
            "networkTier": "PREMIUM",
        }]);
    }
    if let Some(v6) = vm.ipv6 {
        nic["ipv6Address"] = json!(v6.to_string());
        nic["internalIpv6PrefixLength"] = json!(96);
        nic["ipv6AccessType"] = json!("INTERNAL");
    }
    if let Some(v6) = vm.external_ipv6 {
        nic["ipv6AccessType"] = json!("EXTERNAL");
        nic["ipv6AccessConfigs"] = json!([{
            "kind": "compute#accessConfig",
            "type": "DIRECT_IPV6",
            "name": "external-ipv6",
            "externalIpv6": v6.to_string(),
            "externalIpv6PrefixLength": 96,
            "networkTier": "PREMIUM",
        }]);
    }
    let mut metadata = json!({"kind": "compute#metadata", "fingerprint": FINGERPRINT});
    if let Some(mig) = &vm.mig {
        metadata["items"] = json!([
            {"key": "created-by", "value": mig_url("", mig)},
            {"key": "instance-template", "value": template_url("", mig)},
        ]);
    }
    let mut out = json!({
        "kind": "compute#instance",
        "id": vm.id.to_string(),
        "creationTimestamp": CREATED,
        "name": vm.name,
        "tags": {"fingerprint": FINGERPRINT},
        "machineType": format!("{zone}/machineTypes/e2-medium"),
        "status": vm.status,
        "zone": zone,
        "canIpForward": false,
        "networkInterfaces": [nic],
        "disks": [{
            "kind": "compute#attachedDisk",
            "type": "PERSISTENT",
            "mode": "READ_WRITE",
            "source": format!("{zone}/disks/{}", vm.name),
            "deviceName": "persistent-disk-0",
            "index": 0,
            "boot": true,
            "autoDelete": true,
        }],
        "metadata": metadata,
        "selfLink": format!("{zone}/instances/{}", vm.name),
        "scheduling": {"onHostMaintenance": "MIGRATE", "automaticRestart": true, "preemptible": false},
        "cpuPlatform": "Intel Broadwell",
        "labelFingerprint": FINGERPRINT,
        "startRestricted": false,
        "deletionProtection": false,
        "fingerprint": FINGERPRINT,
    });
    if !vm.labels.is_empty() {
        out["labels"] = json!(vm.labels);
    }
    out
}

/// One entry of `listManagedInstances`. A VM still being created has no id
/// and no status yet.
pub fn managed_instance(base: &str, vm: &Vm) -> Value {
    let key = vm.mig.as_ref();
    let mut out = json!({
        "instance": format!("{}/instances/{}", zone_url(base, &vm.project, &vm.zone), vm.name),
        "name": vm.name,
        "currentAction": vm.action,
    });
    if let Some(key) = key {
        out["version"] = json!({"instanceTemplate": template_url(base, key)});
    }
    if vm.provisioned {
        out["id"] = json!(vm.id.to_string());
        out["instanceStatus"] = json!(vm.status);
        if let Some(health) = &vm.health {
            out["instanceHealth"] = json!([{
                "healthCheck": format!("{base}projects/{}/global/healthChecks/autohealing", vm.project),
                "detailedHealthState": health,
            }]);
        }
    }
    out
}

pub fn instance_group_manager(base: &str, mig: &Mig, members: &[&Vm]) -> Value {
    let key = &mig.key;
    let count = |action: &str| members.iter().filter(|v| v.action == action).count();
    let live = members.iter().filter(|v| v.action != "DELETING").count();
    let mut out = json!({
        "kind": "compute#instanceGroupManager",
        "id": mig.id.to_string(),
        "creationTimestamp": CREATED,
        "name": key.name,
        "instanceTemplate": template_url(base, key),
        "versions": [{"instanceTemplate": template_url(base, key)}],
        "baseInstanceName": mig.base_instance_name,
        "fingerprint": FINGERPRINT,
        "currentActions": {
            "none": count("NONE"),
            "creating": count("CREATING"),
            "creatingWithoutRetries": count("CREATING_WITHOUT_RETRIES"),
            "verifying": count("VERIFYING"),
            "recreating": count("RECREATING"),
            "deleting": count("DELETING"),
            "abandoning": count("ABANDONING"),
            "restarting": count("RESTARTING"),
            "refreshing": count("REFRESHING"),
            "resuming": count("RESUMING"),
            "starting": count("STARTING"),
            "stopping": count("STOPPING"),
            "suspending": count("SUSPENDING"),
        },
        "status": {"isStable": count("NONE") == members.len()},
        "targetSize": live,
        "selfLink": mig_url(base, key),
    });
    match &key.scope {
        Scope::Zone(z) => {
            out["zone"] = json!(zone_url(base, &key.project, z));
            out["instanceGroup"] = json!(format!(
                "{}/instanceGroups/{}",
                zone_url(base, &key.project, z),
                key.name
            ));
        }
        Scope::Region(r) => {
            let region = format!("{base}projects/{}/regions/{r}", key.project);
            out["instanceGroup"] = json!(format!("{region}/instanceGroups/{}", key.name));
            out["region"] = json!(region);
            out["distributionPolicy"] = json!({
                "zones": mig.zones.iter().map(|z| json!({"zone": zone_url(base, &key.project, z)})).collect::<Vec<_>>(),
                "targetShape": "EVEN",
            });
        }
    }
    out
}

/// The `warning` of a scope with nothing on this page, as the API words it.
pub fn no_results(scope: &str) -> Value {
    json!({
        "code": "NO_RESULTS_ON_PAGE",
        "data": [{"key": "scope", "value": scope}],
        "message": format!("There are no results for scope '{scope}' on this page."),
    })
}

/// A Google API error body: `code`, `message`, legacy `errors[]`, and the
/// `status` string the official clients read the code from.
pub fn error(code: u16, status: &str, reason: &str, message: &str) -> Value {
    let mut err = json!({
        "code": code,
        "message": message,
        "errors": [{"message": message, "domain": if code == 429 || reason == "rateLimitExceeded" { "usageLimits" } else { "global" }, "reason": reason}],
        "status": status,
    });
    if reason == "rateLimitExceeded" {
        err["details"] = json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "RATE_LIMIT_EXCEEDED",
            "domain": "googleapis.com",
            "metadata": {"service": "compute.googleapis.com", "quota_metric": "compute.googleapis.com/read_requests"},
        }]);
    }
    json!({ "error": err })
}
