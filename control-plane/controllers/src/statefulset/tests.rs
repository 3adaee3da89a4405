use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSetOrdinals,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaimSpec, PodCondition, PodSpec, PodStatus, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::jiff::SignedDuration;

use super::identity::{POD_INDEX_LABEL, POD_NAME_LABEL};
use super::*;
use crate::common::{controller_ref, template_hash};
use crate::daemonset::history::{REVISION_HASH_LABEL, template_patch};
use crate::daemonset::sim::Cluster;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(2_000_000 + secs).expect("time")
}

fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "web".into(),
                image: Some(image.into()),
                ..Container::default()
            }],
            volumes: Some(vec![Volume {
                name: "www".into(),
                ..Volume::default()
            }]),
            ..PodSpec::default()
        }),
    }
}

fn sts(replicas: i32, image: &str) -> StatefulSet {
    StatefulSet {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("sts-uid".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some("web".into()),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                ..LabelSelector::default()
            },
            template: template(image),
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("www".into()),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    ..PersistentVolumeClaimSpec::default()
                }),
                status: None,
            }]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

fn parallel(mut s: StatefulSet) -> StatefulSet {
    s.spec.as_mut().expect("spec").pod_management_policy = Some("Parallel".into());
    s
}

fn strategy(mut s: StatefulSet, kind: &str, partition: i32) -> StatefulSet {
    s.spec.as_mut().expect("spec").update_strategy = Some(StatefulSetUpdateStrategy {
        type_: Some(kind.into()),
        rolling_update: (kind == "RollingUpdate").then_some(RollingUpdateStatefulSetStrategy {
            partition: Some(partition),
            max_unavailable: None,
        }),
    });
    s
}

fn retain(mut s: StatefulSet, when_deleted: &str, when_scaled: &str) -> StatefulSet {
    s.spec
        .as_mut()
        .expect("spec")
        .persistent_volume_claim_retention_policy =
        Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
            when_deleted: Some(when_deleted.into()),
            when_scaled: Some(when_scaled.into()),
        });
    s
}

fn revision_name(image: &str) -> String {
    format!("web-{}", template_hash(&template(image), None))
}

fn revision(image: &str, number: i64) -> ControllerRevision {
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(image)),
            namespace: Some("default".into()),
            labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
            owner_references: Some(vec![controller_ref(&sts(1, image))]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(template_patch(&template(image)))),
        revision: number,
    }
}

/// Member `ordinal` at `image`'s revision: ready, or just running.
fn member(ordinal: i32, image: &str, ready: bool) -> Pod {
    let mut pod = new_pod(
        &sts(1, image),
        &template(image),
        ordinal,
        &revision_name(image),
    );
    pod.metadata.uid = Some(format!("pod-uid-{ordinal}"));
    pod.status = Some(PodStatus {
        phase: Some("Running".into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            last_transition_time: Some(Time(t(0))),
            ..PodCondition::default()
        }]),
        ..PodStatus::default()
    });
    pod
}

fn terminating(mut pod: Pod) -> Pod {
    pod.metadata.deletion_timestamp = Some(Time(t(50)));
    pod
}

fn failed(mut pod: Pod) -> Pod {
    pod.status.as_mut().expect("status").phase = Some("Failed".into());
    pod
}

fn claim(ordinal: i32) -> PersistentVolumeClaim {
    new_claims(&sts(1, "a:1"), ordinal).remove(0)
}

