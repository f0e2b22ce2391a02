//! Multi-document YAML with line numbers: what `fluxgate validate` needs to
//! say `file:line`, and what the reconciler needs to report where a broken
//! manifest is.
//!
//! Documents are split on `---` marker lines (a marker at column 0 ends a
//! document in YAML, even inside a block scalar), so each document's first
//! line is known; each is then parsed on its own, so one broken document
//! does not hide the others.

use serde_json::Value;

/// Largest input accepted, so a hostile file cannot exhaust memory through
/// the parser (64 MiB).
pub const MAX_INPUT_BYTES: usize = 64 * 1024 * 1024;

/// One YAML document and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// 1-based line of the document's first content line.
    pub line: usize,
    /// The document's text.
    pub text: String,
    /// The parsed value.
    pub value: Value,
}

/// A document that is not valid YAML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line of the error (or of the document when the parser gives
    /// no location).
    pub line: usize,
    /// The parser's message.
    pub message: String,
}

fn is_marker(line: &str, marker: &str) -> bool {
    line == marker
        || line
            .strip_prefix(marker)
            .is_some_and(|rest| rest.starts_with([' ', '\t']))
}

/// Splits and parses a multi-document YAML text. Empty documents (only
/// comments, or `---` twice) are skipped. Every document is returned, parsed
/// or not, in order.
pub fn parse_documents(text: &str) -> Vec<Result<Document, ParseError>> {
    if text.len() > MAX_INPUT_BYTES {
        return vec![Err(ParseError {
            line: 1,
            message: format!(
                "input of {} bytes is over the limit of {MAX_INPUT_BYTES} bytes",
                text.len()
            ),
        })];
    }
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut start = 1;
    let mut flush = |lines: &mut Vec<&str>, start: usize| {
        let body = lines.join("\n");
        lines.clear();
        let first_content = body
            .lines()
            .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        let Some(offset) = first_content else {
            return;
        };
        let line = start + offset;
        match serde_saphyr::from_str::<Value>(&body) {
            Ok(Value::Null) => {}
            Ok(value) => out.push(Ok(Document {
                line,
                text: body,
                value,
            })),
            Err(err) => out.push(Err(ParseError {
                line: error_line(&err).map_or(line, |l| start + l.saturating_sub(1)),
                message: first_line(&err.to_string()),
            })),
        }
    };
    for (i, line) in text.lines().enumerate() {
        if is_marker(line, "---") || is_marker(line, "...") {
            flush(&mut current, start);
            start = i + 2;
            // `--- value` puts content on the marker line itself.
            if let Some(rest) = line.strip_prefix("---")
                && !rest.trim().is_empty()
            {
                current.push(rest.trim_start());
                start = i + 1;
            }
        } else {
            current.push(line);
        }
    }
    flush(&mut current, start);
    out
}

fn error_line(err: &serde_saphyr::Error) -> Option<usize> {
    // The message carries "line N" (1-based, within the document).
    let text = err.to_string();
    let at = text.find("line ")?;
    text[at + 5..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// Best-effort line of a field such as `spec.repo`, `spec.ref.branch` or
/// `spec.allowedRepos[1]` in a document's text; falls back to the
/// document's first line. Good enough to point an editor or a CI annotation
/// at the right place; never wrong about which document.
pub fn field_line(doc: &Document, field: &str) -> usize {
    let lines: Vec<&str> = doc.text.lines().collect();
    let mut pos = 0usize;
    let mut found = None;
    let mut min_indent = 0usize;
    for part in field.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let needle = format!("{key}:");
        let Some(hit) = lines.iter().enumerate().skip(pos).find(|(_, l)| {
            let trimmed = l.trim_start().trim_start_matches("- ");
            indent(l) >= min_indent && (trimmed.starts_with(&needle))
        }) else {
            break;
        };
        pos = hit.0 + 1;
        found = Some(hit.0);
        min_indent = indent(hit.1) + 1;
        if let Some(index) = index {
            let items: Vec<usize> = lines
                .iter()
                .enumerate()
                .skip(pos)
                .take_while(|(_, l)| l.trim().is_empty() || indent(l) >= min_indent - 1)
                .filter(|(_, l)| l.trim_start().starts_with("- "))
                .map(|(i, _)| i)
                .collect();
            if let Some(item) = items.get(index) {
                found = Some(*item);
                pos = item + 1;
            }
        }
    }
    // Lines of the document text are counted from the document's first
    // line, which may follow comments.
    let offset = doc
        .text
        .lines()
        .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .unwrap_or(0);
    found.map_or(doc.line, |i| doc.line + i - offset.min(i))
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# team a\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n# second\n---\napiVersion: fluxgate.dev/v1alpha1\nkind: FluxConfig\nmetadata:\n  name: web\nspec:\n  repo: https://x/y\n  ref:\n    branch: main\n";

    #[test]
    fn splits_documents_and_keeps_their_lines() {
        let docs: Vec<Document> = parse_documents(TEXT)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].line, 2);
        assert_eq!(docs[1].line, 9);
        assert_eq!(docs[1].value["spec"]["repo"], "https://x/y");
    }

    #[test]
    fn finds_field_lines() {
        let docs: Vec<Document> = parse_documents(TEXT)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(field_line(&docs[1], "spec.repo"), 14);
        assert_eq!(field_line(&docs[1], "spec.ref.branch"), 16);
        assert_eq!(field_line(&docs[1], "spec.nothing"), 13);
        assert_eq!(field_line(&docs[0], "metadata.name"), 5);
        let list = "kind: PlatformDefaults\nspec:\n  allowedRepos:\n    - a\n    - b\n";
        let doc = parse_documents(list).remove(0).unwrap();
        assert_eq!(field_line(&doc, "spec.allowedRepos[1]"), 5);
    }

    #[test]
    fn a_broken_document_does_not_hide_the_others() {
        let text = "a: 1\n---\nb: [unclosed\n---\nc: 3\n";
        let docs = parse_documents(text);
        assert_eq!(docs.len(), 3);
        assert!(docs[0].is_ok() && docs[2].is_ok());
        let err = docs[1].clone().unwrap_err();
        assert!(err.line >= 3, "{err}");
    }

    #[test]
    fn never_panics_on_odd_input() {
        for text in [
            "",
            "---",
            "---\n---\n...",
            "--- !!str x",
            "\u{0}",
            "-",
            ":",
            "a: *x",
        ] {
            let _ = parse_documents(text);
        }
    }
}
