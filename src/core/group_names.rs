//! The clouds' own naming rules for the fields that name a scaling group.
//!
//! These fields become part of request paths (Azure, GCP) and of the group id
//! the allow-list matches and claims compare, so a value the cloud could never
//! have (a `/`, `..`, a control character) is refused before any request is
//! built: otherwise `x/../../other-rg/...` would match a rule for one resource
//! group while the request reached another. The CRD carries the same patterns
//! (`crd.rs`); this is the check for servers that skip schema validation and
//! for `render`.

/// One field's rule: `Ok`, or what the cloud allows (for the error message).
pub type Rule = fn(&str) -> Result<(), &'static str>;

fn ascii_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// AWS regions: `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`.
pub const AWS_REGION_RULE: &str =
    "an AWS region like us-east-1 (lowercase letters, digits and '-', at most 32 characters)";
pub fn aws_region(s: &str) -> Result<(), &'static str> {
    let ok = (1..=32).contains(&s.len())
        && s.chars().all(|c| lower_alnum(c) || c == '-')
        && s.split('-').count() >= 3
        && s.split('-').all(|p| !p.is_empty())
        && s.rsplit('-')
            .next()
            .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()));
    ok.then_some(()).ok_or(AWS_REGION_RULE)
}

/// Auto Scaling Group names: 1-255 characters, no control characters (AWS
/// allows almost anything else; the name is sent form-encoded, never in a path).
pub const AWS_GROUP_RULE: &str =
    "1 to 255 characters without control characters (an Auto Scaling Group name)";
pub fn aws_group(s: &str) -> Result<(), &'static str> {
    let ok = (1..=255).contains(&s.chars().count()) && !s.chars().any(char::is_control);
    ok.then_some(()).ok_or(AWS_GROUP_RULE)
}

/// Azure subscription ids are GUIDs.
pub const AZURE_SUBSCRIPTION_RULE: &str =
    "a subscription GUID like 00000000-0000-0000-0000-000000000000";
pub fn azure_subscription(s: &str) -> Result<(), &'static str> {
    let groups: Vec<&str> = s.split('-').collect();
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()));
    ok.then_some(()).ok_or(AZURE_SUBSCRIPTION_RULE)
}

/// Resource group names: 1-90 of letters, digits, `_ - . ( )`, not ending
/// in a period (Azure's rule, ASCII only here).
pub const AZURE_RESOURCE_GROUP_RULE: &str = "1 to 90 of letters, digits, '_', '-', '.', '(' and ')', not ending in '.' (an Azure resource group name)";
pub fn azure_resource_group(s: &str) -> Result<(), &'static str> {
    let ok = (1..=90).contains(&s.len())
        && s.chars()
            .all(|c| ascii_alnum(c) || matches!(c, '_' | '-' | '.' | '(' | ')'))
        && !s.ends_with('.');
    ok.then_some(()).ok_or(AZURE_RESOURCE_GROUP_RULE)
}

/// Scale set names: 1-64 of letters, digits, `_ - .`, starting with a letter,
/// digit or `_`, ending with a letter, digit or `_`.
pub const AZURE_SCALE_SET_RULE: &str = "1 to 64 of letters, digits, '_', '-' and '.', starting and ending with a letter, digit or '_' (an Azure scale set name)";
pub fn azure_scale_set(s: &str) -> Result<(), &'static str> {
    let end_ok = |c: Option<char>| c.is_some_and(|c| ascii_alnum(c) || c == '_');
    let ok = (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| ascii_alnum(c) || matches!(c, '_' | '-' | '.'))
        && end_ok(s.chars().next())
        && end_ok(s.chars().last());
    ok.then_some(()).ok_or(AZURE_SCALE_SET_RULE)
}

