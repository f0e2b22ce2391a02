//! Output formats: plain `file:line: message` lines, JSON, GitHub workflow
//! annotations and GitLab Code Quality reports; and the rendered effective
//! configurations.

use std::io::Write;

use crate::Format;
use crate::load::LoadError;
use crate::validate::{Accepted, Finding};

/// Escapes GitHub workflow-command data (`%`, CR, LF).
fn gh_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes GitHub workflow-command properties (also `:` and `,`).
fn gh_property(s: &str) -> String {
    gh_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// FNV-1a, 64 bit: a fingerprint that is stable across runs and Rust
/// versions, as GitLab needs to match findings between pipelines.
fn fingerprint(parts: &[&str]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// Writes findings (and load errors, which are reported in every format so
/// CI shows them) in the chosen format.
pub fn write_findings(
    out: &mut dyn Write,
    format: Format,
    findings: &[Finding],
    load_errors: &[LoadError],
) -> std::io::Result<()> {
    match format {
        Format::Text => {
            for f in findings {
                writeln!(out, "{}:{}: {}", f.file.display(), f.line, f.message)?;
            }
        }
        Format::Json => {
            let mut all: Vec<serde_json::Value> = findings
                .iter()
                .map(|f| serde_json::to_value(f).unwrap_or_default())
                .collect();
            all.extend(load_errors.iter().map(|e| {
                let (file, line) = e.location();
                serde_json::json!({
                    "file": file, "line": line, "object": "", "rule": "parse",
                    "field": "", "message": e.to_string(),
                })
            }));
            writeln!(out, "{}", serde_json::Value::Array(all))?;
        }
        Format::Github => {
            for f in findings {
                writeln!(
                    out,
                    "::error file={},line={},title={}::{}",
                    gh_property(&f.file.to_string_lossy()),
                    f.line,
                    gh_property(&format!("fluxgate {}", f.rule)),
                    gh_data(&f.message)
                )?;
            }
            for e in load_errors {
                let (file, line) = e.location();
                writeln!(
                    out,
                    "::error file={},line={line},title=fluxgate parse::{}",
                    gh_property(&file.to_string_lossy()),
                    gh_data(&e.to_string())
                )?;
            }
        }
        Format::Gitlab => {
            let mut issues: Vec<serde_json::Value> = findings
                .iter()
                .map(|f| {
                    let path = f.file.to_string_lossy();
                    serde_json::json!({
                        "description": f.message,
                        "check_name": format!("fluxgate-{}", f.rule),
                        "fingerprint": fingerprint(&[&path, &f.object, &f.field, &f.message]),
                        "severity": "major",
                        "location": {"path": path, "lines": {"begin": f.line}},
                    })
                })
                .collect();
            issues.extend(load_errors.iter().map(|e| {
                let (file, line) = e.location();
                let path = file.to_string_lossy();
                let message = e.to_string();
                serde_json::json!({
                    "description": message,
                    "check_name": "fluxgate-parse",
                    "fingerprint": fingerprint(&[&path, &message]),
                    "severity": "blocker",
                    "location": {"path": path, "lines": {"begin": line}},
                })
            }));
            writeln!(out, "{}", serde_json::Value::Array(issues))?;
        }
    }
    Ok(())
}

/// Writes each accepted FluxConfig's effective configuration as a YAML
/// document, headed by the object and file it came from.
pub fn write_rendered(out: &mut dyn Write, accepted: &[Accepted]) -> std::io::Result<()> {
    for a in accepted {
        let r = &a.resolved;
        let doc = serde_json::json!({
            "fluxConfig": format!("{}/{}", r.namespace(), r.name()),
            "file": a.file.to_string_lossy(),
            "effective": r.effective(),
        });
        let yaml = serde_saphyr::to_string(&doc).map_err(std::io::Error::other)?;
        writeln!(out, "---\n{}", yaml.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_escaping_keeps_one_annotation_per_line() {
        assert_eq!(gh_data("a\nb%c"), "a%0Ab%25c");
        assert_eq!(gh_property("x:y,z"), "x%3Ay%2Cz");
    }

    #[test]
    fn fingerprints_are_stable_and_distinct() {
        assert_eq!(fingerprint(&["a", "b"]), fingerprint(&["a", "b"]));
        assert_ne!(fingerprint(&["ab", ""]), fingerprint(&["a", "b"]));
    }
}
