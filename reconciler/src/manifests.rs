//! Reading and validating the manifests of a checkout: the step between
//! fetch and apply.
//!
//! [`read`] walks the effective `path` of a checkout: every `*.yaml` and
//! `*.yml` file, in nested directories, in sorted order, each split into
//! documents by the pure core's [`parse_documents`] (so errors carry
//! `file:line`). Hidden files and directories (`.github/`, ...) are skipped.
//! It refuses symlinks that leave the path (judged by where they point
//! before anything is resolved, so a link into nowhere outside the path is
//! an escape, not a broken link), more files or bytes than the [`Limits`]
//! (sizes are taken from the file system before a file is read), files that
//! are not UTF-8 text (binary files named `.yaml`), more documents than
//! [`Limits::max_objects`], documents that grow past the byte limit once
//! YAML aliases are expanded (on top of the parser's own budgets: 250,000
//! nodes, 64 MiB of scalars and a nesting depth of 64 per document, which
//! stop "billion laughs" and deep nesting with `file:line`), and
//! `kustomization.yaml`.
//!
//! [`validate`] is pure: it turns the documents into [`Manifest`]s, refusing
//! documents without `apiVersion`, `kind` or `metadata.name`, cluster-scoped
//! kinds (the scope comes from a function the caller backs with API
//! discovery), namespaces outside the effective `allowedNamespaces` (matched
//! with the core's [`NamePattern`]), and objects defined twice. Objects
//! without a namespace get the effective `targetNamespace`.
//!
//! In cluster mode (the platform config repository, [`Policy::cluster`])
//! the rules differ: only the kinds of [`Policy::cluster`]'s allow-list
//! pass (Namespaces, PlatformDefaults and FluxConfigs unless more were
//! added), cluster-scoped objects are fine, every namespaced object must
//! name its namespace (there is no default), and neither the platform
//! namespace nor Kubernetes' own namespaces may be managed.
//!
//! Every error is about the commit, so it is terminal: the reconciler keeps
//! what runs and waits for a new commit.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use fluxgate_crds::ObjectRef;
use fluxgate_platform_defaults::documents::{MAX_INPUT_BYTES, parse_documents};
use fluxgate_platform_defaults::rules::NamePattern;
use serde_json::Value;

/// Most manifest files read when the platform's `maxFiles` is unknown (the
/// reconciler cannot read `PlatformDefaults`, which are cluster-scoped).
pub const DEFAULT_MAX_FILES: usize = 2000;
/// Largest checkout accepted when the platform's `maxRepoBytes` is unknown.
pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// Most YAML documents (objects) read from a path: each one is dry-run and
/// applied, so a file of a million `---` separated documents is refused
/// before the API server sees any.
pub const DEFAULT_MAX_OBJECTS: usize = 10_000;

/// File names that would make Flux run kustomize.
const KUSTOMIZATION_FILES: &[&str] = &["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// How much of a checkout the reconciler reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most manifest files under the path.
    pub max_files: usize,
    /// Most bytes of manifest files under the path (and of the transfer
    /// and the checkout, which the Git step checks); also the most the
    /// parsed documents may add up to once YAML aliases are expanded.
    pub max_bytes: u64,
    /// Most documents under the path.
    pub max_objects: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_files: DEFAULT_MAX_FILES,
            max_bytes: DEFAULT_MAX_BYTES,
            max_objects: DEFAULT_MAX_OBJECTS,
        }
    }
}

impl Limits {
    /// Largest single file read: the byte limit, and never more than the
    /// YAML parser takes.
    pub fn max_file_bytes(&self) -> u64 {
        self.max_bytes
            .min(u64::try_from(MAX_INPUT_BYTES).unwrap_or(u64::MAX))
    }
}

/// One YAML document of the checkout.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceDoc {
    /// File, relative to the repository root, with `/` separators.
    pub file: String,
    /// 1-based line where the document starts.
    pub line: usize,
    /// The parsed document.
    pub value: Value,
}

/// Whether a kind is namespaced, as API discovery says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Lives in a namespace.
    Namespaced,
    /// Cluster-wide.
    Cluster,
}

/// A validated object to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Where it was defined.
    pub file: String,
    /// Line of its document.
    pub line: usize,
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// Whether it is namespaced.
    pub scope: Scope,
    /// Its namespace (defaulted to the target namespace in team mode);
    /// empty for a cluster-scoped object.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// The object as it will be applied (namespace set, server-owned
    /// metadata removed; labels are added at apply time).
    pub object: Value,
}

impl Manifest {
    /// The inventory entry for this object.
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            namespace: match self.scope {
                Scope::Namespaced => Some(self.namespace.clone()),
                Scope::Cluster => None,
            },
            name: self.name.clone(),
        }
    }

    /// `Kind/namespace/name` (`Kind/name` when cluster-scoped), as
    /// `lastError.object` shows it.
    pub fn display(&self) -> String {
        display_object(&self.kind, &self.namespace, &self.name)
    }
}

/// `Kind/namespace/name`, or `Kind/name` without a namespace.
pub fn display_object(kind: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}/{namespace}/{name}")
    }
}

/// A kind by API group, whatever its version: an entry of the cluster-mode
/// allow-list. Written `<group>/<Kind>`, with `core` (or nothing) for the
/// core group: `core/Namespace`, `/Namespace`,
/// `fluxgate.dev/FluxConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KindRef {
    /// API group; empty for the core group.
    pub group: String,
    /// Kind.
    pub kind: String,
}

impl KindRef {
    /// The kind `kind` of `group`.
    pub fn new(group: &str, kind: &str) -> Self {
        Self {
            group: group.to_owned(),
            kind: kind.to_owned(),
        }
    }

    /// The kinds cluster mode always allows: Namespaces, PlatformDefaults
    /// and FluxConfigs.
    pub fn platform_defaults() -> Vec<Self> {
        vec![
            Self::new("", "Namespace"),
            Self::new(fluxgate_crds::GROUP, "PlatformDefaults"),
            Self::new(fluxgate_crds::GROUP, "FluxConfig"),
        ]
    }

    fn of(api_version: &str, kind: &str) -> Self {
        Self::new(api_version.rsplit_once('/').map_or("", |(g, _)| g), kind)
    }
}

