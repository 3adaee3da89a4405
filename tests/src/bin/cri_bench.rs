//! `cri-bench`: what `kwk-cri` costs on top of raw gRPC, and how fast image import is.
//!
//! Against a real, isolated containerd (the test harness; needs root), every CRI call is timed
//! through `kwk-cri` and through the bare generated tonic client on the same socket, alternating
//! the two each repetition so drift hits both alike. Prints medians and the difference. Then
//! times a cold import of the busybox test image (fresh containerd each time) and warm
//! re-imports. Numbers are printed, never asserted.
//!
//! ```text
//! sudo cargo run --release -p kwk-tests --bin cri-bench -- [--reps N]
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_cri::v1 as api;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use kwk_cri::import::{ImportOptions, import_archive};
use kwk_cri::{ConnectOptions, CriClient, connect::connect_unix, image_spec};
use kwk_tests::TestContainerd;
use kwk_tests::pods::{PodShape, container_config, limits};
use tonic::transport::Channel;

#[derive(Default)]
struct Samples(BTreeMap<&'static str, (Vec<Duration>, Vec<Duration>)>);

impl Samples {
    fn add(&mut self, call: &'static str, kwk: bool, took: Duration) {
        let entry = self.0.entry(call).or_default();
        if kwk {
            entry.0.push(took)
        } else {
            entry.1.push(took)
        }
    }

    fn print(&self) {
        println!(
            "{:<26} {:>5} {:>12} {:>12} {:>12}",
            "call", "reps", "kwk-cri ms", "raw ms", "overhead ms"
        );
        let mut worst: Option<(&str, f64)> = None;
        for (call, (kwk, raw)) in &self.0 {
            let (k, r) = (median_ms(kwk), median_ms(raw));
            println!(
                "{call:<26} {:>5} {k:>12.3} {r:>12.3} {:>12.3}",
                kwk.len().min(raw.len()),
                k - r
            );
            if worst.is_none_or(|(_, w)| k - r > w) {
                worst = Some((call, k - r));
            }
        }
        if let Some((call, overhead)) = worst {
            println!("largest median overhead: {overhead:.3} ms ({call})");
        }
    }
}

fn median_ms(samples: &[Duration]) -> f64 {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    match ms.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => ms[n / 2],
        n => (ms[n / 2 - 1] + ms[n / 2]) / 2.0,
    }
}

async fn time<T, E: std::fmt::Debug>(
    fut: impl Future<Output = Result<T, E>>,
) -> anyhow::Result<(T, Duration)> {
    let started = Instant::now();
    let out = fut.await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok((out, started.elapsed()))
}

