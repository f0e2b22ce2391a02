//! Allow-list patterns from `PlatformDefaults`: repository URL patterns
//! ([`RepoPattern`]) and name patterns for namespaces, images and clusters
//! ([`NamePattern`]).
//!
//! Both are parsed once, when a `PlatformDefaults` is read, so a bad pattern
//! is reported to the platform team instead of silently matching nothing.
//! Matching never builds a regular expression from pattern text: it compares
//! segment by segment and matches `*` with the two-pointer glob algorithm,
//! which takes at most `O(pattern × value)` steps whatever the input.
//!
//! The only placeholder is `{namespace}`: the namespace of the `FluxConfig`
//! being checked. It is substituted as literal text, and a pattern that uses
//! it matches nothing when the namespace given is not a DNS-1123 label.

use std::fmt;

use crate::rules::url::{
    NormalHost, RepoUrl, Scheme, UrlError, normalize_host, normalize_segment_text, split,
    strip_git_suffix,
};

/// Longest pattern accepted (bytes), as in the CRD's `maxLength`.
pub const MAX_PATTERN_LEN: usize = 512;

/// Longest namespace or cluster pattern accepted (bytes).
pub const MAX_NAME_PATTERN_LEN: usize = 253;

/// The one placeholder patterns may use.
pub const NAMESPACE_PLACEHOLDER: &str = "{namespace}";

/// Why a pattern was refused. Every message names the pattern and says what
/// is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is empty.
    #[error(
        "pattern is empty; write a pattern such as https://git.corp.example/{{namespace}}/* or {{namespace}}-*"
    )]
    Empty,
    /// The pattern is too long.
    #[error("pattern {pattern:?} is {len} bytes long; at most {max} bytes are allowed")]
    TooLong {
        /// The pattern text.
        pattern: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A repository pattern breaks a URL rule; the source says which.
    #[error("repository pattern {pattern:?} is not a valid url pattern")]
    Url {
        /// The pattern text.
        pattern: String,
        /// The URL rule broken.
        #[source]
        source: UrlError,
    },
    /// The host has a `*` other than a leading `*.` label.
    #[error(
        "repository pattern {pattern:?} has '*' in its host; the host may only start with '*.' followed by at least two literal labels, like https://*.corp.example/team-a/*"
    )]
    HostWildcard {
        /// The pattern text.
        pattern: String,
    },
    /// The host has a placeholder.
    #[error(
        "repository pattern {pattern:?} has a placeholder in its host; {{namespace}} is allowed only in the path"
    )]
    PlaceholderInHost {
        /// The pattern text.
        pattern: String,
    },
    /// A placeholder other than `{namespace}`.
    #[error(
        "pattern {pattern:?} uses the unknown placeholder {{{name}}}; the only placeholder is {{namespace}}"
    )]
    UnknownPlaceholder {
        /// The pattern text.
        pattern: String,
        /// The name between the braces.
        name: String,
    },
    /// A `{` without `}` or the reverse.
    #[error(
        "pattern {pattern:?} has an unbalanced '{{' or '}}'; braces are only allowed in the placeholder {{namespace}}"
    )]
    UnbalancedBrace {
        /// The pattern text.
        pattern: String,
    },
    /// `**` anywhere but as the whole last path segment.
    #[error(
        "repository pattern {pattern:?} uses '**' inside or before other segments; '**' is allowed only as the whole last path segment, like https://git.corp.example/team-a/**"
    )]
    MisplacedDoubleStar {
        /// The pattern text.
        pattern: String,
    },
    /// `**` in a name pattern.
    #[error(
        "{kind} pattern {pattern:?} contains '**'; use '*', which matches any run of characters except '/'"
    )]
    DoubleStarInName {
        /// The pattern text.
        pattern: String,
        /// What the pattern is for.
        kind: NameKind,
    },
    /// A repository pattern without a path.
    #[error(
        "repository pattern {pattern:?} has no path; name at least one segment or '**', like https://git.corp.example/{{namespace}}/*"
    )]
    MissingPath {
        /// The pattern text.
        pattern: String,
    },
    /// A `..` path segment.
    #[error("repository pattern {pattern:?} contains a '..' segment; write the path without '..'")]
    DotDot {
        /// The pattern text.
        pattern: String,
    },
    /// A character outside the kind's allowed set.
    #[error("{kind} pattern {pattern:?} contains {ch:?}; allowed are {}", .kind.allowed())]
    InvalidChar {
        /// The pattern text.
        pattern: String,
        /// The offending character.
        ch: char,
        /// What the pattern is for.
        kind: NameKind,
    },
    /// A namespace or cluster pattern starting or ending with `-`.
    #[error(
        "{kind} pattern {pattern:?} starts or ends with '-'; it must start and end with a letter, a digit, '*' or {{namespace}} to produce a DNS label"
    )]
    InvalidEdge {
        /// The pattern text.
        pattern: String,
        /// What the pattern is for.
        kind: NameKind,
    },
    /// An image pattern with an empty `/`-separated part.
    #[error(
        "{kind} pattern {pattern:?} has an empty part between '/'; write it like registry.corp.example/team/*"
    )]
    EmptyPart {
        /// The pattern text.
        pattern: String,
        /// What the pattern is for.
        kind: NameKind,
    },
}

/// One piece of a pattern segment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// Literal text.
    Lit(String),
    /// Any run of characters within the segment, possibly empty.
    Star,
    /// The FluxConfig's namespace.
    Namespace,
}

/// A token before its literal text is checked.
enum RawToken<'a> {
    Lit(&'a str),
    Star,
    Namespace,
}

