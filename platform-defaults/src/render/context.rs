//! The template context: the render input checked, sorted and turned into
//! the plain JSON values the templates see, plus the config hash over it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::hash::{canonical_json, fnv1a64};
use super::{
    ADMIN_PORT, FluxConfigRef, LABEL_MANAGED_BY, LABEL_NAME, LABEL_TEAM_NAMESPACE, MANAGED_BY,
    NamespaceBundleInput, RECONCILER_NAME, RenderError, STATUS_ROLE_BINDING_NAME, STATUS_ROLE_NAME,
    credentials_mount_path, credentials_secret_name, credentials_volume_name,
    target_role_binding_name,
};
use crate::layering::PlatformSettings;
use crate::names::{is_dns_label, is_dns_subdomain};
use crate::rules::pattern::NamePattern;

/// What the checks after rendering need to know, besides the context.
#[derive(Debug)]
pub(super) struct Prepared {
    /// The JSON the templates are rendered with.
    pub context: Value,
    /// The team namespace.
    pub namespace: String,
    /// Namespaces the team may write to, sorted.
    pub targets: BTreeSet<String>,
    /// The effective ClusterRole.
    pub cluster_role: String,
    /// The config hash (also in the context).
    pub config_hash: String,
}

fn invalid(namespace: &str, reason: impl Into<String>) -> RenderError {
    RenderError::InvalidInput {
        namespace: namespace.to_owned(),
        reason: reason.into(),
    }
}

/// Whether `namespace` is one no reconciler may ever write to, whatever the
/// allow-lists say: the platform's own namespace or a built-in protected
/// pattern (`kube-*`). The PlatformDefaults' own `protectedNamespaces` are
/// applied earlier, by [`super::expand_target_namespaces`].
fn builtin_protected(namespace: &str, platform_namespace: &str, team: &str) -> bool {
    namespace == platform_namespace
        || PlatformSettings::PROTECTED
            .iter()
            .any(|p| NamePattern::namespace(p).is_ok_and(|p| p.matches(namespace, team)))
}