struct Raw {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

/// Times the calls that read state, `reps` times each, alternating clients.
async fn bench_reads(
    cri: &CriClient,
    raw: &Raw,
    pod: &str,
    ctr: &str,
    image: &str,
    reps: usize,
    s: &mut Samples,
) -> anyhow::Result<()> {
    for rep in 0..reps * 2 {
        let kwk = rep % 2 == 0;
        let mut rt = raw.runtime.clone();
        let mut im = raw.images.clone();
        macro_rules! pair {
            ($name:literal, $kwk:expr, $raw:expr) => {{
                let took = if kwk {
                    time($kwk).await?.1
                } else {
                    time($raw).await?.1
                };
                s.add($name, kwk, took);
            }};
        }
        pair!(
            "Version",
            cri.version(),
            rt.version(api::VersionRequest {
                version: "v1".into()
            })
        );
        pair!(
            "Status",
            cri.status(false),
            rt.status(api::StatusRequest { verbose: false })
        );
        pair!(
            "ListPodSandbox",
            cri.list_pod_sandbox(None),
            rt.list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
        );
        pair!(
            "PodSandboxStatus",
            cri.pod_sandbox_status(pod, false),
            rt.pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: pod.into(),
                verbose: false
            })
        );
        pair!(
            "ListContainers",
            cri.list_containers(None),
            rt.list_containers(api::ListContainersRequest { filter: None })
        );
        pair!(
            "ContainerStatus",
            cri.container_status(ctr, false),
            rt.container_status(api::ContainerStatusRequest {
                container_id: ctr.into(),
                verbose: false
            })
        );
        pair!(
            "ContainerStats",
            cri.container_stats(ctr),
            rt.container_stats(api::ContainerStatsRequest {
                container_id: ctr.into()
            })
        );
        pair!(
            "ListContainerStats",
            cri.list_container_stats(None),
            rt.list_container_stats(api::ListContainerStatsRequest { filter: None })
        );
        pair!(
            "PodSandboxStats",
            cri.pod_sandbox_stats(pod),
            rt.pod_sandbox_stats(api::PodSandboxStatsRequest {
                pod_sandbox_id: pod.into()
            })
        );
        pair!(
            "ListPodSandboxStats",
            cri.list_pod_sandbox_stats(None),
            rt.list_pod_sandbox_stats(api::ListPodSandboxStatsRequest { filter: None })
        );
        pair!(
            "UpdateContainerResources",
            cri.update_container_resources(ctr, limits(500, 64 << 20)),
            rt.update_container_resources(api::UpdateContainerResourcesRequest {
                container_id: ctr.into(),
                linux: Some(limits(500, 64 << 20)),
                ..Default::default()
            })
        );
        pair!(
            "ReopenContainerLog",
            cri.reopen_container_log(ctr),
            rt.reopen_container_log(api::ReopenContainerLogRequest {
                container_id: ctr.into()
            })
        );
        pair!(
            "ExecSync",
            cri.exec_sync(ctr, vec!["true".into()], Duration::from_secs(10)),
            rt.exec_sync(api::ExecSyncRequest {
                container_id: ctr.into(),
                cmd: vec!["true".into()],
                timeout: 10
            })
        );
        let exec = api::ExecRequest {
            container_id: ctr.into(),
            cmd: vec!["sh".into()],
            stdout: true,
            ..Default::default()
        };
        pair!("Exec", cri.exec(exec.clone()), rt.exec(exec.clone()));
        let attach = api::AttachRequest {
            container_id: ctr.into(),
            stdout: true,
            ..Default::default()
        };
        pair!(
            "Attach",
            cri.attach(attach.clone()),
            rt.attach(attach.clone())
        );
        pair!(
            "PortForward",
            cri.port_forward(pod, vec![80]),
            rt.port_forward(api::PortForwardRequest {
                pod_sandbox_id: pod.into(),
                port: vec![80]
            })
        );
        pair!(
            "ImageStatus",
            cri.image_status(image),
            im.image_status(api::ImageStatusRequest {
                image: Some(image_spec(image)),
                verbose: false
            })
        );
        pair!(
            "ListImages",
            cri.list_images(None),
            im.list_images(api::ListImagesRequest { filter: None })
        );
        pair!(
            "ImageFsInfo",
            cri.image_fs_info(),
            im.image_fs_info(api::ImageFsInfoRequest {})
        );
        // An image that is present and a remove of an absent one (neither changes state).
        pair!(
            "RemoveImage (absent)",
            cri.remove_image("localhost/kwk/absent:1"),
            im.remove_image(api::RemoveImageRequest {
                image: Some(image_spec("localhost/kwk/absent:1"))
            })
        );
    }
    Ok(())
}

/// Times whole pod life cycles call by call, alternating clients.
async fn bench_lifecycle(
    node: &TestContainerd,
    raw: &Raw,
    reps: usize,
    s: &mut Samples,
) -> anyhow::Result<()> {
    let cri = &node.cri;
    for rep in 0..reps * 2 {
        let kwk = rep % 2 == 0;
        let name = format!("cycle-{rep}");
        let sandbox = node.sandbox(
            &name,
            PodShape {
                host_network: false,
                shared_pid: false,
            },
        )?;
        let config = container_config("app", &node.images.busybox_reference, &["sleep", "3600"]);
        let mut rt = raw.runtime.clone();
        if kwk {
            let (pod, t) = time(cri.run_pod_sandbox(sandbox.clone(), "")).await?;
            s.add("RunPodSandbox", true, t);
            let (ctr, t) = time(cri.create_container(&pod, config, sandbox)).await?;
            s.add("CreateContainer", true, t);
            s.add(
                "StartContainer",
                true,
                time(cri.start_container(&ctr)).await?.1,
            );
            s.add(
                "StopContainer",
                true,
                time(cri.stop_container(&ctr, Duration::ZERO)).await?.1,
            );
            s.add(
                "RemoveContainer",
                true,
                time(cri.remove_container(&ctr)).await?.1,
            );
            s.add(
                "StopPodSandbox",
                true,
                time(cri.stop_pod_sandbox(&pod)).await?.1,
            );
            s.add(
                "RemovePodSandbox",
                true,
                time(cri.remove_pod_sandbox(&pod)).await?.1,
            );
        } else {
            let (pod, t) = time(rt.run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(sandbox.clone()),
                runtime_handler: String::new(),
            }))
            .await?;
            s.add("RunPodSandbox", false, t);
            let pod = pod.into_inner().pod_sandbox_id;
            let (ctr, t) = time(rt.create_container(api::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox),
            }))
            .await?;
            s.add("CreateContainer", false, t);
            let ctr = ctr.into_inner().container_id;
            s.add(
                "StartContainer",
                false,
                time(rt.start_container(api::StartContainerRequest {
                    container_id: ctr.clone(),
                }))
                .await?
                .1,
            );
            s.add(
                "StopContainer",
                false,
                time(rt.stop_container(api::StopContainerRequest {
                    container_id: ctr.clone(),
                    timeout: 0,
                }))
                .await?
                .1,
            );
            s.add(
                "RemoveContainer",
                false,
                time(rt.remove_container(api::RemoveContainerRequest { container_id: ctr }))
                    .await?
                    .1,
            );
            s.add(
                "StopPodSandbox",
                false,
                time(rt.stop_pod_sandbox(api::StopPodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                }))
                .await?
                .1,
            );
            s.add(
                "RemovePodSandbox",
                false,
                time(rt.remove_pod_sandbox(api::RemovePodSandboxRequest {
                    pod_sandbox_id: pod,
                }))
                .await?
                .1,
            );
        }
    }
    Ok(())
}

