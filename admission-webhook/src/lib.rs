//! The fluxgate validating admission webhook for FluxConfig and PlatformDefaults.
//!
//! An empty shell in the foundation issue: it fixes the crate's place in the
//! dependency graph (`crds` <- `platform-defaults` <- this crate).