/// Splits one segment into literal runs, `*` and `{namespace}`.
fn tokenize<'a>(pattern: &str, segment: &'a str) -> Result<Vec<RawToken<'a>>, PatternError> {
    let mut tokens = Vec::new();
    let mut rest = segment;
    while !rest.is_empty() {
        let special = rest.find(['*', '{', '}']).unwrap_or(rest.len());
        let (literal, tail) = rest.split_at(special);
        if !literal.is_empty() {
            tokens.push(RawToken::Lit(literal));
        }
        rest = tail;
        if let Some(after) = rest.strip_prefix('*') {
            tokens.push(RawToken::Star);
            rest = after;
        } else if let Some(after) = rest.strip_prefix('{') {
            let Some((name, after)) = after.split_once('}') else {
                return Err(PatternError::UnbalancedBrace {
                    pattern: pattern.to_owned(),
                });
            };
            if name.contains('{') {
                return Err(PatternError::UnbalancedBrace {
                    pattern: pattern.to_owned(),
                });
            }
            if name != "namespace" {
                return Err(PatternError::UnknownPlaceholder {
                    pattern: pattern.to_owned(),
                    name: name.to_owned(),
                });
            }
            tokens.push(RawToken::Namespace);
            rest = after;
        } else if rest.starts_with('}') {
            return Err(PatternError::UnbalancedBrace {
                pattern: pattern.to_owned(),
            });
        }
    }
    Ok(tokens)
}

pub use crate::names::is_dns_label;

