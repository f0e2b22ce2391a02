//! Repository URLs: parsing, normalisation and the internal-host check.
//!
//! A [`RepoUrl`] can only be built by [`RepoUrl::parse`], so holding one means
//! the URL is `https://`, `http://` or `ssh://`, carries no credentials, names
//! a well-formed host and has a path free of `..`, and that it is in the one
//! normal form allow-list patterns are matched against:
//!
//! - scheme and host in lowercase, the scheme's default port dropped, one
//!   trailing `.` of a host name dropped;
//! - empty (`//`) and `.` segments removed, a trailing `/` and trailing
//!   `.git` removed;
//! - percent-encoded unreserved characters decoded (`%7E` → `~`), every other
//!   escape written with uppercase hex, and characters that may not appear
//!   raw in a path (non-ASCII, `"`, `{`, ...) percent-encoded.
//!
//! Anything whose meaning is unclear is refused rather than guessed: `..`
//! segments (plain or encoded), encoded `/` or `\` inside a segment, queries
//! and fragments, numeric IPv4 forms other than dotted decimal, and hosts
//! that are not ASCII. Error messages never repeat the URL, because a
//! rejected URL may hold a password.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Longest repository URL accepted, before and after normalisation (bytes).
pub const MAX_REPO_URL_LEN: usize = 2048;

/// Longest ssh user name accepted.
const MAX_USER_LEN: usize = 64;

/// Why a repository URL was refused. Messages say what is wrong and what is
/// allowed; none repeats the URL (it may hold credentials).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The URL is empty.
    #[error(
        "repository url is empty; expected https://, http:// or ssh:// followed by a host and a path"
    )]
    Empty,
    /// The URL is longer than [`MAX_REPO_URL_LEN`].
    #[error("repository url is {len} bytes long; at most {MAX_REPO_URL_LEN} bytes are allowed")]
    TooLong {
        /// Length in bytes.
        len: usize,
    },
    /// The URL holds whitespace, a control character or a backslash.
    #[error(
        "repository url contains {what} at byte {at}; whitespace, control characters and backslashes are not allowed"
    )]
    ForbiddenChar {
        /// A description of the character, e.g. `a space`.
        what: &'static str,
        /// Byte offset of the character.
        at: usize,
    },
    /// The URL has no `scheme://`.
    #[error("repository url has no scheme; write it as https://host/path or ssh://git@host/path")]
    MissingScheme,
    /// The URL is `https:host` or `https:/host` rather than `https://host`.
    #[error("repository url must start with {scheme}:// (two slashes after the colon)")]
    MissingSlashes {
        /// The scheme that was given.
        scheme: &'static str,
    },
    /// The scheme is not one of `https`, `http`, `ssh`.
    #[error("scheme {scheme:?} is not allowed; use https://, http:// or ssh://")]
    UnsupportedScheme {
        /// The scheme, lowercased.
        scheme: String,
    },
    /// An scp-like address such as `git@host:team/app.git`.
    #[error("scp-like address (user@host:path) is not supported; write it as {suggestion}")]
    ScpLike {
        /// The same address written as an `ssh://` URL, or a generic example
        /// when the input could not be rewritten safely.
        suggestion: String,
    },
    /// The URL has a password in its user information.
    #[error(
        "repository url contains a password; credentials belong in a Secret assigned by the platform, so write the url without them"
    )]
    Password,
    /// An `http(s)` URL has user information.
    #[error(
        "{scheme} urls must not contain a user name; credentials belong in a Secret assigned by the platform"
    )]
    UserInfoNotAllowed {
        /// `https` or `http`.
        scheme: &'static str,
    },
    /// The ssh user name is empty or has characters outside the allowed set.
    #[error(
        "ssh user name is not valid; use 1 to {MAX_USER_LEN} letters, digits, '.', '_' or '-' (for example ssh://git@host/path)"
    )]
    InvalidUser,
    /// The host is empty.
    #[error("repository url has no host; write it as https://host/path")]
    EmptyHost,
    /// The host holds non-ASCII characters. The message escapes them
    /// (`ex\u{430}mple`), so a look-alike of an allowed host (Cyrillic `а`
    /// for Latin `a`) is visible as such.
    #[error(
        "host \"{}\" is not ASCII: {} at byte {at}{}; internationalised host names are not supported, write the name in its punycode (xn--) form",
        escape_non_ascii(.host),
        describe_char(*.ch),
        look_alike_hint(*.ch)
    )]
    NonAsciiHost {
        /// The host as given.
        host: String,
        /// The first non-ASCII character.
        ch: char,
        /// Its byte offset in the host.
        at: usize,
    },
    /// The host is not a valid DNS name.
    #[error(
        "host {host:?} is not valid: {reason}; a host is a DNS name of letters, digits, '-' and '.', an IPv4 address like 192.0.2.10 or an IPv6 address in brackets"
    )]
    InvalidHost {
        /// The host as given.
        host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The host is a numeric IPv4 form other than canonical dotted decimal
    /// (`2130706433`, `0x7f.1`, `127.1`, `010.0.0.1`).
    #[error(
        "host {host:?} is a non-standard numeric IPv4 form; write IPv4 addresses as four decimal numbers from 0 to 255 without leading zeros, like 192.0.2.10"
    )]
    AmbiguousIpv4 {
        /// The host as given.
        host: String,
    },
    /// The text in brackets is not an IPv6 address.
    #[error(
        "host {host:?} is not a valid IPv6 address; write IPv6 addresses in brackets without a zone, like [2001:db8::1]"
    )]
    InvalidIpv6 {
        /// The host as given.
        host: String,
    },
    /// The port is not a number from 1 to 65535.
    #[error("port {port:?} is not valid; a port is a number from 1 to 65535")]
    InvalidPort {
        /// The port as given.
        port: String,
    },
    /// The URL has a query (`?`) or a fragment (`#`).
    #[error(
        "repository url must not have a query (?) or a fragment (#); write only scheme, host and path"
    )]
    QueryOrFragment,
    /// The URL has no path.
    #[error(
        "repository url has no path; name the repository, for example https://git.corp.example/team-a/app"
    )]
    MissingPath,
    /// A path segment is `..` (possibly percent-encoded).
    #[error(
        "repository url path contains a '..' segment; parent segments are refused rather than resolved, so write the path without them"
    )]
    DotDotSegment,
    /// A path segment holds an encoded `/` or `\`.
    #[error(
        "repository url path contains an encoded '/' or '\\' (%2F or %5C) inside a segment; separate segments with a plain '/'"
    )]
    EncodedSeparator,
    /// A path segment holds an encoded control character.
    #[error(
        "repository url path contains an encoded control character (%00 to %1F or %7F); these are not allowed"
    )]
    EncodedControl,
    /// A `%` is not followed by two hex digits.
    #[error(
        "repository url path has a '%' not followed by two hex digits; write a literal '%' as %25"
    )]
    InvalidPercentEncoding,
    /// The normalised URL is longer than [`MAX_REPO_URL_LEN`].
    #[error(
        "repository url is {len} bytes long once normalised; at most {MAX_REPO_URL_LEN} bytes are allowed"
    )]
    NormalizedTooLong {
        /// Length of the normalised URL in bytes.
        len: usize,
    },
}

