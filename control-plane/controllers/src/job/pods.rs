//! The job controller's view of pods: building a pod from the Job's template (labels,
//! controller reference, tracking finalizer, completion index), reading a pod's index and
//! finish time, and the `completedIndexes` interval notation (`1,3-5`).

use std::collections::BTreeSet;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::action::Action;
use crate::common::{controller_ref, has_finalizer, remove_finalizer};

/// The finalizer that keeps a finished pod until the controller counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// Annotation and label with an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The env var an Indexed Job's containers read their index from.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// Labels the apiserver puts on a Job's selector and template (the controller makes sure
/// its pods carry them too).
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
pub const LEGACY_CONTROLLER_UID_LABEL: &str = "controller-uid";
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";

/// Whether `pod` carries the tracking finalizer.
pub fn has_tracking_finalizer(pod: &Pod) -> bool {
    has_finalizer(&pod.metadata, TRACKING_FINALIZER)
}

/// The merge patch that drops the tracking finalizer from `pod` (guarded by the pod's
/// `resourceVersion`, so a concurrent change to the list conflicts instead of being lost).
pub fn remove_tracking_finalizer(pod: &Pod) -> Action {
    remove_finalizer(pod, TRACKING_FINALIZER)
}

/// The completion index of an Indexed Job's pod (annotation first, then label), if valid.
pub fn completion_index(pod: &Pod) -> Option<i32> {
    let from = |map: &Option<std::collections::BTreeMap<String, String>>| {
        map.as_ref()?.get(COMPLETION_INDEX)?.parse::<i32>().ok()
    };
    from(&pod.metadata.annotations)
        .or_else(|| from(&pod.metadata.labels))
        .filter(|i| *i >= 0)
}

/// When the pod finished: the latest container `finishedAt`, else the `Ready` condition's
/// last transition, else its creation (or `now` when even that is missing).
pub fn finish_time(pod: &Pod, now: Timestamp) -> Timestamp {
    let status = pod.status.as_ref();
    let containers = status
        .into_iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|Time(t)| *t)
        .max();
    containers
        .or_else(|| {
            status?
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Ready")?
                .last_transition_time
                .as_ref()
                .map(|Time(t)| *t)
        })
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|Time(t)| *t))
        .unwrap_or(now)
}

fn index_env() -> EnvVar {
    EnvVar {
        name: COMPLETION_INDEX_ENV.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn add_index_env(containers: &mut [Container]) {
    for container in containers {
        let env = container.env.get_or_insert_with(Vec::new);
        if !env.iter().any(|e| e.name == COMPLETION_INDEX_ENV) {
            env.push(index_env());
        }
    }
}

/// The pod the controller creates for `job` (for `index` in an Indexed Job): the template's
/// labels and annotations plus the Job's identity labels, the controller reference, the
/// tracking finalizer and `generateName` `<job>-` (`<job>-<index>-`). An indexed pod also
/// gets the index annotation and label, the hostname `<job>-<index>` (unless the template
/// sets one) and `JOB_COMPLETION_INDEX` from the downward API in every container.
pub fn pod_for(job: &Job, index: Option<i32>) -> Pod {
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let template_meta = template.metadata.unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    for (key, value) in [
        (CONTROLLER_UID_LABEL, &uid),
        (JOB_NAME_LABEL, &job_name),
        (LEGACY_CONTROLLER_UID_LABEL, &uid),
        (LEGACY_JOB_NAME_LABEL, &job_name),
    ] {
        labels
            .entry(key.to_string())
            .or_insert_with(|| value.clone());
    }
    let mut annotations = template_meta.annotations.unwrap_or_default();
    let mut spec: PodSpec = template.spec.unwrap_or_default();
    let generate_name = match index {
        Some(i) => {
            labels.insert(COMPLETION_INDEX.into(), i.to_string());
            annotations.insert(COMPLETION_INDEX.into(), i.to_string());
            if spec.hostname.is_none() {
                spec.hostname = Some(format!("{job_name}-{i}"));
            }
            add_index_env(&mut spec.containers);
            add_index_env(spec.init_containers.get_or_insert_with(Vec::new));
            if spec.init_containers.as_ref().is_some_and(Vec::is_empty) {
                spec.init_containers = None;
            }
            format!("{job_name}-{i}-")
        }
        None => format!("{job_name}-"),
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: Some(vec![TRACKING_FINALIZER.to_string()]),
            owner_references: Some(vec![controller_ref(job)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Parse `completedIndexes` (`1,3-5`); malformed parts are ignored.
pub fn parse_indexes(text: &str) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let bounds = match part.split_once('-') {
            Some((low, high)) => low.parse::<i32>().ok().zip(high.parse::<i32>().ok()),
            None => part.parse::<i32>().ok().map(|i| (i, i)),
        };
        if let Some((low, high)) = bounds {
            set.extend(low..=high);
        }
    }
    set
}

/// Write a set of indexes as `completedIndexes` does: ascending, runs of three or more as
/// `a-b`, shorter runs as single numbers.
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        match end - start {
            0 => parts.push(start.to_string()),
            1 => parts.push(format!("{start},{end}")),
            _ => parts.push(format!("{start}-{end}")),
        }
    }
    parts.join(",")
}
