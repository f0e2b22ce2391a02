//! Git reference names: branch and tag names checked with git's own
//! `check-ref-format` rules (plus `--branch`'s "no leading `-`"), and full
//! commit ids.
//!
//! Checking here rather than leaving it to the reconciler's Git library
//! means a bad name is refused at admission with the rule it broke, and a
//! name can never be read as a command-line option or a revision expression
//! (`main@{1}`, `HEAD~2`, `-u`).

/// Longest branch or tag name accepted (bytes), as in the CRD.
pub const MAX_REF_NAME_LEN: usize = 255;

/// Why a branch, tag or commit was refused; each variant is one rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// The name is empty.
    #[error("ref name is empty; name a branch or tag such as main or v1.2.0")]
    Empty,
    /// The name is longer than [`MAX_REF_NAME_LEN`].
    #[error("ref name is {len} bytes long; at most {MAX_REF_NAME_LEN} bytes are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A control character, space or one of `~ ^ : ? * [ \`.
    #[error(
        "ref name {name:?} contains {ch:?}; git ref names must not contain control characters, spaces or any of ~ ^ : ? * [ \\"
    )]
    ForbiddenChar {
        /// The name.
        name: String,
        /// The character.
        ch: char,
    },
    /// `..` anywhere.
    #[error("ref name {name:?} contains '..'; git ref names must not contain two consecutive dots")]
    DoubleDot {
        /// The name.
        name: String,
    },
    /// `@{` anywhere.
    #[error("ref name {name:?} contains '@{{'; git ref names must not contain that sequence")]
    AtBrace {
        /// The name.
        name: String,
    },
    /// The name is `@`.
    #[error("ref name \"@\" is not allowed; git reserves it as a shorthand for HEAD")]
    AtAlone,
    /// The name is `HEAD`.
    #[error("ref name \"HEAD\" is not allowed; name the branch or tag itself")]
    Head,
    /// Starts with `-`.
    #[error("ref name {name:?} starts with '-'; branch and tag names must not start with '-'")]
    LeadingDash {
        /// The name.
        name: String,
    },
    /// Starts with `/`.
    #[error("ref name {name:?} starts with '/'; git ref names must not start or end with '/'")]
    LeadingSlash {
        /// The name.
        name: String,
    },
    /// Ends with `/`.
    #[error("ref name {name:?} ends with '/'; git ref names must not start or end with '/'")]
    TrailingSlash {
        /// The name.
        name: String,
    },
    /// `//` anywhere.
    #[error("ref name {name:?} contains '//'; git ref name components must not be empty")]
    DoubleSlash {
        /// The name.
        name: String,
    },
    /// Ends with `.`.
    #[error("ref name {name:?} ends with '.'; git ref names must not end with a dot")]
    TrailingDot {
        /// The name.
        name: String,
    },
    /// A `/`-separated component starts with `.`.
    #[error(
        "ref name {name:?} has a component starting with '.'; no part between slashes may start with a dot"
    )]
    ComponentLeadingDot {
        /// The name.
        name: String,
    },
    /// A `/`-separated component (or the name) ends with `.lock`.
    #[error(
        "ref name {name:?} has a component ending in '.lock'; no part between slashes may end with .lock"
    )]
    LockSuffix {
        /// The name.
        name: String,
    },
    /// A commit id that is not 40 or 64 lowercase hex digits.
    #[error(
        "commit {commit:?} is not a full commit id; write all 40 (SHA-1) or 64 (SHA-256) lowercase hex digits"
    )]
    InvalidCommit {
        /// The commit as given.
        commit: String,
    },
}

/// Checks a branch or tag name (the short name, e.g. `main` or
/// `release/1.2`) against git's `check-ref-format` rules.
///
/// Refused: empty or longer than [`MAX_REF_NAME_LEN`] bytes; ASCII control
/// characters, space, `~ ^ : ? * [ \`; `..`; `@{`; the names `@` and
/// `HEAD`; a leading `-` or `/`; a trailing `/` or `.`; `//`; any
/// `/`-separated component starting with `.` or ending in `.lock`.
/// Non-ASCII characters are allowed, as in git.
pub fn check_branch_or_tag(name: &str) -> Result<(), RefError> {
    let owned = || name.to_owned();
    if name.is_empty() {
        return Err(RefError::Empty);
    }
    if name.len() > MAX_REF_NAME_LEN {
        return Err(RefError::TooLong { len: name.len() });
    }
    if let Some(ch) = name.chars().find(|c| {
        c.is_ascii_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    }) {
        return Err(RefError::ForbiddenChar { name: owned(), ch });
    }
    if name == "@" {
        return Err(RefError::AtAlone);
    }
    if name == "HEAD" {
        return Err(RefError::Head);
    }
    if name.contains("..") {
        return Err(RefError::DoubleDot { name: owned() });
    }
    if name.contains("@{") {
        return Err(RefError::AtBrace { name: owned() });
    }
    if name.starts_with('-') {
        return Err(RefError::LeadingDash { name: owned() });
    }
    if name.starts_with('/') {
        return Err(RefError::LeadingSlash { name: owned() });
    }
    if name.ends_with('/') {
        return Err(RefError::TrailingSlash { name: owned() });
    }
    if name.contains("//") {
        return Err(RefError::DoubleSlash { name: owned() });
    }
    if name.ends_with('.') {
        return Err(RefError::TrailingDot { name: owned() });
    }
    for component in name.split('/') {
        if component.starts_with('.') {
            return Err(RefError::ComponentLeadingDot { name: owned() });
        }
        if component.ends_with(".lock") {
            return Err(RefError::LockSuffix { name: owned() });
        }
    }
    Ok(())
}

