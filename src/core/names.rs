//! Deterministic WorkloadEntry names and label validity.
//!
//! A name comes from the mirror, the workload and the instance id, never the
//! address (clouds reuse IPs). It always ends in a hash of the exact triple, so
//! ids that differ only in characters that were replaced or trimmed still get
//! different names, and the readable part can be cut to fit 253 characters.

use sha2::{Digest, Sha256};

/// Longest Kubernetes object name (a DNS-1123 subdomain).
pub const MAX_NAME: usize = 253;
const HASH_LEN: usize = 10;

/// `{mirror}-{workload}-{instance}-{hash}`, a valid DNS-1123 subdomain.
pub fn entry_name(mirror: &str, workload: &str, instance_id: &str) -> String {
    let readable = sanitize(&format!("{mirror}-{workload}-{}", short_id(instance_id)));
    let hash = hash_hex(&[mirror, workload, instance_id]);
    let room = MAX_NAME - HASH_LEN - 1;
    let mut readable: String = readable.chars().take(room).collect();
    while readable.ends_with('-') {
        readable.pop();
    }
    if readable.is_empty() {
        format!("x-{hash}")
    } else {
        format!("{readable}-{hash}")
    }
}

/// The last path segment of ids like Azure resource ids, which carry the
/// subscription and resource group in front of the part a person recognises.
fn short_id(id: &str) -> &str {
    id.rsplit('/').find(|s| !s.is_empty()).unwrap_or(id)
}

/// Lowercase alphanumerics and single dashes, starting with an alphanumeric.
fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out
}

fn hash_hex(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefixed so ("a-b", "c") and ("a", "b-c") differ.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    digest
        .iter()
        .flat_map(|b| [b >> 4, b & 0xf])
        .take(HASH_LEN)
        .map(|n| char::from_digit(n.into(), 16).unwrap_or('0'))
        .collect()
}

/// Whether `s` is a valid DNS-1123 subdomain (object names).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Whether `s` is a valid DNS-1123 label (workload names).
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

/// A label "name" part: 1-63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
fn is_label_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && is_label_value(s)
}

/// Whether `key` is a valid label key: `[prefix/]name`, prefix a DNS subdomain.
pub fn is_label_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => {
            prefix.len() <= 253 && is_dns_subdomain(prefix) && is_label_name(name)
        }
        None => is_label_name(key),
    }
}

/// Whether `value` is a valid label value (may be empty).
pub fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_are_readable_valid_and_stable() {
        let cases = [
            ("web", "api", "i-0abc123", "web-api-i-0abc123-"),
            ("web", "api", "I-0ABC", "web-api-i-0abc-"),
            (
                "m",
                "w",
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/vmss/virtualMachines/3",
                "m-w-3-",
            ),
            ("m", "w", "zone-a/instance_1", "m-w-instance-1-"),
            ("m", "w", "日本", "m-w-"),
            ("", "", "", "x-"),
        ];
        for (mirror, workload, id, prefix) in cases {
            let name = entry_name(mirror, workload, id);
            assert!(
                name.starts_with(prefix),
                "{name} should start with {prefix}"
            );
            assert!(is_dns_subdomain(&name), "{name} is not a DNS subdomain");
            assert_eq!(name, entry_name(mirror, workload, id), "not stable");
        }
    }

    #[test]
    fn long_ids_are_trimmed_to_253_and_still_distinct() {
        let base = "i-".to_string() + &"a".repeat(400);
        let a = entry_name("mirror", "app", &(base.clone() + "1"));
        let b = entry_name("mirror", "app", &(base + "2"));
        assert_eq!(a.len(), MAX_NAME);
        assert!(is_dns_subdomain(&a));
        assert_ne!(a, b);
    }

    #[test]
    fn ids_differing_only_in_replaced_characters_do_not_collide() {
        let ids = ["i_1", "i-1", "I-1", "i.1", "i/1", "i 1"];
        let names: HashSet<String> = ids.iter().map(|id| entry_name("m", "w", id)).collect();
        assert_eq!(names.len(), ids.len());
    }

    #[test]
    fn splitting_between_mirror_and_workload_does_not_collide() {
        assert_ne!(entry_name("a-b", "c", "i"), entry_name("a", "b-c", "i"));
    }

    #[test]
    fn label_rules() {
        for (key, ok) in [
            ("app", true),
            ("team.example.com/owner", true),
            ("aws:autoscaling:groupName", false),
            ("Name", true),
            ("-x", false),
            ("", false),
            ("a/b/c", false),
        ] {
            assert_eq!(is_label_key(key), ok, "key {key}");
        }
        for (value, ok) in [
            ("", true),
            ("v1.2_3-x", true),
            ("has space", false),
            ("-lead", false),
            (&*"a".repeat(64), false),
        ] {
            assert_eq!(is_label_value(value), ok, "value {value}");
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn always_a_valid_dns_subdomain(
            mirror in "\\PC{0,80}",
            workload in "[a-z0-9-]{0,63}",
            id in "\\PC{0,400}",
        ) {
            let name = entry_name(&mirror, &workload, &id);
            prop_assert!(is_dns_subdomain(&name), "{name:?}");
            prop_assert!(name.len() <= MAX_NAME);
            prop_assert_eq!(name.clone(), entry_name(&mirror, &workload, &id));
        }

        #[test]
        fn different_ids_get_different_names(
            a in "\\PC{1,300}",
            b in "\\PC{1,300}",
        ) {
            prop_assume!(a != b);
            prop_assert_ne!(entry_name("m", "w", &a), entry_name("m", "w", &b));
        }
    }
}