/// The schemes a repository URL may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `https://`, default port 443.
    Https,
    /// `http://`, default port 80.
    Http,
    /// `ssh://`, default port 22.
    Ssh,
}

impl Scheme {
    /// The scheme's name in lowercase, without `://`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
            Scheme::Ssh => "ssh",
        }
    }

    /// The port used when the URL names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Https => 443,
            Scheme::Http => 80,
            Scheme::Ssh => 22,
        }
    }

    fn from_lowercase(text: &str) -> Option<Self> {
        match text {
            "https" => Some(Scheme::Https),
            "http" => Some(Scheme::Http),
            "ssh" => Some(Scheme::Ssh),
            _ => None,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed, normalised repository URL.
///
/// Two URLs that name the same repository in different spellings
/// (`HTTPS://Git.Corp.Example:443/team-a//web.git/` and
/// `https://git.corp.example/team-a/web`) parse to equal values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoUrl {
    scheme: Scheme,
    user: Option<String>,
    host: String,
    ip: Option<IpAddr>,
    port: Option<u16>,
    segments: Vec<String>,
    normalized: String,
}

impl RepoUrl {
    /// Parses and normalises a repository URL (see the module documentation
    /// for the rules).
    pub fn parse(input: &str) -> Result<Self, UrlError> {
        let parts = split(input)?;
        let user = parts.user.map(str::to_owned);
        let NormalHost { text: host, ip } = normalize_host(parts.host)?;
        let mut segments = Vec::new();
        for raw in parts.path.split('/').filter(|s| !s.is_empty()) {
            let segment = normalize_segment_text(raw)?;
            match segment.as_str() {
                "." => {}
                ".." => return Err(UrlError::DotDotSegment),
                _ => segments.push(segment),
            }
        }
        if let Some(last) = segments.last_mut() {
            strip_git_suffix(last);
        } else {
            return Err(UrlError::MissingPath);
        }
        let normalized = render(parts.scheme, user.as_deref(), &host, parts.port, &segments);
        if normalized.len() > MAX_REPO_URL_LEN {
            return Err(UrlError::NormalizedTooLong {
                len: normalized.len(),
            });
        }
        Ok(Self {
            scheme: parts.scheme,
            user,
            host,
            ip,
            port: parts.port,
            segments,
            normalized,
        })
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The ssh user name (`git` in `ssh://git@host/x`); always `None` for
    /// `http(s)`, which may not carry one.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The normalised host as written in the URL: a lowercase DNS name, a
    /// dotted-decimal IPv4 address, or an IPv6 address in brackets in its
    /// canonical (RFC 5952) form, e.g. `[::1]`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The host's address when the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    /// The port when it is not the scheme's default; `None` means the
    /// default port.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The port connections go to: the explicit port or the scheme's
    /// default.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(self.scheme.default_port())
    }

    /// The normalised path segments; never empty, no segment is empty, `.`
    /// or `..`, and none contains `/`.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The normalised URL, e.g. `https://git.corp.example/team-a/web`.
    pub fn as_str(&self) -> &str {
        &self.normalized
    }

    /// Why the host is internal (`"loopback"`, `"private network"`,
    /// `"cloud metadata endpoint"`, ...), or `None` for an ordinary host.
    ///
    /// Internal hosts are IP literals in the loopback, link-local, private
    /// (RFC 1918, `fc00::/7`, deprecated `fec0::/10`), unspecified (`0/8`,
    /// `::`), broadcast and shared (CGNAT `100.64/10`) ranges, including
    /// IPv4-mapped and NAT64 (`64:ff9b::/96`) IPv6 forms of those, and the
    /// names `localhost`, `*.localhost` and `metadata.google.internal`. The
    /// check looks only at the URL: a DNS name that resolves to an internal
    /// address is not detected here.
    pub fn internal_reason(&self) -> Option<&'static str> {
        match self.ip {
            Some(ip) => ip_internal_reason(ip),
            None => name_internal_reason(&self.host),
        }
    }
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalized)
    }
}

