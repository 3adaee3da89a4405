//! Table tests of the image GC planner and of the records it reads.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::*;

const MIB: u64 = 1 << 20;

fn image(id: &str, size_mib: u64, tag: &str) -> ImageInfo {
    ImageInfo {
        id: id.to_owned(),
        size_bytes: size_mib * MIB,
        repo_tags: vec![tag.to_owned()],
        repo_digests: vec![format!(
            "{}@sha256:{id}",
            tag.split(':').next().unwrap_or(tag)
        )],
        pinned: false,
    }
}

fn policy(high: u8, low: u8, min_age_secs: u64, max_age_secs: Option<u64>) -> ImageGcPolicy {
    ImageGcPolicy {
        high_threshold_percent: high,
        low_threshold_percent: low,
        minimum_age: Duration::from_secs(min_age_secs),
        maximum_age: max_age_secs.map(Duration::from_secs),
    }
}

/// A 1000 MiB file system with `used_mib` used.
fn fs(used_mib: u64) -> Option<FsUsage> {
    Some(FsUsage {
        capacity_bytes: 1000 * MIB,
        available_bytes: (1000 - used_mib) * MIB,
    })
}

struct Case {
    name: &'static str,
    policy: ImageGcPolicy,
    fs: Option<FsUsage>,
    in_use: &'static [&'static str],
    /// Seconds before now that each image was (first detected, last used).
    ages: &'static [(&'static str, u64, Option<u64>)],
    pinned: &'static [&'static str],
    want: &'static [(&'static str, RemovalReason)],
}

/// Images a..e of 100 MiB, plus the pause image; all first seen an hour ago unless a case
/// says otherwise.
fn run(case: &Case) -> GcPlan {
    let now = Instant::now() + Duration::from_secs(10 * 86_400);
    let mut images: Vec<ImageInfo> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|id| image(id, 100, &format!("localhost/{id}:1")))
        .collect();
    images.push(image("p", 1, "localhost/pause:1"));
    for image in &mut images {
        image.pinned = case.pinned.contains(&image.id.as_str());
    }
    let mut records = ImageRecords::default();
    for image in &images {
        records.insert(
            image.id.clone(),
            ImageRecord {
                first_detected: now - Duration::from_secs(3600),
                last_used: None,
            },
        );
    }
    for (id, first, last) in case.ages {
        records.insert(
            *id,
            ImageRecord {
                first_detected: now - Duration::from_secs(*first),
                last_used: last.map(|s| now - Duration::from_secs(s)),
            },
        );
    }
    let in_use: BTreeSet<String> = case.in_use.iter().map(|s| (*s).to_owned()).collect();
    let protected = BTreeSet::from(["localhost/pause:1".to_owned()]);
    plan(&GcInput {
        policy: &case.policy,
        images: &images,
        in_use: &in_use,
        protected: &protected,
        records: &records,
        fs: case.fs,
        now,
    })
}

