//! Pod lifecycle through kwk-node against a real containerd: restart policies and
//! CrashLoopBackOff as seen in the status, termination messages, init containers that fail,
//! sidecars that start first and stop last, OOM kills, and volumes (memory emptyDir, subPath).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::path::Path;
use std::time::{Duration, Instant};

use kwk_tests::node::TestNode;
use kwk_tests::{TestContainerd, privileged_tests_enabled, wait_for};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kwk-node");
const WAIT: Duration = Duration::from_secs(30);
const IMAGE: &str = "localhost/kwk/busybox:1";

/// A one-container pod running `script` under `sh -c`.
fn shell_pod(name: &str, policy: &str, script: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: {policy}
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: {IMAGE}
    command: ["/bin/sh", "-c", {script:?}]
{extra}"#
    )
}

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or_default()
}

fn main_status(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

async fn start() -> anyhow::Result<Option<(TestContainerd, TestNode)>> {
    if !privileged_tests_enabled() {
        return Ok(None);
    }
    let containerd = TestContainerd::start().await?;
    let node = TestNode::start(&containerd, Path::new(BIN)).await?;
    Ok(Some((containerd, node)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policies_decide_what_an_exit_means() -> anyhow::Result<()> {
    let Some((_containerd, node)) = start().await? else {
        return Ok(());
    };
    let n = node.node_name.clone();
    node.write_manifest("ok.yaml", &shell_pod("ok", "OnFailure", "exit 0", ""))?;
    node.write_manifest(
        "fail.yaml",
        &shell_pod(
            "fail",
            "Never",
            "echo bye > /dev/termination-log; exit 3",
            "",
        ),
    )?;
    node.write_manifest(
        "again.yaml",
        &shell_pod("again", "OnFailure", "sleep 1; exit 1", ""),
    )?;

    let ok = node
        .wait_pod(
            &format!("ok-{n}"),
            WAIT,
            "OnFailure + exit 0 to succeed",
            |p| phase(p) == "Succeeded",
        )
        .await?;
    assert_eq!(main_status(&ok)["restartCount"], 0);
    assert_eq!(
        main_status(&ok)["state"]["terminated"]["reason"],
        "Completed"
    );

    let fail = node
        .wait_pod(&format!("fail-{n}"), WAIT, "Never + exit 3 to fail", |p| {
            phase(p) == "Failed"
        })
        .await?;
    let terminated = &main_status(&fail)["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 3);
    assert_eq!(terminated["reason"], "Error");
    assert_eq!(terminated["message"], "bye\n");
    assert_eq!(main_status(&fail)["restartCount"], 0);

    // OnFailure with a failing container restarts it, keeping the phase Running.
    let again = node
        .wait_pod(
            &format!("again-{n}"),
            WAIT,
            "OnFailure + exit 1 to restart",
            |p| main_status(p)["restartCount"].as_i64() >= Some(1),
        )
        .await?;
    assert_ne!(phase(&again), "Failed");
    assert_eq!(
        main_status(&again)["lastState"]["terminated"]["exitCode"],
        1
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_container_backs_off_as_the_status_shows() -> anyhow::Result<()> {
    let Some((_containerd, node)) = start().await? else {
        return Ok(());
    };
    node.write_manifest("crash.yaml", &shell_pod("crash", "Always", "exit 1", ""))?;
    let name = format!("crash-{}", node.node_name);
    // Record when each restart count is first seen.
    let started = Instant::now();
    let mut seen: Vec<(i64, Duration)> = Vec::new();
    let mut backoff_message = String::new();
    while started.elapsed() < Duration::from_secs(40) {
        if let Some(pod) = node.pod(&name)? {
            let status = main_status(&pod);
            let count = status["restartCount"].as_i64().unwrap_or(0);
            if seen.last().is_none_or(|(c, _)| *c != count) {
                seen.push((count, started.elapsed()));
            }
            if let (Some(m), 2) = (status["state"]["waiting"]["message"].as_str(), count) {
                backoff_message = m.to_string();
            }
            if count >= 3 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let at = |count: i64| seen.iter().find(|(c, _)| *c == count).map(|(_, t)| *t);
    let (Some(first), Some(second), Some(third)) = (at(1), at(2), at(3)) else {
        anyhow::bail!("restarts seen: {seen:?}\n{}", node.log_tail());
    };
    // Restart 1 at once, then 10 s, then 20 s (with slack for polling and container start).
    assert!(first < Duration::from_secs(5), "{seen:?}");
    assert!(second - first >= Duration::from_secs(9), "{seen:?}");
    assert!(third - second >= Duration::from_secs(19), "{seen:?}");
    assert!(
        backoff_message.starts_with("back-off 20s restarting failed container=main"),
        "{backoff_message:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_init_container_blocks_the_app() -> anyhow::Result<()> {
    let Some((containerd, node)) = start().await? else {
        return Ok(());
    };
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: blocked}}
spec:
  restartPolicy: Never
  initContainers:
  - {{name: setup, image: {IMAGE}, command: ["/bin/sh", "-c", "exit 7"]}}
  containers:
  - {{name: app, image: {IMAGE}, command: ["/bin/sh", "-c", "sleep 3600"]}}
"#
    );
    node.write_manifest("blocked.yaml", &manifest)?;
    let pod = node
        .wait_pod(
            &format!("blocked-{}", node.node_name),
            WAIT,
            "the pod to fail",
            |p| phase(p) == "Failed",
        )
        .await?;
    let init = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(init["state"]["terminated"]["exitCode"], 7);
    assert!(main_status(&pod)["state"]["waiting"].is_object(), "{pod}");
    // The app container was never created.
    let containers = containerd.cri.list_containers(None).await?;
    assert!(
        containers
            .iter()
            .all(|c| c.metadata.as_ref().unwrap().name != "app"),
        "{containers:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_starts_first_keeps_running_and_stops_last() -> anyhow::Result<()> {
    let Some((containerd, node)) = start().await? else {
        return Ok(());
    };
    let shared = containerd.layout().dir.join("shared");
    std::fs::create_dir_all(&shared)?;
    // Each container notes its start and, on SIGTERM, its stop in a shared host file.
    let script = |who: &str| {
        format!(
            "echo start-{who} >> /shared/order; trap 'echo stop-{who} >> /shared/order; exit 0' TERM; while true; do sleep 0.2; done"
        )
    };
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: sidecar}}
spec:
  terminationGracePeriodSeconds: 10
  volumes:
  - {{name: shared, hostPath: {{path: {shared}, type: Directory}}}}
  initContainers:
  - name: proxy
    image: {IMAGE}
    restartPolicy: Always
    command: ["/bin/sh", "-c", {proxy:?}]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: app
    image: {IMAGE}
    command: ["/bin/sh", "-c", {app:?}]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
"#,
        shared = shared.display(),
        proxy = script("proxy"),
        app = script("app"),
    );
    node.write_manifest("sidecar.yaml", &manifest)?;
    let pod = node
        .wait_pod(
            &format!("sidecar-{}", node.node_name),
            WAIT,
            "both containers ready",
            |p| {
                p["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            },
        )
        .await?;
    assert_eq!(pod["status"]["initContainerStatuses"][0]["ready"], true);

    node.remove_manifest("sidecar.yaml")?;
    wait_for(WAIT, "the pod to be gone", || async {
        node.pods().is_ok_and(|p| p.is_empty())
    })
    .await?;
    let order = std::fs::read_to_string(shared.join("order"))?;
    let lines: Vec<&str> = order.lines().collect();
    assert_eq!(
        lines,
        vec!["start-proxy", "start-app", "stop-app", "stop-proxy"],
        "{order}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_over_its_memory_limit_is_oom_killed() -> anyhow::Result<()> {
    let Some((_containerd, node)) = start().await? else {
        return Ok(());
    };
    let limits = "    resources:\n      limits: {memory: 24Mi}\n";
    node.write_manifest(
        "hog.yaml",
        &shell_pod(
            "hog",
            "Never",
            "dd if=/dev/zero of=/dev/null bs=128M count=1",
            limits,
        ),
    )?;
    let pod = node
        .wait_pod(
            &format!("hog-{}", node.node_name),
            WAIT,
            "the hog to be killed",
            |p| phase(p) == "Failed",
        )
        .await?;
    let terminated = &main_status(&pod)["state"]["terminated"];
    assert_eq!(terminated["reason"], "OOMKilled", "{pod}");
    assert_eq!(terminated["exitCode"], 137);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_empty_dir_is_a_sized_tmpfs_gone_with_the_pod() -> anyhow::Result<()> {
    let Some((_containerd, node)) = start().await? else {
        return Ok(());
    };
    let volume = "    volumeMounts: [{name: cache, mountPath: /cache}]
  volumes:
  - {name: cache, emptyDir: {medium: Memory, sizeLimit: 1Mi}}
";
    // Exit 0 only if /cache is a tmpfs that refuses 2 MiB.
    let script = "grep -q ' /cache tmpfs ' /proc/mounts || exit 2; \
        if dd if=/dev/zero of=/cache/f bs=1024 count=2048 2>/dev/null; then exit 3; fi; exit 0";
    node.write_manifest("shm.yaml", &shell_pod("shm", "Never", script, volume))?;
    let name = format!("shm-{}", node.node_name);
    let pod = node
        .wait_pod(&name, WAIT, "the tmpfs checks to pass", |p| {
            phase(p) == "Succeeded" || phase(p) == "Failed"
        })
        .await?;
    assert_eq!(phase(&pod), "Succeeded", "{pod}");
    let mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| {
                l.contains(&node.root_dir().display().to_string()) && l.contains("empty-dir/cache")
            })
    };
    assert!(
        mounted(),
        "the tmpfs is mounted on the node while the pod exists"
    );
    node.remove_manifest("shm.yaml")?;
    wait_for(WAIT, "the pod and its tmpfs gone", || {
        let gone = node.pod(&name).ok().flatten().is_none() && !mounted();
        async move { gone }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}\n{}", node.log_tail()))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_path_is_bind_mounted_privately_and_unmounted_with_the_pod() -> anyhow::Result<()> {
    let Some((_containerd, node)) = start().await? else {
        return Ok(());
    };
    let volume = "    env: [{name: SUB, value: dir}]
    volumeMounts:
    - {name: cache, mountPath: /data, subPathExpr: \"sub/$(SUB)\"}
    - {name: cache, mountPath: /vol}
  volumes:
  - {name: cache, emptyDir: {}}
";
    // The first run leaves a marker through the subPath and fails; the restart (a new bind of
    // the same subPath) must see it, through the subPath and in the whole volume.
    let script = "if test -f /data/marker; then test -f /vol/sub/dir/marker && exit 0; exit 2; fi; \
        touch /data/marker; exit 1";
    node.write_manifest("sub.yaml", &shell_pod("sub", "OnFailure", script, volume))?;
    let name = format!("sub-{}", node.node_name);
    let pod = node
        .wait_pod(&name, WAIT, "the restarted container to succeed", |p| {
            phase(p) == "Succeeded" || phase(p) == "Failed"
        })
        .await?;
    assert_eq!(phase(&pod), "Succeeded", "{pod}");
    assert_eq!(main_status(&pod)["restartCount"], 1, "{pod}");
    let binds = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| {
                l.contains(&node.root_dir().display().to_string())
                    && l.contains("/volume-subpaths/cache/main/0 ")
            })
            .count()
    };
    assert_eq!(binds(), 1, "one bind of the subPath while the pod exists");
    node.remove_manifest("sub.yaml")?;
    wait_for(WAIT, "the pod and its subPath bind gone", || {
        let gone = node.pod(&name).ok().flatten().is_none() && binds() == 0;
        async move { gone }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}\n{}", node.log_tail()))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_logs_are_rotated_by_size_and_count() -> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    let containerd = TestContainerd::start().await?;
    let node = TestNode::start_with(
        &containerd,
        Path::new(BIN),
        "containerLogMaxSize: 4Ki\ncontainerLogMaxFiles: 2\n",
    )
    .await?;
    // About 1 KiB of log a second, for ever.
    let script = "while true; do head -c 1000 /dev/zero | tr '\\0' x; echo; sleep 1; done";
    node.write_manifest("chatty.yaml", &shell_pod("chatty", "Always", script, ""))?;
    let pod = node
        .wait_pod(
            &format!("chatty-{}", node.node_name),
            WAIT,
            "the pod to run",
            |p| phase(p) == "Running",
        )
        .await?;
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let dir = node
        .pod_logs()
        .join(format!("default_chatty-{}_{uid}", node.node_name))
        .join("main");
    // The checker runs every 10 s: within ~25 s the live file was rotated at least once.
    wait_for(Duration::from_secs(40), "a rotated log file", || {
        let rotated = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("0.log."))
                    .count()
            })
            .unwrap_or(0);
        std::future::ready(rotated >= 1)
    })
    .await
    .map_err(|e| e.context(node.log_tail()))?;
    // The container keeps logging into a fresh live file, and at most 2 files exist.
    wait_for(
        Duration::from_secs(10),
        "the reopened live log to grow",
        || std::future::ready(std::fs::metadata(dir.join("0.log")).is_ok_and(|m| m.len() > 0)),
    )
    .await?;
    let files = std::fs::read_dir(&dir)?.count();
    assert!(
        files <= 2,
        "{files} log files kept with containerLogMaxFiles: 2"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_context_and_downward_env_reach_the_container() -> anyhow::Result<()> {
    let Some((_containerd, node)) = start().await? else {
        return Ok(());
    };
    // Each container reports through its termination message: `user` its uid and the downward
    // API values, `rootfs` (root, so only the read-only mount can stop it) whether / is writable.
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: sec}}
spec:
  restartPolicy: Never
  containers:
  - name: user
    image: {IMAGE}
    securityContext: {{runAsUser: 1234}}
    command: ["/bin/sh", "-c", "{{ id -u; echo $POD_NAME $POD_NS $NODE; [ -n \"$POD_IP\" ] && echo ip; }} > /dev/termination-log"]
    env:
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: POD_NS, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
    - {{name: NODE, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
    - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
  - name: rootfs
    image: {IMAGE}
    securityContext: {{readOnlyRootFilesystem: true}}
    command: ["/bin/sh", "-c", "{{ id -u; touch /probe 2>/dev/null && echo rw || echo ro; }} > /dev/termination-log"]
"#
    );
    node.write_manifest("sec.yaml", &manifest)?;
    let n = node.node_name.clone();
    let pod = node
        .wait_pod(&format!("sec-{n}"), WAIT, "the pod to finish", |p| {
            phase(p) == "Succeeded"
        })
        .await?;
    let message = |i: usize| {
        pod["status"]["containerStatuses"][i]["state"]["terminated"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let user = message(0);
    assert_eq!(
        user.lines().collect::<Vec<_>>(),
        vec!["1234", &format!("sec-{n} default {n}"), "ip"],
        "{pod}"
    );
    assert_eq!(
        message(1).lines().collect::<Vec<_>>(),
        vec!["0", "ro"],
        "{pod}"
    );
    Ok(())
}