impl FromStr for RepoUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for RepoUrl {
    fn as_ref(&self) -> &str {
        &self.normalized
    }
}

/// Writes the normal form.
fn render(
    scheme: Scheme,
    user: Option<&str>,
    host: &str,
    port: Option<u16>,
    segments: &[String],
) -> String {
    let mut out = String::with_capacity(64);
    out.push_str(scheme.as_str());
    out.push_str("://");
    if let Some(user) = user {
        out.push_str(user);
        out.push('@');
    }
    out.push_str(host);
    if let Some(port) = port {
        out.push(':');
        out.push_str(&port.to_string());
    }
    for segment in segments {
        out.push('/');
        out.push_str(segment);
    }
    out
}

/// The pieces of a URL or URL pattern, checked for scheme, credentials,
/// forbidden characters and port, but with host and path still raw.
#[derive(Debug)]
pub(crate) struct Parts<'a> {
    pub(crate) scheme: Scheme,
    pub(crate) user: Option<&'a str>,
    pub(crate) host: &'a str,
    /// `None` when absent or equal to the scheme's default.
    pub(crate) port: Option<u16>,
    /// Everything after the authority, starting with `/` or empty.
    pub(crate) path: &'a str,
}

/// Splits a URL (or URL pattern) into its parts, enforcing every rule that
/// does not depend on the host or path syntax.
pub(crate) fn split(input: &str) -> Result<Parts<'_>, UrlError> {
    if input.is_empty() {
        return Err(UrlError::Empty);
    }
    if input.len() > MAX_REPO_URL_LEN {
        return Err(UrlError::TooLong { len: input.len() });
    }
    for (at, c) in input.char_indices() {
        let what = if c == '\\' {
            "a backslash"
        } else if c == ' ' {
            "a space"
        } else if c.is_control() {
            "a control character"
        } else if c.is_whitespace() {
            "whitespace"
        } else {
            continue;
        };
        return Err(UrlError::ForbiddenChar { what, at });
    }
    let Some((scheme_text, rest)) = input.split_once("://") else {
        return Err(classify_without_authority(input));
    };
    if !is_scheme_syntax(scheme_text) {
        return Err(classify_without_authority(input));
    }
    let scheme_lower = scheme_text.to_ascii_lowercase();
    let Some(scheme) = Scheme::from_lowercase(&scheme_lower) else {
        return Err(UrlError::UnsupportedScheme {
            scheme: scheme_lower,
        });
    };
    if rest.contains(['?', '#']) {
        return Err(UrlError::QueryOrFragment);
    }
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let (user, host_port) = match authority.rsplit_once('@') {
        None => (None, authority),
        Some((userinfo, host_port)) => {
            if userinfo.contains(':') {
                return Err(UrlError::Password);
            }
            match scheme {
                Scheme::Https | Scheme::Http => {
                    return Err(UrlError::UserInfoNotAllowed {
                        scheme: scheme.as_str(),
                    });
                }
                Scheme::Ssh => {}
            }
            let valid = !userinfo.is_empty()
                && userinfo.len() <= MAX_USER_LEN
                && userinfo
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !valid {
                return Err(UrlError::InvalidUser);
            }
            (Some(userinfo), host_port)
        }
    };
    let (host, port_text) = if host_port.starts_with('[') {
        match host_port.find(']') {
            None => {
                return Err(UrlError::InvalidIpv6 {
                    host: host_port.to_owned(),
                });
            }
            Some(close) => {
                let (host, after) = host_port.split_at(close + 1);
                if after.is_empty() {
                    (host, None)
                } else if let Some(port) = after.strip_prefix(':') {
                    (host, Some(port))
                } else {
                    return Err(UrlError::InvalidIpv6 {
                        host: host_port.to_owned(),
                    });
                }
            }
        }
    } else {
        match host_port.split_once(':') {
            None => (host_port, None),
            Some((host, port)) => {
                if port.contains(':') {
                    return Err(UrlError::InvalidHost {
                        host: host_port.to_owned(),
                        reason: "an IPv6 address must be written in brackets",
                    });
                }
                (host, Some(port))
            }
        }
    };
    let port = match port_text {
        None => None,
        Some(text) => {
            let number = parse_port(text).ok_or_else(|| UrlError::InvalidPort {
                port: text.to_owned(),
            })?;
            (number != scheme.default_port()).then_some(number)
        }
    };
    Ok(Parts {
        scheme,
        user,
        host,
        port,
        path,
    })
}

/// `text` with every non-ASCII character (and control character) written
/// as a `\u{...}` escape, so look-alikes cannot pass for ASCII in a message.
fn escape_non_ascii(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' {
            out.push(c);
        } else {
            out.push_str(&c.escape_unicode().to_string());
        }
    }
    out
}

/// `U+0430 'а'` (the character itself only when it is printable).
fn describe_char(c: char) -> String {
    if c.is_control() || c.is_whitespace() {
        format!("U+{:04X}", u32::from(c))
    } else {
        format!("U+{:04X} {c:?}", u32::from(c))
    }
}

/// A hint when `c` is a common look-alike of an ASCII character: Cyrillic
/// and Greek letters, full-width forms and the ideographic full stop.
fn look_alike_hint(c: char) -> &'static str {
    match u32::from(c) {
        0x0370..=0x03FF | 0x0400..=0x04FF | 0xFF01..=0xFF5E | 0x3002 | 0xFF61 => {
            ", which looks like an ASCII character"
        }
        _ => "",
    }
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|p| *p != 0)
}

