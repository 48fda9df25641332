//! The describe calls of one pass. Each grows with pages, not instances:
//! groups are described together and paged, a group's instances are listed
//! by its tag in pages of 1,000, and hooks only when an instance waits on
//! one.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, InstanceLifecycleType};
use meshmirror_provider::{GroupRef, ProviderError};

use crate::error;
use crate::state::{AsgMember, Ec2Facts};

/// Instance ids per `DescribeInstances` call (the most values one filter takes).
pub const IDS_PER_CALL: usize = 200;
/// Group names per `DescribeAutoScalingGroups` page.
const GROUPS_PER_PAGE: i32 = 100;

/// Members of the named groups; groups that do not exist are absent.
pub async fn groups(
    client: aws_sdk_autoscaling::Client,
    names: Vec<String>,
) -> Result<HashMap<String, Vec<AsgMember>>, ProviderError> {
    let mut out = HashMap::new();
    for chunk in names.chunks(GROUPS_PER_PAGE as usize) {
        let mut pages = client
            .describe_auto_scaling_groups()
            .set_auto_scaling_group_names(Some(chunk.to_vec()))
            .max_records(GROUPS_PER_PAGE)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| error::map("DescribeAutoScalingGroups", e))?;
            for group in page.auto_scaling_groups() {
                let Some(name) = group.auto_scaling_group_name() else {
                    continue;
                };
                let members = group
                    .instances()
                    .iter()
                    .filter_map(|i| {
                        Some(AsgMember {
                            id: i.instance_id()?.to_string(),
                            zone: i.availability_zone().map(str::to_string),
                            lifecycle_state: i.lifecycle_state()?.as_str().to_string(),
                            health_status: i.health_status().map(str::to_string),
                        })
                    })
                    .collect();
                out.insert(name.to_string(), members);
            }
        }
    }
    Ok(out)
}

/// Instance ids per `DescribeAutoScalingInstances` call (its most).
const ASG_IDS_PER_CALL: usize = 50;

/// The named instances that are members of group `group_name`, as Auto
/// Scaling reports them (an id in no group, or in another, is absent).
pub async fn group_members_among(
    client: &aws_sdk_autoscaling::Client,
    group_name: &str,
    ids: &[String],
) -> Result<Vec<AsgMember>, ProviderError> {
    let mut out = Vec::new();
    for chunk in ids.chunks(ASG_IDS_PER_CALL) {
        let mut pages = client
            .describe_auto_scaling_instances()
            .set_instance_ids(Some(chunk.to_vec()))
            .max_records(ASG_IDS_PER_CALL as i32)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| error::map("DescribeAutoScalingInstances", e))?;
            for i in page.auto_scaling_instances() {
                if i.auto_scaling_group_name() != Some(group_name) {
                    continue;
                }
                let (Some(id), Some(state)) = (i.instance_id(), i.lifecycle_state()) else {
                    continue;
                };
                out.push(AsgMember {
                    id: id.to_string(),
                    zone: i.availability_zone().map(str::to_string),
                    lifecycle_state: state.to_string(),
                    health_status: i.health_status().map(str::to_string),
                });
            }
        }
    }
    Ok(out)
}

/// EC2's view of the given instances. A filter (not `InstanceIds`) so that an
/// id that vanished meanwhile is simply absent instead of failing the batch.
pub async fn instances(
    client: &aws_sdk_ec2::Client,
    ids: &[String],
) -> Result<HashMap<String, Ec2Facts>, ProviderError> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(IDS_PER_CALL) {
        let mut pages = client
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("instance-id")
                    .set_values(Some(chunk.to_vec()))
                    .build(),
            )
            .max_results(1000)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| error::map("DescribeInstances", e))?;
            out.extend(listed(&page).map(|(id, facts)| (id.to_string(), facts)));
        }
    }
    Ok(out)
}

/// The states of an instance that may still be a member. `terminated` ones
/// stay listed for an hour and would only fill pages.
const LIVE_STATES: [&str; 5] = ["pending", "running", "shutting-down", "stopping", "stopped"];

