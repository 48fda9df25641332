//! The cluster's allow-list of groups per namespace (`--allowed-groups`), so
//! that one team cannot pull another team's VMs into its namespace.

use meshmirror_provider::GroupRef;

/// `NAMESPACE=PATTERN` rules; `*` in a pattern matches any run of characters,
/// `{namespace}` stands for the mirror's namespace, and a namespace of `*`
/// matches every namespace. Deny by default: a group no rule matches is
/// denied, so with no rules every group is (the default value); only
/// [`AllowedGroups::allow_all`] (`--allow-all-groups`) allows everything.
#[derive(Clone, Debug, Default)]
pub struct AllowedGroups {
    rules: Vec<(String, String)>,
    all: bool,
}

impl AllowedGroups {
    /// Every group in every namespace: single-tenant clusters only.
    pub fn allow_all() -> Self {
        AllowedGroups {
            rules: Vec::new(),
            all: true,
        }
    }

    /// Parses rules like `team-a=aws:us-east-1:team-a-*`.
    pub fn parse(rules: &[String]) -> Result<Self, String> {
        let rules = rules
            .iter()
            .map(|rule| {
                rule.split_once('=')
                    .filter(|(ns, pattern)| !ns.is_empty() && !pattern.is_empty())
                    .map(|(ns, pattern)| (ns.to_string(), pattern.to_string()))
                    .ok_or_else(|| {
                        format!(
                            "--allowed-groups {rule:?}: write NAMESPACE=PATTERN, e.g. team-a=aws:us-east-1:team-a-*"
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(AllowedGroups { rules, all: false })
    }

    /// Ok when `namespace` may mirror `group`, else a message for the status.
    pub fn check(&self, namespace: &str, group: &GroupRef) -> Result<(), String> {
        if self.all {
            return Ok(());
        }
        if self.rules.is_empty() {
            return Err(format!(
                "no group is allowed in namespace {namespace}: meshmirror denies by default; the platform team grants a namespace its groups with --allowed-groups NAMESPACE=PATTERN (see docs/security.md)"
            ));
        }
        let id = group.to_string();
        // Matched on the canonical id (Azure's case-insensitive names
        // lowercased, patterns likewise), so no spelling escapes a rule.
        let canonical = group.canonical();
        let fold = matches!(group, GroupRef::Azure { .. });
        let allowed = self.rules.iter().any(|(ns, pattern)| {
            let pattern = pattern.replace("{namespace}", namespace);
            let pattern = if fold {
                pattern.to_ascii_lowercase()
            } else {
                pattern
            };
            (ns == "*" || ns == namespace) && glob(&pattern, &canonical)
        });
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "group {id} is not allowed in namespace {namespace} by the cluster's --allowed-groups; ask the platform team to allow it"
            ))
        }
    }
}

/// `*`-only glob match.
fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || !s[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws(name: &str) -> GroupRef {
        GroupRef::Aws {
            region: "us-east-1".into(),
            name: name.into(),
        }
    }

    #[test]
    fn globs() {
        for (p, s, ok) in [
            ("a*", "abc", true),
            ("*c", "abc", true),
            ("a*c", "ac", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxc", false),
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("*", "", true),
        ] {
            assert_eq!(glob(p, s), ok, "{p} ~ {s}");
        }
    }

    #[test]
    fn the_namespace_placeholder_and_azure_case() {
        let own = AllowedGroups::parse(&["*=aws:*:{namespace}-*".into()]).unwrap();
        assert!(own.check("team-a", &aws("team-a-web")).is_ok());
        assert!(own.check("team-b", &aws("team-a-web")).is_err());
        let azure = |rg: &str| GroupRef::Azure {
            subscription_id: "00000000-0000-0000-0000-000000000000".into(),
            resource_group: rg.into(),
            scale_set: "web".into(),
        };
        let rule = AllowedGroups::parse(&[
            "team-a=/subscriptions/*/resourceGroups/Team-A/providers/Microsoft.Compute/virtualMachineScaleSets/*".into(),
        ])
        .unwrap();
        assert!(rule.check("team-a", &azure("team-a")).is_ok());
        assert!(rule.check("team-a", &azure("TEAM-A")).is_ok());
        assert!(rule.check("team-a", &azure("team-b")).is_err());
    }

    #[test]
    fn deny_by_default_and_any_rule_denies_the_rest() {
        let none = AllowedGroups::default()
            .check("x", &aws("web"))
            .unwrap_err();
        assert!(none.contains("denies by default"), "{none}");
        assert!(AllowedGroups::allow_all().check("x", &aws("web")).is_ok());
        let allowed =
            AllowedGroups::parse(&["team-a=aws:us-east-1:team-a-*".into(), "*=sim:*".into()])
                .unwrap();
        assert!(allowed.check("team-a", &aws("team-a-web")).is_ok());
        let denied = allowed.check("team-b", &aws("team-a-web")).unwrap_err();
        assert!(
            denied.contains("not allowed in namespace team-b"),
            "{denied}"
        );
        assert!(allowed.check("team-a", &aws("team-b-web")).is_err());
        assert!(
            allowed
                .check("anyone", &GroupRef::Sim { group: "g".into() })
                .is_ok()
        );
        assert!(AllowedGroups::parse(&["nonamespace".into()]).is_err());
    }
}
