//! Paths inside a repository (`spec.path`, `defaults.path`): relative to the
//! repository root, normalised, never escaping it.
//!
//! The normal form has no empty or `.` segments and no trailing `/`; the
//! repository root is `.`. A `..` segment is refused rather than resolved,
//! so a path can never climb out of the checkout, and what a team wrote is
//! what is applied. Percent-escapes (`%2e%2e`) are refused too: a path is
//! never URL-decoded, and must not become `..` for anything that does.

/// Longest path accepted (bytes), as in the CRD.
pub const MAX_REPO_PATH_LEN: usize = 1024;

/// Why a repository path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is longer than [`MAX_REPO_PATH_LEN`].
    #[error("path is {len} bytes long; at most {MAX_REPO_PATH_LEN} bytes are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The path starts with `/`.
    #[error(
        "path {path:?} is absolute; write it relative to the repository root, like deploy/prod"
    )]
    Absolute {
        /// The path as given.
        path: String,
    },
    /// The path starts with a Windows drive letter (`C:`).
    #[error(
        "path {path:?} starts with a drive letter; write it relative to the repository root with '/' separators, like deploy/prod"
    )]
    DriveLetter {
        /// The path as given.
        path: String,
    },
    /// A `..` segment.
    #[error(
        "path {path:?} contains a '..' segment; paths must stay inside the repository, so write it without '..'"
    )]
    ParentSegment {
        /// The path as given.
        path: String,
    },
    /// A backslash.
    #[error("path {path:?} contains a backslash; separate directories with '/'")]
    Backslash {
        /// The path as given.
        path: String,
    },
    /// A percent-escape such as `%2e` or `%2F`. Paths are taken literally,
    /// so `%2e%2e` is a directory of that name here; anything that
    /// URL-decodes the path later would read it as `..`.
    #[error(
        "path {path:?} contains the percent-escape {escape:?}; paths are taken literally, not URL-decoded, so write the characters themselves (and never '..')"
    )]
    PercentEscape {
        /// The path as given.
        path: String,
        /// The first escape, e.g. `%2e`.
        escape: String,
    },
    /// A NUL or other control character.
    #[error("path {path:?} contains a control character; only printable characters are allowed")]
    ControlChar {
        /// The path as given.
        path: String,
    },
}

/// Normalises a path relative to the repository root.
///
/// `""`, `.` and `./` give `.`; `./deploy//prod/` gives `deploy/prod`.
/// Refuses absolute paths, drive letters (`C:`), `..` segments,
/// percent-escapes (`%2e`), backslashes, control characters (including NUL)
/// and paths longer than [`MAX_REPO_PATH_LEN`] bytes. Other characters, including spaces and
/// non-ASCII letters, are kept as they are.
pub fn normalize_repo_path(path: &str) -> Result<String, PathError> {
    let owned = || path.to_owned();
    if path.len() > MAX_REPO_PATH_LEN {
        return Err(PathError::TooLong { len: path.len() });
    }
    if path.chars().any(char::is_control) {
        return Err(PathError::ControlChar { path: owned() });
    }
    if path.contains('\\') {
        return Err(PathError::Backslash { path: owned() });
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute { path: owned() });
    }
    if let Some(escape) = first_percent_escape(path) {
        return Err(PathError::PercentEscape {
            path: owned(),
            escape: escape.to_owned(),
        });
    }
    let mut segments = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err(PathError::ParentSegment { path: owned() }),
            _ => segments.push(segment),
        }
    }
    // Checked on the first segment that is kept, not on the raw text, so
    // `./C:` cannot normalise into a drive letter (found by fuzzing).
    if let Some(first) = segments.first() {
        let mut chars = first.chars();
        if let (Some(drive), Some(':')) = (chars.next(), chars.next())
            && drive.is_ascii_alphabetic()
        {
            return Err(PathError::DriveLetter { path: owned() });
        }
    }
    if segments.is_empty() {
        Ok(".".to_owned())
    } else {
        Ok(segments.join("/"))
    }
}