/// Glob-matches one segment: `*` matches any run of bytes (the caller has
/// split on `/`), `{namespace}` matches the namespace literally.
///
/// The classic two-pointer algorithm: on a mismatch, only the most recent
/// `*` is extended, so the work is bounded by `pattern × value` rather than
/// exponential.
fn glob_match(tokens: &[Token], namespace: &str, value: &str) -> bool {
    let mut pattern: Vec<Option<u8>> = Vec::new();
    for token in tokens {
        match token {
            Token::Lit(text) => pattern.extend(text.bytes().map(Some)),
            Token::Namespace => pattern.extend(namespace.bytes().map(Some)),
            Token::Star => pattern.push(None),
        }
    }
    let value = value.as_bytes();
    let (mut p, mut v) = (0usize, 0usize);
    // Position of the last star seen, and where in `value` it resumes.
    let mut backtrack: Option<(usize, usize)> = None;
    while let Some(&byte) = value.get(v) {
        match pattern.get(p) {
            Some(Some(expected)) if *expected == byte => {
                p += 1;
                v += 1;
            }
            Some(None) => {
                backtrack = Some((p, v));
                p += 1;
            }
            _ => match backtrack {
                Some((star, resume)) => {
                    p = star + 1;
                    v = resume + 1;
                    backtrack = Some((star, resume + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(Option::is_none))
}

/// The host part of a repository pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// Exactly this normalised host.
    Exact(String),
    /// `*.` followed by this suffix: one or more whole labels, then the
    /// suffix.
    Subdomains(String),
}

/// A repository URL pattern from `allowedRepos` or a credential rule, e.g.
/// `https://git.corp.example/{namespace}/*`.
///
/// - Scheme, optional ssh user, host and port are literal and normalised
///   like a [`RepoUrl`]; the host may start with `*.` to match one or more
///   whole labels (`*.corp.example` matches `git.corp.example` and
///   `a.b.corp.example`, never `corp.example` nor
///   `corp.example.evil.example`). An ssh pattern without a user matches any
///   user.
/// - Each path segment is literal text, `*` (within the segment: `*` is one
///   whole segment, `app-*` a segment starting with `app-`) and
///   `{namespace}`; a last segment `**` matches one or more further
///   segments. Path text is normalised like a URL's (percent-encoding, `.`
///   and empty segments, trailing `/` and `.git`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoPattern {
    text: String,
    scheme: Scheme,
    user: Option<String>,
    host: HostPattern,
    port: Option<u16>,
    segments: Vec<Vec<Token>>,
    deep: bool,
    uses_namespace: bool,
}

impl RepoPattern {
    /// Parses a repository URL pattern.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let pattern = || text.to_owned();
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.len() > MAX_PATTERN_LEN {
            return Err(PatternError::TooLong {
                pattern: pattern(),
                len: text.len(),
                max: MAX_PATTERN_LEN,
            });
        }
        let url_error = |source| PatternError::Url {
            pattern: pattern(),
            source,
        };
        let parts = split(text).map_err(url_error)?;
        if parts.host.contains(['{', '}']) {
            return Err(PatternError::PlaceholderInHost { pattern: pattern() });
        }
        let host = match parts.host.strip_prefix("*.") {
            Some(suffix) => {
                if suffix.contains('*') {
                    return Err(PatternError::HostWildcard { pattern: pattern() });
                }
                let NormalHost { text: suffix, ip } = normalize_host(suffix).map_err(url_error)?;
                if ip.is_some() || !suffix.contains('.') {
                    return Err(PatternError::HostWildcard { pattern: pattern() });
                }
                HostPattern::Subdomains(suffix)
            }
            None => {
                if parts.host.contains('*') {
                    return Err(PatternError::HostWildcard { pattern: pattern() });
                }
                HostPattern::Exact(normalize_host(parts.host).map_err(url_error)?.text)
            }
        };
        let mut segments = Vec::new();
        let mut deep = false;
        let mut uses_namespace = false;
        for raw in parts.path.split('/').filter(|s| !s.is_empty()) {
            if deep {
                // Something other than `.` after `**`; `.` is dropped below.
                if raw != "." {
                    return Err(PatternError::MisplacedDoubleStar { pattern: pattern() });
                }
                continue;
            }
            if raw == "**" {
                deep = true;
                continue;
            }
            if raw.contains("**") {
                return Err(PatternError::MisplacedDoubleStar { pattern: pattern() });
            }
            let mut tokens = Vec::new();
            for token in tokenize(text, raw)? {
                tokens.push(match token {
                    RawToken::Lit(literal) => {
                        Token::Lit(normalize_segment_text(literal).map_err(url_error)?)
                    }
                    RawToken::Star => Token::Star,
                    RawToken::Namespace => {
                        uses_namespace = true;
                        Token::Namespace
                    }
                });
            }
            match tokens.as_slice() {
                [Token::Lit(dot)] if dot == "." => {}
                [Token::Lit(dots)] if dots == ".." => {
                    return Err(PatternError::DotDot { pattern: pattern() });
                }
                _ => segments.push(tokens),
            }
        }
        if !deep && let Some(last) = segments.last_mut() {
            strip_pattern_git_suffix(last);
        }
        if segments.is_empty() && !deep {
            return Err(PatternError::MissingPath { pattern: pattern() });
        }
        Ok(Self {
            text: text.to_owned(),
            scheme: parts.scheme,
            user: parts.user.map(str::to_owned),
            host,
            port: parts.port,
            segments,
            deep,
            uses_namespace,
        })
    }

    /// Whether `url` matches this pattern for a FluxConfig in `namespace`.
    ///
    /// Scheme, user (when the pattern names one), host and port must match,
    /// then the path segment by segment: without `**` the URL has exactly as
    /// many segments as the pattern, with `**` at least one more. This does
    /// not apply the internal-host rule; see
    /// [`allows_internal_host`](Self::allows_internal_host).
    pub fn matches(&self, url: &RepoUrl, namespace: &str) -> bool {
        if self.uses_namespace && !is_dns_label(namespace) {
            return false;
        }
        if url.scheme() != self.scheme || url.port() != self.port {
            return false;
        }
        if let Some(user) = &self.user
            && url.user() != Some(user.as_str())
        {
            return false;
        }
        let host_matches = match &self.host {
            HostPattern::Exact(host) => url.host() == host,
            HostPattern::Subdomains(suffix) => {
                url.ip().is_none()
                    && url
                        .host()
                        .strip_suffix(suffix.as_str())
                        .and_then(|prefix| prefix.strip_suffix('.'))
                        .is_some_and(|labels| !labels.is_empty())
            }
        };
        if !host_matches {
            return false;
        }
        let segments = url.segments();
        let count_ok = if self.deep {
            segments.len() > self.segments.len()
        } else {
            segments.len() == self.segments.len()
        };
        count_ok
            && self
                .segments
                .iter()
                .zip(segments)
                .all(|(pattern, segment)| glob_match(pattern, namespace, segment))
    }

    /// The host when the pattern names exactly one (no `*.`), normalised
    /// like [`RepoUrl::host`].
    pub fn exact_host(&self) -> Option<&str> {
        match &self.host {
            HostPattern::Exact(host) => Some(host),
            HostPattern::Subdomains(_) => None,
        }
    }

    /// The internal-host rule: a URL whose host is internal (see
    /// [`RepoUrl::internal_reason`]) is allowed only by a pattern that names
    /// exactly that host, so a wildcard can never open the way to
    /// `localhost` or a metadata endpoint. Returns `true` for URLs whose host
    /// is not internal. Use together with [`matches`](Self::matches).
    pub fn allows_internal_host(&self, url: &RepoUrl) -> bool {
        url.internal_reason().is_none() || self.exact_host() == Some(url.host())
    }

    /// Whether the pattern uses `{namespace}`.
    pub fn uses_namespace(&self) -> bool {
        self.uses_namespace
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for RepoPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for RepoPattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Strips `.git` from the end of a pattern's last segment the way
/// [`strip_git_suffix`] does for URLs, so `https://h/t/app.git` and
/// `https://h/t/*.git` match the normalised `https://h/t/app`.
fn strip_pattern_git_suffix(tokens: &mut Vec<Token>) {
    if let [Token::Lit(only)] = tokens.as_mut_slice() {
        strip_git_suffix(only);
        return;
    }
    while let Some(Token::Lit(last)) = tokens.last_mut() {
        let Some(stem) = last.strip_suffix(".git") else {
            return;
        };
        let len = stem.len();
        last.truncate(len);
        if last.is_empty() {
            tokens.pop();
        }
    }
}

/// What a [`NamePattern`] is for; decides its characters and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// `allowedTargetNamespaces` and `protectedNamespaces`: must produce
    /// DNS-1123 labels.
    Namespace,
    /// `clusters`: logical cluster ids, DNS-1123 labels.
    Cluster,
    /// `allowedImages`: container image references.
    Image,
}

impl NameKind {
    /// The kind's name as used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            NameKind::Namespace => "namespace",
            NameKind::Cluster => "cluster",
            NameKind::Image => "image",
        }
    }

    /// The characters a pattern of this kind may use, for messages.
    pub fn allowed(self) -> &'static str {
        match self {
            NameKind::Namespace | NameKind::Cluster => {
                "lowercase letters, digits, '-', '*' and {namespace}"
            }
            NameKind::Image => "letters, digits, '/', ':', '@', '.', '_', '-', '*' and {namespace}",
        }
    }

    fn max_len(self) -> usize {
        match self {
            NameKind::Namespace | NameKind::Cluster => MAX_NAME_PATTERN_LEN,
            NameKind::Image => MAX_PATTERN_LEN,
        }
    }

    fn allows_char(self, c: char) -> bool {
        match self {
            NameKind::Namespace | NameKind::Cluster => {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
            }
            NameKind::Image => c.is_ascii_alphanumeric() || "/:@._-".contains(c),
        }
    }
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name pattern: namespaces (`{namespace}-*`), images
/// (`registry.corp.example/fluxgate/*`) or cluster ids (`prod-*`).
///
/// Literal text, `*` matching any run of characters except `/` (possibly
/// empty), and `{namespace}`. Matching is exact and case-sensitive; the
/// value is not normalised (an image `reconciler` is not expanded to
/// `docker.io/library/reconciler`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern {
    text: String,
    kind: NameKind,
    /// The pattern split on `/` (one part for namespaces and clusters).
    parts: Vec<Vec<Token>>,
    uses_namespace: bool,
}