/// Project ids: 6-30 of lowercase letters, digits and `-`, starting with a
/// letter, not ending with `-`; optionally behind a `domain:` prefix.
pub const GCP_PROJECT_RULE: &str = "a project id: 6 to 30 of lowercase letters, digits and '-', starting with a letter and not ending with '-' (optionally behind 'example.com:')";
pub fn gcp_project(s: &str) -> Result<(), &'static str> {
    let (domain, id) = match s.split_once(':') {
        Some((domain, id)) => (Some(domain), id),
        None => (None, s),
    };
    let domain_ok = domain.is_none_or(|d| {
        !d.is_empty()
            && d.len() <= 63
            && d.chars().all(|c| lower_alnum(c) || c == '-' || c == '.')
            && !d.contains("..")
    });
    let ok = domain_ok
        && (6..=30).contains(&id.len())
        && id.chars().all(|c| lower_alnum(c) || c == '-')
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && !id.ends_with('-');
    ok.then_some(()).ok_or(GCP_PROJECT_RULE)
}

/// Resource names (RFC 1035 labels): managers, zones, regions.
pub const GCP_NAME_RULE: &str = "1 to 63 of lowercase letters, digits and '-', starting with a letter and ending with a letter or digit (a GCP resource name)";
pub fn gcp_name(s: &str) -> Result<(), &'static str> {
    let ok = (1..=63).contains(&s.len())
        && s.chars().all(|c| lower_alnum(c) || c == '-')
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-');
    ok.then_some(()).ok_or(GCP_NAME_RULE)
}

/// Simulated groups: DNS labels.
pub const SIM_GROUP_RULE: &str = "1 to 63 of lowercase letters, digits and '-' (a DNS label)";
pub fn sim_group(s: &str) -> Result<(), &'static str> {
    crate::core::names::is_dns_label(s)
        .then_some(())
        .ok_or(SIM_GROUP_RULE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_accepts_real_names_and_refuses_path_tricks() {
        let cases: &[(Rule, &str, bool)] = &[
            (aws_region, "us-east-1", true),
            (aws_region, "us-gov-west-1", true),
            (aws_region, "eu-central-2", true),
            (aws_region, "us-east", false),
            (aws_region, "us-east-1/../x", false),
            (aws_region, "US-EAST-1", false),
            (aws_group, "web", true),
            (aws_group, "team a/web:blue", true),
            (aws_group, "", false),
            (aws_group, "a\nb", false),
            (aws_group, &"x".repeat(256), false),
            (
                azure_subscription,
                "00000000-0000-0000-0000-000000000000",
                true,
            ),
            (
                azure_subscription,
                "0000000-0000-0000-0000-000000000000",
                false,
            ),
            (
                azure_subscription,
                "../00000000-0000-0000-0000-000000000000",
                false,
            ),
            (azure_resource_group, "rg-payments_(prod).1", true),
            (azure_resource_group, "rg.", false),
            (azure_resource_group, "a/b", false),
            (azure_resource_group, "..", false),
            (azure_resource_group, &"r".repeat(91), false),
            (azure_scale_set, "web_1.a-b", true),
            (azure_scale_set, "-web", false),
            (azure_scale_set, "web.", false),
            (
                azure_scale_set,
                "x/../../../../other-rg/providers/Microsoft.Compute/virtualMachineScaleSets/v",
                false,
            ),
            (azure_scale_set, "x%2F..", false),
            (gcp_project, "my-project-1", true),
            (gcp_project, "example.com:my-project", true),
            (gcp_project, "proj", false),
            (gcp_project, "1project", false),
            (gcp_project, "my-project-", false),
            (gcp_project, "p/../q-123456", false),
            (gcp_name, "us-central1-a", true),
            (gcp_name, "web-mig", true),
            (gcp_name, "Web", false),
            (gcp_name, "web-", false),
            (gcp_name, "a/b", false),
            (sim_group, "web", true),
            (sim_group, "we/b", false),
        ];
        for (rule, value, ok) in cases {
            assert_eq!(rule(value).is_ok(), *ok, "{value:?}");
        }
    }
}
