//! The static pod source: a directory of pod manifests (`/etc/kwk/manifests` by default),
//! watched with inotify and rescanned periodically, turned into validated, defaulted pods.
//! The control plane boots from these.
//!
//! Pure parts: `manifest` (bytes → pod), `validation`, `defaults`, `hash` (the UID), `field`
//! (error messages). Effect parts: `scan` (read the directory, keep last good pods, build a
//! snapshot) and `source` (inotify + timer loop publishing snapshots on a watch channel).

mod defaults;
mod field;
mod hash;
mod manifest;
#[cfg(test)]
mod manifest_tests;
mod scan;
mod source;
#[cfg(test)]
mod source_tests;
mod validation;
mod watch;

pub use defaults::SOURCE_FILE;
pub use field::FieldError;
pub use hash::pod_hash;
pub use manifest::{MAX_MANIFEST_BYTES, ManifestError, parse_manifest};
pub use scan::StaticPodSnapshot;
pub use source::StaticPodSource;