impl fmt::Display for KindRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{group}/{}", self.kind)
    }
}

impl FromStr for KindRef {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let Some((group, kind)) = text.rsplit_once('/') else {
            return Err(format!(
                "{text:?} names no API group; write <group>/<Kind>, e.g. rbac.authorization.k8s.io/ClusterRole or core/ConfigMap"
            ));
        };
        let group = if group == "core" { "" } else { group };
        let kind_ok = kind.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && kind.chars().all(|c| c.is_ascii_alphanumeric());
        let group_ok = group
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            || group.is_empty();
        if !kind_ok || !group_ok {
            return Err(format!(
                "{text:?} is not <group>/<Kind>; the kind is CamelCase letters and digits, the group a DNS name or core"
            ));
        }
        Ok(Self::new(group, kind))
    }
}

/// What the reconciler may write: the effective `targetNamespace` and
/// `allowedNamespaces`, plus names it reserves for itself; in cluster mode,
/// the allowed kinds instead.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Namespace of objects that name none (empty in cluster mode: they
    /// must name one).
    pub target_namespace: String,
    /// The FluxConfig's namespace (for `{namespace}` in patterns; the
    /// platform namespace in cluster mode).
    pub team_namespace: String,
    /// The allowed namespace patterns as written in `status.effective`.
    pub allowed_texts: Vec<String>,
    allowed: Vec<NamePattern>,
    /// Prefix of the ConfigMaps in the team namespace the reconciler keeps
    /// for itself (its inventories); a manifest may not overwrite them.
    pub reserved_config_map_prefix: String,
    /// Cluster mode: the kinds allowed. `None` in team mode.
    pub allowed_kinds: Option<Vec<KindRef>>,
}

/// Namespaces the platform repository may never hold as `Namespace`
/// objects (nor prune): Kubernetes' own. The platform namespace is added by
/// [`Policy::cluster`].
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

impl Policy {
    /// A policy from the effective config. Patterns that do not parse match
    /// nothing (the operator validated them; this only guards).
    pub fn new(
        target_namespace: &str,
        team_namespace: &str,
        allowed: &[String],
        reserved_config_map_prefix: &str,
    ) -> Self {
        Self {
            target_namespace: target_namespace.to_owned(),
            team_namespace: team_namespace.to_owned(),
            allowed_texts: allowed.to_vec(),
            allowed: allowed
                .iter()
                .filter_map(|p| NamePattern::namespace(p).ok())
                .collect(),
            reserved_config_map_prefix: reserved_config_map_prefix.to_owned(),
            allowed_kinds: None,
        }
    }

    /// The cluster-mode policy of the platform instance whose FluxConfig is
    /// in `platform_namespace`: [`KindRef::platform_defaults`] plus
    /// `extra_kinds`, in any namespace.
    pub fn cluster(
        platform_namespace: &str,
        extra_kinds: &[KindRef],
        reserved_config_map_prefix: &str,
    ) -> Self {
        let mut kinds = KindRef::platform_defaults();
        for kind in extra_kinds {
            if !kinds.contains(kind) {
                kinds.push(kind.clone());
            }
        }
        Self {
            target_namespace: String::new(),
            team_namespace: platform_namespace.to_owned(),
            allowed_texts: vec!["*".to_owned()],
            allowed: Vec::new(),
            reserved_config_map_prefix: reserved_config_map_prefix.to_owned(),
            allowed_kinds: Some(kinds),
        }
    }

    /// Whether objects may be written to `namespace`.
    pub fn allows(&self, namespace: &str) -> bool {
        self.allowed_kinds.is_some()
            || self
                .allowed
                .iter()
                .any(|p| p.matches(namespace, &self.team_namespace))
    }

    /// Why a `Namespace` object may not be managed, if it may not.
    fn protected_namespace(&self, name: &str) -> Option<&'static str> {
        if name == self.team_namespace {
            Some("it is the platform namespace, where this instance runs")
        } else if SYSTEM_NAMESPACES.contains(&name) || name.starts_with("kube-") {
            Some("it is one of Kubernetes' own namespaces")
        } else {
            None
        }
    }
}

