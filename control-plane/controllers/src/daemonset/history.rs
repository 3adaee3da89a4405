//! ControllerRevisions of pod templates, shared by the DaemonSet and StatefulSet planners:
//! the revision data (a patch that replaces `spec.template`), the revision a template maps
//! to (found, rolled back to, or created, with `collisionCount` on a name clash), revision
//! numbering, and history cleanup beyond `revisionHistoryLimit`.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::{Metadata, Resource};
use serde_json::{Value, json};

use crate::action::Action;
use crate::common::{controller_ref, is_controlled_by, template_hash};

/// The label naming the revision an object belongs to (pods, ControllerRevisions).
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// `revisionHistoryLimit` when unset.
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;

/// How many names to try before giving up on collisions (each try bumps `collisionCount`).
const MAX_COLLISION_TRIES: i32 = 64;

/// The revision data of a template: the patch that puts it back on its owner
/// (`{"spec":{"template":{..., "$patch":"replace"}}}`, as upstream stores it).
pub fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut template = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut template {
        map.insert("$patch".to_string(), Value::String("replace".to_string()));
    }
    json!({ "spec": { "template": template } })
}

/// The template a revision stores, if its data is a template patch.
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let data = revision.data.as_ref()?;
    let mut template = data.0.get("spec")?.get("template")?.clone();
    if let Value::Object(map) = &mut template {
        map.remove("$patch");
    }
    serde_json::from_value(template).ok()
}

/// The revisions controlled by the owner with `owner_uid`, oldest (lowest number) first.
pub fn owned_revisions<'a>(
    owner_uid: &str,
    revisions: &'a [ControllerRevision],
) -> Vec<&'a ControllerRevision> {
    by_revision_number(
        revisions
            .iter()
            .filter(|r| is_controlled_by(&r.metadata, owner_uid))
            .collect(),
    )
}

/// `revisions` without those being deleted, lowest number first.
pub fn by_revision_number(revisions: Vec<&ControllerRevision>) -> Vec<&ControllerRevision> {
    let mut live: Vec<&ControllerRevision> = revisions
        .into_iter()
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .collect();
    live.sort_by(|a, b| (a.revision, &a.metadata.name).cmp(&(b.revision, &b.metadata.name)));
    live
}

/// The number the next revision gets: one above the highest.
pub fn next_revision_number(owned: &[&ControllerRevision]) -> i64 {
    owned.iter().map(|r| r.revision).max().unwrap_or(0) + 1
}

/// The revision the owner's current template maps to, and what it takes to get there.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateRevision {
    /// The revision (as it will be once `actions` are done).
    pub revision: ControllerRevision,
    /// The value of its `controller-revision-hash` label.
    pub hash: String,
    /// The owner's `status.collisionCount` after resolving name clashes.
    pub collision_count: Option<i32>,
    /// A create (new template) or an update bumping the revision number (a rollback to an
    /// older template), or nothing.
    pub actions: Vec<Action>,
}

/// Find, roll back to or create the revision of `template` for `owner`. `owned` are the
/// owner's revisions ([`owned_revisions`]); `all` every revision in the namespace (to detect
/// name clashes, which bump the collision count and rehash, as upstream).
pub fn resolve_update_revision<K>(
    owner: &K,
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
    owned: &[&ControllerRevision],
    all: &[ControllerRevision],
) -> UpdateRevision
where
    K: Resource + Metadata<Ty = ObjectMeta>,
{
    let data = template_patch(template);
    let next = next_revision_number(owned);
    let equal: Vec<&&ControllerRevision> = owned
        .iter()
        .filter(|r| r.data.as_ref().is_some_and(|d| d.0 == data))
        .collect();
    if let Some(found) = equal.last() {
        let found: &ControllerRevision = found;
        let hash = hash_of(found);
        let latest = owned
            .last()
            .is_some_and(|l| l.metadata.name == found.metadata.name);
        if latest {
            return UpdateRevision {
                revision: found.clone(),
                hash,
                collision_count,
                actions: Vec::new(),
            };
        }
        let mut bumped = found.clone();
        bumped.revision = next;
        return UpdateRevision {
            actions: vec![Action::update(&bumped)],
            revision: bumped,
            hash,
            collision_count,
        };
    }

    let owner_meta = owner.metadata();
    let owner_name = owner_meta.name.clone().unwrap_or_default();
    let mut count = collision_count;
    let mut hash = template_hash(template, count);
    for _ in 0..MAX_COLLISION_TRIES {
        let name = format!("{owner_name}-{hash}");
        let clash = all
            .iter()
            .any(|r| r.metadata.name.as_deref() == Some(name.as_str()));
        if !clash {
            break;
        }
        count = Some(count.unwrap_or(0) + 1);
        hash = template_hash(template, count);
    }
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(REVISION_HASH_LABEL.to_string(), hash.clone());
    let revision = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("{owner_name}-{hash}")),
            namespace: owner_meta.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![controller_ref(owner)]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(data)),
        revision: next,
    };
    UpdateRevision {
        actions: vec![Action::create(&revision)],
        revision,
        hash,
        collision_count: count,
    }
}