/// `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`, RFC 3986.
fn is_scheme_syntax(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// Explains an input without a usable `scheme://`: a scheme without the two
/// slashes, another scheme (`file:`, `git:`), an scp-like address, or none.
fn classify_without_authority(input: &str) -> UrlError {
    let Some((before, after)) = input.split_once(':') else {
        return UrlError::MissingScheme;
    };
    if before.contains('/') {
        return UrlError::MissingScheme;
    }
    if is_scheme_syntax(before) && !before.contains('.') {
        let lower = before.to_ascii_lowercase();
        return match Scheme::from_lowercase(&lower) {
            Some(scheme) => UrlError::MissingSlashes {
                scheme: scheme.as_str(),
            },
            None => UrlError::UnsupportedScheme { scheme: lower },
        };
    }
    UrlError::ScpLike {
        suggestion: scp_suggestion(before, after),
    }
}

/// Rewrites `user@host:path` as `ssh://user@host/path` when every part is
/// plainly harmless to echo, else gives a generic example.
fn scp_suggestion(user_host: &str, path: &str) -> String {
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    let authority_ok = match user_host.split_once('@') {
        Some((user, host)) => name_ok(user) && name_ok(host),
        None => name_ok(user_host),
    };
    let path = path.trim_start_matches('/');
    let path_ok = !path.is_empty()
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/~".contains(&b));
    if authority_ok && path_ok {
        format!("ssh://{user_host}/{path}")
    } else {
        "ssh://git@host/path".to_owned()
    }
}

/// A normalised host.
#[derive(Debug)]
pub(crate) struct NormalHost {
    /// As written in the normal form (IPv6 in brackets).
    pub(crate) text: String,
    /// Set for IP literals.
    pub(crate) ip: Option<IpAddr>,
}

/// Checks and normalises a host: DNS name, dotted-decimal IPv4 or bracketed
/// IPv6.
pub(crate) fn normalize_host(raw: &str) -> Result<NormalHost, UrlError> {
    if raw.is_empty() {
        return Err(UrlError::EmptyHost);
    }
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner.strip_suffix(']').unwrap_or(inner);
        return match inner.parse::<Ipv6Addr>() {
            Ok(ip) => Ok(NormalHost {
                text: format!("[{ip}]"),
                ip: Some(IpAddr::V6(ip)),
            }),
            Err(_) => Err(UrlError::InvalidIpv6 {
                host: raw.to_owned(),
            }),
        };
    }
    if let Some((at, ch)) = raw.char_indices().find(|(_, c)| !c.is_ascii()) {
        return Err(UrlError::NonAsciiHost {
            host: raw.to_owned(),
            ch,
            at,
        });
    }
    let lower = raw.to_ascii_lowercase();
    // A fully qualified name may end in '.'; `localhost.` is `localhost`.
    let host = lower.strip_suffix('.').unwrap_or(&lower);
    let invalid = |reason| UrlError::InvalidHost {
        host: raw.to_owned(),
        reason,
    };
    if host.is_empty() {
        return Err(UrlError::EmptyHost);
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err(invalid("it may contain only letters, digits, '-' and '.'"));
    }
    if host.split('.').any(str::is_empty) {
        return Err(invalid("it has an empty label"));
    }
    if ends_in_number(host) {
        return match parse_dotted_quad(host) {
            Some(ip) => Ok(NormalHost {
                text: ip.to_string(),
                ip: Some(IpAddr::V4(ip)),
            }),
            None => Err(UrlError::AmbiguousIpv4 {
                host: raw.to_owned(),
            }),
        };
    }
    if host.len() > 253 {
        return Err(invalid("it is longer than 253 characters"));
    }
    for label in host.split('.') {
        if label.len() > 63 {
            return Err(invalid("a label is longer than 63 characters"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("a label starts or ends with '-'"));
        }
    }
    Ok(NormalHost {
        text: host.to_owned(),
        ip: None,
    })
}

/// Whether the last label is a number (decimal or `0x` hex), which makes
/// resolvers read the whole host as an IPv4 address (WHATWG "ends in a
/// number").
fn ends_in_number(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or(host);
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    last.strip_prefix("0x")
        .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Parses exactly `a.b.c.d`, each 0..=255 in decimal without leading zeros.
fn parse_dotted_quad(host: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut labels = host.split('.');
    for octet in &mut octets {
        let label = labels.next()?;
        let canonical = !label.is_empty()
            && label.len() <= 3
            && label.bytes().all(|b| b.is_ascii_digit())
            && (label == "0" || !label.starts_with('0'));
        if !canonical {
            return None;
        }
        *octet = label.parse().ok()?;
    }
    if labels.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// Why an IP address is internal, if it is.
pub(crate) fn ip_internal_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => ipv4_internal_reason(v4),
        IpAddr::V6(v6) => ipv6_internal_reason(v6),
    }
}

/// Cloud instance metadata services on IPv4: the link-local address most
/// clouds use, and Alibaba Cloud's (inside the CGNAT range, which would
/// otherwise be named instead).
const CLOUD_METADATA_V4: [Ipv4Addr; 2] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(100, 100, 100, 200),
];

/// AWS's instance metadata service on IPv6 (`fd00:ec2::254`), inside the
/// unique-local range, which would otherwise be named instead.
const CLOUD_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