/// Why a commit's manifests were refused. Each message names the file
/// (relative to the repository root) and says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The configured path is not in the checkout.
    #[error("path {path:?} does not exist in this revision")]
    PathMissing {
        /// The effective path.
        path: String,
    },
    /// The configured path is not a directory or leaves the checkout.
    #[error("path {path:?} is not a directory inside the repository")]
    PathInvalid {
        /// The effective path.
        path: String,
    },
    /// A symlink points outside the configured path.
    #[error(
        "{file} is a symlink to {target:?}, outside path {path:?}; symlinks must stay inside the path"
    )]
    SymlinkEscapes {
        /// The link.
        file: String,
        /// Where it points.
        target: String,
        /// The effective path.
        path: String,
    },
    /// A symlink points nowhere.
    #[error("{file} is a symlink that cannot be resolved")]
    SymlinkBroken {
        /// The link.
        file: String,
    },
    /// Too many manifest files.
    #[error(
        "path {path:?} holds more than {max} manifest files (the platform's limit); split the repository or narrow the path"
    )]
    TooManyFiles {
        /// The effective path.
        path: String,
        /// The limit.
        max: usize,
    },
    /// Too many bytes.
    #[error(
        "the manifests under {path:?} exceed {max} bytes (the platform's limit; {file} went over it)"
    )]
    TooManyBytes {
        /// The effective path.
        path: String,
        /// The file that went over.
        file: String,
        /// The limit.
        max: u64,
    },
    /// A kustomization file.
    #[error("{file}: kustomize is not supported yet; commit plain manifests instead")]
    Kustomization {
        /// The file.
        file: String,
    },
    /// A file could not be read.
    #[error("{file}: cannot read: {message}")]
    Read {
        /// The file.
        file: String,
        /// The IO error.
        message: String,
    },
    /// One file is larger than a manifest file may be.
    #[error(
        "{file} is {bytes} bytes; a manifest file may hold at most {max} bytes (the platform's limit); split it"
    )]
    FileTooLarge {
        /// The file.
        file: String,
        /// Its size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// A file is not text: not UTF-8, or with NUL bytes (a binary file
    /// named like a manifest).
    #[error(
        "{file}:{line}: {problem}; a file named *.yaml or *.yml must be UTF-8 YAML text (rename binary files)"
    )]
    NotText {
        /// The file.
        file: String,
        /// The line of the first offending byte.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// More documents than allowed.
    #[error(
        "path {path:?} holds more than {max} YAML documents (the platform's limit; {file}:{line} went over it); split the repository or narrow the path"
    )]
    TooManyObjects {
        /// The effective path.
        path: String,
        /// The file that went over.
        file: String,
        /// The line of the document that went over.
        line: usize,
        /// The limit.
        max: usize,
    },
    /// The documents grow past the byte limit once YAML aliases are
    /// expanded.
    #[error(
        "{file}:{line}: the manifests under {path:?} exceed {max} bytes once YAML aliases are expanded (the platform's limit); do not use anchors and aliases to repeat large values"
    )]
    Expanded {
        /// The effective path.
        path: String,
        /// The file of the document that went over.
        file: String,
        /// The line of that document.
        line: usize,
        /// The limit.
        max: u64,
    },
    /// A document is not YAML.
    #[error("{file}:{line}: invalid YAML: {message}")]
    Yaml {
        /// The file.
        file: String,
        /// The line.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A document is not a Kubernetes object.
    #[error("{file}:{line}: {problem}")]
    NotAnObject {
        /// The file.
        file: String,
        /// The line.
        line: usize,
        /// What is missing or wrong.
        problem: String,
    },
    /// A kind the API server does not serve.
    #[error("{file}:{line}: {api_version} {kind} is not served by the cluster: {message}")]
    UnknownKind {
        /// The file.
        file: String,
        /// The line.
        line: usize,
        /// `apiVersion`.
        api_version: String,
        /// `kind`.
        kind: String,
        /// What discovery said.
        message: String,
    },
    /// A cluster-scoped object.
    #[error(
        "{file}:{line}: {object} is cluster-scoped; a team's manifests may only hold namespaced objects"
    )]
    ClusterScoped {
        /// The file.
        file: String,
        /// The line.
        line: usize,
        /// `Kind/name`.
        object: String,
    },
    /// A namespace outside the allow-list.
    #[error(
        "{file}:{line}: {object} is in namespace {namespace}, which is not allowed; allowed: {allowed}"
    )]
    NamespaceNotAllowed {
        /// The file.
        file: String,
        /// The line.
        line: usize,
        /// `Kind/namespace/name`.
        object: String,
        /// The namespace.
        namespace: String,
        /// The allowed patterns, comma-separated.
        allowed: String,
    },
    /// The same object twice.
    #[error("{file}:{line}: {object} is also defined at {first}; define each object once")]
    Duplicate {
        /// The second definition's file.
        file: String,
        /// Its line.
        line: usize,
        /// `Kind/namespace/name`.
        object: String,
        /// `file:line` of the first definition.
        first: String,
    },
    /// An object the reconciler keeps for itself.
    #[error("{file}:{line}: {object} is reserved for the reconciler's inventory; rename it")]
    Reserved {
        /// The file.
        file: String,
        /// The line.
        line: usize,
        /// `Kind/namespace/name`.
        object: String,
    },
    /// Cluster mode: a kind outside the allow-list.
    #[error(
        "{file}:{line}: {object} is a {kind}, which the platform repository may not hold; allowed kinds: {allowed} (the platform instance's --allow-kind adds more)"
    )]
    KindNotAllowed {
        /// The file.
        file: String,
        /// The line.
        line: usize,
        /// `Kind/namespace/name` or `Kind/name`.
        object: String,
        /// `group/Kind`.
        kind: String,
        /// The allowed kinds, comma-separated.
        allowed: String,
    },
    /// Cluster mode: a namespaced object without a namespace.
    #[error(
        "{file}:{line}: {object} names no namespace; in the platform repository every namespaced object must set metadata.namespace"
    )]
    NamespaceRequired {
        /// The file.
        file: String,
        /// The line.
        line: usize,
        /// `Kind/name`.
        object: String,
    },
    /// Cluster mode: an object the platform repository may not manage.
    #[error("{file}:{line}: {object} may not be managed from the platform repository: {reason}")]
    Protected {
        /// The file.
        file: String,
        /// The line.
        line: usize,
        /// `Kind/namespace/name` or `Kind/name`.
        object: String,
        /// Why.
        reason: String,
    },
}

impl ManifestError {
    /// The file concerned, when there is one.
    pub fn file(&self) -> Option<&str> {
        match self {
            Self::PathMissing { .. } | Self::PathInvalid { .. } | Self::TooManyFiles { .. } => None,
            Self::SymlinkEscapes { file, .. }
            | Self::SymlinkBroken { file }
            | Self::TooManyBytes { file, .. }
            | Self::FileTooLarge { file, .. }
            | Self::NotText { file, .. }
            | Self::TooManyObjects { file, .. }
            | Self::Expanded { file, .. }
            | Self::Kustomization { file }
            | Self::Read { file, .. }
            | Self::Yaml { file, .. }
            | Self::NotAnObject { file, .. }
            | Self::UnknownKind { file, .. }
            | Self::ClusterScoped { file, .. }
            | Self::NamespaceNotAllowed { file, .. }
            | Self::Duplicate { file, .. }
            | Self::Reserved { file, .. }
            | Self::KindNotAllowed { file, .. }
            | Self::NamespaceRequired { file, .. }
            | Self::Protected { file, .. } => Some(file),
        }
    }

