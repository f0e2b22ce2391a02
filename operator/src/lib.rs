//! The fluxgate meta-operator: resolves PlatformDefaults and provisions a scoped reconciler per team namespace.
//!
//! An empty shell in the foundation issue: it fixes the crate's place in the
//! dependency graph (`crds` <- `platform-defaults` <- this crate).
