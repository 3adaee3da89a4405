//! The static pod source: a directory of pod manifests (`/etc/kwk/manifests` by default),
//! watched with inotify and rescanned periodically, turned into validated, defaulted pods.
//! The control plane boots from these.
//!
//! A file that turns invalid keeps serving the pod of its last valid version (a typo must not
//! take the control plane down); with a state directory (`<root-dir>/static-pods/`) that last
//! good pod is saved on disk, so this also holds across a kwk-node restart.
//!
//! Pure parts: `manifest` (bytes → pod), `validation` and `defaults` (the static pod rules on
//! top of `kwk-api`'s API defaults and validation), `hash` (the UID), the record format in
//! `last_good`. Effect parts: `scan` (read the directory, keep last good pods, build a
//! snapshot), `last_good`'s store (save and load last good pods) and `source` (inotify + timer
//! loop publishing snapshots on a watch channel).

mod defaults;
mod hash;
mod last_good;
#[cfg(test)]
mod last_good_tests;
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
pub use hash::pod_hash;
pub use kwk_api::field::FieldError;
pub use manifest::{MAX_MANIFEST_BYTES, ManifestError, parse_manifest};
pub use scan::StaticPodSnapshot;
pub use source::StaticPodSource;