    /// The line concerned, when there is one.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Yaml { line, .. }
            | Self::NotText { line, .. }
            | Self::TooManyObjects { line, .. }
            | Self::Expanded { line, .. }
            | Self::NotAnObject { line, .. }
            | Self::UnknownKind { line, .. }
            | Self::ClusterScoped { line, .. }
            | Self::NamespaceNotAllowed { line, .. }
            | Self::Duplicate { line, .. }
            | Self::Reserved { line, .. }
            | Self::KindNotAllowed { line, .. }
            | Self::NamespaceRequired { line, .. }
            | Self::Protected { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// The object concerned, when there is one.
    pub fn object(&self) -> Option<&str> {
        match self {
            Self::ClusterScoped { object, .. }
            | Self::NamespaceNotAllowed { object, .. }
            | Self::Duplicate { object, .. }
            | Self::Reserved { object, .. }
            | Self::KindNotAllowed { object, .. }
            | Self::NamespaceRequired { object, .. }
            | Self::Protected { object, .. } => Some(object),
            _ => None,
        }
    }
}

/// Joins `rel` (with `/`) for messages.
fn display_rel(path: &Path) -> String {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn is_manifest_name(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

/// The files to read, sorted by their path relative to the repository root.
struct Walk<'a> {
    root: &'a Path,
    base: PathBuf,
    path_text: &'a str,
    limits: Limits,
    files: Vec<(String, PathBuf)>,
    bytes: u64,
}

impl Walk<'_> {
    fn rel(&self, path: &Path) -> String {
        display_rel(path.strip_prefix(self.root).unwrap_or(path))
    }

    fn io_error(&self, path: &Path, err: &std::io::Error) -> ManifestError {
        ManifestError::Read {
            file: self.rel(path),
            message: err.to_string(),
        }
    }

    fn visit(&mut self, dir: &Path) -> Result<(), ManifestError> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| self.io_error(dir, &e))? {
            let entry = entry.map_err(|e| self.io_error(dir, &e))?;
            entries.push(entry.path());
        }
        entries.sort();
        for path in entries {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('.') {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).map_err(|e| self.io_error(&path, &e))?;
            let (meta, target) = if meta.file_type().is_symlink() {
                // Judged by where it points first: a link out of the path
                // is an escape whether or not its target exists (the Git
                // step checks out nothing outside the path).
                if let Ok(pointed) = std::fs::read_link(&path)
                    && !lexically_inside(dir, &pointed, &self.base)
                {
                    return Err(ManifestError::SymlinkEscapes {
                        file: self.rel(&path),
                        target: pointed.display().to_string(),
                        path: self.path_text.to_owned(),
                    });
                }
                let resolved =
                    std::fs::canonicalize(&path).map_err(|_| ManifestError::SymlinkBroken {
                        file: self.rel(&path),
                    })?;
                if !resolved.starts_with(&self.base) {
                    let shown = std::fs::read_link(&path)
                        .map(|t| t.display().to_string())
                        .unwrap_or_else(|_| resolved.display().to_string());
                    return Err(ManifestError::SymlinkEscapes {
                        file: self.rel(&path),
                        target: shown,
                        path: self.path_text.to_owned(),
                    });
                }
                let meta = std::fs::metadata(&resolved).map_err(|e| self.io_error(&path, &e))?;
                // A directory inside the path is walked where it is; following
                // the link too would read it twice (or loop).
                if meta.is_dir() {
                    continue;
                }
                (meta, resolved)
            } else {
                (meta, path.clone())
            };
            if meta.is_dir() {
                self.visit(&path)?;
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            if KUSTOMIZATION_FILES.contains(&name.as_str()) {
                return Err(ManifestError::Kustomization {
                    file: self.rel(&path),
                });
            }
            if !is_manifest_name(&name) {
                continue;
            }
            if meta.len() > self.limits.max_file_bytes() {
                return Err(ManifestError::FileTooLarge {
                    file: self.rel(&path),
                    bytes: meta.len(),
                    max: self.limits.max_file_bytes(),
                });
            }
            if self.files.len() >= self.limits.max_files {
                return Err(ManifestError::TooManyFiles {
                    path: self.path_text.to_owned(),
                    max: self.limits.max_files,
                });
            }
            self.bytes = self.bytes.saturating_add(meta.len());
            if self.bytes > self.limits.max_bytes {
                return Err(ManifestError::TooManyBytes {
                    path: self.path_text.to_owned(),
                    file: self.rel(&path),
                    max: self.limits.max_bytes,
                });
            }
            let rel = self.rel(&path);
            self.files.push((rel, target));
        }
        Ok(())
    }
}

/// Whether `target`, named by a link in `dir`, stays under `base` before
/// any link is followed.
fn lexically_inside(dir: &Path, target: &Path, base: &Path) -> bool {
    let mut at = PathBuf::new();
    for component in dir.join(target).components() {
        match component {
            Component::ParentDir => {
                at.pop();
            }
            Component::CurDir => {}
            other => at.push(other),
        }
    }
    at.starts_with(base)
}

/// Checks that `bytes` are text a YAML parser should see: UTF-8 without
/// NUL bytes. The error names the line of the first offending byte.
fn as_text(file: &str, bytes: Vec<u8>) -> Result<String, ManifestError> {
    let line_at = |bytes: &[u8], at: usize| bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
    if let Some(at) = bytes.iter().position(|b| *b == 0) {
        return Err(ManifestError::NotText {
            file: file.to_owned(),
            line: line_at(&bytes, at),
            problem: "contains a NUL byte: this is binary data, not YAML".to_owned(),
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        ManifestError::NotText {
            file: file.to_owned(),
            line: line_at(bytes, at),
            problem: format!("byte 0x{:02x} is not valid UTF-8", bytes[at]),
        }
    })
}

/// Roughly how many bytes a parsed document stands for once written out
/// (scalars' text plus a little per node): what aliases multiply.
fn expanded_size(value: &Value) -> u64 {
    // Iterative: the parser bounds the depth, but this need not rely on it.
    let mut stack = vec![value];
    let mut total = 0u64;
    while let Some(v) = stack.pop() {
        total = total.saturating_add(match v {
            Value::Null | Value::Bool(_) => 4,
            Value::Number(_) => 8,
            Value::String(s) => s.len() as u64 + 2,
            Value::Array(items) => {
                stack.extend(items.iter());
                2
            }
            Value::Object(map) => {
                for (key, item) in map {
                    total = total.saturating_add(key.len() as u64 + 2);
                    stack.push(item);
                }
                2
            }
        });
    }
    total
}

/// A parser message, with what it means when it is one of the parser's
/// budgets (amplification through aliases, nesting, size).
fn explain_yaml_error(message: String) -> String {
    if message.contains("budget breached") {
        format!(
            "{message} (the document is too large or too deeply nested once YAML aliases are expanded; per document at most 250,000 nodes, 64 MiB of text and 64 levels)"
        )
    } else if message.contains("recursion limit") {
        format!("{message} (nesting deeper than the parser allows)")
    } else {
        message
    }
}

/// Stack of the thread [`read_on_own_stack`] reads on. The YAML
/// deserializer recurses once per nesting level; at its depth budget (64)
/// that takes about 1.7 MiB of stack in a debug build (under 256 KiB
/// optimised), close to the 2 MiB of the runtime's blocking threads. The
/// memory is reserved, not committed.
pub const READ_STACK_BYTES: usize = 16 * 1024 * 1024;

/// [`read`] on a thread of its own with a [`READ_STACK_BYTES`] stack, so
/// deeply nested YAML cannot overflow the caller's stack. Blocking.
pub fn read_on_own_stack(
    root: &Path,
    path: &str,
    limits: Limits,
) -> Result<Vec<SourceDoc>, ManifestError> {
    std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("read-manifests".into())
            .stack_size(READ_STACK_BYTES)
            .spawn_scoped(scope, || read(root, path, limits))
            .map_err(|e| ManifestError::Read {
                file: ".".into(),
                message: format!("cannot start a thread to read the manifests: {e}"),
            })?;
        reader.join().unwrap_or_else(|_| {
            Err(ManifestError::Read {
                file: ".".into(),
                message: "the manifest reader failed unexpectedly".into(),
            })
        })
    })
}