/// Checks the input and builds the template context.
pub(super) fn prepare(input: &NamespaceBundleInput<'_>) -> Result<Prepared, RenderError> {
    // Destructured without `..`: a field added to the input must be handled
    // here, not silently left out of the context and the hash.
    let NamespaceBundleInput {
        namespace,
        platform_namespace,
        flux_configs,
        target_namespaces,
        credentials,
        network_policy,
    } = input;
    let namespace: &str = namespace;

    if !is_dns_label(namespace) {
        return Err(invalid(
            namespace,
            "the team namespace is not a DNS-1123 label",
        ));
    }
    if builtin_protected(namespace, platform_namespace, namespace) {
        return Err(invalid(
            namespace,
            "the team namespace is the platform's own namespace or a protected namespace",
        ));
    }

    // FluxConfigs, by name: the first one supplies the namespace-wide
    // settings.
    let mut configs: Vec<&FluxConfigRef<'_>> = flux_configs.iter().collect();
    configs.sort_by(|a, b| a.name().cmp(b.name()));
    let Some(first) = configs.first() else {
        return Err(invalid(
            namespace,
            "no FluxConfig to render for; nothing should be provisioned",
        ));
    };
    for pair in configs.windows(2) {
        if let [a, b] = pair
            && a.name() == b.name()
        {
            return Err(invalid(
                namespace,
                format!("FluxConfig {} is listed twice", a.name()),
            ));
        }
    }
    for config in &configs {
        if config.resolved.namespace() != namespace {
            return Err(invalid(
                namespace,
                format!(
                    "FluxConfig {} belongs to namespace {}",
                    config.name(),
                    config.resolved.namespace()
                ),
            ));
        }
        if config.uid.is_empty() {
            return Err(invalid(
                namespace,
                format!("FluxConfig {} has no uid", config.name()),
            ));
        }
    }
    // All FluxConfigs of a namespace share its layers, so these agree; if
    // they ever do not, the first by name wins (see the module docs).
    let effective = first.resolved.effective();
    let image = effective.reconciler_image.value.clone();
    let cluster_role = effective.reconciler_cluster_role.value.clone();
    let resources = match &effective.reconciler_resources {
        Some(r) => serde_json::to_value(&r.value).map_err(|source| RenderError::Context {
            namespace: namespace.to_owned(),
            source,
        })?,
        None => Value::Null,
    };
    if image.is_empty() {
        return Err(invalid(
            namespace,
            "the effective reconciler image is empty",
        ));
    }
    if cluster_role.is_empty() {
        return Err(invalid(
            namespace,
            "the effective reconciler ClusterRole is empty",
        ));
    }
    // The platform's limits become the reconciler's flags; unset, its own
    // defaults apply. The schema allows only positive values; a reconciler
    // would refuse to start on any other, so refuse to render it.
    let mut args = vec!["reconcile".to_owned(), format!("--namespace={namespace}")];
    for (flag, limit) in [
        (
            "max-files",
            effective
                .reconciler_max_files
                .as_ref()
                .map(|l| i64::from(l.value)),
        ),
        (
            "max-repo-bytes",
            effective
                .reconciler_max_repo_bytes
                .as_ref()
                .map(|l| l.value),
        ),
    ] {
        match limit {
            None => {}
            Some(value) if value > 0 => args.push(format!("--{flag}={value}")),
            Some(value) => {
                return Err(invalid(
                    namespace,
                    format!(
                        "the effective reconciler limit {flag} is {value}; it must be positive"
                    ),
                ));
            }
        }
    }

    // Target namespaces: sorted, once each, never protected.
    let targets: BTreeSet<String> = target_namespaces.iter().cloned().collect();
    for target in &targets {
        if !is_dns_label(target) {
            return Err(invalid(
                namespace,
                format!("target namespace {target:?} is not a DNS-1123 label"),
            ));
        }
        if builtin_protected(target, platform_namespace, namespace) {
            return Err(invalid(
                namespace,
                format!("target namespace {target} is protected"),
            ));
        }
    }

    // Credentials: each platform Secret once, whichever configs use it.
    let mut used: BTreeMap<&str, &str> = BTreeMap::new();
    for config in &configs {
        if let Some(secret) = &config.resolved.effective().credentials_secret {
            used.entry(secret.value.as_str()).or_insert(config.name());
        }
    }
    let mut credential_values = Vec::new();
    for (secret, used_by) in used {
        if !is_dns_subdomain(secret) {
            return Err(invalid(
                namespace,
                format!("credentials Secret name {secret:?} is not a DNS-1123 subdomain"),
            ));
        }
        let Some(data) = credentials.get(secret) else {
            return Err(RenderError::MissingCredentials {
                namespace: namespace.to_owned(),
                secret: secret.to_owned(),
                flux_config: used_by.to_owned(),
            });
        };
        credential_values.push(json!({
            "secret": secret,
            "source": format!("{platform_namespace}/{secret}"),
            "name": credentials_secret_name(secret),
            "volume": credentials_volume_name(secret),
            "mount_path": credentials_mount_path(secret),
            "data": data,
        }));
    }

    let network_policy = match network_policy {
        Some(policy) => {
            policy
                .check()
                .map_err(|reason| invalid(namespace, reason))?;
            json!({
                "api_server_cidrs": policy.api_server_cidrs,
                "api_server_ports": policy.api_server_ports,
                "git_cidrs": policy.git_cidrs,
                "git_ports": policy.git_ports,
            })
        }
        None => Value::Null,
    };

    let labels = json!({
        LABEL_NAME: RECONCILER_NAME,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_TEAM_NAMESPACE: namespace,
    });
    let selector_labels = json!({
        LABEL_NAME: RECONCILER_NAME,
        LABEL_TEAM_NAMESPACE: namespace,
    });
    let owner_references: Vec<Value> = configs
        .iter()
        .map(|c| {
            json!({
                "apiVersion": format!("{}/{}", fluxgate_crds::GROUP, fluxgate_crds::VERSION),
                "kind": "FluxConfig",
                "name": c.name(),
                "uid": c.uid,
                "controller": false,
                "blockOwnerDeletion": true,
            })
        })
        .collect();
    let names: Vec<&str> = configs.iter().map(|c| c.name()).collect();
    let bindings: Vec<Value> = targets
        .iter()
        .map(|target| {
            json!({
                "name": target_role_binding_name(namespace),
                "namespace": target,
                "owned": target == namespace,
            })
        })
        .collect();

    let mut context = json!({
        "namespace": namespace,
        "platform_namespace": platform_namespace,
        "labels": labels,
        "selector_labels": selector_labels,
        "owner_references": owner_references,
        "names": {
            "service_account": RECONCILER_NAME,
            "deployment": RECONCILER_NAME,
            "status_role": STATUS_ROLE_NAME,
            "status_role_binding": STATUS_ROLE_BINDING_NAME,
        },
        "flux_configs": configs
            .iter()
            .map(|c| json!({"name": c.name(), "uid": c.uid}))
            .collect::<Vec<_>>(),
        "flux_config_names": names.join(","),
        "cluster_role": cluster_role,
        "target_role_bindings": bindings,
        "credentials": credential_values,
        "network_policy": network_policy,
        "reconciler": {
            "image": image,
            "args": args,
            "resources": resources,
            "admin_port": ADMIN_PORT,
        },
    });
    let config_hash = config_hash(&context);
    if let Value::Object(map) = &mut context {
        map.insert("config_hash".to_owned(), Value::String(config_hash.clone()));
    }
    Ok(Prepared {
        context,
        namespace: namespace.to_owned(),
        targets,
        cluster_role,
        config_hash,
    })
}

/// The hash in [`super::CONFIG_HASH_ANNOTATION`]: FNV-1a over the canonical JSON of
/// the context, with each credential's data reduced to its key names.
///
/// Secret values stay out on purpose: the kubelet refreshes mounted Secrets
/// without a restart, and a hash of a short password in an annotation
/// anyone reading Deployments can see would let them test guesses offline.
fn config_hash(context: &Value) -> String {
    let mut hashed = context.clone();
    if let Some(Value::Array(credentials)) = hashed.get_mut("credentials") {
        for credential in credentials {
            if let Some(data) = credential.get_mut("data") {
                let keys: Vec<Value> = data
                    .as_object()
                    .map(|m| {
                        let mut keys: Vec<&String> = m.keys().collect();
                        keys.sort();
                        keys.into_iter().map(|k| Value::String(k.clone())).collect()
                    })
                    .unwrap_or_default();
                *data = Value::Array(keys);
            }
        }
    }
    format!("{:016x}", fnv1a64(canonical_json(&hashed).as_bytes()))
}