#[test]
fn image_gc_plans() {
    use RemovalReason::{MaxAge, Space};
    let cases = [
        Case {
            name: "below the high threshold nothing is removed",
            policy: policy(85, 80, 120, None),
            fs: fs(840),
            in_use: &[],
            ages: &[],
            pinned: &[],
            want: &[],
        },
        Case {
            name: "at the high threshold, least recently used first until at the low threshold",
            // 850 used, low 80% = 800: 50 MiB to free, one image.
            policy: policy(85, 80, 120, None),
            fs: fs(850),
            in_use: &[],
            ages: &[
                ("a", 3600, Some(10)),
                ("b", 3600, Some(500)),
                ("c", 3600, Some(100)),
                ("d", 3600, Some(20)),
                ("e", 3600, Some(30)),
            ],
            pinned: &[],
            want: &[("b", Space)],
        },
        Case {
            name: "frees in LRU order, never-used (by first detection) before used",
            // 950 used, low 60% = 600: 350 MiB, four images.
            policy: policy(85, 60, 120, None),
            fs: fs(950),
            in_use: &[],
            ages: &[
                ("a", 3600, Some(10)),
                ("b", 3600, Some(500)),
                ("c", 7200, None),
                ("d", 3600, Some(20)),
                ("e", 3600, Some(30)),
            ],
            pinned: &[],
            want: &[("c", Space), ("b", Space), ("e", Space), ("d", Space)],
        },
        Case {
            name: "images in use (by ID, tag or digest), pause and pinned images are never removed",
            policy: policy(85, 0, 120, None),
            fs: fs(999),
            in_use: &["a", "localhost/b:1", "localhost/c@sha256:c"],
            ages: &[],
            pinned: &["d"],
            want: &[("e", Space)],
        },
        Case {
            name: "images first seen less than the minimum age ago are never removed",
            policy: policy(85, 0, 120, None),
            fs: fs(999),
            in_use: &[],
            ages: &[
                ("a", 119, None),
                ("b", 60, Some(60)),
                ("c", 121, Some(121)),
                ("d", 0, None),
                ("e", 3, None),
            ],
            pinned: &[],
            want: &[("c", Space)],
        },
        Case {
            name: "unused longer than the maximum age: removed below the threshold too",
            policy: policy(85, 80, 120, Some(1800)),
            fs: fs(100),
            in_use: &["e"],
            ages: &[
                ("a", 3600, Some(1801)),
                ("b", 3600, Some(1800)),
                ("c", 1000, None),
                ("d", 3600, Some(10)),
                ("e", 3600, Some(7200)),
            ],
            pinned: &[],
            // b is exactly at the maximum; p (pause) and e (in use) are kept though old.
            want: &[("a", MaxAge)],
        },
        Case {
            name: "max-age removals count toward the space target",
            // 900 used, low 80%: 100 MiB, freed by the max-age removal of a.
            policy: policy(85, 80, 120, Some(1800)),
            fs: fs(900),
            in_use: &[],
            ages: &[
                ("a", 7200, Some(7000)),
                ("b", 3600, Some(100)),
                ("c", 3600, Some(200)),
                ("d", 3600, Some(300)),
                ("e", 3600, Some(400)),
            ],
            pinned: &[],
            want: &[("a", MaxAge)],
        },
        Case {
            name: "a high threshold of 100 turns usage-driven collection off",
            policy: policy(100, 80, 120, None),
            fs: fs(1000),
            in_use: &[],
            ages: &[],
            pinned: &[],
            want: &[],
        },
        Case {
            name: "unknown usage: only the maximum age applies",
            policy: policy(0, 0, 0, None),
            fs: None,
            in_use: &[],
            ages: &[],
            pinned: &[],
            want: &[],
        },
        Case {
            name: "thresholds of 0 with no minimum age free every unused image",
            policy: policy(0, 0, 0, None),
            fs: fs(1000),
            in_use: &["localhost/a:1"],
            ages: &[],
            pinned: &[],
            want: &[("b", Space), ("c", Space), ("d", Space), ("e", Space)],
        },
    ];
    for case in &cases {
        let got = run(case);
        let got: Vec<(&str, RemovalReason)> = got
            .removals
            .iter()
            .map(|r| (r.id.as_str(), r.reason))
            .collect();
        assert_eq!(got, case.want, "{}", case.name);
    }
}

#[test]
fn image_gc_plan_reports_bytes() {
    let case = Case {
        name: "bytes",
        policy: policy(85, 60, 120, None),
        fs: fs(950),
        in_use: &[],
        ages: &[],
        pinned: &[],
        want: &[],
    };
    let got = run(&case);
    assert_eq!(got.bytes_to_free, 350 * MIB);
    assert_eq!(got.bytes_freed, 400 * MIB);
    assert_eq!(got.removals.len(), 4);
}

#[test]
fn image_gc_usage_percent_rounds_up_like_upstream() {
    let usage = |capacity_bytes, available_bytes| FsUsage {
        capacity_bytes,
        available_bytes,
    };
    assert_eq!(usage(1000, 1000).usage_percent(), 0);
    assert_eq!(usage(1000, 151).usage_percent(), 85);
    assert_eq!(usage(1000, 150).usage_percent(), 85);
    assert_eq!(usage(1000, 149).usage_percent(), 86);
    assert_eq!(usage(1000, 0).usage_percent(), 100);
    assert_eq!(usage(0, 0).usage_percent(), 0);
}

#[test]
fn image_gc_records_track_first_detection_and_last_use() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(60);
    let images = vec![
        image("a", 1, "localhost/a:1"),
        image("b", 1, "localhost/b:1"),
    ];
    let mut records = ImageRecords::default();
    records.observe(&images, &BTreeSet::from(["localhost/a:1".to_owned()]), t0);
    records.observe(&images[1..], &BTreeSet::new(), t1);
    assert_eq!(
        records.get("a"),
        None,
        "records of removed images are dropped"
    );
    assert_eq!(
        records.get("b"),
        Some(&ImageRecord {
            first_detected: t0,
            last_used: None
        })
    );
    records.observe(&images, &BTreeSet::from(["b".to_owned()]), t1);
    assert_eq!(
        records.get("a"),
        Some(&ImageRecord {
            first_detected: t1,
            last_used: None
        })
    );
    assert_eq!(
        records.get("b"),
        Some(&ImageRecord {
            first_detected: t0,
            last_used: Some(t1)
        })
    );
}