/// Checks a full commit id: 40 (SHA-1) or 64 (SHA-256) lowercase hex
/// digits. Abbreviated ids are refused because they can become ambiguous as
/// a repository grows.
pub fn check_commit(commit: &str) -> Result<(), RefError> {
    let valid = matches!(commit.len(), 40 | 64)
        && commit
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if valid {
        Ok(())
    } else {
        Err(RefError::InvalidCommit {
            commit: commit.chars().take(80).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Recognises the expected error in table tests.
    type Check = fn(&RefError) -> bool;

    #[test]
    fn accepts_ordinary_branch_and_tag_names() {
        for name in [
            "main",
            "v1.2.0",
            "release/1.2",
            "feature/JIRA-123_add-thing",
            "a.b",
            "a@b",
            "a{b}",
            "x.lockx",
            "lock",
            "ünïcode",
            "@x",
            "head",
            "refs/heads/main",
            &"a".repeat(MAX_REF_NAME_LEN),
        ] {
            assert_eq!(check_branch_or_tag(name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn refuses_names_git_refuses_with_the_rule_broken() {
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, RefError::Empty)),
            ("a..b", |e| matches!(e, RefError::DoubleDot { .. })),
            ("..", |e| matches!(e, RefError::DoubleDot { .. })),
            ("a b", |e| {
                matches!(e, RefError::ForbiddenChar { ch: ' ', .. })
            }),
            ("a\tb", |e| {
                matches!(e, RefError::ForbiddenChar { ch: '\t', .. })
            }),
            ("a\0b", |e| {
                matches!(e, RefError::ForbiddenChar { ch: '\0', .. })
            }),
            ("a\u{7f}", |e| matches!(e, RefError::ForbiddenChar { .. })),
            ("HEAD~1", |e| {
                matches!(e, RefError::ForbiddenChar { ch: '~', .. })
            }),
            ("main^", |e| {
                matches!(e, RefError::ForbiddenChar { ch: '^', .. })
            }),
            ("a:b", |e| {
                matches!(e, RefError::ForbiddenChar { ch: ':', .. })
            }),
            ("a?", |e| {
                matches!(e, RefError::ForbiddenChar { ch: '?', .. })
            }),
            ("a*", |e| {
                matches!(e, RefError::ForbiddenChar { ch: '*', .. })
            }),
            ("a[b", |e| {
                matches!(e, RefError::ForbiddenChar { ch: '[', .. })
            }),
            ("a\\b", |e| {
                matches!(e, RefError::ForbiddenChar { ch: '\\', .. })
            }),
            ("-u", |e| matches!(e, RefError::LeadingDash { .. })),
            ("--upload-pack=x", |e| {
                matches!(e, RefError::LeadingDash { .. })
            }),
            ("/main", |e| matches!(e, RefError::LeadingSlash { .. })),
            ("main/", |e| matches!(e, RefError::TrailingSlash { .. })),
            ("a//b", |e| matches!(e, RefError::DoubleSlash { .. })),
            ("main.", |e| matches!(e, RefError::TrailingDot { .. })),
            ("main.lock", |e| matches!(e, RefError::LockSuffix { .. })),
            ("a.lock/b", |e| matches!(e, RefError::LockSuffix { .. })),
            (".hidden", |e| {
                matches!(e, RefError::ComponentLeadingDot { .. })
            }),
            ("a/.b", |e| {
                matches!(e, RefError::ComponentLeadingDot { .. })
            }),
            ("main@{1}", |e| matches!(e, RefError::AtBrace { .. })),
            ("@{-1}", |e| matches!(e, RefError::AtBrace { .. })),
            ("@", |e| matches!(e, RefError::AtAlone)),
            ("HEAD", |e| matches!(e, RefError::Head)),
        ];
        for (name, check) in cases {
            match check_branch_or_tag(name) {
                Ok(()) => panic!("{name:?} should be refused"),
                Err(e) => {
                    assert!(check(&e), "{name:?} gave {e:?}");
                    assert!(
                        e.to_string().starts_with(|c: char| !c.is_uppercase()),
                        "{e}"
                    );
                }
            }
        }
        let long = "a".repeat(MAX_REF_NAME_LEN + 1);
        assert_eq!(
            check_branch_or_tag(&long),
            Err(RefError::TooLong {
                len: MAX_REF_NAME_LEN + 1
            })
        );
    }

    #[test]
    fn commit_must_be_full_lowercase_hex() {
        let sha1 = "0123456789abcdef0123456789abcdef01234567";
        let sha256 = "0123456789abcdef".repeat(4);
        assert_eq!(check_commit(sha1), Ok(()));
        assert_eq!(check_commit(&sha256), Ok(()));
        for bad in [
            "",
            "abc123",
            &sha1[..39],
            &format!("{sha1}0"),
            &sha1.to_uppercase(),
            "g123456789abcdef0123456789abcdef01234567",
            &sha256[..63],
            " 123456789abcdef0123456789abcdef01234567",
        ] {
            assert!(
                matches!(check_commit(bad), Err(RefError::InvalidCommit { .. })),
                "{bad:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn never_panics(name in ".{0,300}") {
            let _ = check_branch_or_tag(&name);
            let _ = check_commit(&name);
        }

        #[test]
        fn accepted_names_are_safe_to_pass_to_git(name in "[a-zA-Z0-9./@{}_-]{1,30}") {
            if check_branch_or_tag(&name).is_ok() {
                prop_assert!(!name.starts_with('-'), "{}", name);
                prop_assert!(!name.contains(".."), "{}", name);
                prop_assert!(!name.contains("@{"), "{}", name);
                prop_assert!(
                    !name.split('/').any(|c| c.is_empty() || c.starts_with('.')),
                    "{}",
                    name
                );
            }
        }
    }
}