/// Reads every manifest document under `path` (relative to the checkout
/// `root`; `.` or empty is the root), in sorted file order.
pub fn read(root: &Path, path: &str, limits: Limits) -> Result<Vec<SourceDoc>, ManifestError> {
    let root = std::fs::canonicalize(root).map_err(|e| ManifestError::Read {
        file: ".".into(),
        message: e.to_string(),
    })?;
    let trimmed = path.trim_matches('/');
    let joined = if trimmed.is_empty() || trimmed == "." {
        root.clone()
    } else {
        root.join(trimmed)
    };
    if std::fs::symlink_metadata(&joined).is_err() {
        return Err(ManifestError::PathMissing {
            path: path.to_owned(),
        });
    }
    let base = std::fs::canonicalize(&joined).map_err(|_| ManifestError::PathMissing {
        path: path.to_owned(),
    })?;
    if !base.starts_with(&root) || !base.is_dir() {
        return Err(ManifestError::PathInvalid {
            path: path.to_owned(),
        });
    }
    let mut walk = Walk {
        root: &root,
        base: base.clone(),
        path_text: path,
        limits,
        files: Vec::new(),
        bytes: 0,
    };
    walk.visit(&base)?;
    let mut files = walk.files;
    files.sort_by(|a, b| a.0.cmp(&b.0));

    let mut docs = Vec::new();
    let mut expanded = 0u64;
    for (file, real) in files {
        let bytes = std::fs::read(&real).map_err(|e| ManifestError::Read {
            file: file.clone(),
            message: e.to_string(),
        })?;
        let text = as_text(&file, bytes)?;
        for parsed in parse_documents(&text) {
            let doc = parsed.map_err(|err| ManifestError::Yaml {
                file: file.clone(),
                line: err.line,
                message: explain_yaml_error(err.message),
            })?;
            if docs.len() >= limits.max_objects {
                return Err(ManifestError::TooManyObjects {
                    path: path.to_owned(),
                    file,
                    line: doc.line,
                    max: limits.max_objects,
                });
            }
            expanded = expanded.saturating_add(expanded_size(&doc.value));
            if expanded > limits.max_bytes {
                return Err(ManifestError::Expanded {
                    path: path.to_owned(),
                    file,
                    line: doc.line,
                    max: limits.max_bytes,
                });
            }
            docs.push(SourceDoc {
                file: file.clone(),
                line: doc.line,
                value: doc.value,
            });
        }
    }
    Ok(docs)
}

/// `apiVersion` and `kind` of a document, if it has both as strings.
pub fn type_of(value: &Value) -> Option<(&str, &str)> {
    Some((
        value.get("apiVersion")?.as_str()?,
        value.get("kind")?.as_str()?,
    ))
}

