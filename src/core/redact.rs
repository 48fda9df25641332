//! What a cloud's error text may show to tenants. Status conditions and
//! Events are readable by every team with access to the mirror's namespace,
//! but a cloud's error text can name the platform's own identity: the full
//! ARN of the role meshmirror runs as (its account id and role name), or the
//! object id of its Azure managed identity. Those are replaced; the error's
//! code and the rest of its text stay, and the service's own log keeps the
//! full text for the operators. Long texts are cut short.

/// The longest message written to a condition or an Event.
const MAX_CHARS: usize = 1024;

/// `message` without ARNs and standalone GUIDs (object ids), at most
/// [`MAX_CHARS`] characters.
pub fn for_tenants(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut token = String::new();
    for c in message.chars() {
        if is_delimiter(c) {
            out.push_str(&redact_token(&token));
            token.clear();
            out.push(c);
        } else {
            token.push(c);
        }
    }
    out.push_str(&redact_token(&token));
    shorten(out)
}

fn is_delimiter(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\'' | '"' | '`' | ',' | ';' | '(' | ')' | '[' | ']' | '{' | '}'
        )
}

fn redact_token(token: &str) -> String {
    if token.starts_with("arn:") {
        return "arn:(redacted)".to_string();
    }
    let trimmed = token.trim_end_matches(['.', ':']);
    if is_guid(trimmed) {
        return format!("(id redacted){}", &token[trimmed.len()..]);
    }
    token.to_string()
}

/// 8-4-4-4-12 hexadecimal digits.
fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn shorten(mut s: String) -> String {
    if let Some((cut, _)) = s.char_indices().nth(MAX_CHARS) {
        s.truncate(cut);
        s.push_str("… (cut; the service's log has the full text)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platforms_identity_is_not_shown_to_tenants() {
        let table = [
            (
                "AccessDenied: User: arn:aws:sts::123456789012:assumed-role/meshmirror/i-0abc is not authorized to perform: autoscaling:DescribeAutoScalingGroups",
                "AccessDenied: User: arn:(redacted) is not authorized to perform: autoscaling:DescribeAutoScalingGroups",
            ),
            (
                "AuthorizationFailed: The client 'f3b2a1c4-0d5e-4f6a-8b7c-9d0e1f2a3b4c' with object id 'f3b2a1c4-0d5e-4f6a-8b7c-9d0e1f2a3b4c' does not have authorization over scope '/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg'",
                "AuthorizationFailed: The client '(id redacted)' with object id '(id redacted)' does not have authorization over scope '/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg'",
            ),
            (
                "principal F3B2A1C4-0D5E-4F6A-8B7C-9D0E1F2A3B4C.",
                "principal (id redacted).",
            ),
            (
                "scaling group not found: aws:eu-west-1:web; existing entries are kept",
                "scaling group not found: aws:eu-west-1:web; existing entries are kept",
            ),
            ("", ""),
            ("not-a-guid-1234-5678", "not-a-guid-1234-5678"),
        ];
        for (raw, shown) in table {
            assert_eq!(for_tenants(raw), shown);
        }
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        let long = "é".repeat(2000);
        let shown = for_tenants(&long);
        assert!(shown.starts_with(&"é".repeat(1024)));
        assert!(shown.ends_with("… (cut; the service's log has the full text)"));
        assert_eq!(shown.chars().filter(|c| *c == 'é').count(), 1024);
        let short = "x".repeat(1024);
        assert_eq!(for_tenants(&short), short);
    }
}