/// The first `%XX` (two hex digits) in `path`: a percent-escape, which
/// means nothing in a path but reads as `.`, `/`, `\\` or NUL to anything
/// that URL-decodes it.
fn first_percent_escape(path: &str) -> Option<&str> {
    path.match_indices('%').find_map(|(at, _)| {
        let escape = path.get(at..at + 3)?;
        escape[1..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
            .then_some(escape)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Recognises the expected error in table tests.
    type Check = fn(&PathError) -> bool;

    #[test]
    fn normalises_relative_paths() {
        let cases = [
            ("", "."),
            (".", "."),
            ("./", "."),
            ("./.", "."),
            ("deploy", "deploy"),
            ("./deploy/", "deploy"),
            ("deploy//prod", "deploy/prod"),
            ("deploy/./prod/.", "deploy/prod"),
            ("deploy/prod/", "deploy/prod"),
            ("...", "..."),
            ("..deploy/x..", "..deploy/x.."),
            (".hidden/app", ".hidden/app"),
            ("with space/ünïcode", "with space/ünïcode"),
            ("deploy:prod", "deploy:prod"),
            ("1:/x", "1:/x"),
            // A '%' without two hex digits after it is just a character.
            ("50%off", "50%off"),
            ("100%", "100%"),
            ("a%2", "a%2"),
            ("%zz/x", "%zz/x"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_repo_path(input).as_deref(), Ok(want), "{input:?}");
        }
    }

    #[test]
    fn refuses_paths_that_escape_or_confuse() {
        let cases: &[(&str, Check)] = &[
            ("/etc", |e| matches!(e, PathError::Absolute { .. })),
            ("//server/share", |e| {
                matches!(e, PathError::Absolute { .. })
            }),
            ("..", |e| matches!(e, PathError::ParentSegment { .. })),
            ("../other", |e| matches!(e, PathError::ParentSegment { .. })),
            ("deploy/../../etc", |e| {
                matches!(e, PathError::ParentSegment { .. })
            }),
            ("deploy/..", |e| {
                matches!(e, PathError::ParentSegment { .. })
            }),
            ("./../x", |e| matches!(e, PathError::ParentSegment { .. })),
            ("deploy\\prod", |e| matches!(e, PathError::Backslash { .. })),
            ("..\\x", |e| matches!(e, PathError::Backslash { .. })),
            ("C:/x", |e| matches!(e, PathError::DriveLetter { .. })),
            ("c:x", |e| matches!(e, PathError::DriveLetter { .. })),
            ("Z:", |e| matches!(e, PathError::DriveLetter { .. })),
            ("././z:", |e| matches!(e, PathError::DriveLetter { .. })),
            (".//C:/x", |e| matches!(e, PathError::DriveLetter { .. })),
            ("deploy\0", |e| matches!(e, PathError::ControlChar { .. })),
            ("deploy\nprod", |e| {
                matches!(e, PathError::ControlChar { .. })
            }),
            ("deploy\tprod", |e| {
                matches!(e, PathError::ControlChar { .. })
            }),
            ("deploy\u{7f}", |e| {
                matches!(e, PathError::ControlChar { .. })
            }),
            ("deploy\u{85}", |e| {
                matches!(e, PathError::ControlChar { .. })
            }),
            // Percent-escapes, which a URL-decoding consumer would read as
            // traversal (found by tests/tests/hostile_input.rs).
            (
                "%2e%2e/%2e%2e/etc",
                |e| matches!(e, PathError::PercentEscape { escape, .. } if escape == "%2e"),
            ),
            (
                "deploy/%2E%2E",
                |e| matches!(e, PathError::PercentEscape { escape, .. } if escape == "%2E"),
            ),
            (
                "..%2fetc",
                |e| matches!(e, PathError::PercentEscape { escape, .. } if escape == "%2f"),
            ),
            ("deploy%5c..%5cetc", |e| {
                matches!(e, PathError::PercentEscape { .. })
            }),
            ("deploy%00", |e| {
                matches!(e, PathError::PercentEscape { .. })
            }),
            (
                "%252e%252e",
                |e| matches!(e, PathError::PercentEscape { escape, .. } if escape == "%25"),
            ),
        ];
        for (input, check) in cases {
            match normalize_repo_path(input) {
                Ok(p) => panic!("{input:?} should be refused, got {p:?}"),
                Err(e) => {
                    assert!(check(&e), "{input:?} gave {e:?}");
                    let message = e.to_string();
                    assert!(message.starts_with("path "), "{message}");
                }
            }
        }
        let long = "a".repeat(MAX_REPO_PATH_LEN + 1);
        assert_eq!(
            normalize_repo_path(&long),
            Err(PathError::TooLong {
                len: MAX_REPO_PATH_LEN + 1
            })
        );
        assert!(normalize_repo_path(&"a".repeat(MAX_REPO_PATH_LEN)).is_ok());
    }

    #[test]
    fn error_messages_never_print_raw_control_characters() {
        let message = normalize_repo_path("a\u{1b}[31mred").map_err(|e| e.to_string());
        assert!(message.is_err_and(|m| !m.contains('\u{1b}')));
    }

    proptest! {
        #[test]
        fn never_yields_parent_or_absolute(input in "[a-z./\\\\:\u{0}-\u{1f} ]{0,40}") {
            if let Ok(path) = normalize_repo_path(&input) {
                prop_assert!(!path.starts_with('/'), "{:?} -> {:?}", input, path);
                prop_assert!(!path.split('/').any(|s| s == ".." || s.is_empty()), "{:?} -> {:?}", input, path);
                prop_assert!(path == "." || !path.split('/').any(|s| s == "."), "{:?} -> {:?}", input, path);
            }
        }

        #[test]
        fn normalisation_is_idempotent(input in "[a-zA-Z./:]{0,40}") {
            if let Ok(path) = normalize_repo_path(&input) {
                prop_assert_eq!(normalize_repo_path(&path), Ok(path.clone()));
            }
        }

        #[test]
        fn never_panics(input in ".{0,200}") {
            let _ = normalize_repo_path(&input);
        }
    }
}