impl NamePattern {
    /// Parses a name pattern of the given kind.
    pub fn parse(text: &str, kind: NameKind) -> Result<Self, PatternError> {
        let pattern = || text.to_owned();
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text.len() > kind.max_len() {
            return Err(PatternError::TooLong {
                pattern: pattern(),
                len: text.len(),
                max: kind.max_len(),
            });
        }
        if text.contains("**") {
            return Err(PatternError::DoubleStarInName {
                pattern: pattern(),
                kind,
            });
        }
        let mut parts = Vec::new();
        let mut uses_namespace = false;
        // Only images have '/'-separated parts; elsewhere '/' is refused as
        // a character like any other.
        let pieces: Vec<&str> = match kind {
            NameKind::Image => text.split('/').collect(),
            NameKind::Namespace | NameKind::Cluster => vec![text],
        };
        for part in pieces {
            let mut tokens = Vec::new();
            for token in tokenize(text, part)? {
                tokens.push(match token {
                    RawToken::Lit(literal) => {
                        if let Some(ch) = literal.chars().find(|c| !kind.allows_char(*c)) {
                            return Err(PatternError::InvalidChar {
                                pattern: pattern(),
                                ch,
                                kind,
                            });
                        }
                        Token::Lit(literal.to_owned())
                    }
                    RawToken::Star => Token::Star,
                    RawToken::Namespace => {
                        uses_namespace = true;
                        Token::Namespace
                    }
                });
            }
            if tokens.is_empty() {
                return Err(PatternError::EmptyPart {
                    pattern: pattern(),
                    kind,
                });
            }
            parts.push(tokens);
        }
        if matches!(kind, NameKind::Namespace | NameKind::Cluster)
            && (text.starts_with('-') || text.ends_with('-'))
        {
            return Err(PatternError::InvalidEdge {
                pattern: pattern(),
                kind,
            });
        }
        Ok(Self {
            text: text.to_owned(),
            kind,
            parts,
            uses_namespace,
        })
    }

    /// Parses a namespace pattern (`allowedTargetNamespaces`,
    /// `protectedNamespaces`).
    pub fn namespace(text: &str) -> Result<Self, PatternError> {
        Self::parse(text, NameKind::Namespace)
    }

    /// Parses an image pattern (`allowedImages`).
    pub fn image(text: &str) -> Result<Self, PatternError> {
        Self::parse(text, NameKind::Image)
    }

    /// Parses a cluster pattern (`clusters`).
    pub fn cluster(text: &str) -> Result<Self, PatternError> {
        Self::parse(text, NameKind::Cluster)
    }

    /// Whether `value` matches for a FluxConfig in `namespace`. A pattern
    /// using `{namespace}` matches nothing when `namespace` is not a DNS-1123
    /// label.
    pub fn matches(&self, value: &str, namespace: &str) -> bool {
        if self.uses_namespace && !is_dns_label(namespace) {
            return false;
        }
        let mut values = value.split('/');
        let all_parts_match = self.parts.iter().all(|tokens| {
            values
                .next()
                .is_some_and(|part| glob_match(tokens, namespace, part))
        });
        all_parts_match && values.next().is_none()
    }

    /// Whether the pattern has neither `*` nor `{namespace}`, i.e. matches
    /// exactly its own text.
    pub fn is_literal(&self) -> bool {
        !self.uses_namespace
            && self
                .parts
                .iter()
                .flatten()
                .all(|token| matches!(token, Token::Lit(_)))
    }

    /// Whether the pattern uses `{namespace}`.
    pub fn uses_namespace(&self) -> bool {
        self.uses_namespace
    }