fn ipv4_internal_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if CLOUD_METADATA_V4.contains(&ip) {
        Some("cloud metadata endpoint")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_private() {
        Some("private network")
    } else if a == 0 {
        Some("unspecified address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared address space (CGNAT)")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else {
        None
    }
}

fn ipv6_internal_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_loopback() {
        return Some("loopback");
    }
    if ip.is_unspecified() {
        return Some("unspecified address");
    }
    if ip == CLOUD_METADATA_V6 {
        return Some("cloud metadata endpoint");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return ipv4_internal_reason(v4);
    }
    let [first, s1, s2, s3, s4, s5, hi, lo] = ip.segments();
    // NAT64's well-known prefix 64:ff9b::/96 embeds an IPv4 address.
    if [first, s1, s2, s3, s4, s5] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        return ipv4_internal_reason(Ipv4Addr::new(a, b, c, d));
    }
    if first & 0xfe00 == 0xfc00 {
        Some("private network (unique local)")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first & 0xffc0 == 0xfec0 {
        Some("private network (site-local)")
    } else {
        None
    }
}

/// Why a (normalised) host name is internal, if it is.
pub(crate) fn name_internal_reason(host: &str) -> Option<&'static str> {
    if host == "localhost" || host.ends_with(".localhost") {
        Some("loopback")
    } else if host == "metadata.google.internal" || host == "metadata.goog" {
        Some("cloud metadata endpoint")
    } else {
        None
    }
}

/// Whether a byte is "unreserved" (RFC 3986): safe to decode from `%XX`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether a byte may appear unencoded in a normalised path segment:
/// unreserved, sub-delims, `:` and `@` (RFC 3986 `pchar`).
fn is_pchar(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_encoded(out: &mut String, b: u8) {
    out.push_str(&format!("%{b:02X}"));
}

/// Normalises the percent-encoding of one path segment (or one literal piece
/// of a pattern segment): decodes unreserved characters, uppercases the hex
/// of other escapes, encodes bytes that may not appear raw. Refuses encoded
/// separators and control characters and malformed escapes. The input must
/// not contain `/`.
pub(crate) fn normalize_segment_text(raw: &str) -> Result<String, UrlError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(UrlError::InvalidPercentEncoding);
            };
            let decoded = (hi << 4) | lo;
            if decoded == b'/' || decoded == b'\\' {
                return Err(UrlError::EncodedSeparator);
            }
            if decoded < 0x20 || decoded == 0x7f {
                return Err(UrlError::EncodedControl);
            }
            if is_unreserved(decoded) {
                out.push(char::from(decoded));
            } else {
                push_encoded(&mut out, decoded);
            }
            i += 3;
        } else {
            if is_pchar(b) {
                out.push(char::from(b));
            } else {
                push_encoded(&mut out, b);
            }
            i += 1;
        }
    }
    Ok(out)
}

