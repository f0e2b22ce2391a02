//! Kubernetes name syntax (DNS-1123 labels and subdomains), shared by every
//! rule that checks a namespace, Secret, ClusterRole or cluster id.

/// A DNS-1123 label: 1-63 of `[a-z0-9-]`, alphanumeric at both ends
/// (namespace names, cluster ids).
pub fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= 63
                && (first.is_ascii_lowercase() || first.is_ascii_digit())
                && (last.is_ascii_lowercase() || last.is_ascii_digit())
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        }
        _ => false,
    }
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters
/// (Secret and most object names).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        for ok in ["team-a", "a", "0", "prod-eu-1"] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "Team", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        assert!(is_dns_subdomain("git-corp.readonly"));
        assert!(!is_dns_subdomain("git..corp"));
        assert!(!is_dns_subdomain(&"a.".repeat(130)));
    }
}