    /// The name the pattern produces for `namespace` when it has no `*`
    /// (e.g. `{namespace}-ci` gives `team-a-ci`), so callers can list the
    /// concrete namespaces a team may use.
    pub fn expand(&self, namespace: &str) -> Option<String> {
        let mut out = String::new();
        for (i, tokens) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push('/');
            }
            for token in tokens {
                match token {
                    Token::Lit(text) => out.push_str(text),
                    Token::Namespace => out.push_str(namespace),
                    Token::Star => return None,
                }
            }
        }
        Some(out)
    }

    /// What the pattern is for.
    pub fn kind(&self) -> NameKind {
        self.kind
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Recognises the expected error in table tests.
    type Check = fn(&PatternError) -> bool;

    fn url(text: &str) -> RepoUrl {
        match RepoUrl::parse(text) {
            Ok(url) => url,
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    fn repo(text: &str) -> RepoPattern {
        match RepoPattern::parse(text) {
            Ok(p) => p,
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    fn repo_err(text: &str) -> PatternError {
        match RepoPattern::parse(text) {
            Ok(p) => panic!("{text:?} should be refused, got {p:?}"),
            Err(e) => e,
        }
    }

    fn name(text: &str, kind: NameKind) -> NamePattern {
        match NamePattern::parse(text, kind) {
            Ok(p) => p,
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    fn name_err(text: &str, kind: NameKind) -> PatternError {
        match NamePattern::parse(text, kind) {
            Ok(p) => panic!("{text:?} should be refused, got {p:?}"),
            Err(e) => e,
        }
    }

    /// (pattern, url, namespace, matches)
    const REPO_CASES: &[(&str, &str, &str, bool)] = &[
        (
            "https://git.corp.example/team-a/*",
            "https://git.corp.example/team-a/web",
            "x",
            true,
        ),
        (
            "https://git.corp.example/team-a/*",
            "https://git.corp.example/team-a/web.git",
            "x",
            true,
        ),
        (
            "https://git.corp.example/team-a/*",
            "HTTPS://GIT.corp.example:443/team-a//web/",
            "x",
            true,
        ),
        (
            "https://git.corp.example/team-a/*",
            "https://git.corp.example/team-a",
            "x",
            false,
        ),
        (
            "https://git.corp.example/team-a/*",
            "https://git.corp.example/team-a/x/y",
            "x",
            false,
        ),
        (
            "https://git.corp.example/team-a/*",
            "https://git.corp.example/team-b/x",
            "x",
            false,
        ),
        (
            "https://git.corp.example/team-a/*",
            "https://git.corp.example.evil.example/team-a/x",
            "x",
            false,
        ),
        (
            "https://git.corp.example/team-a/*",
            "https://evil.example/git.corp.example/team-a/x",
            "x",
            false,
        ),
        (
            "https://git.corp.example/team-a/*",
            "https://git.corp.example:8443/team-a/x",
            "x",
            false,
        ),
        (
            "https://git.corp.example/team-a/*",
            "http://git.corp.example/team-a/x",
            "x",
            false,
        ),
        (
            "https://git.corp.example/team-a/*",
            "ssh://git@git.corp.example/team-a/x",
            "x",
            false,
        ),
        (
            "https://git.corp.example/team-a/*",
            "https://git.corp.example/Team-A/x",
            "x",
            false,
        ),
        (
            "https://git.corp.example/team-a/*",
            "https://git.corp.example/team-ab/x",
            "x",
            false,
        ),
        (
            "https://git.corp.example/{namespace}/*",
            "https://git.corp.example/team-a/web",
            "team-a",
            true,
        ),
        (
            "https://git.corp.example/{namespace}/*",
            "https://git.corp.example/team-b/web",
            "team-a",
            false,
        ),
        (
            "https://git.corp.example/{namespace}/*",
            "https://git.corp.example/team-a/web",
            "Team-A",
            false,
        ),
        (
            "https://git.corp.example/{namespace}/*",
            "https://git.corp.example/*/web",
            "*",
            false,
        ),
        (
            "https://git.corp.example/{namespace}/*",
            "https://git.corp.example/x/web",
            "",
            false,
        ),
        (
            "https://git.corp.example/apps/{namespace}-*",
            "https://git.corp.example/apps/team-a-web",
            "team-a",
            true,
        ),
        (
            "https://git.corp.example/apps/{namespace}-*",
            "https://git.corp.example/apps/team-ab-web",
            "team-a",
            false,
        ),
        (
            "https://git.corp.example/apps/{namespace}-*",
            "https://git.corp.example/apps/team-a",
            "team-a",
            false,
        ),
        (
            "https://git.corp.example/apps/{namespace}",
            "https://git.corp.example/apps/team-a.git",
            "team-a",
            true,
        ),
        (
            "https://git.corp.example/team-a/app-*",
            "https://git.corp.example/team-a/app-web",
            "x",
            true,
        ),
        (
            "https://git.corp.example/team-a/app-*",
            "https://git.corp.example/team-a/app-",
            "x",
            true,
        ),
        (
            "https://git.corp.example/team-a/app-*",
            "https://git.corp.example/team-a/web-app-x",
            "x",
            false,
        ),
        (
            "https://git.corp.example/team-a/*-app",
            "https://git.corp.example/team-a/web-app",
            "x",
            true,
        ),
        (
            "https://git.corp.example/team-a/*.git",
            "https://git.corp.example/team-a/web",
            "x",
            true,
        ),
        (
            "https://git.corp.example/team-a/web.git",
            "https://git.corp.example/team-a/web",
            "x",
            true,
        ),
        (
            "https://git.corp.example/team-a/web",
            "https://git.corp.example/team-a/web.git",
            "x",
            true,
        ),
        (
            "https://git.corp.example/regulated/**",
            "https://git.corp.example/regulated/a",
            "x",
            true,
        ),
        (
            "https://git.corp.example/regulated/**",
            "https://git.corp.example/regulated/a/b/c.git",
            "x",
            true,
        ),
        (
            "https://git.corp.example/regulated/**",
            "https://git.corp.example/regulated",
            "x",
            false,
        ),
        (
            "https://git.corp.example/regulated/**",
            "https://git.corp.example/regulated-x/a",
            "x",
            false,
        ),
        (
            "https://git.corp.example/**",
            "https://git.corp.example/anything/at/all",
            "x",
            true,
        ),
        (
            "https://*.corp.example/x/*",
            "https://git.corp.example/x/web",
            "x",
            true,
        ),
        (
            "https://*.corp.example/x/*",
            "https://a.b.corp.example/x/web",
            "x",
            true,
        ),
        (
            "https://*.corp.example/x/*",
            "https://corp.example/x/web",
            "x",
            false,
        ),
        (
            "https://*.corp.example/x/*",
            "https://evilcorp.example/x/web",
            "x",
            false,
        ),
        (
            "https://*.corp.example/x/*",
            "https://corp.example.evil.example/x/web",
            "x",
            false,
        ),
        (
            "https://*.corp.example/x/*",
            "https://git.corp.example.evil.example/x/web",
            "x",
            false,
        ),
        (
            "ssh://git@git.corp.example/team-a/*",
            "ssh://git@git.corp.example/team-a/web",
            "x",
            true,
        ),
        (
            "ssh://git@git.corp.example/team-a/*",
            "ssh://root@git.corp.example/team-a/web",
            "x",
            false,
        ),
        (
            "ssh://git@git.corp.example/team-a/*",
            "ssh://git.corp.example/team-a/web",
            "x",
            false,
        ),
        (
            "ssh://git.corp.example/team-a/*",
            "ssh://anyone@git.corp.example/team-a/web",
            "x",
            true,
        ),
        (
            "ssh://git.corp.example:2222/team-a/*",
            "ssh://git.corp.example:2222/team-a/web",
            "x",
            true,
        ),
        (
            "ssh://git.corp.example:22/team-a/*",
            "ssh://git.corp.example/team-a/web",
            "x",
            true,
        ),
        (
            "https://git.corp.example/a%7Eb/*",
            "https://git.corp.example/a~b/web",
            "x",
            true,
        ),
        (
            "https://git.corp.example/team-a/./*",
            "https://git.corp.example/team-a/web",
            "x",
            true,
        ),
        (
            "https://10.0.0.5/team-a/*",
            "https://10.0.0.5/team-a/web",
            "x",
            true,
        ),
        (
            "https://[::1]/team-a/*",
            "https://[0::1]/team-a/web",
            "x",
            true,
        ),
    ];

    #[test]
    fn repo_patterns_match_table() {
        for (pattern, input, namespace, want) in REPO_CASES {
            assert_eq!(
                repo(pattern).matches(&url(input), namespace),
                *want,
                "{pattern} vs {input} in {namespace:?}"
            );
        }
    }

    #[test]
    fn pattern_does_not_match_lookalike_host() {
        let p = repo("https://git.corp.example/team-a/*");
        for lookalike in [
            "https://git.corp.example.evil.example/team-a/x",
            "https://git-corp.example/team-a/x",
            "https://git.corp.examplee/team-a/x",
            "https://xgit.corp.example/team-a/x",
        ] {
            assert!(!p.matches(&url(lookalike), "team-a"), "{lookalike}");
        }
    }

    #[test]
    fn pattern_never_reaches_other_teams_through_parent_segments() {
        let p = repo("https://git.corp.example/team-a/**");
        for sneaky in [
            "https://git.corp.example/team-a/../team-b/x",
            "https://git.corp.example/team-a/%2e%2e/team-b/x",
            "https://git.corp.example/team-a%2F..%2Fteam-b/x",
        ] {
            // Such URLs do not even parse, so nothing can match them.
            assert!(RepoUrl::parse(sneaky).is_err(), "{sneaky}");
        }
        assert!(!p.matches(&url("https://git.corp.example/team-b/x"), "team-a"));
    }

    #[test]
    fn internal_hosts_need_a_pattern_naming_exactly_that_host() {
        let exact = repo("http://10.0.0.5/team-a/*");
        let wildcard_host = repo("http://*.corp.localhost/team-a/*");
        let other = repo("https://git.corp.example/team-a/*");
        let internal = url("http://10.0.0.5/team-a/web");
        let named_internal = url("http://git.corp.localhost/team-a/web");
        let public = url("https://git.corp.example/team-a/web");
        assert!(exact.allows_internal_host(&internal));
        assert!(!other.allows_internal_host(&internal));
        assert!(wildcard_host.matches(&named_internal, "team-a"));
        assert!(!wildcard_host.allows_internal_host(&named_internal));
        assert!(repo("http://git.corp.localhost/team-a/*").allows_internal_host(&named_internal));
        assert!(other.allows_internal_host(&public));
        assert_eq!(exact.exact_host(), Some("10.0.0.5"));
        assert_eq!(wildcard_host.exact_host(), None);
        assert_eq!(
            repo("https://GIT.corp.example./x").exact_host(),
            Some("git.corp.example")
        );
    }

    #[test]
    fn repo_pattern_displays_its_original_text() {
        let text = "HTTPS://Git.Corp.Example/{namespace}/*.git";
        assert_eq!(repo(text).to_string(), text);
        assert_eq!(repo(text).as_str(), text);
        assert!(repo(text).uses_namespace());
    }

    #[test]
    fn refuses_malformed_repo_patterns() {
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, PatternError::Empty)),
            (
                "https://git.corp.example/{team}/*",
                |e| matches!(e, PatternError::UnknownPlaceholder { name, .. } if name == "team"),
            ),
            ("https://git.corp.example/{}/*", |e| {
                matches!(e, PatternError::UnknownPlaceholder { .. })
            }),
            ("https://git.corp.example/{namespace/*", |e| {
                matches!(e, PatternError::UnbalancedBrace { .. })
            }),
            ("https://git.corp.example/namespace}/*", |e| {
                matches!(e, PatternError::UnbalancedBrace { .. })
            }),
            ("https://git.corp.example/{{namespace}}/*", |e| {
                matches!(e, PatternError::UnbalancedBrace { .. })
            }),
            ("https://git.corp.example/**/x", |e| {
                matches!(e, PatternError::MisplacedDoubleStar { .. })
            }),
            ("https://git.corp.example/a**", |e| {
                matches!(e, PatternError::MisplacedDoubleStar { .. })
            }),
            ("https://git.corp.example/***", |e| {
                matches!(e, PatternError::MisplacedDoubleStar { .. })
            }),
            ("https://git.corp.example/**/**", |e| {
                matches!(e, PatternError::MisplacedDoubleStar { .. })
            }),
            ("https://*/x", |e| {
                matches!(e, PatternError::HostWildcard { .. })
            }),
            ("https://*.example/x", |e| {
                matches!(e, PatternError::HostWildcard { .. })
            }),
            ("https://git.*.example/x", |e| {
                matches!(e, PatternError::HostWildcard { .. })
            }),
            ("https://git*.corp.example/x", |e| {
                matches!(e, PatternError::HostWildcard { .. })
            }),
            ("https://*.*.corp.example/x", |e| {
                matches!(e, PatternError::HostWildcard { .. })
            }),
            ("https://*.10.0.0.5/x", |e| {
                matches!(e, PatternError::HostWildcard { .. })
            }),
            ("https://{namespace}.corp.example/x", |e| {
                matches!(e, PatternError::PlaceholderInHost { .. })
            }),
            ("https://git.corp.example", |e| {
                matches!(e, PatternError::MissingPath { .. })
            }),
            ("https://git.corp.example/team-a/../*", |e| {
                matches!(e, PatternError::DotDot { .. })
            }),
            ("https://git.corp.example/team-a/%2E%2E/*", |e| {
                matches!(e, PatternError::DotDot { .. })
            }),
            ("https://u:p@git.corp.example/x", |e| {
                matches!(
                    e,
                    PatternError::Url {
                        source: UrlError::Password,
                        ..
                    }
                )
            }),
            ("git@git.corp.example:team-a/*", |e| {
                matches!(
                    e,
                    PatternError::Url {
                        source: UrlError::ScpLike { .. },
                        ..
                    }
                )
            }),
            ("file:///srv/*", |e| matches!(e, PatternError::Url { .. })),
            ("https://git.corp.example/x?y", |e| {
                matches!(e, PatternError::Url { .. })
            }),
            ("https://git.corp.example/a%2F*", |e| {
                matches!(e, PatternError::Url { .. })
            }),
        ];
        for (text, check) in cases {
            let e = repo_err(text);
            assert!(check(&e), "{text:?} gave {e:?}");
            let message = e.to_string();
            assert!(
                message.starts_with(|c: char| !c.is_uppercase()),
                "{message}"
            );
        }
        let long = format!("https://git.corp.example/{}", "a".repeat(MAX_PATTERN_LEN));
        assert!(matches!(repo_err(&long), PatternError::TooLong { .. }));
    }

    #[test]
    fn pattern_errors_name_the_pattern_and_what_is_allowed() {
        let e = repo_err("https://git.corp.example/{team}/*");
        let message = e.to_string();
        assert!(
            message.contains("https://git.corp.example/{team}/*"),
            "{message}"
        );
        assert!(message.contains("{namespace}"), "{message}");
        let e = repo_err("https://git.corp.example/**/x");
        assert!(e.to_string().contains("last path segment"), "{e}");
        let e = repo_err("https://u:p@git.corp.example/x");
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert!(source.is_some_and(|s| s.contains("Secret")), "{e:?}");
    }

    #[test]
    fn namespace_patterns_match_table() {
        let cases = [
            ("{namespace}", "team-a", "team-a", true),
            ("{namespace}", "team-b", "team-a", false),
            ("{namespace}-*", "team-a-dev", "team-a", true),
            ("{namespace}-*", "team-a", "team-a", false),
            ("{namespace}-*", "team-ab-dev", "team-a", false),
            ("{namespace}-*", "x-dev", "", false),
            ("{namespace}-*", "bad/ns-dev", "bad/ns", false),
            ("shared-*", "shared-cache", "team-a", true),
            ("shared-*", "shared", "team-a", false),
            ("kube-*", "kube-system", "x", true),
            ("*", "anything", "x", true),
            ("*", "a/b", "x", false),
            ("monitoring", "monitoring", "x", true),
            ("monitoring", "monitoring2", "x", false),
            ("*-prod", "team-a-prod", "x", true),
            ("a*b*c", "abc", "x", true),
            ("a*b*c", "axxbyyc", "x", true),
            ("a*b*c", "axxbyy", "x", false),
        ];
        for (pattern, value, namespace, want) in cases {
            assert_eq!(
                name(pattern, NameKind::Namespace).matches(value, namespace),
                want,
                "{pattern} vs {value} in {namespace:?}"
            );
        }
    }

    #[test]
    fn image_patterns_match_within_path_parts() {
        let cases = [
            (
                "registry.corp.example/fluxgate/*",
                "registry.corp.example/fluxgate/reconciler:v1",
                true,
            ),
            (
                "registry.corp.example/fluxgate/*",
                "registry.corp.example/fluxgate/reconciler@sha256:0a1b",
                true,
            ),
            (
                "registry.corp.example/fluxgate/*",
                "registry.corp.example/fluxgate/x/y:v1",
                false,
            ),
            (
                "registry.corp.example/fluxgate/*",
                "registry.corp.example.evil.example/fluxgate/x",
                false,
            ),
            (
                "registry.corp.example/fluxgate/*",
                "evil.example/registry.corp.example/fluxgate/x",
                false,
            ),
            (
                "registry.corp.example/*/*",
                "registry.corp.example/team/app:1",
                true,
            ),
            (
                "registry.corp.example/fluxgate/reconciler:*",
                "registry.corp.example/fluxgate/reconciler:v1.2",
                true,
            ),
            (
                "registry.corp.example/fluxgate/reconciler:*",
                "registry.corp.example/fluxgate/reconciler@sha256:00",
                false,
            ),
            (
                "registry.corp.example/{namespace}/*",
                "registry.corp.example/team-a/app",
                true,
            ),
            (
                "registry.corp.example/{namespace}/*",
                "registry.corp.example/team-b/app",
                false,
            ),
            (
                "*.corp.example/fluxgate/*",
                "registry.corp.example/fluxgate/x",
                true,
            ),
            (
                "*.corp.example/fluxgate/*",
                "evilcorp.example/fluxgate/x",
                false,
            ),
        ];
        for (pattern, value, want) in cases {
            assert_eq!(
                name(pattern, NameKind::Image).matches(value, "team-a"),
                want,
                "{pattern} vs {value}"
            );
        }
    }

    #[test]
    fn refuses_malformed_name_patterns() {
        use NameKind::{Cluster, Image, Namespace};
        let cases: &[(&str, NameKind, Check)] = &[
            ("", Namespace, |e| matches!(e, PatternError::Empty)),
            ("Team-A", Namespace, |e| {
                matches!(e, PatternError::InvalidChar { ch: 'T', .. })
            }),
            ("team_a", Namespace, |e| {
                matches!(e, PatternError::InvalidChar { ch: '_', .. })
            }),
            ("team.a", Namespace, |e| {
                matches!(e, PatternError::InvalidChar { ch: '.', .. })
            }),
            ("team/a", Namespace, |e| {
                matches!(e, PatternError::InvalidChar { ch: '/', .. })
            }),
            ("-team", Namespace, |e| {
                matches!(e, PatternError::InvalidEdge { .. })
            }),
            ("{namespace}-", Namespace, |e| {
                matches!(e, PatternError::InvalidEdge { .. })
            }),
            ("{team}-*", Namespace, |e| {
                matches!(e, PatternError::UnknownPlaceholder { .. })
            }),
            ("{namespace", Namespace, |e| {
                matches!(e, PatternError::UnbalancedBrace { .. })
            }),
            ("namespace}", Namespace, |e| {
                matches!(e, PatternError::UnbalancedBrace { .. })
            }),
            ("kube-**", Namespace, |e| {
                matches!(e, PatternError::DoubleStarInName { .. })
            }),
            ("prod eu", Cluster, |e| {
                matches!(e, PatternError::InvalidChar { ch: ' ', .. })
            }),
            ("registry.corp.example//x", Image, |e| {
                matches!(e, PatternError::EmptyPart { .. })
            }),
            ("registry.corp.example/x/", Image, |e| {
                matches!(e, PatternError::EmptyPart { .. })
            }),
            ("registry.corp.example/**", Image, |e| {
                matches!(e, PatternError::DoubleStarInName { .. })
            }),
            ("registry corp/x", Image, |e| {
                matches!(e, PatternError::InvalidChar { ch: ' ', .. })
            }),
            ("registry/x\\y", Image, |e| {
                matches!(e, PatternError::InvalidChar { ch: '\\', .. })
            }),
        ];
        for (text, kind, check) in cases {
            let e = name_err(text, *kind);
            assert!(check(&e), "{text:?} gave {e:?}");
        }
        let long = "a".repeat(MAX_NAME_PATTERN_LEN + 1);
        assert!(matches!(
            name_err(&long, Namespace),
            PatternError::TooLong { .. }
        ));
        let e = name_err("team_a", Namespace).to_string();
        assert!(e.contains("lowercase letters, digits"), "{e}");
    }

    #[test]
    fn name_pattern_literal_and_expansion() {
        assert!(name("monitoring", NameKind::Namespace).is_literal());
        assert!(!name("{namespace}", NameKind::Namespace).is_literal());
        assert!(!name("team-*", NameKind::Namespace).is_literal());
        assert_eq!(
            name("{namespace}-ci", NameKind::Namespace)
                .expand("team-a")
                .as_deref(),
            Some("team-a-ci")
        );
        assert_eq!(
            name("{namespace}-*", NameKind::Namespace).expand("team-a"),
            None
        );
        assert_eq!(
            NamePattern::image("registry.corp.example/{namespace}/app").map(|p| p.expand("team-a")),
            Ok(Some("registry.corp.example/team-a/app".to_owned()))
        );
        assert_eq!(
            name("{namespace}-*", NameKind::Namespace).to_string(),
            "{namespace}-*"
        );
        assert!(NamePattern::cluster("prod-*").is_ok_and(|p| p.kind() == NameKind::Cluster));
        assert!(NamePattern::namespace("{namespace}").is_ok());
    }

    #[test]
    fn dns_labels() {
        for ok in ["a", "team-a", "0", "a-0", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn glob_matching_is_not_exponential() {
        // Would take ages with naive backtracking.
        let pattern = format!("{}b", "a*".repeat(100));
        let value = "a".repeat(2000);
        let p = name(&pattern, NameKind::Namespace);
        let started = std::time::Instant::now();
        assert!(!p.matches(&value, "x"));
        // Not a timing assertion: just make sure it did finish.
        let _elapsed = started.elapsed();
        let repo_pattern = repo(&format!("https://h.example/{}b", "a*".repeat(100)));
        assert!(!repo_pattern.matches(
            &url(&format!("https://h.example/{}", "a".repeat(2000))),
            "x"
        ));
    }

    fn naive_glob(pattern: &[u8], value: &[u8]) -> bool {
        match pattern.split_first() {
            None => value.is_empty(),
            Some((b'*', rest)) => (0..=value.len()).any(|i| naive_glob(rest, &value[i..])),
            Some((c, rest)) => value
                .split_first()
                .is_some_and(|(v, vs)| v == c && naive_glob(rest, vs)),
        }
    }

    proptest! {
        #[test]
        fn repo_pattern_parse_never_panics(text in ".{0,200}") {
            let _ = RepoPattern::parse(&text);
        }

        #[test]
        fn repo_pattern_parse_never_panics_on_pattern_like_text(
            text in "(https?|ssh)://(\\*\\.)?[a-z0-9.*{}-]{1,20}(:[0-9]{1,5})?(/[a-z0-9.%*{}~-]{0,12}){0,5}"
        ) {
            let _ = RepoPattern::parse(&text);
        }

        #[test]
        fn name_pattern_parse_never_panics(text in ".{0,100}") {
            for kind in [NameKind::Namespace, NameKind::Cluster, NameKind::Image] {
                let _ = NamePattern::parse(&text, kind);
            }
        }

        #[test]
        fn urls_under_team_a_match_team_a_star_star_only(
            // Safe segments: unreserved characters, not starting with a dot
            // (so never `.` or `..`).
            segments in proptest::collection::vec("[a-zA-Z0-9_~-][a-zA-Z0-9._~-]{0,11}", 1..6)
        ) {
            let input = format!("https://git.corp.example/team-a/{}", segments.join("/"));
            let parsed = RepoUrl::parse(&input);
            prop_assert!(parsed.is_ok(), "{} -> {:?}", input, parsed);
            if let Ok(u) = parsed {
                let team_a = repo("https://git.corp.example/team-a/**");
                let team_b = repo("https://git.corp.example/team-b/**");
                let own = repo("https://git.corp.example/{namespace}/**");
                prop_assert!(team_a.matches(&u, "team-a"), "{}", u);
                prop_assert!(!team_b.matches(&u, "team-a"), "{}", u);
                prop_assert!(own.matches(&u, "team-a"), "{}", u);
                prop_assert!(!own.matches(&u, "team-b"), "{}", u);
            }
        }

        #[test]
        fn arbitrary_urls_never_match_team_b_unless_under_team_b(input in "https://[a-z.]{1,20}/[a-z./%-]{0,40}") {
            if let Ok(u) = RepoUrl::parse(&input) {
                let team_b = repo("https://git.corp.example/team-b/**");
                let under_team_b = u.host() == "git.corp.example"
                    && u.segments().first().is_some_and(|s| s == "team-b")
                    && u.segments().len() > 1;
                prop_assert_eq!(team_b.matches(&u, "team-a"), under_team_b, "{}", u);
            }
        }

        #[test]
        fn glob_agrees_with_naive_matching(pattern in "[ab*]{0,8}", value in "[ab]{0,8}") {
            prop_assume!(!pattern.contains("**"));
            let want = naive_glob(pattern.as_bytes(), value.as_bytes());
            if let Ok(p) = NamePattern::parse(&pattern, NameKind::Cluster) {
                prop_assert_eq!(p.matches(&value, "x"), want);
            }
        }
    }
}