/// Removes trailing `.git` (repeatedly, so the result is a fixed point),
/// unless that would leave the segment empty, `.` or `..`.
pub(crate) fn strip_git_suffix(segment: &mut String) {
    while let Some(stem) = segment.strip_suffix(".git") {
        if matches!(stem, "" | "." | "..") {
            break;
        }
        let len = stem.len();
        segment.truncate(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parsed(input: &str) -> RepoUrl {
        match RepoUrl::parse(input) {
            Ok(url) => url,
            Err(e) => panic!("{input:?} should parse: {e}"),
        }
    }

    fn norm(input: &str) -> String {
        parsed(input).to_string()
    }

    fn err(input: &str) -> UrlError {
        match RepoUrl::parse(input) {
            Ok(url) => panic!("{input:?} should be refused, got {url}"),
            Err(e) => e,
        }
    }

    #[test]
    fn normalises_equivalent_spellings() {
        let cases = [
            (
                "https://git.corp.example/team-a/web",
                "https://git.corp.example/team-a/web",
            ),
            (
                "HTTPS://Git.Corp.Example/team-a/web.git",
                "https://git.corp.example/team-a/web",
            ),
            (
                "https://git.corp.example:443/team-a/web/",
                "https://git.corp.example/team-a/web",
            ),
            (
                "https://git.corp.example/team-a//web.git/",
                "https://git.corp.example/team-a/web",
            ),
            (
                "https://git.corp.example/./team-a/./web",
                "https://git.corp.example/team-a/web",
            ),
            (
                "https://git.corp.example/te%61m-a/w%65b",
                "https://git.corp.example/team-a/web",
            ),
            (
                "https://git.corp.example/team-a/%7euser",
                "https://git.corp.example/team-a/~user",
            ),
            (
                "https://git.corp.example/team-a/a%3fb",
                "https://git.corp.example/team-a/a%3Fb",
            ),
            (
                "https://git.corp.example/team-a/a%c3%a9",
                "https://git.corp.example/team-a/a%C3%A9",
            ),
            (
                "https://git.corp.example/team-a/aé",
                "https://git.corp.example/team-a/a%C3%A9",
            ),
            (
                "https://git.corp.example/team-a/{x}",
                "https://git.corp.example/team-a/%7Bx%7D",
            ),
            (
                "https://git.corp.example./team-a/web",
                "https://git.corp.example/team-a/web",
            ),
            (
                "http://git.corp.example:80/team-a/web",
                "http://git.corp.example/team-a/web",
            ),
            (
                "http://git.corp.example:8080/team-a/web",
                "http://git.corp.example:8080/team-a/web",
            ),
            (
                "https://git.corp.example:0443/x",
                "https://git.corp.example/x",
            ),
            (
                "SSH://git@Git.Corp.Example:22/team-a/web.git",
                "ssh://git@git.corp.example/team-a/web",
            ),
            (
                "ssh://git.corp.example:2222/team-a/web",
                "ssh://git.corp.example:2222/team-a/web",
            ),
            (
                "https://[2001:DB8:0:0::1]:8443/x",
                "https://[2001:db8::1]:8443/x",
            ),
            ("https://192.0.2.10/x", "https://192.0.2.10/x"),
            ("https://h.example/a.git.git", "https://h.example/a"),
            ("https://h.example/.git", "https://h.example/.git"),
            ("https://h.example/..git", "https://h.example/..git"),
            ("https://h.example/a/%2e/b", "https://h.example/a/b"),
            (
                "https://h.example/a:b@c!$&'()*+,;=",
                "https://h.example/a:b@c!$&'()*+,;=",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input), want, "{input}");
        }
    }

    #[test]
    fn exposes_the_parts() {
        let url = parsed("ssh://git@Git.Corp.Example:2222/team-a/web.git");
        assert_eq!(url.scheme(), Scheme::Ssh);
        assert_eq!(url.user(), Some("git"));
        assert_eq!(url.host(), "git.corp.example");
        assert_eq!(url.port(), Some(2222));
        assert_eq!(url.effective_port(), 2222);
        assert_eq!(url.segments(), ["team-a", "web"]);
        assert_eq!(url.as_str(), "ssh://git@git.corp.example:2222/team-a/web");
        assert_eq!(url.ip(), None);
        let https = parsed("https://git.corp.example/x");
        assert_eq!(https.port(), None);
        assert_eq!(https.effective_port(), 443);
        assert_eq!("https://git.corp.example/x".parse::<RepoUrl>(), Ok(https));
    }

    #[test]
    fn refuses_other_schemes_and_scp_syntax() {
        assert!(
            matches!(err("file:///etc/passwd"), UrlError::UnsupportedScheme { scheme } if scheme == "file")
        );
        assert!(
            matches!(err("git://git.corp.example/x"), UrlError::UnsupportedScheme { scheme } if scheme == "git")
        );
        assert!(
            matches!(err("FTP://h.example/x"), UrlError::UnsupportedScheme { scheme } if scheme == "ftp")
        );
        assert!(
            matches!(err("file:/etc/passwd"), UrlError::UnsupportedScheme { scheme } if scheme == "file")
        );
        assert!(matches!(
            err("https:/h.example/x"),
            UrlError::MissingSlashes { scheme: "https" }
        ));
        assert!(matches!(
            err("git.corp.example/team-a/web"),
            UrlError::MissingScheme
        ));
        assert!(matches!(
            err("//git.corp.example/x"),
            UrlError::MissingScheme
        ));
        let scp = err("git@git.corp.example:team-a/web.git");
        assert_eq!(
            scp,
            UrlError::ScpLike {
                suggestion: "ssh://git@git.corp.example/team-a/web.git".into()
            }
        );
        assert!(
            scp.to_string()
                .contains("ssh://git@git.corp.example/team-a/web.git"),
            "{scp}"
        );
        assert!(matches!(
            err("git.corp.example:team-a/web"),
            UrlError::ScpLike { .. }
        ));
    }

    #[test]
    fn refuses_credentials() {
        assert_eq!(
            err("https://user:pw@git.corp.example/x"),
            UrlError::Password
        );
        assert_eq!(err("ssh://git:pw@git.corp.example/x"), UrlError::Password);
        assert_eq!(err("https://:pw@git.corp.example/x"), UrlError::Password);
        assert_eq!(
            err("https://token@git.corp.example/x"),
            UrlError::UserInfoNotAllowed { scheme: "https" }
        );
        assert_eq!(
            err("http://@git.corp.example/x"),
            UrlError::UserInfoNotAllowed { scheme: "http" }
        );
        // The classic lookalike: the "host" is user information.
        assert_eq!(
            err("https://git.corp.example@evil.example/x"),
            UrlError::UserInfoNotAllowed { scheme: "https" }
        );
        assert_eq!(err("ssh://@git.corp.example/x"), UrlError::InvalidUser);
        assert_eq!(err("ssh://a@b@git.corp.example/x"), UrlError::InvalidUser);
        assert_eq!(err("ssh://gi%74@git.corp.example/x"), UrlError::InvalidUser);
        let message = err("https://alice:hunter2@git.corp.example/x").to_string();
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.contains("Secret"), "{message}");
    }

    #[test]
    fn refuses_parent_segments_instead_of_resolving_them() {
        for input in [
            "https://h.example/team-a/../team-b/x",
            "https://h.example/team-a/%2e%2e/team-b/x",
            "https://h.example/team-a/.%2E/team-b/x",
            "https://h.example/..",
            "https://h.example/x/../",
        ] {
            assert_eq!(err(input), UrlError::DotDotSegment, "{input}");
        }
    }

    #[test]
    fn refuses_encoded_separators_and_bad_characters() {
        assert_eq!(
            err("https://h.example/team-a%2Fweb"),
            UrlError::EncodedSeparator
        );
        assert_eq!(
            err("https://h.example/team-a%2fweb"),
            UrlError::EncodedSeparator
        );
        assert_eq!(
            err("https://h.example/team-a%5Cweb"),
            UrlError::EncodedSeparator
        );
        assert_eq!(err("https://h.example/a%00"), UrlError::EncodedControl);
        assert_eq!(err("https://h.example/a%0a"), UrlError::EncodedControl);
        assert_eq!(
            err("https://h.example/a%"),
            UrlError::InvalidPercentEncoding
        );
        assert_eq!(
            err("https://h.example/a%g1"),
            UrlError::InvalidPercentEncoding
        );
        assert!(matches!(
            err("https://h.example/a b"),
            UrlError::ForbiddenChar {
                what: "a space",
                ..
            }
        ));
        assert!(matches!(
            err("https://h.example/a\tb"),
            UrlError::ForbiddenChar { .. }
        ));
        assert!(matches!(
            err("https://h.example/a\u{0}"),
            UrlError::ForbiddenChar { .. }
        ));
        assert!(matches!(
            err("https://h.example/a\u{a0}b"),
            UrlError::ForbiddenChar {
                what: "whitespace",
                ..
            }
        ));
        assert!(matches!(
            err("https://h.example\\team-a/x"),
            UrlError::ForbiddenChar {
                what: "a backslash",
                ..
            }
        ));
        assert_eq!(
            err("https://h.example/x?ref=main"),
            UrlError::QueryOrFragment
        );
        assert_eq!(err("https://h.example/x#main"), UrlError::QueryOrFragment);
        assert_eq!(err("https://h.example?x"), UrlError::QueryOrFragment);
    }

    #[test]
    fn refuses_missing_or_bad_hosts_paths_and_ports() {
        assert_eq!(err(""), UrlError::Empty);
        assert_eq!(err("https:///team-a/x"), UrlError::EmptyHost);
        assert_eq!(err("https://h.example"), UrlError::MissingPath);
        assert_eq!(err("https://h.example/"), UrlError::MissingPath);
        assert_eq!(err("https://h.example//./"), UrlError::MissingPath);
        assert!(matches!(
            err("https://h.example:0/x"),
            UrlError::InvalidPort { .. }
        ));
        assert!(matches!(
            err("https://h.example:65536/x"),
            UrlError::InvalidPort { .. }
        ));
        assert!(matches!(
            err("https://h.example:/x"),
            UrlError::InvalidPort { .. }
        ));
        assert!(matches!(
            err("https://h.example:+1/x"),
            UrlError::InvalidPort { .. }
        ));
        assert!(matches!(
            err("https://h.example:8a/x"),
            UrlError::InvalidPort { .. }
        ));
        assert!(matches!(
            err("https://h_x.example/x"),
            UrlError::InvalidHost { .. }
        ));
        assert!(matches!(
            err("https://h..example/x"),
            UrlError::InvalidHost { .. }
        ));
        assert!(matches!(
            err("https://.h.example/x"),
            UrlError::InvalidHost { .. }
        ));
        assert!(matches!(
            err("https://-h.example/x"),
            UrlError::InvalidHost { .. }
        ));
        assert!(matches!(
            err("https://h%2eexample/x"),
            UrlError::InvalidHost { .. }
        ));
        assert!(matches!(err("https://::1/x"), UrlError::InvalidHost { .. }));
        assert!(matches!(
            err("https://[::1/x"),
            UrlError::InvalidIpv6 { .. }
        ));
        assert!(matches!(
            err("https://[fe80::1%25eth0]/x"),
            UrlError::InvalidIpv6 { .. }
        ));
        assert!(matches!(
            err("https://[::1]x/x"),
            UrlError::InvalidIpv6 { .. }
        ));
        assert!(matches!(
            err("https://[127.0.0.1]/x"),
            UrlError::InvalidIpv6 { .. }
        ));
        let long_label = format!("https://{}.example/x", "a".repeat(64));
        assert!(matches!(err(&long_label), UrlError::InvalidHost { .. }));
        let too_long = format!("https://h.example/{}", "a".repeat(MAX_REPO_URL_LEN));
        assert!(matches!(err(&too_long), UrlError::TooLong { .. }));
        let grows = format!("https://h.example/{}", "é".repeat(1000));
        assert!(matches!(err(&grows), UrlError::NormalizedTooLong { .. }));
    }

    #[test]
    fn refuses_non_ascii_hosts_with_a_punycode_hint() {
        let e = err("https://gït.corp.example/x");
        assert!(matches!(e, UrlError::NonAsciiHost { .. }));
        assert!(e.to_string().contains("punycode"), "{e}");
        // Look-alikes are spelled out: the host is escaped, and the
        // character is named with its code point.
        let cases = [
            (
                "https://git.corp.ex\u{430}mple/team-a/web.git",
                "host \"git.corp.ex\\u{430}mple\" is not ASCII: U+0430 'а' at byte 11, which looks like an ASCII character; ",
            ),
            (
                "https://git.corp\u{3002}example/x",
                "host \"git.corp\\u{3002}example\" is not ASCII: U+3002 '。' at byte 8, which looks like an ASCII character; ",
            ),
            (
                "https://gït.corp.example/x",
                "host \"g\\u{ef}t.corp.example\" is not ASCII: U+00EF 'ï' at byte 1; ",
            ),
            (
                "https://g\u{200b}it.example/x",
                "host \"g\\u{200b}it.example\" is not ASCII: U+200B '\\u{200b}' at byte 1; ",
            ),
        ];
        for (input, start) in cases {
            let message = err(input).to_string();
            assert!(message.starts_with(start), "{input:?}: {message}");
        }
        assert_eq!(
            norm("https://xn--gt-tka.corp.example/x"),
            "https://xn--gt-tka.corp.example/x"
        );
    }

    #[test]
    fn refuses_non_canonical_ipv4_forms() {
        for host in [
            "2130706433",
            "0x7f.1",
            "0x7f000001",
            "127.1",
            "127.0.1",
            "0177.0.0.1",
            "010.0.0.1",
            "127.0.0.01",
            "256.0.0.1",
            "1.2.3.4.5",
            "0x7f.0.0.1",
            "a.b.c.0x1",
            "git.corp.123",
            "0x",
        ] {
            let input = format!("http://{host}/x");
            assert!(
                matches!(err(&input), UrlError::AmbiguousIpv4 { .. }),
                "{host}"
            );
        }
        // Names that merely look hexadecimal are names.
        assert_eq!(norm("https://deadbeef/x"), "https://deadbeef/x");
        assert_eq!(norm("https://0x7f.example/x"), "https://0x7f.example/x");
    }

    #[test]
    fn detects_internal_hosts() {
        let cases = [
            ("http://127.0.0.1/x", Some("loopback")),
            ("http://127.255.0.9/x", Some("loopback")),
            ("http://[::1]/x", Some("loopback")),
            ("http://localhost/x", Some("loopback")),
            ("http://LocalHost./x", Some("loopback")),
            ("http://git.localhost/x", Some("loopback")),
            ("http://169.254.169.254/x", Some("cloud metadata endpoint")),
            (
                "http://metadata.google.internal/x",
                Some("cloud metadata endpoint"),
            ),
            ("http://169.254.1.1/x", Some("link-local")),
            ("http://[fe80::1]/x", Some("link-local")),
            ("http://10.0.0.5/x", Some("private network")),
            ("http://172.16.0.1/x", Some("private network")),
            ("http://172.31.255.255/x", Some("private network")),
            ("http://192.168.1.1/x", Some("private network")),
            ("http://[fd00::1]/x", Some("private network (unique local)")),
            ("http://[fc00::1]/x", Some("private network (unique local)")),
            ("http://[fec0::1]/x", Some("private network (site-local)")),
            ("http://0.0.0.0/x", Some("unspecified address")),
            ("http://[::]/x", Some("unspecified address")),
            ("http://100.64.0.1/x", Some("shared address space (CGNAT)")),
            (
                "http://100.127.255.255/x",
                Some("shared address space (CGNAT)"),
            ),
            ("http://255.255.255.255/x", Some("broadcast")),
            ("http://[::ffff:127.0.0.1]/x", Some("loopback")),
            (
                "http://[::ffff:a9fe:a9fe]/x",
                Some("cloud metadata endpoint"),
            ),
            ("http://[::ffff:10.1.2.3]/x", Some("private network")),
            ("http://[fd00:ec2::254]/x", Some("cloud metadata endpoint")),
            (
                "http://[fd00:ec2::253]/x",
                Some("private network (unique local)"),
            ),
            ("http://100.100.100.200/x", Some("cloud metadata endpoint")),
            (
                "http://100.100.100.201/x",
                Some("shared address space (CGNAT)"),
            ),
            ("http://metadata.goog/x", Some("cloud metadata endpoint")),
            ("http://[64:ff9b::10.1.2.3]/x", Some("private network")),
            ("https://git.corp.example/x", None),
            ("https://localhost.corp.example/x", None),
            ("https://172.32.0.1/x", None),
            ("https://100.128.0.1/x", None),
            ("https://192.0.2.10/x", None),
            ("https://[2001:db8::1]/x", None),
            ("https://[::ffff:192.0.2.10]/x", None),
        ];
        for (input, want) in cases {
            let url = parsed(input);
            assert_eq!(url.internal_reason(), want, "{input}");
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_is_written_canonically() {
        let url = parsed("http://[0:0:0:0:0:FFFF:7F00:1]/x");
        assert_eq!(url.host(), "[::ffff:127.0.0.1]");
        assert_eq!(url.internal_reason(), Some("loopback"));
    }

    #[test]
    fn error_messages_are_lowercase_and_say_what_is_allowed() {
        for input in [
            "",
            "file:///x",
            "git@h.example:x",
            "https://u:p@h.example/x",
            "https://h.example/../x",
            "http://0x7f.1/x",
            "https://h.example/x?y",
        ] {
            let message = err(input).to_string();
            assert!(
                message.starts_with(|c: char| !c.is_uppercase()),
                "{message}"
            );
            assert!(
                ["use", "write", "allowed", "expected", "belong"]
                    .iter()
                    .any(|w| message.contains(w)),
                "{message}"
            );
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(input in ".{0,300}") {
            let _ = RepoUrl::parse(&input);
        }

        #[test]
        fn parse_never_panics_on_url_like_input(
            input in "(https?|ssh|HTTP|file)://[a-zA-Z0-9@:.\\[\\]%_~-]{0,30}(/[a-zA-Z0-9.%~!*{}éÉ:@-]{0,12}){0,6}/?"
        ) {
            let _ = RepoUrl::parse(&input);
        }

        #[test]
        fn normalisation_is_idempotent(
            input in "(https?|ssh|HTTP|SsH)://(git@)?[a-zA-Z0-9.-]{1,20}(:[0-9]{1,5})?(/[a-zA-Z0-9.%~!*{}é:@-]{0,12}){0,6}/?"
        ) {
            if let Ok(url) = RepoUrl::parse(&input) {
                let again = RepoUrl::parse(url.as_str());
                prop_assert_eq!(again.as_ref(), Ok(&url), "{} -> {}", input, url);
            }
        }

        #[test]
        fn normal_form_has_no_dot_segments_or_empty_segments(
            input in "https://h\\.example(/(\\.|\\.\\.|%2e|%2E%2e|[a-z.]{1,5}|)){0,8}"
        ) {
            if let Ok(url) = RepoUrl::parse(&input) {
                for segment in url.segments() {
                    prop_assert!(!segment.is_empty() && segment != "." && segment != "..");
                }
                prop_assert!(!url.as_str().contains("//h.example//"));
            }
        }
    }
}
