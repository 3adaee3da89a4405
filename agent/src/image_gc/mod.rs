//! Image garbage collection, upstream kubelet's semantics (`imageGC*` in the kubelet config):
//! images no container uses are removed least recently used first when the image file system's
//! usage reaches the high threshold, until it is back at the low threshold; images unused for
//! longer than `imageMaximumGCAge` are removed whatever the usage. Never removed: images a
//! container (running or exited) references, the sandbox (pause) image, images the runtime pins,
//! and images first seen less than `imageMinimumGCAge` ago.
//!
//! [`ImageRecords::observe`] keeps what kwk-node remembers between runs (first seen, last used;
//! in memory, as upstream), [`plan`] decides what to remove (pure), and [`executor`] lists,
//! measures and removes through CRI.

pub mod executor;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::config::ImageGcPolicy;

/// An image as the runtime lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The runtime's image ID (`sha256:...`).
    pub id: String,
    pub size_bytes: u64,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// The runtime pins it (containerd: the sandbox image, from 1.7 on).
    pub pinned: bool,
}

impl ImageInfo {
    /// Whether `reference` (an ID, tag or digest reference) names this image.
    fn is_named(&self, reference: &str) -> bool {
        self.id == reference
            || self.repo_tags.iter().any(|t| t == reference)
            || self.repo_digests.iter().any(|d| d == reference)
    }

    /// Whether any of `references` names this image.
    fn is_named_by(&self, references: &BTreeSet<String>) -> bool {
        references.iter().any(|r| self.is_named(r))
    }
}

/// What kwk-node remembers of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageRecord {
    /// When kwk-node first listed it.
    pub first_detected: Instant,
    /// The last time a container was seen using it; `None` if never.
    pub last_used: Option<Instant>,
}

impl ImageRecord {
    /// Last used, or first detected for an image never used: the LRU key and the start of
    /// the maximum-age clock.
    fn last_activity(&self) -> Instant {
        self.last_used.unwrap_or(self.first_detected)
    }
}

/// The records of the images the runtime has, keyed by image ID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageRecords {
    records: BTreeMap<String, ImageRecord>,
}

impl ImageRecords {
    /// Updates the records from a listing at `now`: new images are first detected now, images
    /// in use are used now, records of images gone are dropped.
    pub fn observe(&mut self, images: &[ImageInfo], in_use: &BTreeSet<String>, now: Instant) {
        self.records
            .retain(|id, _| images.iter().any(|image| &image.id == id));
        for image in images {
            let record = self.records.entry(image.id.clone()).or_insert(ImageRecord {
                first_detected: now,
                last_used: None,
            });
            if image.is_named_by(in_use) {
                record.last_used = Some(now);
            }
        }
    }

    pub fn get(&self, id: &str) -> Option<&ImageRecord> {
        self.records.get(id)
    }

    /// Sets a record (for tests and for callers that restore state).
    pub fn insert(&mut self, id: impl Into<String>, record: ImageRecord) {
        self.records.insert(id.into(), record);
    }
}

/// The image file system's size and free space, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub capacity_bytes: u64,
    pub available_bytes: u64,
}

impl FsUsage {
    /// Usage in whole percent, rounded up as upstream (`100 - available*100/capacity`).
    pub fn usage_percent(&self) -> u64 {
        if self.capacity_bytes == 0 {
            return 0;
        }
        let available = u128::from(self.available_bytes.min(self.capacity_bytes));
        let free_percent = available * 100 / u128::from(self.capacity_bytes);
        100 - u64::try_from(free_percent).unwrap_or(100)
    }

    /// Bytes to free to bring usage down to `low_percent`.
    fn bytes_above(&self, low_percent: u8) -> u64 {
        let target_available =
            u128::from(self.capacity_bytes) * u128::from(100 - low_percent.min(100)) / 100;
        u64::try_from(target_available)
            .unwrap_or(u64::MAX)
            .saturating_sub(self.available_bytes)
    }
}

/// Everything the planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct GcInput<'a> {
    pub policy: &'a ImageGcPolicy,
    pub images: &'a [ImageInfo],
    /// References (IDs, tags, digests) of the images containers use, running or not.
    pub in_use: &'a BTreeSet<String>,
    /// References that are never removed: the sandbox (pause) image.
    pub protected: &'a BTreeSet<String>,
    pub records: &'a ImageRecords,
    /// The image file system; `None` when unknown (only the maximum age applies then).
    pub fs: Option<FsUsage>,
    pub now: Instant,
}

/// Why an image is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalReason {
    /// Unused for longer than `imageMaximumGCAge`.
    MaxAge,
    /// The file system is above the high threshold.
    Space,
}

/// One image to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub id: String,
    pub size_bytes: u64,
    pub reason: RemovalReason,
}

/// What to remove, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcPlan {
    pub removals: Vec<Removal>,
    /// Bytes the space rule wanted freed (0 below the high threshold).
    pub bytes_to_free: u64,
    /// The bytes the removals free.
    pub bytes_freed: u64,
}

/// Decides which images to remove. Max-age removals come first; the space rule then frees the
/// rest of what is needed, least recently used first, and what it frees counts toward the target.
pub fn plan(input: &GcInput<'_>) -> GcPlan {
    let policy = input.policy;
    let mut candidates: Vec<(&ImageInfo, ImageRecord)> = input
        .images
        .iter()
        .filter(|image| {
            !image.pinned && !image.is_named_by(input.in_use) && !image.is_named_by(input.protected)
        })
        .map(|image| {
            let record = input
                .records
                .get(&image.id)
                .copied()
                .unwrap_or(ImageRecord {
                    first_detected: input.now,
                    last_used: None,
                });
            (image, record)
        })
        .filter(|(_, record)| age(input.now, record.first_detected) >= policy.minimum_age)
        .collect();
    candidates.sort_by(|(a, ra), (b, rb)| {
        (ra.last_activity(), ra.first_detected, &a.id).cmp(&(
            rb.last_activity(),
            rb.first_detected,
            &b.id,
        ))
    });

    let mut plan = GcPlan::default();
    let remove = |plan: &mut GcPlan, image: &ImageInfo, reason| {
        plan.bytes_freed = plan.bytes_freed.saturating_add(image.size_bytes);
        plan.removals.push(Removal {
            id: image.id.clone(),
            size_bytes: image.size_bytes,
            reason,
        });
    };
    let mut rest = Vec::new();
    for (image, record) in candidates {
        match policy.maximum_age {
            Some(max) if age(input.now, record.last_activity()) > max => {
                remove(&mut plan, image, RemovalReason::MaxAge);
            }
            _ => rest.push(image),
        }
    }
    let Some(fs) = input.fs else {
        return plan;
    };
    // 100 turns usage-driven collection off, as upstream.
    if policy.high_threshold_percent >= 100
        || fs.usage_percent() < u64::from(policy.high_threshold_percent)
    {
        return plan;
    }
    plan.bytes_to_free = fs.bytes_above(policy.low_threshold_percent);
    for image in rest {
        if plan.bytes_freed >= plan.bytes_to_free {
            break;
        }
        remove(&mut plan, image, RemovalReason::Space);
    }
    plan
}

fn age(now: Instant, since: Instant) -> Duration {
    now.saturating_duration_since(since)
}