/// Server-owned metadata that cannot be applied (a manifest exported with
/// `kubectl get -o yaml` carries it).
const SERVER_FIELDS: &[&str] = &[
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Longest `apiVersion`, `kind`, name or namespace accepted: Kubernetes'
/// own limit for names.
const MAX_IDENTITY_BYTES: usize = 253;

/// Refuses an `apiVersion`, `kind`, name or namespace that would make a
/// message span lines or flood it: control characters (a YAML block
/// scalar can hold newlines, and could forge lines in `lastError` and
/// logs) or more than [`MAX_IDENTITY_BYTES`]. Found by fuzzing.
fn identity_text(field: &str, value: &str) -> Result<(), String> {
    let shown = || {
        let cut: String = value.chars().take(64).collect();
        if cut.len() < value.len() {
            format!("{cut:?}… ({} bytes)", value.len())
        } else {
            format!("{cut:?}")
        }
    };
    if value.chars().any(char::is_control) {
        Err(format!(
            "{field} {} contains a control character; apiVersion, kind, name and namespace are printable text",
            shown()
        ))
    } else if value.len() > MAX_IDENTITY_BYTES {
        Err(format!(
            "{field} {} is longer than {MAX_IDENTITY_BYTES} bytes, the most Kubernetes allows",
            shown()
        ))
    } else {
        Ok(())
    }
}

/// Validates documents into manifests. `scope` says whether a kind is
/// namespaced (`Err` with a message when the API server does not serve it).
pub fn validate(
    docs: Vec<SourceDoc>,
    scope: impl Fn(&str, &str) -> Result<Scope, String>,
    policy: &Policy,
) -> Result<Vec<Manifest>, ManifestError> {
    let mut out: Vec<Manifest> = Vec::with_capacity(docs.len());
    let mut seen: BTreeMap<(String, String, String, String), String> = BTreeMap::new();
    for SourceDoc {
        file,
        line,
        mut value,
    } in docs
    {
        let not_object = |problem: &str| ManifestError::NotAnObject {
            file: file.clone(),
            line,
            problem: problem.to_owned(),
        };
        if !value.is_object() {
            return Err(not_object(
                "the document is not a mapping; each document must be one Kubernetes object",
            ));
        }
        let api_version = match value.get("apiVersion").and_then(Value::as_str) {
            Some(v) if !v.is_empty() => v.to_owned(),
            _ => return Err(not_object("the object has no apiVersion")),
        };
        let kind = match value.get("kind").and_then(Value::as_str) {
            Some(k) if !k.is_empty() => k.to_owned(),
            _ => return Err(not_object("the object has no kind")),
        };
        // These end up in every message below, unquoted.
        identity_text("apiVersion", &api_version).map_err(|p| not_object(&p))?;
        identity_text("kind", &kind).map_err(|p| not_object(&p))?;
        if kind.ends_with("List") && value.get("items").is_some() {
            return Err(not_object(&format!(
                "{kind} is a list; write one document per object"
            )));
        }
        let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) else {
            return Err(not_object(&format!("{kind} has no metadata")));
        };
        let name = match metadata.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => {
                return Err(not_object(&format!(
                    "{kind} has no metadata.name (generateName is not supported)"
                )));
            }
        };
        for field in SERVER_FIELDS {
            metadata.remove(*field);
        }
        let written_namespace = metadata
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|ns| !ns.is_empty())
            .map(str::to_owned);
        identity_text("metadata.name", &name).map_err(|p| not_object(&p))?;
        if let Some(namespace) = &written_namespace {
            identity_text("metadata.namespace", namespace).map_err(|p| not_object(&p))?;
        }
        let kind_ref = KindRef::of(&api_version, &kind);
        // Cluster mode: the kind is checked before anything is asked about
        // it, so the message is about the allow-list.
        if let Some(allowed) = &policy.allowed_kinds
            && !allowed.contains(&kind_ref)
        {
            return Err(ManifestError::KindNotAllowed {
                file,
                line,
                object: display_object(&kind, written_namespace.as_deref().unwrap_or(""), &name),
                kind: kind_ref.to_string(),
                allowed: allowed
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let scope = scope(&api_version, &kind).map_err(|message| ManifestError::UnknownKind {
            file: file.clone(),
            line,
            api_version: api_version.clone(),
            kind: kind.clone(),
            message,
        })?;
        let cluster_mode = policy.allowed_kinds.is_some();
        let namespace = match (scope, cluster_mode) {
            (Scope::Cluster, false) => {
                return Err(ManifestError::ClusterScoped {
                    file,
                    line,
                    object: format!("{kind}/{name}"),
                });
            }
            (Scope::Cluster, true) => {
                // A namespace on a cluster-scoped object means nothing; the
                // API server would refuse it.
                metadata.remove("namespace");
                if kind_ref == KindRef::new("", "Namespace")
                    && let Some(reason) = policy.protected_namespace(&name)
                {
                    return Err(ManifestError::Protected {
                        file,
                        line,
                        object: format!("{kind}/{name}"),
                        reason: reason.to_owned(),
                    });
                }
                String::new()
            }
            (Scope::Namespaced, true) => {
                let Some(namespace) = written_namespace else {
                    return Err(ManifestError::NamespaceRequired {
                        file,
                        line,
                        object: format!("{kind}/{name}"),
                    });
                };
                if kind_ref == KindRef::new(fluxgate_crds::GROUP, "FluxConfig")
                    && namespace == policy.team_namespace
                {
                    return Err(ManifestError::Protected {
                        file,
                        line,
                        object: format!("{kind}/{namespace}/{name}"),
                        reason: "FluxConfigs in the platform namespace are neither checked by the admission webhook nor served by the operator, and the platform instance's own is managed outside the repository".to_owned(),
                    });
                }
                metadata.insert("namespace".into(), Value::String(namespace.clone()));
                namespace
            }
            (Scope::Namespaced, false) => {
                let namespace =
                    written_namespace.unwrap_or_else(|| policy.target_namespace.clone());
                metadata.insert("namespace".into(), Value::String(namespace.clone()));
                namespace
            }
        };
        let object = display_object(&kind, &namespace, &name);
        if scope == Scope::Namespaced && !policy.allows(&namespace) {
            return Err(ManifestError::NamespaceNotAllowed {
                file,
                line,
                object,
                namespace,
                allowed: policy.allowed_texts.join(", "),
            });
        }
        if api_version == "v1"
            && kind == "ConfigMap"
            && namespace == policy.team_namespace
            && !policy.reserved_config_map_prefix.is_empty()
            && name.starts_with(&policy.reserved_config_map_prefix)
        {
            return Err(ManifestError::Reserved { file, line, object });
        }
        // Objects are the same whatever the version they are written in.
        let group = api_version
            .rsplit_once('/')
            .map(|(g, _)| g.to_owned())
            .unwrap_or_default();
        let key = (group, kind.clone(), namespace.clone(), name.clone());
        if let Some(first) = seen.get(&key) {
            return Err(ManifestError::Duplicate {
                file,
                line,
                object,
                first: first.clone(),
            });
        }
        seen.insert(key, format!("{file}:{line}"));
        out.push(Manifest {
            file,
            line,
            api_version,
            kind,
            scope,
            namespace,
            name,
            object: value,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn cm(name: &str) -> String {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: b\n")
    }

    fn scope(_: &str, kind: &str) -> Result<Scope, String> {
        match kind {
            "Namespace" | "ClusterRole" | "ClusterRoleBinding" | "PlatformDefaults" => {
                Ok(Scope::Cluster)
            }
            "Widget" => Err("no such kind".into()),
            _ => Ok(Scope::Namespaced),
        }
    }

    fn policy() -> Policy {
        Policy::new(
            "team-a",
            "team-a",
            &["team-a".into(), "team-a-*".into()],
            "fluxgate-inventory-",
        )
    }

    fn doc(text: &str) -> Vec<SourceDoc> {
        parse_documents(text)
            .into_iter()
            .map(|d| {
                let d = d.unwrap();
                SourceDoc {
                    file: "x.yaml".into(),
                    line: d.line,
                    value: d.value,
                }
            })
            .collect()
    }

    #[test]
    fn reads_nested_multi_document_files_in_sorted_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "deploy/b.yaml", &cm("b"));
        write(
            root,
            "deploy/a/z.yml",
            &format!("{}---\n{}", cm("z1"), cm("z2")),
        );
        write(root, "deploy/a.yaml", &cm("a"));
        write(root, "deploy/README.md", "not yaml");
        write(root, "deploy/.github/ci.yaml", "on: push\n");
        write(root, "elsewhere.yaml", &cm("ignored"));
        let docs = read(root, "deploy", Limits::default()).unwrap();
        let seen: Vec<(String, usize, String)> = docs
            .iter()
            .map(|d| {
                (
                    d.file.clone(),
                    d.line,
                    d.value["metadata"]["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("deploy/a.yaml".into(), 1, "a".into()),
                ("deploy/a/z.yml".into(), 1, "z1".into()),
                ("deploy/a/z.yml".into(), 8, "z2".into()),
                ("deploy/b.yaml".into(), 1, "b".into()),
            ]
        );
        // The root is `.`.
        assert_eq!(read(root, ".", Limits::default()).unwrap().len(), 5);
    }

    #[test]
    fn refuses_symlinks_that_leave_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        write(&root, "deploy/ok.yaml", &cm("ok"));
        write(&root, "secret.yaml", &cm("outside"));
        std::os::unix::fs::symlink("../secret.yaml", root.join("deploy/evil.yaml")).unwrap();
        let err = read(&root, "deploy", Limits::default()).unwrap_err();
        assert!(
            matches!(&err, ManifestError::SymlinkEscapes { file, target, .. }
                if file == "deploy/evil.yaml" && target == "../secret.yaml"),
            "{err}"
        );
        assert_eq!(err.file(), Some("deploy/evil.yaml"));

        // Out of the repository altogether, through an absolute link.
        std::fs::remove_file(root.join("deploy/evil.yaml")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("deploy/etc")).unwrap();
        let err = read(&root, "deploy", Limits::default()).unwrap_err();
        assert!(matches!(err, ManifestError::SymlinkEscapes { .. }), "{err}");

        // Links inside the path are fine; directories are not read twice.
        std::fs::remove_file(root.join("deploy/etc")).unwrap();
        write(&root, "deploy/sub/real.yaml", &cm("real"));
        std::os::unix::fs::symlink("sub", root.join("deploy/again")).unwrap();
        std::os::unix::fs::symlink("sub/real.yaml", root.join("deploy/link.yaml")).unwrap();
        let docs = read(&root, "deploy", Limits::default()).unwrap();
        let files: Vec<&str> = docs.iter().map(|d| d.file.as_str()).collect();
        assert_eq!(
            files,
            ["deploy/link.yaml", "deploy/ok.yaml", "deploy/sub/real.yaml"]
        );

        // A path that is itself a link out of the repository.
        std::os::unix::fs::symlink(dir.path(), root.join("up")).unwrap();
        let err = read(&root, "up", Limits::default()).unwrap_err();
        assert!(matches!(err, ManifestError::PathInvalid { .. }), "{err}");

        std::os::unix::fs::symlink("nowhere.yaml", root.join("deploy/broken.yaml")).unwrap();
        let err = read(&root, "deploy", Limits::default()).unwrap_err();
        assert!(matches!(err, ManifestError::SymlinkBroken { .. }), "{err}");
    }

    #[test]
    fn enforces_file_and_byte_limits() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for i in 0..3 {
            write(root, &format!("m{i}.yaml"), &cm(&format!("c{i}")));
        }
        let few = Limits {
            max_files: 2,
            ..Limits::default()
        };
        let err = read(root, ".", few).unwrap_err();
        assert!(
            matches!(err, ManifestError::TooManyFiles { max: 2, .. }),
            "{err}"
        );
        let small = Limits {
            max_files: 10,
            max_bytes: 100,
            ..Limits::default()
        };
        let err = read(root, ".", small).unwrap_err();
        assert!(
            matches!(&err, ManifestError::TooManyBytes { file, .. } if file == "m1.yaml"),
            "{err}"
        );
        assert!(read(root, ".", Limits::default()).is_ok());
    }

    #[test]
    fn refuses_kustomization_files() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "app/kustomization.yaml", "resources: []\n");
        let err = read(dir.path(), ".", Limits::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "app/kustomization.yaml: kustomize is not supported yet; commit plain manifests instead"
        );
    }

    #[test]
    fn reports_broken_yaml_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "bad.yaml",
            &format!(
                "{}---\napiVersion: v1\nkind: ConfigMap\ndata: [unclosed\n",
                cm("ok")
            ),
        );
        let err = read(dir.path(), ".", Limits::default()).unwrap_err();
        assert_eq!(err.file(), Some("bad.yaml"));
        let line = err.line().unwrap();
        assert!((8..=10).contains(&line), "{err}");
        assert!(err.to_string().starts_with("bad.yaml:"), "{err}");

        let err = read(dir.path(), "missing", Limits::default()).unwrap_err();
        assert!(matches!(err, ManifestError::PathMissing { .. }), "{err}");
    }

    #[test]
    fn defaults_the_namespace_and_checks_the_allow_list() {
        let docs = doc(&format!(
            "{}---\n{}  namespace: team-a-staging\n",
            cm("one"),
            cm("two").replace("data:\n  a: b\n", "")
        ));
        let manifests = validate(docs, scope, &policy()).unwrap();
        assert_eq!(manifests[0].namespace, "team-a");
        assert_eq!(manifests[0].object["metadata"]["namespace"], "team-a");
        assert_eq!(manifests[1].namespace, "team-a-staging");
        assert_eq!(manifests[1].display(), "ConfigMap/team-a-staging/two");

        let other =
            doc("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: team-b\n");
        let err = validate(other, scope, &policy()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.yaml:1: ConfigMap/team-b/x is in namespace team-b, which is not allowed; allowed: team-a, team-a-*"
        );
        assert_eq!(err.object(), Some("ConfigMap/team-b/x"));
    }

    #[test]
    fn refuses_cluster_scoped_and_unknown_kinds() {
        let ns = doc("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: evil\n");
        let err = validate(ns, scope, &policy()).unwrap_err();
        assert!(
            matches!(&err, ManifestError::ClusterScoped { object, line: 1, .. } if object == "Namespace/evil"),
            "{err}"
        );
        let widget = doc("apiVersion: x.example/v1\nkind: Widget\nmetadata:\n  name: w\n");
        let err = validate(widget, scope, &policy()).unwrap_err();
        assert!(matches!(err, ManifestError::UnknownKind { .. }), "{err}");
    }

    #[test]
    fn refuses_documents_that_are_not_objects() {
        for (text, needle) in [
            ("kind: ConfigMap\nmetadata:\n  name: a\n", "no apiVersion"),
            ("apiVersion: v1\nmetadata:\n  name: a\n", "no kind"),
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
                "no metadata.name",
            ),
            ("- a\n- b\n", "not a mapping"),
            ("apiVersion: v1\nkind: List\nitems: []\n", "is a list"),
        ] {
            let err = validate(doc(text), scope, &policy()).unwrap_err();
            assert!(err.to_string().contains(needle), "{text:?}: {err}");
            assert_eq!(err.line(), Some(1));
        }
    }

    #[test]
    fn refuses_duplicates_and_reserved_names_and_strips_server_fields() {
        let twice = doc(&format!("{}---\n{}", cm("a"), cm("a")));
        let err = validate(twice, scope, &policy()).unwrap_err();
        assert!(
            matches!(&err, ManifestError::Duplicate { first, line: 8, .. } if first == "x.yaml:1"),
            "{err}"
        );
        let reserved = doc(&cm("fluxgate-inventory-web"));
        let err = validate(reserved, scope, &policy()).unwrap_err();
        assert!(matches!(err, ManifestError::Reserved { .. }), "{err}");

        let exported = doc(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  resourceVersion: \"5\"\n  uid: x\n",
        );
        let m = validate(exported, scope, &policy()).unwrap();
        assert!(m[0].object["metadata"].get("resourceVersion").is_none());
        assert!(m[0].object["metadata"].get("uid").is_none());
    }

    fn platform() -> Policy {
        Policy::cluster(
            "fluxgate-system",
            &["rbac.authorization.k8s.io/ClusterRoleBinding"
                .parse()
                .unwrap()],
            "fluxgate-inventory-",
        )
    }

    const PLATFORM_REPO: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: team-a
  namespace: ignored
