//! `/exec`, `/attach`, `/portForward` after authorization: the path names a pod (and for exec
//! and attach a container) of this node; they are resolved to CRI ids — the running
//! container's ID from the pod's status, the ready sandbox from CRI by the pod's labels — and
//! the request goes to [`crate::streaming`]. `/run` (a non-streaming exec) is not served.

use http::StatusCode;
use k8s_openapi::api::core::v1::Pod;
use kwk_cri::{CriClient, api};

use super::container_logs::find_pod;
use crate::labels;
use crate::pod::store::StatusStore;
use crate::streaming::{self, ExecTarget, PortForwardTarget, StreamingBody, StreamingRequest};

/// What a streaming path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StreamPath {
    Exec(PodRef, String),
    Attach(PodRef, String),
    PortForward(PodRef),
}

/// A pod by namespace and name, and by UID when the path has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

/// Parses `/exec/{ns}/{pod}[/{uid}]/{container}`, `/attach/…` and
/// `/portForward/{ns}/{pod}[/{uid}]`.
pub(super) fn parse_stream_path(path: &str) -> Option<StreamPath> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let pod = |ns: &str, name: &str, uid: Option<&str>| PodRef {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        uid: uid.map(str::to_owned),
    };
    match parts.as_slice() {
        ["exec", ns, name, container] => {
            Some(StreamPath::Exec(pod(ns, name, None), (*container).into()))
        }
        ["exec", ns, name, uid, container] => Some(StreamPath::Exec(
            pod(ns, name, Some(uid)),
            (*container).into(),
        )),
        ["attach", ns, name, container] => {
            Some(StreamPath::Attach(pod(ns, name, None), (*container).into()))
        }
        ["attach", ns, name, uid, container] => Some(StreamPath::Attach(
            pod(ns, name, Some(uid)),
            (*container).into(),
        )),
        ["portForward", ns, name] => Some(StreamPath::PortForward(pod(ns, name, None))),
        ["portForward", ns, name, uid] => Some(StreamPath::PortForward(pod(ns, name, Some(uid)))),
        _ => None,
    }
}

/// The running container `container`'s CRI ID, from the pod's status.
pub(super) fn running_container_id(pod: &Pod, container: &str) -> Option<String> {
    let status = pod.status.as_ref()?;
    let statuses = status
        .container_statuses
        .iter()
        .chain(status.init_container_statuses.iter())
        .chain(status.ephemeral_container_statuses.iter())
        .flatten();
    statuses
        .filter(|s| s.name == container)
        .filter(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()))
        .find_map(|s| s.container_id.as_deref())
        .map(|id| id.split_once("://").map_or(id, |(_, id)| id).to_owned())
}

/// Serves an authorized streaming request.
pub(super) async fn serve(
    request: StreamingRequest,
    store: &StatusStore,
    cri: &CriClient,
) -> http::Response<StreamingBody> {
    let Some(path) = parse_stream_path(request.uri().path()) else {
        return plain(StatusCode::NOT_FOUND, "not found\n".into());
    };
    let pod_ref = match &path {
        StreamPath::Exec(p, _) | StreamPath::Attach(p, _) | StreamPath::PortForward(p) => p.clone(),
    };
    let pod = match find_pod(store, &pod_ref.namespace, &pod_ref.name) {
        Some(pod)
            if pod_ref.uid.is_none() || pod.metadata.uid.as_deref() == pod_ref.uid.as_deref() =>
        {
            pod
        }
        _ => {
            return plain(
                StatusCode::NOT_FOUND,
                format!("pod {}/{} not found\n", pod_ref.namespace, pod_ref.name),
            );
        }
    };
    match path {
        StreamPath::Exec(_, container) | StreamPath::Attach(_, container) => {
            let Some(container_id) = running_container_id(&pod, &container) else {
                return plain(
                    StatusCode::NOT_FOUND,
                    format!(
                        "container {container} is not running in pod {}/{}\n",
                        pod_ref.namespace, pod_ref.name
                    ),
                );
            };
            let target = ExecTarget { container_id };
            if request.uri().path().starts_with("/exec/") {
                streaming::serve_exec(request, &target, cri).await
            } else {
                streaming::serve_attach(request, &target, cri).await
            }
        }
        StreamPath::PortForward(_) => match ready_sandbox(cri, &pod).await {
            Ok(Some(sandbox_id)) => {
                streaming::serve_port_forward(request, &PortForwardTarget { sandbox_id }, cri).await
            }
            Ok(None) => plain(
                StatusCode::NOT_FOUND,
                format!(
                    "pod {}/{} has no running sandbox\n",
                    pod_ref.namespace, pod_ref.name
                ),
            ),
            Err(err) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")),
        },
    }
}

/// The ready sandbox of `pod` (by its UID label).
async fn ready_sandbox(cri: &CriClient, pod: &Pod) -> Result<Option<String>, kwk_cri::CriError> {
    let Some(uid) = pod.metadata.uid.clone() else {
        return Ok(None);
    };
    let filter = api::PodSandboxFilter {
        state: Some(api::PodSandboxStateValue {
            state: api::PodSandboxState::SandboxReady as i32,
        }),
        label_selector: [(labels::POD_UID.to_owned(), uid)].into(),
        ..Default::default()
    };
    let sandboxes = cri.list_pod_sandbox(Some(filter)).await?;
    Ok(sandboxes.into_iter().next().map(|s| s.id))
}

fn plain(status: StatusCode, message: String) -> http::Response<StreamingBody> {
    let mut response = http::Response::new(StreamingBody::from(message));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, uid: Option<&str>) -> PodRef {
        PodRef {
            namespace: ns.into(),
            name: name.into(),
            uid: uid.map(Into::into),
        }
    }

    #[test]
    fn streaming_paths() {
        let cases = [
            (
                "/exec/ns/p/c",
                Some(StreamPath::Exec(pod("ns", "p", None), "c".into())),
            ),
            (
                "/exec/ns/p/u1/c",
                Some(StreamPath::Exec(pod("ns", "p", Some("u1")), "c".into())),
            ),
            (
                "/attach/ns/p/c",
                Some(StreamPath::Attach(pod("ns", "p", None), "c".into())),
            ),
            (
                "/portForward/ns/p",
                Some(StreamPath::PortForward(pod("ns", "p", None))),
            ),
            (
                "/portForward/ns/p/u1",
                Some(StreamPath::PortForward(pod("ns", "p", Some("u1")))),
            ),
            ("/exec/ns/p", None),
            ("/exec/ns//c", None),
            ("/run/ns/p/c", None),
            ("/portForward/ns/p/u/extra", None),
        ];
        for (path, want) in cases {
            assert_eq!(parse_stream_path(path), want, "{path}");
        }
    }

    #[test]
    fn the_running_container_id_comes_from_the_status() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {
                "containerStatuses": [
                    {"name": "a", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
                     "containerID": "containerd://abc", "state": {"running": {}}},
                    {"name": "b", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                     "containerID": "containerd://def", "state": {"waiting": {}}},
                ],
            },
        }))
        .expect("pod");
        assert_eq!(running_container_id(&pod, "a").as_deref(), Some("abc"));
        assert_eq!(running_container_id(&pod, "b"), None);
        assert_eq!(running_container_id(&pod, "c"), None);
    }
}
