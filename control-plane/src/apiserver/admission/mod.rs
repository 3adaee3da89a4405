//! Admission plugins that have no home in a kind's strategy: which ones run (upstream's
//! `--disable-admission-plugins`), and the pure rules of `ServiceAccount` (see
//! [`service_account`]), `TaintNodesByCondition` (see [`node_taint`]) and
//! `StorageObjectInUseProtection` (see [`storage_protection`]). The registry applies them on
//! create, next to the Priority plugin (`rest::admission`, `rest::priority`).

use std::collections::BTreeSet;

pub mod node_taint;
pub mod service_account;
pub mod storage_protection;

#[cfg(test)]
mod tests;

/// Upstream's name of the ServiceAccount admission plugin.
pub const SERVICE_ACCOUNT: &str = "ServiceAccount";
/// Upstream's name of the plugin that taints new nodes `not-ready`.
pub const TAINT_NODES_BY_CONDITION: &str = "TaintNodesByCondition";
/// Upstream's name of the plugin that puts the protection finalizers on new claims and
/// volumes.
pub const STORAGE_OBJECT_IN_USE_PROTECTION: &str = "StorageObjectInUseProtection";

/// The plugins this apiserver can turn off; every other admission step always runs.
pub const OPTIONAL_PLUGINS: [&str; 3] = [
    SERVICE_ACCOUNT,
    TAINT_NODES_BY_CONDITION,
    STORAGE_OBJECT_IN_USE_PROTECTION,
];

/// A name given to `--disable-admission-plugins` that is not a plugin we know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("disable-admission-plugins plugin {name:?} is unknown")]
pub struct UnknownPlugin {
    pub name: String,
}

/// Which optional admission plugins run: all of them unless disabled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdmissionPlugins {
    disabled: BTreeSet<&'static str>,
}

impl AdmissionPlugins {
    /// Every plugin enabled (upstream's defaults).
    pub fn all() -> Self {
        Self::default()
    }

    /// All plugins but `names` (upstream's `--disable-admission-plugins`); empty names are
    /// ignored, unknown ones refused.
    pub fn disabling<S: AsRef<str>>(names: &[S]) -> Result<Self, UnknownPlugin> {
        let mut disabled = BTreeSet::new();
        for name in names.iter().map(AsRef::as_ref).map(str::trim) {
            if name.is_empty() {
                continue;
            }
            let known = OPTIONAL_PLUGINS
                .iter()
                .find(|p| **p == name)
                .ok_or_else(|| UnknownPlugin {
                    name: name.to_string(),
                })?;
            disabled.insert(*known);
        }
        Ok(Self { disabled })
    }

    pub fn enabled(&self, plugin: &str) -> bool {
        !self.disabled.contains(plugin)
    }
}