---
apiVersion: fluxgate.dev/v1alpha1
kind: PlatformDefaults
metadata:
  name: global
spec: {}
---
apiVersion: fluxgate.dev/v1alpha1
kind: FluxConfig
metadata:
  name: web
  namespace: team-a
spec:
  repo: https://git.corp.example/team-a/web.git
";

    #[test]
    fn cluster_mode_takes_namespaces_platform_defaults_and_flux_configs() {
        let m = validate(doc(PLATFORM_REPO), scope, &platform()).unwrap();
        let shown: Vec<String> = m.iter().map(Manifest::display).collect();
        assert_eq!(
            shown,
            [
                "Namespace/team-a",
                "PlatformDefaults/global",
                "FluxConfig/team-a/web"
            ]
        );
        assert_eq!(m[0].scope, Scope::Cluster);
        assert!(m[0].object["metadata"].get("namespace").is_none());
        assert_eq!(m[0].object_ref().namespace, None);
        assert_eq!(m[2].object_ref().namespace.as_deref(), Some("team-a"));
        // The extra kind passes too.
        let crb = doc(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: x\n",
        );
        assert!(validate(crb, scope, &platform()).is_ok());
    }

    #[test]
    fn cluster_mode_refuses_other_kinds_naming_file_object_and_allowed_kinds() {
        let deployment = doc(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: team-a\n",
        );
        let err = validate(deployment, scope, &platform()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.yaml:1: Deployment/team-a/web is a apps/Deployment, which the platform repository may not hold; allowed kinds: core/Namespace, fluxgate.dev/PlatformDefaults, fluxgate.dev/FluxConfig, rbac.authorization.k8s.io/ClusterRoleBinding (the platform instance's --allow-kind adds more)"
        );
        assert_eq!(err.file(), Some("x.yaml"));
        assert_eq!(err.object(), Some("Deployment/team-a/web"));
        // Checked before discovery: an unknown kind is still "not allowed".
        let widget = doc("apiVersion: x.example/v1\nkind: Widget\nmetadata:\n  name: w\n");
        let err = validate(widget, scope, &platform()).unwrap_err();
        assert!(matches!(err, ManifestError::KindNotAllowed { .. }), "{err}");
    }

    #[test]
    fn cluster_mode_requires_namespaces_and_protects_system_ones() {
        let no_ns = doc(
            "apiVersion: fluxgate.dev/v1alpha1\nkind: FluxConfig\nmetadata:\n  name: web\nspec: {}\n",
        );
        let err = validate(no_ns, scope, &platform()).unwrap_err();
        assert!(
            matches!(err, ManifestError::NamespaceRequired { .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("FluxConfig/web names no namespace"),
            "{err}"
        );

        for name in ["fluxgate-system", "kube-system", "kube-anything", "default"] {
            let ns = doc(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"
            ));
            let err = validate(ns, scope, &platform()).unwrap_err();
            assert!(
                matches!(err, ManifestError::Protected { .. }),
                "{name}: {err}"
            );
        }
        let own = doc(
            "apiVersion: fluxgate.dev/v1alpha1\nkind: FluxConfig\nmetadata:\n  name: platform\n  namespace: fluxgate-system\n",
        );
        let err = validate(own, scope, &platform()).unwrap_err();
        assert!(matches!(err, ManifestError::Protected { .. }), "{err}");
    }

    #[test]
    fn kind_refs_parse_with_their_group() {
        let k: KindRef = "core/ConfigMap".parse().unwrap();
        assert_eq!(k, KindRef::new("", "ConfigMap"));
        assert_eq!(k.to_string(), "core/ConfigMap");
        assert_eq!("/ConfigMap".parse::<KindRef>().unwrap(), k);
        assert_eq!(
            "rbac.authorization.k8s.io/ClusterRole"
                .parse::<KindRef>()
                .unwrap(),
            KindRef::new("rbac.authorization.k8s.io", "ClusterRole")
        );
        for bad in ["ConfigMap", "core/", "core/configMap", "a..b/X", "x/Y-Z"] {
            assert!(bad.parse::<KindRef>().is_err(), "{bad}");
        }
    }
}
