//! Stable hashing and bounded names: the config hash on the reconciler's
//! pod template and the hash suffix of names too long for the API server.
//!
//! FNV-1a (64 bit) is enough here: the hash detects changes and
//! disambiguates truncated names; nothing relies on it resisting a
//! deliberate collision. It is written out (a dozen lines) rather than
//! pulled in, and its output never depends on the platform or the build.

use serde_json::Value;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bit, of `bytes`.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME)
    })
}

/// The JSON text of `value` with every object's keys sorted and no
/// whitespace, whatever map type `serde_json` was built with (the
/// `preserve_order` feature, switched on by any crate in the build, would
/// otherwise make the text follow insertion order).
pub(crate) fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                // `Display` of a JSON value is its compact JSON text.
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        leaf => out.push_str(&leaf.to_string()),
    }
}

/// `value` with every object rebuilt in key order, so serialising it gives
/// the same text whatever map type `serde_json` was built with.
pub(crate) fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        leaf => leaf,
    }
}

/// Hex digits of the hash suffix appended to shortened names.
const SUFFIX_DIGITS: usize = 10;

/// `name` if it has at most `max` bytes; otherwise its first bytes, cut at
/// a character boundary with trailing `-` and `.` removed (so the result
/// stays a DNS name), then `-` and ten hex digits of the FNV-1a hash of the
/// whole name, `max` bytes in all. Two long names sharing a prefix thus
/// stay distinct.
pub(crate) fn bounded_name(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    shortened(name, name, max)
}

/// `base` cut to fit `max` bytes with a suffix derived from `identity`.
pub(crate) fn shortened(base: &str, identity: &str, max: usize) -> String {
    let suffix = format!("{:016x}", fnv1a64(identity.as_bytes()));
    let suffix = suffix.get(..SUFFIX_DIGITS).unwrap_or(&suffix);
    let keep = max.saturating_sub(SUFFIX_DIGITS + 1);
    let mut cut = keep.min(base.len());
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    let prefix = base
        .get(..cut)
        .unwrap_or_default()
        .trim_end_matches(['-', '.']);
    if prefix.is_empty() {
        suffix.to_owned()
    } else {
        format!("{prefix}-{suffix}")
    }
}

/// Kubernetes' own DNS-1123 subdomain rule (`IsDNS1123Subdomain`): at most
/// 253 characters, dot-separated runs of `[a-z0-9-]` starting and ending
/// alphanumeric, with no per-label limit (unlike [`crate::names`], which
/// also wants 63-character labels).
#[cfg(test)]
pub(crate) fn is_k8s_subdomain(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.len() <= 253
        && s.split('.').all(|part| {
            part.starts_with(alnum)
                && part.ends_with(alnum)
                && part.chars().all(|c| alnum(c) || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let value = serde_json::json!({"b": [{"z": 1, "a": null}], "a": "x\"y"});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":"x\"y","b":[{"a":null,"z":1}]}"#
        );
    }

    #[test]
    fn short_names_are_kept_and_long_names_are_cut_with_a_hash() {
        assert_eq!(
            bounded_name("fluxgate-reconciler-a", 253),
            "fluxgate-reconciler-a"
        );
        let long = format!("fluxgate-reconciler-{}", "a".repeat(300));
        let cut = bounded_name(&long, 253);
        assert_eq!(cut.len(), 253);
        assert!(is_k8s_subdomain(&cut), "{cut}");
        let other = bounded_name(&format!("{long}b"), 253);
        assert_ne!(cut, other);
        assert_eq!(cut[..242], other[..242]);
    }

    #[test]
    fn cut_names_never_end_in_a_separator() {
        let name = format!("{}-{}", "a".repeat(51), "b".repeat(20));
        let cut = bounded_name(&name, 63);
        assert_eq!(cut.len(), 62);
        assert!(crate::names::is_dns_label(&cut), "{cut}");
    }
}