/// EC2's view of a group's members: one `DescribeInstances` listing of the
/// group's tag (`aws:autoscaling:groupName`), live states only, in pages of
/// 1,000 instances, so a pass costs `ceil(n / 1000)` calls instead of one per
/// 200 ids. Members the listing missed (a tag not there yet, an instance
/// whose tag was changed by hand) are then described by id, so that a member
/// is never missed because of its tags. Instances listed that are not
/// members (detached, still tagged) are left out.
pub async fn group_instances(
    client: &aws_sdk_ec2::Client,
    group_name: &str,
    members: &[String],
) -> Result<HashMap<String, Ec2Facts>, ProviderError> {
    let wanted: std::collections::HashSet<&str> = members.iter().map(String::as_str).collect();
    let mut out = HashMap::with_capacity(members.len());
    let mut pages = client
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:aws:autoscaling:groupName")
                .values(group_name)
                .build(),
        )
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .set_values(Some(LIVE_STATES.iter().map(|s| s.to_string()).collect()))
                .build(),
        )
        .max_results(1000)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| error::map("DescribeInstances", e))?;
        out.extend(
            listed(&page)
                .filter(|(id, _)| wanted.contains(id))
                .map(|(id, facts)| (id.to_string(), facts)),
        );
    }
    let missed: Vec<String> = members
        .iter()
        .filter(|id| !out.contains_key(*id))
        .cloned()
        .collect();
    if !missed.is_empty() {
        out.extend(instances(client, &missed).await?);
    }
    Ok(out)
}

/// Fail static: a member that `DescribeInstances` did not return has no
/// known address, and a pass without it would delete its entries. The pass
/// fails instead (and is retried) until EC2 answers for every member.
pub fn complete(
    group: &GroupRef,
    ids: &[String],
    facts: &HashMap<String, Ec2Facts>,
) -> Result<(), ProviderError> {
    let missing: Vec<&str> = ids
        .iter()
        .filter(|id| !facts.contains_key(*id))
        .map(String::as_str)
        .collect();
    match missing.as_slice() {
        [] => Ok(()),
        [first, ..] => Err(ProviderError::Transient(format!(
            "DescribeInstances did not return {} of the {} members of {group} (first: {first})",
            missing.len(),
            ids.len()
        ))),
    }
}

/// Each instance of a `DescribeInstances` page with its facts.
fn listed(
    page: &aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput,
) -> impl Iterator<Item = (&str, Ec2Facts)> {
    page.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| Some((i.instance_id()?, facts(i))))
}

fn facts(instance: &aws_sdk_ec2::types::Instance) -> Ec2Facts {
    Ec2Facts {
        private_ipv4: instance
            .private_ip_address()
            .and_then(|s| s.parse::<Ipv4Addr>().ok()),
        public_ipv4: instance
            .public_ip_address()
            .and_then(|s| s.parse::<Ipv4Addr>().ok()),
        ipv6: ipv6(instance),
        zone: instance
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_string),
        tags: instance
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
            .collect::<BTreeMap<_, _>>(),
        state: instance
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string()),
        spot: instance.instance_lifecycle() == Some(&InstanceLifecycleType::Spot),
    }
}

/// The instance's IPv6 address: the primary one if marked, else the first
/// address of the primary interface (device index 0), else any.
fn ipv6(instance: &aws_sdk_ec2::types::Instance) -> Option<Ipv6Addr> {
    let parse = |s: Option<&str>| s.and_then(|s| s.parse::<Ipv6Addr>().ok());
    let mut interfaces: Vec<_> = instance.network_interfaces().iter().collect();
    interfaces.sort_by_key(|n| {
        n.attachment()
            .and_then(|a| a.device_index())
            .unwrap_or(i32::MAX)
    });
    let all: Vec<_> = interfaces
        .iter()
        .flat_map(|n| n.ipv6_addresses().iter())
        .collect();
    all.iter()
        .find(|a| a.is_primary_ipv6() == Some(true))
        .and_then(|a| parse(a.ipv6_address()))
        .or_else(|| parse(instance.ipv6_address()))
        .or_else(|| all.iter().find_map(|a| parse(a.ipv6_address())))
}

/// The status code of the spot request behind each of the given spot
/// instances (`marked-for-termination` and the like once EC2 has decided to
/// interrupt one). Asked only for instances named by a spot interruption
/// warning, so it costs nothing in the usual pass.
pub async fn spot_statuses(
    client: &aws_sdk_ec2::Client,
    ids: &[String],
) -> Result<HashMap<String, String>, ProviderError> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(IDS_PER_CALL) {
        let mut pages = client
            .describe_spot_instance_requests()
            .filters(
                Filter::builder()
                    .name("instance-id")
                    .set_values(Some(chunk.to_vec()))
                    .build(),
            )
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| error::map("DescribeSpotInstanceRequests", e))?;
            merge_spot_statuses(&mut out, page.spot_instance_requests());
        }
    }
    Ok(out)
}

