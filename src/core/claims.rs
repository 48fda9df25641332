//! One mirror per cloud group. Istio needs each VM in exactly one namespace,
//! so when several mirrors name the same group, the oldest one (by
//! creationTimestamp, then uid) claims it and every other one writes nothing.
//!
//! Only mirrors that could act count as claimants: a mirror being deleted,
//! with an invalid spec, or whose namespace the allow-list denies the group
//! cannot claim, so no team can squat on another team's group by creating
//! a mirror first. Groups are compared on their canonical id
//! ([`GroupRef::canonical`]), so spelling a name differently makes no second
//! claim.

use meshmirror_provider::GroupRef;

use crate::core::config;
use crate::core::policy::AllowedGroups;
use crate::crd::ScalingGroupMirror;

/// What the claim rule says about one mirror's group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This mirror claims its group: it may write and answer hooks.
    Claimant,
    /// Another mirror claims the group.
    ClaimedBy { namespace: String, name: String },
    /// The mirror list does not hold this mirror yet (a watch still filling):
    /// nothing is decided, nothing is written.
    Unknown,
}

/// One mirror as the claim rule sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contender {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// creationTimestamp in nanoseconds since the epoch; None sorts after
    /// any time.
    pub created: Option<i128>,
    pub group: String,
}

impl Contender {
    /// The mirror as a contender, or None when it cannot claim.
    pub fn of(mirror: &ScalingGroupMirror, allowed: &AllowedGroups) -> Option<Contender> {
        if mirror.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let namespace = mirror.metadata.namespace.clone().unwrap_or_default();
        let group = config::validate(&mirror.spec).ok()?.group;
        allowed.check(&namespace, &group).ok()?;
        Some(Contender {
            namespace,
            name: mirror.metadata.name.clone().unwrap_or_default(),
            uid: mirror.metadata.uid.clone().unwrap_or_default(),
            created: mirror
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_nanosecond()),
            group: group.canonical(),
        })
    }

    fn seniority(&self) -> (bool, Option<i128>, &str) {
        (self.created.is_none(), self.created, &self.uid)
    }
}

/// The mirror that claims `group`, if any contender names it.
pub fn claimant<'a>(group: &GroupRef, contenders: &'a [Contender]) -> Option<&'a Contender> {
    let canonical = group.canonical();
    contenders
        .iter()
        .filter(|c| c.group == canonical)
        .min_by(|a, b| a.seniority().cmp(&b.seniority()))
}

/// The claim of the mirror with `uid` on `group`, among `contenders`.
pub fn claim(uid: &str, group: &GroupRef, contenders: &[Contender]) -> Claim {
    if !contenders.iter().any(|c| c.uid == uid) {
        return Claim::Unknown;
    }
    match claimant(group, contenders) {
        Some(c) if c.uid != uid => Claim::ClaimedBy {
            namespace: c.namespace.clone(),
            name: c.name.clone(),
        },
        _ => Claim::Claimant,
    }
}

/// The claim of `mirror` among `mirrors` (which should include it).
pub fn claim_of<'a>(
    mirror: &ScalingGroupMirror,
    mirrors: impl IntoIterator<Item = &'a ScalingGroupMirror>,
    allowed: &AllowedGroups,
) -> Claim {
    let Ok(config) = config::validate(&mirror.spec) else {
        // The pass reports the invalid spec before it looks at claims.
        return Claim::Claimant;
    };
    let uid = mirror.metadata.uid.as_deref().unwrap_or_default();
    claim(uid, &config.group, &contenders(mirrors, allowed))
}

/// The contenders among `mirrors`.
pub fn contenders<'a>(
    mirrors: impl IntoIterator<Item = &'a ScalingGroupMirror>,
    allowed: &AllowedGroups,
) -> Vec<Contender> {
    mirrors
        .into_iter()
        .filter_map(|m| Contender::of(m, allowed))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(ns: &str, uid: &str, created: Option<i128>, group: &str) -> Contender {
        Contender {
            namespace: ns.into(),
            name: format!("m-{uid}"),
            uid: uid.into(),
            created,
            group: group.into(),
        }
    }

    fn aws(name: &str) -> GroupRef {
        GroupRef::Aws {
            region: "us-east-1".into(),
            name: name.into(),
        }
    }

    #[test]
    fn the_oldest_mirror_claims_then_the_lowest_uid() {
        let web = "aws:us-east-1:web";
        let all = [
            c("team-b", "u2", Some(2_000), web),
            c("team-a", "u3", Some(1_000), web),
            c("team-c", "u1", Some(1_000), web),
            c("team-d", "u0", None, web),
            c("team-e", "u9", Some(10), "aws:us-east-1:other"),
        ];
        let claimed_by = |ns: &str, uid: &str| Claim::ClaimedBy {
            namespace: ns.into(),
            name: format!("m-{uid}"),
        };
        let table = [
            // Same time: the lower uid wins.
            ("u1", Claim::Claimant),
            ("u3", claimed_by("team-c", "u1")),
            ("u2", claimed_by("team-c", "u1")),
            // No creation time sorts after every time.
            ("u0", claimed_by("team-c", "u1")),
            // Not in the list yet: undecided.
            ("u7", Claim::Unknown),
        ];
        for (uid, want) in table {
            assert_eq!(claim(uid, &aws("web"), &all), want, "{uid}");
        }
        assert_eq!(claim("u9", &aws("other"), &all), Claim::Claimant);
    }

    #[test]
    fn when_the_claimant_leaves_the_next_oldest_claims() {
        let web = "aws:us-east-1:web";
        let mut all = vec![
            c("a", "u1", Some(1_000), web),
            c("b", "u2", Some(2_000), web),
        ];
        assert_ne!(claim("u2", &aws("web"), &all), Claim::Claimant);
        all.remove(0);
        assert_eq!(claim("u2", &aws("web"), &all), Claim::Claimant);
    }

    #[test]
    fn azure_names_that_differ_only_in_case_are_one_group() {
        let upper = GroupRef::Azure {
            subscription_id: "AAAAAAAA-0000-0000-0000-000000000000".into(),
            resource_group: "RG-Payments".into(),
            scale_set: "Web".into(),
        };
        let lower = GroupRef::Azure {
            subscription_id: "aaaaaaaa-0000-0000-0000-000000000000".into(),
            resource_group: "rg-payments".into(),
            scale_set: "web".into(),
        };
        let all = [
            c("a", "u1", Some(1_000), &upper.canonical()),
            c("b", "u2", Some(2_000), &lower.canonical()),
        ];
        assert_eq!(
            claim("u2", &lower, &all),
            Claim::ClaimedBy {
                namespace: "a".into(),
                name: "m-u1".into()
            }
        );
    }
}
