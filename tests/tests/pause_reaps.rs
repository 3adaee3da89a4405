//! Our pause image as PID 1 of a pod with a shared PID namespace: orphans that exit are reaped
//! (no zombies accumulate), and the sandbox stops promptly because pause exits on SIGTERM.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]

use std::time::{Duration, Instant};

use kwk_tests::pods::{PodShape, container_config};
use kwk_tests::{TestContainerd, privileged_tests_enabled};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_reaps_orphans_and_stops_on_sigterm() -> anyhow::Result<()> {
    if !privileged_tests_enabled() {
        return Ok(());
    }
    let node = TestContainerd::start().await?;
    let sandbox = node.sandbox(
        "reaper",
        PodShape {
            host_network: true,
            shared_pid: true,
        },
    )?;
    let pod = node.cri.run_pod_sandbox(sandbox.clone(), "").await?;
    let config = container_config("app", &node.images.busybox_reference, &["sleep", "3600"]);
    let app = node.cri.create_container(&pod, config, sandbox).await?;
    node.cri.start_container(&app).await?;

    let exec = |cmd: &str| {
        let cri = node.cri.clone();
        let app = app.clone();
        let cmd = cmd.to_owned();
        async move {
            let out = cri
                .exec_sync(
                    &app,
                    vec!["sh".into(), "-c".into(), cmd],
                    Duration::from_secs(10),
                )
                .await?;
            anyhow::Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
    };
    // PID 1 of the pod is our pause.
    assert_eq!(
        exec("cat /proc/1/cmdline | tr '\\0' ' '").await?.trim(),
        "/pause"
    );

    // Orphan five short-lived processes: their parent shell exits at once, so they are
    // re-parented to PID 1 and become zombies unless pause reaps them.
    exec("for i in 1 2 3 4 5; do (sleep 0.2 &) ; done").await?;
    let zombies =
        "for s in /proc/[0-9]*/stat; do cut -d' ' -f3 $s; done 2>/dev/null | grep -c Z || true";
    // Zombies keep their name, so "one sleep left" means the orphans exited *and* were reaped.
    let sleeps = "ps -o comm | grep -c '^sleep$' || true";
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let count = exec(sleeps).await?;
        if count.trim() == "1" {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "{} sleep processes remain, {} of them zombies",
                count.trim(),
                exec(zombies).await?.trim()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(exec(zombies).await?.trim(), "0");

    // StopPodSandbox signals pause with SIGTERM; it exits at once instead of waiting for a kill.
    node.cri
        .stop_container(&app, Duration::from_secs(0))
        .await?;
    let started = Instant::now();
    node.cri.stop_pod_sandbox(&pod).await?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "sandbox stop took {:?}",
        started.elapsed()
    );
    node.cri.remove_pod_sandbox(&pod).await?;
    Ok(())
}