async fn bench_import(reps: usize) -> anyhow::Result<()> {
    let (mut cold, mut warm, mut ctr_cold, mut ctr_warm) = (vec![], vec![], vec![], vec![]);
    for _ in 0..reps.clamp(1, 5) {
        let node = TestContainerd::start_importing(false).await?;
        let archive = &node.images.busybox_archive;
        let (_, t) = time(import_archive(
            &node.native,
            archive,
            &ImportOptions::default(),
        ))
        .await?;
        cold.push(t);
        for _ in 0..reps {
            let (imported, t) = time(import_archive(
                &node.native,
                archive,
                &ImportOptions::default(),
            ))
            .await?;
            anyhow::ensure!(
                imported.iter().all(|i| i.was_present()),
                "warm import changed something"
            );
            warm.push(t);
        }
        drop(node);
        // The reference: `ctr images import` (which also unpacks) on a fresh containerd.
        let node = TestContainerd::start_importing(false).await?;
        ctr_cold.push(ctr_import(&node).await?);
        for _ in 0..reps.min(10) {
            ctr_warm.push(ctr_import(&node).await?);
        }
    }
    let size = std::fs::metadata(&kwk_tests::images::test_images()?.busybox_archive)?.len();
    println!(
        "\nimport of the busybox test image ({:.1} MiB archive), medians",
        size as f64 / (1 << 20) as f64
    );
    println!("{:<28} {:>10} {:>10}", "", "cold ms", "warm ms");
    println!(
        "{:<28} {:>10.1} {:>10.2}",
        "kwk-cri (native API)",
        median_ms(&cold),
        median_ms(&warm)
    );
    println!(
        "{:<28} {:>10.1} {:>10.2}",
        "ctr images import (process)",
        median_ms(&ctr_cold),
        median_ms(&ctr_warm)
    );
    println!(
        "cold: {} fresh containerds each; warm: {} and {} re-imports",
        cold.len(),
        warm.len(),
        ctr_warm.len()
    );
    Ok(())
}

/// Times `ctr images import` of the busybox archive, whole process included.
async fn ctr_import(node: &TestContainerd) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let status = tokio::process::Command::new("ctr")
        .arg("--address")
        .arg(node.socket())
        .args(["-n", "k8s.io", "images", "import"])
        .arg(&node.images.busybox_archive)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .context("running ctr")?;
    anyhow::ensure!(status.success(), "ctr images import failed: {status}");
    Ok(started.elapsed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut reps = 30;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--reps" => reps = args.next().context("--reps needs a number")?.parse()?,
            other => anyhow::bail!("unknown argument {other:?} (only --reps N)"),
        }
    }
    let node = TestContainerd::start().await?;
    let channel = connect_unix(&node.socket(), &ConnectOptions::default()).await?;
    let raw = Raw {
        runtime: RuntimeServiceClient::new(channel.clone())
            .max_decoding_message_size(kwk_cri::MAX_MESSAGE_BYTES),
        images: ImageServiceClient::new(channel)
            .max_decoding_message_size(kwk_cri::MAX_MESSAGE_BYTES),
    };

    // One long-running pod for the read-only calls.
    let sandbox = node.sandbox(
        "bench",
        PodShape {
            host_network: false,
            shared_pid: false,
        },
    )?;
    let pod = node.cri.run_pod_sandbox(sandbox.clone(), "").await?;
    let ctr = node
        .cri
        .create_container(
            &pod,
            container_config("app", &node.images.busybox_reference, &["sleep", "3600"]),
            sandbox,
        )
        .await?;
    node.cri.start_container(&ctr).await?;

    let mut samples = Samples::default();
    bench_reads(
        &node.cri,
        &raw,
        &pod,
        &ctr,
        &node.images.busybox_reference,
        reps,
        &mut samples,
    )
    .await?;
    bench_lifecycle(&node, &raw, reps, &mut samples).await?;
    println!(
        "CRI calls against containerd {} (medians; {reps} reps per client, interleaved)\n",
        node.cri.version().await?.runtime_version
    );
    samples.print();
    drop(node);

    bench_import(reps).await
}
