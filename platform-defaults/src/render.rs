//! Rendering: the Kubernetes objects the operator provisions for one team
//! namespace, from tera templates that are data (`templates/*.yaml.tera`).
//!
//! The step between resolve and apply in the operator's pipeline. It is
//! pure: the input is plain values (the namespace's [`Resolved`]
//! FluxConfigs, the namespaces the team may write to, the credential data
//! the operator read), the output is the objects in apply order, and the
//! same input always gives the same bytes.
//!
//! For a team namespace `ns` it renders, in this order (RBAC first, so the
//! reconciler has its rights before it starts; then Secrets; then the
//! workload that uses them):
//!
//! 1. ServiceAccount [`RECONCILER_NAME`] in `ns`;
//! 2. Role [`STATUS_ROLE_NAME`] in `ns` (read FluxConfigs, write their
//!    status, record events) and RoleBinding [`STATUS_ROLE_BINDING_NAME`]
//!    of it to the ServiceAccount;
//! 3. in each target namespace, RoleBinding
//!    [`target_role_binding_name`]`(ns)` of the effective
//!    `reconcilerClusterRole` to the ServiceAccount (a ClusterRole bound by
//!    RoleBindings only, so the rights stay namespaced);
//! 4. per platform credentials Secret the namespace's repositories use, an
//!    Opaque copy [`credentials_secret_name`]`(secret)` in `ns`;
//! 5. Deployment [`RECONCILER_NAME`] in `ns`, which mounts each copy at
//!    [`credentials_mount_path`]`(secret)` and carries the
//!    [`CONFIG_HASH_ANNOTATION`] on its pod template.
//!
//! Every object has the labels [`LABEL_NAME`]` = fluxgate-reconciler`,
//! [`LABEL_MANAGED_BY`]` = fluxgate` and [`LABEL_TEAM_NAMESPACE`]` = ns`.
//! Objects in `ns` are owned by every FluxConfig of the namespace
//! (`controller: false`, `blockOwnerDeletion: true`), so garbage collection
//! removes them with the last FluxConfig; RoleBindings in other namespaces
//! have no owners (owners across namespaces are invalid) and the operator
//! prunes them by inventory ([`Rendered::outside_namespace`]).
//!
//! All FluxConfigs of a namespace share the namespace's PlatformDefaults,
//! so their reconciler image, resources and ClusterRole agree. Should they
//! ever differ, the FluxConfig first by name supplies them.
//!
//! Templates are hermetic: only fluxgate's templates are loaded, undefined
//! variables are errors, `get_env`, `now` and `get_random` fail, and
//! autoescaping is off. Every value that a team or a PlatformDefaults
//! supplied goes through `json_encode` (a JSON string is a YAML scalar, so a
//! value cannot add keys). What the templates produce is parsed and checked
//! (see `check`) before it is returned, so a template the platform team
//! overrides cannot create other kinds, write outside the team's
//! namespaces or bind other roles. `templates/README.md` lists the
//! variables the templates see.

mod check;
mod context;
mod hash;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use fluxgate_crds::ObjectRef;
use serde_json::Value;

use crate::layering::Layers;
use crate::names::is_dns_label;
use crate::resolve::Resolved;
use crate::rules::pattern::NamePattern;

/// Name of the reconciler's ServiceAccount and Deployment.
pub const RECONCILER_NAME: &str = "fluxgate-reconciler";
/// Name of the Role that lets the reconciler read its FluxConfigs and write
/// their status.
pub const STATUS_ROLE_NAME: &str = "fluxgate-reconciler-status";
/// Name of the RoleBinding of [`STATUS_ROLE_NAME`]. It has no suffix so it
/// can never equal a target RoleBinding `fluxgate-reconciler-<namespace>`
/// (a team namespace called `status` would otherwise collide).
pub const STATUS_ROLE_BINDING_NAME: &str = "fluxgate-reconciler";
/// Prefix of the copies of credential Secrets.
pub const CREDENTIALS_SECRET_PREFIX: &str = "fluxgate-git-";
/// Directory under which each credential Secret is mounted, by the platform
/// Secret's name.
pub const CREDENTIALS_MOUNT_DIR: &str = "/var/run/fluxgate/git";
/// Port of the reconciler's plain-HTTP `/livez` and `/readyz`.
pub const ADMIN_PORT: u16 = 8080;