/// The hash a revision goes by: its label, else the suffix of its name.
pub fn hash_of(revision: &ControllerRevision) -> String {
    if let Some(hash) = revision
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_HASH_LABEL))
    {
        return hash.clone();
    }
    let name = revision.metadata.name.as_deref().unwrap_or_default();
    name.rsplit_once('-')
        .map_or(name, |(_, hash)| hash)
        .to_string()
}

/// The revisions to delete so that at most `limit` (default 10) revisions that nothing uses
/// remain, oldest first. `live` names the revisions still in use (the update and current
/// revisions, and those pods carry).
pub fn revisions_to_prune<'a>(
    owned: &[&'a ControllerRevision],
    live: &BTreeSet<String>,
    limit: Option<i32>,
) -> Vec<&'a ControllerRevision> {
    let limit = usize::try_from(limit.unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT)).unwrap_or(0);
    let unused: Vec<&ControllerRevision> = owned
        .iter()
        .copied()
        .filter(|r| !live.contains(r.metadata.name.as_deref().unwrap_or_default()))
        .collect();
    let excess = unused.len().saturating_sub(limit);
    unused.into_iter().take(excess).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        }
    }

    fn owner() -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("ds".into()),
                uid: Some("u".into()),
                ..ObjectMeta::default()
            },
            ..DaemonSet::default()
        }
    }

    #[test]
    fn revision_data_round_trips_the_template() {
        let patch = template_patch(&template("a:1"));
        assert_eq!(patch["spec"]["template"]["$patch"], "replace");
        let revision = ControllerRevision {
            data: Some(RawExtension(patch)),
            ..ControllerRevision::default()
        };
        assert_eq!(template_of(&revision), Some(template("a:1")));
    }

    #[test]
    fn a_name_clash_bumps_the_collision_count() {
        let plain = resolve_update_revision(&owner(), &template("a:1"), None, &[], &[]);
        assert_eq!(plain.collision_count, None);
        assert_eq!(plain.revision.revision, 1);
        // Someone else's revision already has that name, with other data.
        let squatter = ControllerRevision {
            metadata: plain.revision.metadata.clone(),
            data: Some(RawExtension(template_patch(&template("other")))),
            revision: 7,
        };
        let bumped = resolve_update_revision(&owner(), &template("a:1"), None, &[], &[squatter]);
        assert_eq!(bumped.collision_count, Some(1));
        assert_ne!(bumped.revision.metadata.name, plain.revision.metadata.name);
        assert_eq!(bumped.hash, template_hash(&template("a:1"), Some(1)));
    }

    #[test]
    fn pruning_keeps_live_and_the_newest_unused() {
        let rev = |n: i64| ControllerRevision {
            metadata: ObjectMeta {
                name: Some(format!("r{n}")),
                ..ObjectMeta::default()
            },
            revision: n,
            ..ControllerRevision::default()
        };
        let all: Vec<ControllerRevision> = (1..=13).map(rev).collect();
        let owned: Vec<&ControllerRevision> = all.iter().collect();
        let live = BTreeSet::from(["r1".to_string(), "r13".to_string()]);
        let pruned: Vec<_> = revisions_to_prune(&owned, &live, None)
            .into_iter()
            .filter_map(|r| r.metadata.name.as_deref())
            .collect();
        assert_eq!(pruned, ["r2"], "11 unused, the default limit keeps 10");
        assert_eq!(revisions_to_prune(&owned, &live, Some(0)).len(), 11);
    }
}
