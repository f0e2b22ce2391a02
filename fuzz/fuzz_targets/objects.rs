//! Fuzzes whole-object parsing and resolution: arbitrary text is split into
//! YAML documents (`documents::parse_documents`), each document is read as a
//! `PlatformDefaults` or `FluxConfig` where it can be, the PlatformDefaults
//! are compiled and every FluxConfig is resolved against them. Nothing may
//! panic, and every rejection must render as a message naming its object.
#![no_main]

use std::collections::BTreeMap;

use fluxgate_crds::{FluxConfig, PlatformDefaults};
use fluxgate_platform_defaults::documents::{field_line, parse_documents};
use fluxgate_platform_defaults::{NamespaceFacts, Platform, PlatformSettings, resolve};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut defaults = Vec::new();
    let mut configs = Vec::new();
    for doc in parse_documents(text).into_iter().flatten() {
        let _ = field_line(&doc, "spec.repo");
        let _ = field_line(&doc, "spec.allowedRepos[1]");
        if let Ok(pd) = serde_json::from_value::<PlatformDefaults>(doc.value.clone()) {
            defaults.push(pd);
        }
        if let Ok(fc) = serde_json::from_value::<FluxConfig>(doc.value) {
            configs.push(fc);
        }
    }
    let platform = Platform::new(PlatformSettings::default(), &defaults);
    for rejected in platform.rejected() {
        assert!(rejected.to_string().starts_with("PlatformDefaults "));
    }
    let labels = BTreeMap::from([("fluxgate.dev/tenant".to_owned(), "true".to_owned())]);
    for fc in &configs {
        let ns = fc.metadata.namespace.clone().unwrap_or_else(|| "team-a".to_owned());
        let layers = platform.layers_for(&ns, &labels);
        match resolve(fc, &layers, NamespaceFacts { other_flux_configs: 1 }) {
            Ok(resolved) => assert!(!resolved.effective().repo.value.is_empty()),
            Err(violations) => assert!(violations.to_string().starts_with("FluxConfig ")),
        }
    }
});