fn summary(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Create { target, body } => Some(format!(
                "create {} {}",
                target.kind,
                body["metadata"]["name"].as_str().unwrap_or("?")
            )),
            Action::Delete { target, .. } => {
                Some(format!("delete {} {}", target.kind, target.name))
            }
            Action::Patch { target, .. } => Some(format!("patch {} {}", target.kind, target.name)),
            Action::Update { target, .. } => {
                Some(format!("update {} {}", target.kind, target.name))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn plan_table() {
    let rev_a = || vec![revision("a:1", 1)];
    let rev_ab = || vec![revision("a:1", 1), revision("b:2", 2)];
    let claims = |n: i32| (0..n).map(claim).collect::<Vec<_>>();
    let mut at_five = sts(2, "a:1");
    at_five.spec.as_mut().expect("spec").ordinals = Some(StatefulSetOrdinals { start: Some(5) });
    let mut at_the_end = parallel(sts(3, "a:1"));
    at_the_end.spec.as_mut().expect("spec").ordinals = Some(StatefulSetOrdinals {
        start: Some(i32::MAX - 1),
    });
    let rev_a_name = revision_name("a:1");
    #[allow(clippy::type_complexity, reason = "a test table")]
    let cases: Vec<(
        &str,
        StatefulSet,
        Vec<Pod>,
        Vec<PersistentVolumeClaim>,
        Vec<ControllerRevision>,
        Vec<String>,
    )> = vec![
        (
            "OrderedReady starts with ordinal 0 only, claim first",
            sts(3, "a:1"),
            vec![],
            vec![],
            vec![],
            vec![
                "create ControllerRevision ".to_string() + &rev_a_name,
                "create PersistentVolumeClaim www-web-0".into(),
                "create Pod web-0".into(),
            ],
        ),
        (
            "the next ordinal once the previous is ready",
            sts(3, "a:1"),
            vec![member(0, "a:1", true)],
            claims(1),
            rev_a(),
            vec![
                "create PersistentVolumeClaim www-web-1".into(),
                "create Pod web-1".into(),
            ],
        ),
        (
            "an unready predecessor blocks",
            sts(3, "a:1"),
            vec![member(0, "a:1", false)],
            claims(1),
            rev_a(),
            vec![],
        ),
        (
            "Parallel creates every member",
            parallel(sts(3, "a:1")),
            vec![member(0, "a:1", false)],
            claims(1),
            rev_a(),
            vec![
                "create PersistentVolumeClaim www-web-1".into(),
                "create Pod web-1".into(),
                "create PersistentVolumeClaim www-web-2".into(),
                "create Pod web-2".into(),
            ],
        ),
        (
            "spec.ordinals.start",
            at_five,
            vec![],
            vec![],
            rev_a(),
            vec![
                "create PersistentVolumeClaim www-web-5".into(),
                "create Pod web-5".into(),
            ],
        ),
        (
            "scale down: highest ordinal first, one at a time",
            sts(1, "a:1"),
            vec![
                member(0, "a:1", true),
                member(1, "a:1", true),
                member(2, "a:1", true),
            ],
            claims(3),
            rev_a(),
            vec!["delete Pod web-2".into()],
        ),
        (
            "scale down waits for the terminating member",
            sts(1, "a:1"),
            vec![
                member(0, "a:1", true),
                member(1, "a:1", true),
                terminating(member(2, "a:1", true)),
            ],
            claims(3),
            rev_a(),
            vec![],
        ),
        (
            "Parallel scale down deletes all at once",
            parallel(sts(1, "a:1")),
            vec![
                member(0, "a:1", true),
                member(1, "a:1", true),
                member(2, "a:1", true),
            ],
            claims(3),
            rev_a(),
            vec!["delete Pod web-2".into(), "delete Pod web-1".into()],
        ),
        (
            "a failed member is deleted to be recreated",
            sts(2, "a:1"),
            vec![member(0, "a:1", true), failed(member(1, "a:1", true))],
            claims(2),
            rev_a(),
            vec!["delete Pod web-1".into()],
        ),
        (
            "rolling update starts at the highest ordinal",
            sts(3, "b:2"),
            vec![
                member(0, "a:1", true),
                member(1, "a:1", true),
                member(2, "a:1", true),
            ],
            claims(3),
            rev_a(),
            vec![
                "create ControllerRevision ".to_string() + &revision_name("b:2"),
                "delete Pod web-2".into(),
            ],
        ),
        (
            "rolling update waits for the replaced member to be healthy",
            sts(3, "b:2"),
            vec![
                member(0, "a:1", true),
                member(1, "a:1", true),
                member(2, "b:2", false),
            ],
            claims(3),
            rev_ab(),
            vec![],
        ),
        (
            "the partition stops the update",
            strategy(sts(3, "b:2"), "RollingUpdate", 2),
            vec![
                member(0, "a:1", true),
                member(1, "a:1", true),
                member(2, "b:2", true),
            ],
            claims(3),
            rev_ab(),
            vec![],
        ),
        (
            "an orphaned member is adopted, not recreated",
            sts(1, "a:1"),
            vec![{
                let mut orphan = member(0, "a:1", true);
                orphan.metadata.owner_references = None;
                orphan
            }],
            claims(1),
            rev_a(),
            vec!["patch Pod web-0".into()],
        ),
        (
            "OnDelete leaves outdated members",
            strategy(sts(3, "b:2"), "OnDelete", 0),
            vec![
                member(0, "a:1", true),
                member(1, "a:1", true),
                member(2, "a:1", true),
            ],
            claims(3),
            rev_ab(),
            vec![],
        ),
        (
            "whenScaled Delete hands the claim to the condemned pod",
            retain(sts(1, "a:1"), "Retain", "Delete"),
            vec![member(0, "a:1", true), member(1, "a:1", true)],
            claims(2),
            rev_a(),
            vec![
                "patch PersistentVolumeClaim www-web-1".into(),
                "delete Pod web-1".into(),
            ],
        ),
        (
            "whenDeleted Delete gives existing claims to the set",
            retain(sts(1, "a:1"), "Delete", "Retain"),
            vec![member(0, "a:1", true)],
            claims(1),
            rev_a(),
            vec!["patch PersistentVolumeClaim www-web-0".into()],
        ),
        (
            "ordinals past i32::MAX are never made",
            at_the_end,
            vec![],
            vec![],
            rev_a(),
            vec![
                "create PersistentVolumeClaim www-web-2147483646".into(),
                "create Pod web-2147483646".into(),
                "create PersistentVolumeClaim www-web-2147483647".into(),
                "create Pod web-2147483647".into(),
            ],
        ),
    ];
    for (name, set, pods, pvcs, revisions, want) in cases {
        assert_eq!(
            summary(&plan(&set, &pods, &pvcs, &revisions, t(100))),
            want,
            "{name}"
        );
    }
}

#[test]
fn members_have_stable_identity_and_storage() {
    let set = retain(sts(1, "a:1"), "Delete", "Retain");
    let actions = plan(&set, &[], &[], &[], t(0));
    let body = |kind: &str| {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Create { target, body } if target.kind == kind => Some(body.clone()),
                _ => None,
            })
            .expect(kind)
    };
    let pod = body("Pod");
    assert_eq!(pod["metadata"]["name"], "web-0");
    assert_eq!(pod["metadata"]["labels"][POD_NAME_LABEL], "web-0");
    assert_eq!(pod["metadata"]["labels"][POD_INDEX_LABEL], "0");
    assert_eq!(
        pod["metadata"]["labels"][REVISION_HASH_LABEL],
        revision_name("a:1").as_str()
    );
    assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], "sts-uid");
    assert_eq!(pod["spec"]["hostname"], "web-0");
    assert_eq!(pod["spec"]["subdomain"], "web");
    assert_eq!(
        pod["spec"]["volumes"],
        serde_json::json!([{"name": "www", "persistentVolumeClaim": {"claimName": "www-web-0"}}]),
        "the template's volume is replaced by the claim"
    );
    let pvc = body("PersistentVolumeClaim");
    assert_eq!(pvc["metadata"]["labels"]["app"], "web");
    assert_eq!(pvc["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
    assert_eq!(pvc["metadata"]["ownerReferences"][0]["controller"], true);
}

#[test]
fn status_counts_and_revisions() {
    let mut set = sts(3, "b:2");
    set.status = Some(StatefulSetStatus {
        current_revision: Some(revision_name("a:1")),
        ..StatefulSetStatus::default()
    });
    let pods = [
        member(0, "a:1", true),
        member(1, "a:1", false),
        member(2, "b:2", true),
    ];
    let actions = plan(
        &set,
        &pods,
        &[claim(0), claim(1), claim(2)],
        &[revision("a:1", 1), revision("b:2", 2)],
        t(100),
    );
    let status = actions
        .iter()
        .find_map(|a| match a {
            Action::UpdateStatus { body, .. } => Some(body["status"].clone()),
            _ => None,
        })
        .expect("status");
    assert_eq!(
        status,
        serde_json::json!({
            "availableReplicas": 2, "currentReplicas": 2, "currentRevision": revision_name("a:1"),
            "observedGeneration": 1, "readyReplicas": 2, "replicas": 3, "updateRevision": revision_name("b:2"),
            "updatedReplicas": 1,
        })
    );
}

fn step(cluster: &mut Cluster, set: &mut StatefulSet) -> Vec<Action> {
    let actions = plan(
        set,
        &cluster.pods,
        &cluster.pvcs,
        &cluster.revisions,
        cluster.now,
    );
    cluster.apply(&actions);
    cluster.now += SignedDuration::from_secs(1);
    set.status = cluster.status_as();
    actions
}

fn pod_names(cluster: &Cluster) -> Vec<String> {
    let mut names: Vec<String> = cluster
        .pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    names
}

#[test]
fn ordered_ready_scale_up_to_three_converges_in_order() {
    let mut cluster = Cluster::new(t(0));
    let mut set = sts(3, "a:1");
    let mut created = Vec::new();
    for _ in 0..10 {
        let actions = step(&mut cluster, &mut set);
        created.extend(
            summary(&actions)
                .into_iter()
                .filter(|s| s.starts_with("create Pod")),
        );
        let unready = cluster.pods.iter().filter(|p| !is_ready(p)).count();
        assert!(unready <= 1, "one member starts at a time");
        cluster.run_all_pods("node-1");
    }
    assert_eq!(
        created,
        ["create Pod web-0", "create Pod web-1", "create Pod web-2"]
    );
    assert_eq!(pod_names(&cluster), ["web-0", "web-1", "web-2"]);
    assert_eq!(cluster.pvcs.len(), 3);
    let status = set.status.expect("status");
    assert_eq!(
        (
            status.replicas,
            status.ready_replicas,
            status.current_replicas
        ),
        (3, Some(3), Some(3))
    );
}

#[test]
fn rolling_update_with_partition_converges() {
    let mut cluster = Cluster::new(t(0));
    let mut set = strategy(sts(3, "a:1"), "RollingUpdate", 1);
    for _ in 0..8 {
        step(&mut cluster, &mut set);
        cluster.run_all_pods("node-1");
    }
    assert_eq!(pod_names(&cluster), ["web-0", "web-1", "web-2"]);
    let old = revision_name("a:1");
    let new = revision_name("b:2");

    set.spec.as_mut().expect("spec").template = template("b:2");
    set.metadata.generation = Some(2);
    let mut deleted = Vec::new();
    for _ in 0..12 {
        let actions = step(&mut cluster, &mut set);
        deleted.extend(
            summary(&actions)
                .into_iter()
                .filter(|s| s.starts_with("delete Pod")),
        );
        cluster.run_all_pods("node-1");
    }
    assert_eq!(
        deleted,
        ["delete Pod web-2", "delete Pod web-1"],
        "highest first, partition kept"
    );
    let revision_by_pod: BTreeMap<String, String> = cluster
        .pods
        .iter()
        .map(|p| {
            (
                p.metadata.name.clone().unwrap_or_default(),
                revision_of(p).unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(revision_by_pod["web-0"], old);
    assert_eq!(
        (&revision_by_pod["web-1"], &revision_by_pod["web-2"]),
        (&new, &new)
    );
    let status = set.status.clone().expect("status");
    assert_eq!(
        status.current_revision.as_deref(),
        Some(old.as_str()),
        "not complete below the partition"
    );
    assert_eq!(status.updated_replicas, Some(2));

    // Lowering the partition finishes the rollout and promotes the update revision.
    set = strategy(set, "RollingUpdate", 0);
    for _ in 0..6 {
        step(&mut cluster, &mut set);
        cluster.run_all_pods("node-1");
    }
    let status = set.status.expect("status");
    assert_eq!(status.current_revision.as_deref(), Some(new.as_str()));
    assert_eq!(
        (status.updated_replicas, status.current_replicas),
        (Some(3), Some(3))
    );
    assert!(
        cluster
            .pods
            .iter()
            .all(|p| revision_of(p) == Some(new.as_str()))
    );
}

#[test]
fn the_update_revision_becomes_current_only_when_all_are_updated_and_ready() {
    let mut set = sts(2, "b:2");
    set.status = Some(StatefulSetStatus {
        current_revision: Some(revision_name("a:1")),
        ..StatefulSetStatus::default()
    });
    let revisions = [revision("a:1", 1), revision("b:2", 2)];
    let cases = [
        ("all updated and ready", true, revision_name("b:2")),
        ("one updated member not ready", false, revision_name("a:1")),
    ];
    for (name, ready, want) in cases {
        let pods = [member(0, "b:2", true), member(1, "b:2", ready)];
        let actions = plan(&set, &pods, &[claim(0), claim(1)], &revisions, t(100));
        let current = actions.iter().find_map(|a| match a {
            Action::UpdateStatus { body, .. } => {
                body["status"]["currentRevision"].as_str().map(String::from)
            }
            _ => None,
        });
        assert_eq!(current, Some(want), "{name}");
    }
}

#[test]
fn claim_owners_follow_the_retention_policy() {
    use super::identity::wanted_claim_owners;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    let pod = member(1, "a:1", true);
    let set_ref = controller_ref(&sts(1, "a:1"));
    let pod_ref = controller_ref(&pod);
    let foreign = OwnerReference {
        kind: "Thing".into(),
        name: "other".into(),
        uid: "other-uid".into(),
        controller: Some(true),
        ..OwnerReference::default()
    };
    let uids = |refs: Vec<OwnerReference>| refs.into_iter().map(|r| r.uid).collect::<Vec<_>>();
    let cases = [
        (
            "Retain/Retain in range",
            ("Retain", "Retain"),
            vec![],
            false,
            vec![],
        ),
        (
            "whenDeleted Delete in range",
            ("Delete", "Retain"),
            vec![],
            false,
            vec!["sts-uid"],
        ),
        (
            "whenScaled Delete in range",
            ("Retain", "Delete"),
            vec![],
            false,
            vec![],
        ),
        (
            "whenScaled Delete scaled down",
            ("Retain", "Delete"),
            vec![],
            true,
            vec!["pod-uid-1"],
        ),
        (
            "both Delete scaled down: the pod replaces the set",
            ("Delete", "Delete"),
            vec![set_ref.clone()],
            true,
            vec!["pod-uid-1"],
        ),
        (
            "both Delete back in range",
            ("Delete", "Delete"),
            vec![pod_ref],
            false,
            vec!["sts-uid"],
        ),
        (
            "someone else's claim is left alone",
            ("Delete", "Delete"),
            vec![foreign, set_ref],
            false,
            vec!["other-uid"],
        ),
    ];
    for (name, (when_deleted, when_scaled), refs, scaled_down, want) in cases {
        let set = retain(sts(1, "a:1"), when_deleted, when_scaled);
        assert_eq!(
            uids(wanted_claim_owners(&set, &refs, Some(&pod), scaled_down)),
            want,
            "{name}"
        );
    }
}

#[test]
fn members_below_the_partition_are_recreated_at_the_current_revision() {
    let mut set = strategy(sts(3, "b:2"), "RollingUpdate", 2);
    set.status = Some(StatefulSetStatus {
        current_revision: Some(revision_name("a:1")),
        ..StatefulSetStatus::default()
    });
    let cases = [
        (
            "below the partition",
            0,
            vec![member(1, "a:1", true), member(2, "b:2", true)],
            "a:1",
        ),
        (
            "at the partition",
            2,
            vec![member(0, "a:1", true), member(1, "a:1", true)],
            "b:2",
        ),
    ];
    for (name, missing, pods, image) in cases {
        let actions = plan(
            &set,
            &pods,
            &[claim(0), claim(1), claim(2)],
            &[revision("a:1", 1), revision("b:2", 2)],
            t(100),
        );
        let created = actions
            .iter()
            .find_map(|a| match a {
                Action::Create { target, body } if target.kind == "Pod" => Some(body.clone()),
                _ => None,
            })
            .expect(name);
        assert_eq!(
            created["metadata"]["name"],
            format!("web-{missing}"),
            "{name}"
        );
        assert_eq!(
            created["metadata"]["labels"][REVISION_HASH_LABEL],
            revision_name(image).as_str(),
            "{name}"
        );
        assert_eq!(created["spec"]["containers"][0]["image"], image, "{name}");
    }
}
