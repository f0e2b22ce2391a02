//! The pure core of fluxgate: layering of `PlatformDefaults`, allow-list
//! evaluation and rendering of the per-namespace reconciler resources.
//!
//! Nothing here performs IO. The admission webhook, the operator and the
//! `fluxgate` CLI all call into this crate, so every platform rule has exactly
//! one implementation. (Filled in by the policy issue; the foundation only
//! fixes the crate's place in the dependency graph.)

pub mod documents;
pub mod layering;
pub mod names;
pub mod render;
pub mod resolve;
pub mod rules;
pub mod selector;
pub mod violation;

pub use layering::{CompiledDefaults, Layers, Platform, PlatformSettings, Source, compile};
pub use resolve::{NamespaceFacts, Resolved, resolve};
pub use violation::{Rule, Violation, Violations};
