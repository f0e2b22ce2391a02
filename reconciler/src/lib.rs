//! The per-team fluxgate reconciler: syncs a team's Git repository into its namespaces.
//!
//! An empty shell in the foundation issue: it fixes the crate's place in the
//! dependency graph (`crds` <- `platform-defaults` <- this crate).