/// An instance's requests by status code; a marked one wins (a persistent
/// request can list an instance under an older request too).
fn merge_spot_statuses(
    out: &mut HashMap<String, String>,
    requests: &[aws_sdk_ec2::types::SpotInstanceRequest],
) {
    for request in requests {
        let (Some(id), Some(code)) = (
            request.instance_id(),
            request.status().and_then(|s| s.code()),
        ) else {
            continue;
        };
        let known_marked = crate::state::spot_marked(out.get(id).map(String::as_str));
        if !known_marked {
            out.insert(id.to_string(), code.to_string());
        }
    }
}

/// A lifecycle hook of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookInfo {
    pub name: String,
    pub launching: bool,
    pub heartbeat: Option<Duration>,
}

pub async fn hooks(
    client: &aws_sdk_autoscaling::Client,
    group: &str,
) -> Result<Vec<HookInfo>, ProviderError> {
    let out = client
        .describe_lifecycle_hooks()
        .auto_scaling_group_name(group)
        .send()
        .await
        .map_err(|e| error::map("DescribeLifecycleHooks", e))?;
    Ok(out
        .lifecycle_hooks()
        .iter()
        .filter_map(|h| {
            let launching = match h.lifecycle_transition()? {
                "autoscaling:EC2_INSTANCE_LAUNCHING" => true,
                "autoscaling:EC2_INSTANCE_TERMINATING" => false,
                _ => return None,
            };
            Some(HookInfo {
                name: h.lifecycle_hook_name()?.to_string(),
                launching,
                heartbeat: h
                    .heartbeat_timeout()
                    .filter(|s| *s > 0)
                    .map(|s| Duration::from_secs(s as u64)),
            })
        })
        .collect())
}

/// The group of each instance that is in one (for EC2 events).
pub async fn groups_of(
    client: &aws_sdk_autoscaling::Client,
    ids: Vec<String>,
) -> Result<HashMap<String, String>, ProviderError> {
    let out = client
        .describe_auto_scaling_instances()
        .set_instance_ids(Some(ids))
        .send()
        .await
        .map_err(|e| error::map("DescribeAutoScalingInstances", e))?;
    Ok(out
        .auto_scaling_instances()
        .iter()
        .filter_map(|i| {
            Some((
                i.instance_id()?.to_string(),
                i.auto_scaling_group_name()?.to_string(),
            ))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use aws_sdk_ec2::types::{SpotInstanceRequest, SpotInstanceStatus};

    use super::*;

    #[test]
    fn spot_statuses_by_instance_a_marked_request_wins() {
        let request = |id: Option<&str>, code: Option<&str>| {
            let mut status = SpotInstanceStatus::builder();
            if let Some(code) = code {
                status = status.code(code);
            }
            SpotInstanceRequest::builder()
                .set_instance_id(id.map(str::to_string))
                .status(status.build())
                .build()
        };
        let mut out = HashMap::new();
        merge_spot_statuses(
            &mut out,
            &[
                request(Some("i-1"), Some("marked-for-termination")),
                request(Some("i-1"), Some("fulfilled")),
                request(Some("i-2"), Some("fulfilled")),
                request(None, Some("marked-for-stop")),
                request(Some("i-3"), None),
            ],
        );
        merge_spot_statuses(&mut out, &[request(Some("i-2"), Some("marked-for-stop"))]);
        let want = HashMap::from([
            ("i-1".to_string(), "marked-for-termination".to_string()),
            ("i-2".to_string(), "marked-for-stop".to_string()),
        ]);
        assert_eq!(out, want);
    }

    #[test]
    fn a_member_ec2_did_not_return_fails_the_pass() {
        let group = GroupRef::Aws {
            region: "us-east-1".into(),
            name: "web".into(),
        };
        let ids = vec!["i-1".to_string(), "i-2".to_string()];
        let mut facts = HashMap::from([("i-1".to_string(), Ec2Facts::default())]);
        let err = complete(&group, &ids, &facts).unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        assert!(err.to_string().contains("1 of the 2 members"), "{err}");
        assert!(err.to_string().contains("i-2"), "{err}");
        facts.insert("i-2".to_string(), Ec2Facts::default());
        assert_eq!(complete(&group, &ids, &facts), Ok(()));
        assert_eq!(complete(&group, &[], &HashMap::new()), Ok(()));
    }
}
