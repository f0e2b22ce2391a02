//! Condition types and reasons used in `status.conditions`.
//!
//! The types follow kstatus: `Ready` is the summary, `Reconciling` is `True`
//! while work is under way, `Stalled` is `True` when progress needs a human.
//! `Accepted` and `Provisioned` are fluxgate's own: the operator sets them,
//! the team's reconciler sets the kstatus ones. Reasons are CamelCase
//! constants so tools can match on them.

/// Summary condition: `True` when the last revision is applied and healthy.
pub const READY: &str = "Ready";
/// `True` while the object is being reconciled (abnormal-true kstatus).
pub const RECONCILING: &str = "Reconciling";
/// `True` when progress is impossible until something changes (abnormal-true).
pub const STALLED: &str = "Stalled";
/// `True` when the FluxConfig satisfies the platform's rules.
pub const ACCEPTED: &str = "Accepted";
/// `True` when the namespace's reconciler and its rights are in place.
pub const PROVISIONED: &str = "Provisioned";

/// Reasons used across condition types.
pub mod reasons {
    /// The object passed every platform rule.
    pub const ACCEPTED: &str = "Accepted";
    /// The object violates a platform rule; the message names it.
    pub const POLICY_VIOLATION: &str = "PolicyViolation";
    /// The reconciler and its rights were provisioned.
    pub const PROVISIONED: &str = "Provisioned";
    /// Provisioning failed; the message says why.
    pub const PROVISIONING_FAILED: &str = "ProvisioningFailed";
    /// Work is in progress.
    pub const PROGRESSING: &str = "Progressing";
    /// The revision was applied.
    pub const SUCCEEDED: &str = "Succeeded";
    /// Syncing is suspended by `spec.suspend`.
    pub const SUSPENDED: &str = "Suspended";
}

/// The condition of type `type_` in `conditions`, if present.
pub fn find<'a>(
    conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}