/// `app.kubernetes.io/name`, always [`RECONCILER_NAME`].
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/managed-by`, always [`MANAGED_BY`].
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "fluxgate";
/// The team namespace an object was rendered for; with
/// [`LABEL_MANAGED_BY`] it finds the objects to prune in other namespaces.
pub const LABEL_TEAM_NAMESPACE: &str = "fluxgate.dev/team-namespace";
/// Pod-template annotation holding [`Rendered::config_hash`].
pub const CONFIG_HASH_ANNOTATION: &str = "fluxgate.dev/config-hash";
/// Annotation on a credential copy naming its source, `<platform-ns>/<name>`.
pub const SOURCE_SECRET_ANNOTATION: &str = "fluxgate.dev/source-secret";

/// fluxgate's templates, in the order they are rendered (apply order), as
/// compiled into the binary.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "service-account.yaml.tera",
        include_str!("../templates/service-account.yaml.tera"),
    ),
    (
        "status-role.yaml.tera",
        include_str!("../templates/status-role.yaml.tera"),
    ),
    (
        "target-role-bindings.yaml.tera",
        include_str!("../templates/target-role-bindings.yaml.tera"),
    ),
    (
        "credentials-secrets.yaml.tera",
        include_str!("../templates/credentials-secrets.yaml.tera"),
    ),
    (
        "network-policy.yaml.tera",
        include_str!("../templates/network-policy.yaml.tera"),
    ),
    (
        "deployment.yaml.tera",
        include_str!("../templates/deployment.yaml.tera"),
    ),
];

/// Functions tera offers that would make output depend on the machine or
/// the moment; each is replaced by one that fails.
const DISABLED_FUNCTIONS: &[&str] = &["get_env", "now", "get_random"];

/// Errors while loading templates or rendering a namespace.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template does not parse, or templates refer to missing ones.
    #[error("cannot load the reconciler templates")]
    Templates(#[source] tera::Error),
    /// The template directory cannot be listed.
    #[error("cannot read template directory {}", path.display())]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A template file cannot be read.
    #[error("cannot read template {}", path.display())]
    ReadTemplate {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A `*.yaml.tera` file in the template directory is not one of
    /// fluxgate's templates (most likely a typo that would otherwise leave
    /// the built-in template in place silently).
    #[error(
        "template {name} is not one of fluxgate's templates; expected one of {expected}, or a helper named _*.tera"
    )]
    UnknownTemplate {
        /// The file name.
        name: String,
        /// The known template names.
        expected: String,
    },
    /// The input is inconsistent (a FluxConfig of another namespace, a
    /// protected target namespace, ...).
    #[error("cannot render namespace {namespace}: {reason}")]
    InvalidInput {
        /// The team namespace.
        namespace: String,
        /// What is wrong.
        reason: String,
    },
    /// A FluxConfig uses a credentials Secret whose data was not supplied.
    #[error(
        "credentials Secret {secret} used by FluxConfig {namespace}/{flux_config} was not supplied"
    )]
    MissingCredentials {
        /// The team namespace.
        namespace: String,
        /// The platform Secret's name.
        secret: String,
        /// The first FluxConfig (by name) using it.
        flux_config: String,
    },
    /// A value of the input cannot be turned into JSON.
    #[error("cannot build the template context for namespace {namespace}")]
    Context {
        /// The team namespace.
        namespace: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// A template failed to render (an undefined variable, a disabled
    /// function, ...).
    #[error("template {template} failed to render")]
    Render {
        /// The template's name.
        template: String,
        /// tera's error; its own sources say where.
        #[source]
        source: tera::Error,
    },
    /// A template rendered text that is not YAML.
    #[error("template {template} did not render valid yaml")]
    Yaml {
        /// The template's name.
        template: String,
        /// The parser's error (boxed: it is large and rare).
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    /// A template rendered an object fluxgate does not allow.
    #[error("template {template} rendered {object}, which is not allowed: {reason}")]
    Disallowed {
        /// The template's name.
        template: String,
        /// The object, as `Kind namespace/name`.
        object: String,
        /// Which check failed and what is allowed.
        reason: String,
    },
    /// A rendered object cannot be written as YAML.
    #[error("cannot serialise {object} to yaml")]
    Serialize {
        /// The object, as `Kind namespace/name`.
        object: String,
        /// The serializer's error (boxed: it is large and rare).
        #[source]
        source: Box<serde_saphyr::ser_error::Error>,
    },
}

/// One FluxConfig of the namespace: its uid (for ownerReferences) and its
/// resolved configuration. The name is the resolved one, so it cannot
/// disagree with the configuration.
#[derive(Debug, Clone, Copy)]
pub struct FluxConfigRef<'a> {
    /// `metadata.uid` of the FluxConfig.
    pub uid: &'a str,
    /// Its configuration, as [`crate::resolve()`] accepted it.
    pub resolved: &'a Resolved,
}

impl<'a> FluxConfigRef<'a> {
    /// A FluxConfig with its uid.
    pub fn new(uid: &'a str, resolved: &'a Resolved) -> Self {
        Self { uid, resolved }
    }

    /// The FluxConfig's name.
    pub fn name(&self) -> &'a str {
        self.resolved.name()
    }
}

/// Everything rendering one team namespace needs. The order of
/// `flux_configs`, `target_namespaces` and `credentials` does not matter:
/// rendering sorts them.
#[derive(Debug, Clone)]
pub struct NamespaceBundleInput<'a> {
    /// The team namespace.
    pub namespace: &'a str,
    /// The platform's namespace, where the credential Secrets live; never a
    /// target.
    pub platform_namespace: &'a str,
    /// The namespace's FluxConfigs that passed [`crate::resolve()`]; at least
    /// one (with none, nothing should be provisioned).
    pub flux_configs: Vec<FluxConfigRef<'a>>,
    /// Existing namespaces the team may write to, usually from
    /// [`expand_target_namespaces`]; each gets a RoleBinding.
    pub target_namespaces: Vec<String>,
    /// Data of the platform's credential Secrets, by Secret name, as read
    /// by the operator (`data`, base64). Must hold every Secret in
    /// [`required_credentials`]; others are ignored.
    pub credentials: BTreeMap<String, BTreeMap<String, String>>,
    /// When set, a NetworkPolicy limits the reconciler's traffic to DNS,
    /// the API server and the Git hosts (the installation's
    /// `networkPolicy` values).
    pub network_policy: Option<&'a ReconcilerNetworkPolicy>,
}

/// Where a reconciler may connect, as far as a NetworkPolicy can say it:
/// NetworkPolicy cannot name hosts, so the API server and the Git hosts are
/// CIDRs; an empty list allows any destination on those ports. DNS (port
/// 53 in `kube-system`) is always allowed; nothing else is, and only the
/// admin port (metrics, probes) accepts connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcilerNetworkPolicy {
    /// CIDRs of the API server endpoints.
    pub api_server_cidrs: Vec<String>,
    /// Ports of the API server (443 and 6443 where unsure).
    pub api_server_ports: Vec<u16>,
    /// CIDRs of the Git hosts.
    pub git_cidrs: Vec<String>,
    /// Ports of the Git hosts (443 for HTTPS, 22 for SSH).
    pub git_ports: Vec<u16>,
}

impl ReconcilerNetworkPolicy {
    /// Checks every CIDR (`address/prefix`, prefix within the address
    /// family) and that each list of ports is non-empty, naming the value.
    pub fn check(&self) -> Result<(), String> {
        for (what, cidrs) in [
            ("API server CIDR", &self.api_server_cidrs),
            ("Git CIDR", &self.git_cidrs),
        ] {
            for cidr in cidrs {
                let valid = cidr.split_once('/').is_some_and(|(ip, prefix)| {
                    match (ip.parse::<std::net::IpAddr>(), prefix.parse::<u8>()) {
                        (Ok(std::net::IpAddr::V4(_)), Ok(p)) => p <= 32 && !prefix.starts_with('+'),
                        (Ok(std::net::IpAddr::V6(_)), Ok(p)) => {
                            p <= 128 && !prefix.starts_with('+')
                        }
                        _ => false,
                    }
                });
                if !valid {
                    return Err(format!(
                        "{what} {cidr:?} is not a CIDR; write address/prefix, like 10.0.0.1/32"
                    ));
                }
            }
        }
        for (what, ports) in [
            ("API server ports", &self.api_server_ports),
            ("Git ports", &self.git_ports),
        ] {
            if ports.is_empty() || ports.contains(&0) {
                return Err(format!("{what} {ports:?} must list ports 1-65535"));
            }
        }
        Ok(())
    }
}

/// The objects for one team namespace, in apply order.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The objects, each a full Kubernetes object (`apiVersion`, `kind`,
    /// `metadata`, ...), with keys in sorted order.
    pub objects: Vec<Value>,
    /// The hash on the Deployment's pod template
    /// ([`CONFIG_HASH_ANNOTATION`]): 16 hex digits of FNV-1a over the
    /// canonical JSON of the template context, Secret values excluded.
    pub config_hash: String,
}

impl Rendered {
    /// Every object as an [`ObjectRef`], in apply order.
    pub fn object_refs(&self) -> Vec<ObjectRef> {
        self.objects.iter().map(object_ref).collect()
    }

    /// The objects outside `namespace` (RoleBindings in other target
    /// namespaces): what garbage collection cannot remove, for the
    /// inventory in `status.reconciler.objects`. Sorted.
    pub fn outside_namespace(&self, namespace: &str) -> Vec<ObjectRef> {
        let mut refs: Vec<ObjectRef> = self
            .object_refs()
            .into_iter()
            .filter(|r| r.namespace.as_deref() != Some(namespace))
            .collect();
        refs.sort();
        refs
    }

    /// The objects as one multi-document YAML stream, each document starting
    /// with `---` (for `fluxgate render` and golden files).
    pub fn to_yaml(&self) -> Result<String, RenderError> {
        let mut out = String::new();
        for object in &self.objects {
            let yaml =
                serde_saphyr::to_string(object).map_err(|source| RenderError::Serialize {
                    object: check::describe(object),
                    source: Box::new(source),
                })?;
            out.push_str("---\n");
            out.push_str(&yaml);
            if !yaml.ends_with('\n') {
                out.push('\n');
            }
        }
        Ok(out)
    }
}

fn object_ref(object: &Value) -> ObjectRef {
    let text = |path: &[&str]| {
        path.iter()
            .try_fold(object, |v, key| v.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    ObjectRef {
        api_version: text(&["apiVersion"]).unwrap_or_default(),
        kind: text(&["kind"]).unwrap_or_default(),
        namespace: text(&["metadata", "namespace"]),
        name: text(&["metadata", "name"]).unwrap_or_default(),
    }
}

/// A tera function that refuses to run, replacing one whose result depends
/// on the environment.
struct Disabled(&'static str);

impl tera::Function for Disabled {
    fn call(&self, _args: &HashMap<String, Value>) -> tera::Result<Value> {
        Err(tera::Error::msg(format!(
            "function {} is disabled: templates must render the same output everywhere",
            self.0
        )))
    }
}

/// The loaded templates, ready to render any number of namespaces.
pub struct Renderer {
    tera: tera::Tera,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.tera.get_template_names().collect();
        names.sort_unstable();
        f.debug_struct("Renderer")
            .field("templates", &names)
            .finish()
    }
}

impl Renderer {
    /// fluxgate's built-in templates.
    pub fn new() -> Result<Self, RenderError> {
        Self::with_overrides(std::iter::empty::<(String, String)>())
    }

    /// The built-in templates with some replaced, by name (one of
    /// [`TEMPLATES`]), plus helper templates named `_*.tera` that the others
    /// may `import` or `include`. Any other name is an error.
    pub fn with_overrides<I, N, T>(overrides: I) -> Result<Self, RenderError>
    where
        I: IntoIterator<Item = (N, T)>,
        N: Into<String>,
        T: Into<String>,
    {
        let mut templates: BTreeMap<String, String> = TEMPLATES
            .iter()
            .map(|(name, text)| ((*name).to_owned(), (*text).to_owned()))
            .collect();
        for (name, text) in overrides {
            let name = name.into();
            if !is_known_or_helper(&name) {
                return Err(RenderError::UnknownTemplate {
                    name,
                    expected: known_names(),
                });
            }
            templates.insert(name, text.into());
        }
        let mut tera = tera::Tera::default();
        // YAML, not HTML: escaping would corrupt values, and json_encode
        // already makes them safe.
        tera.autoescape_on(Vec::new());
        for name in DISABLED_FUNCTIONS {
            tera.register_function(name, Disabled(name));
        }
        tera.add_raw_templates(templates)
            .map_err(RenderError::Templates)?;
        Ok(Self { tera })
    }

    /// The built-in templates, overridden by the files in `dir`: a file named
    /// like a built-in template replaces it, `_*.tera` files are helpers,
    /// other `*.tera` files are errors and other files (a README) are
    /// ignored. Reads the files once; rendering does no IO.
    pub fn from_dir(dir: &Path) -> Result<Self, RenderError> {
        let read_dir_error = |source| RenderError::ReadDir {
            path: dir.to_owned(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_dir_error)? {
            let path = entry.map_err(read_dir_error)?.path();
            if path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut overrides = Vec::new();
        for path in paths {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.ends_with(".tera") {
                continue;
            }
            let name = name.to_owned();
            let text = std::fs::read_to_string(&path)
                .map_err(|source| RenderError::ReadTemplate { path, source })?;
            overrides.push((name, text));
        }
        Self::with_overrides(overrides)
    }

    /// Renders the objects for one team namespace.
    pub fn render(&self, input: &NamespaceBundleInput<'_>) -> Result<Rendered, RenderError> {
        let prepared = context::prepare(input)?;
        let mut tera_context = tera::Context::new();
        if let Value::Object(map) = &prepared.context {
            for (key, value) in map {
                tera_context.insert(key.as_str(), value);
            }
        }
        let policy = check::Policy {
            namespace: &prepared.namespace,
            targets: &prepared.targets,
            cluster_role: &prepared.cluster_role,
        };
        let mut objects: Vec<(usize, Value)> = Vec::new();
        let mut seen = BTreeSet::new();
        for (template, _) in TEMPLATES {
            let text = self
                .tera
                .render(template, &tera_context)
                .map_err(|source| RenderError::Render {
                    template: (*template).to_owned(),
                    source,
                })?;
            let documents: Vec<Value> =
                serde_saphyr::from_multiple(&text).map_err(|source| RenderError::Yaml {
                    template: (*template).to_owned(),
                    source: Box::new(source),
                })?;
            for document in documents.into_iter().filter(|d| !d.is_null()) {
                let object = hash::sorted(document);
                check::check_object(template, &object, &policy)?;
                let reference = object_ref(&object);
                if !seen.insert((
                    reference.kind.clone(),
                    reference.namespace.clone(),
                    reference.name.clone(),
                )) {
                    return Err(RenderError::Disallowed {
                        template: (*template).to_owned(),
                        object: check::describe(&object),
                        reason: "the same object is rendered twice".to_owned(),
                    });
                }
                objects.push((check::apply_rank(&object), object));
            }
        }
        // Apply order whatever an overridden template emits; stable, so the
        // template order decides within a kind.
        objects.sort_by_key(|(rank, _)| *rank);
        Ok(Rendered {
            objects: objects.into_iter().map(|(_, o)| o).collect(),
            config_hash: prepared.config_hash,
        })
    }
}

fn is_known_or_helper(name: &str) -> bool {
    TEMPLATES.iter().any(|(known, _)| *known == name)
        || (name.starts_with('_') && name.ends_with(".tera"))
}

fn known_names() -> String {
    TEMPLATES
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Renders one team namespace with the built-in templates.
pub fn render(input: &NamespaceBundleInput<'_>) -> Result<Rendered, RenderError> {
    Renderer::new()?.render(input)
}

/// Name of the RoleBinding, in each target namespace, that gives the
/// reconciler of `team_namespace` its rights: `fluxgate-reconciler-<ns>`,
/// shortened with a hash suffix if it would exceed 253 characters.
pub fn target_role_binding_name(team_namespace: &str) -> String {
    hash::bounded_name(&format!("{RECONCILER_NAME}-{team_namespace}"), 253)
}

/// Name of the copy of the platform credentials Secret `secret` in a team
/// namespace: `fluxgate-git-<secret>`, shortened with a hash suffix if it
/// would exceed 253 characters.
pub fn credentials_secret_name(secret: &str) -> String {
    hash::bounded_name(&format!("{CREDENTIALS_SECRET_PREFIX}{secret}"), 253)
}

/// Where the reconciler finds the credentials from the platform Secret
/// `secret`: `/var/run/fluxgate/git/<secret>`, one file per data key.
pub fn credentials_mount_path(secret: &str) -> String {
    format!("{CREDENTIALS_MOUNT_DIR}/{secret}")
}

/// Name of the pod volume holding `secret`: a DNS label, `git-<secret>` when
/// that is one, otherwise shortened and suffixed with a hash of the Secret
/// name (so `a.b` and `a-b` stay distinct).
fn credentials_volume_name(secret: &str) -> String {
    let base = format!("git-{secret}");
    if is_dns_label(&base) {
        base
    } else {
        hash::shortened(&base.replace('.', "-"), secret, 63)
    }
}

/// The platform credential Secrets the given FluxConfigs use, sorted: what
/// the operator must read into [`NamespaceBundleInput::credentials`].
pub fn required_credentials<'a>(
    flux_configs: impl IntoIterator<Item = &'a Resolved>,
) -> BTreeSet<String> {
    flux_configs
        .into_iter()
        .filter_map(|r| r.effective().credentials_secret.as_ref())
        .map(|s| s.value.clone())
        .collect()
}

/// Whether the team whose layers these are may never write to `namespace`:
/// the platform's own namespace, a built-in protected pattern (`kube-*`) or
/// a `protectedNamespaces` pattern of the applicable PlatformDefaults. The
/// same rule [`crate::resolve()`] applies to `targetNamespace`.
pub fn is_protected_namespace(layers: &Layers<'_>, namespace: &str) -> bool {
    crate::resolve::protected_by(namespace, layers).is_some()
}

/// The existing namespaces a team may write to: those in `existing` that
/// match a pattern in `allowed` (the effective `allowedNamespaces`, e.g.
/// `["team-a", "team-a-*"]`; `{namespace}` is also understood) and are not
/// protected for these layers. Sorted, each once. A pattern that does not
/// parse matches nothing.
pub fn expand_target_namespaces(
    layers: &Layers<'_>,
    allowed: &[String],
    existing: &[String],
) -> Vec<String> {
    let team = layers.namespace();
    let patterns: Vec<NamePattern> = allowed
        .iter()
        .filter_map(|text| NamePattern::namespace(text).ok())
        .collect();
    let targets: BTreeSet<&String> = existing
        .iter()
        .filter(|ns| is_dns_label(ns))
        .filter(|ns| patterns.iter().any(|p| p.matches(ns, team)))
        .filter(|ns| !is_protected_namespace(layers, ns))
        .collect();
    targets.into_iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renderer_and_errors_can_cross_threads() {
        // The operator shares one renderer between reconciles and carries
        // the error in its own `Send + Sync` error type.
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Renderer>();
        send_sync::<RenderError>();
        send_sync::<Rendered>();
    }

    #[test]
    fn builtin_templates_load() {
        let renderer = Renderer::new();
        assert!(renderer.is_ok(), "{renderer:?}");
    }

    #[test]
    fn volume_names_are_dns_labels_and_distinct() {
        assert_eq!(credentials_volume_name("git-corp"), "git-git-corp");
        let dotted = credentials_volume_name("a.b");
        let dashed = credentials_volume_name("a-b");
        assert_ne!(dotted, dashed);
        let long = credentials_volume_name(&"x".repeat(200));
        for name in [dotted, dashed, long] {
            assert!(is_dns_label(&name), "{name}");
        }
    }

    #[test]
    fn binding_and_secret_names_stay_within_limits() {
        assert_eq!(
            target_role_binding_name("team-a"),
            "fluxgate-reconciler-team-a"
        );
        let long = credentials_secret_name(&"s".repeat(253));
        assert_eq!(long.len(), 253);
        assert!(hash::is_k8s_subdomain(&long), "{long}");
    }
}
