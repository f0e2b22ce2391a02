//! The platform's input rules as pure, panic-free functions: repository URLs
//! and their allow-list patterns, name patterns, paths inside a repository,
//! Git reference names and Go durations.
//!
//! Every function here takes text a team or the platform team wrote and
//! either returns a checked, normalised value or an error whose message says
//! what is wrong and what is allowed. Nothing here performs IO, allocates
//! without bound or panics on any input (each parser has a fuzz target under
//! `fuzz/`).

pub mod duration;
pub mod gitref;
pub mod path;
pub mod pattern;
pub mod url;

pub use duration::{DurationError, MAX_GO_DURATION, format_go_duration, parse_go_duration};
pub use gitref::{MAX_REF_NAME_LEN, RefError, check_branch_or_tag, check_commit};
pub use path::{MAX_REPO_PATH_LEN, PathError, normalize_repo_path};
pub use pattern::{
    MAX_NAME_PATTERN_LEN, MAX_PATTERN_LEN, NAMESPACE_PLACEHOLDER, NameKind, NamePattern,
    PatternError, RepoPattern, is_dns_label,
};
pub use url::{MAX_REPO_URL_LEN, RepoUrl, Scheme, UrlError};

#[cfg(test)]
mod tests {
    use fluxgate_crds::common;

    /// The limits here and in the CRD schema must agree, or the API server
    /// and the webhook would disagree about what is too long.
    #[test]
    fn limits_agree_with_the_crd() {
        let pairs = [
            (super::MAX_REPO_URL_LEN, common::MAX_REPO_URL_LEN),
            (super::MAX_REPO_PATH_LEN, common::MAX_PATH_LEN),
            (super::MAX_REF_NAME_LEN, common::MAX_REF_NAME_LEN),
            (super::MAX_PATTERN_LEN, common::MAX_PATTERN_LEN),
        ];
        for (here, crd) in pairs {
            assert_eq!(u64::try_from(here).ok(), Some(crd));
        }
    }
}
