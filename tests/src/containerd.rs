//! [`TestContainerd`]: a containerd of a test's own, with our images imported, torn down on drop.
//!
//! Each instance has its own directory (root, state, socket, opt, runc root, CNI config and IPAM
//! state), its own network namespace (where containerd, CNI's bridge and iptables rules live),
//! and its own cgroup parent for pods. Teardown first asks CRI to stop and remove every sandbox,
//! then kills containerd by PID, its shims and anything left in the test's cgroups, unmounts
//! what is left under its directory and removes directory, cgroups and namespace: also when the
//! test panicked.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kwk_cri::import::{
    CRI_NAMESPACE, ContainerdClient, ImportOptions, ImportedImage, import_archive,
};
use kwk_cri::{ConnectOptions, CriClient, Timeouts, api};

use crate::cleanup;
use crate::config::{Layout, cni_conflist, containerd_toml};
use crate::images::{TestImages, test_images};
use crate::netns::NetNs;
use crate::pods::{PodShape, sandbox_config};

/// A running, isolated containerd with the test images imported.
#[derive(Debug)]
pub struct TestContainerd {
    pub cri: CriClient,
    pub native: ContainerdClient,
    pub images: &'static TestImages,
    instance: Instance,
}

/// Skips privileged tests only when asked to; otherwise a missing prerequisite fails the test.
/// Returns `false` when the test should return early.
pub fn privileged_tests_enabled() -> bool {
    if std::env::var_os("KWK_SKIP_PRIVILEGED").is_some() {
        eprintln!("KWK_SKIP_PRIVILEGED is set: skipping a privileged test");
        return false;
    }
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test drives a real containerd and needs root (set KWK_SKIP_PRIVILEGED=1 to skip)"
    );
    true
}

impl TestContainerd {
    /// Starts a fresh containerd and imports the test images (pause and busybox).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_importing(true).await
    }

    /// Starts a fresh containerd with `pause` imported (it must be, for any sandbox to start)
    /// and busybox only if `busybox`.
    pub async fn start_importing(busybox: bool) -> anyhow::Result<Self> {
        Self::start_with(busybox, |_| {}).await
    }

    /// [`Self::start_importing`] with the layout adjusted first (e.g. kwk-cni instead of the
    /// reference plugins, another network list: `cni_plugins`, `cni_network`).
    pub async fn start_with(
        busybox: bool,
        configure: impl FnOnce(&mut Layout),
    ) -> anyhow::Result<Self> {
        let images = tokio::task::spawn_blocking(test_images).await??;
        let id = unique_id();
        let dir = PathBuf::from(format!("/tmp/kwkt-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut layout = Layout::new(&dir, &images.pause_reference);
        configure(&mut layout);
        // From here on, dropping `instance` tears down whatever was started.
        let mut instance = Instance::spawn(layout, &id)?;
        let (cri, native) = instance
            .connect()
            .await
            .with_context(|| instance.diagnostics())?;
        let this = Self {
            cri,
            native,
            images,
            instance,
        };
        this.import(&images.pause_archive)
            .await
            .with_context(|| this.diagnostics())?;
        if busybox {
            this.import(&images.busybox_archive)
                .await
                .with_context(|| this.diagnostics())?;
        }
        Ok(this)
    }

    /// Imports an archive and waits until CRI sees its images (CRI learns of new images from
    /// containerd's event stream, a moment after the import returns).
    pub async fn import(&self, archive: &Path) -> anyhow::Result<Vec<ImportedImage>> {
        let imported = import_archive(&self.native, archive, &ImportOptions::default()).await?;
        for image in &imported {
            wait_for(
                Duration::from_secs(10),
                "CRI to see the imported image",
                || async { matches!(self.cri.image_status(&image.name).await, Ok(Some(_))) },
            )
            .await?;
        }
        Ok(imported)
    }

    /// Where the containers of pod `name` log.
    pub fn pod_log_dir(&self, name: &str) -> PathBuf {
        self.instance.layout.pod_logs().join(name)
    }

    /// A sandbox configuration for pod `name` on this node (creating its log directory).
    pub fn sandbox(&self, name: &str, shape: PodShape) -> anyhow::Result<api::PodSandboxConfig> {
        let log_dir = self.pod_log_dir(name);
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        Ok(sandbox_config(
            name,
            &self.instance.cgroup_root,
            &log_dir,
            shape,
        ))
    }

    pub fn layout(&self) -> &Layout {
        &self.instance.layout
    }

    /// The cgroup path under which tests put their pods (`/kwkt-<id>`); removed on teardown.
    pub fn cgroup_root(&self) -> &str {
        &self.instance.cgroup_root
    }

    pub fn netns(&self) -> &NetNs {
        self.instance
            .netns
            .as_ref()
            .expect("the netns lives until drop")
    }

    pub fn socket(&self) -> PathBuf {
        self.instance.layout.socket()
    }

    /// The tail of containerd's log, for failure messages.
    pub fn diagnostics(&self) -> String {
        self.instance.diagnostics()
    }
}

/// The processes, files, cgroups and namespace of one test containerd.
#[derive(Debug)]
struct Instance {
    layout: Layout,
    cgroup_root: String,
    netns: Option<NetNs>,
    child: Option<Child>,
    cri: Option<CriClient>,
}

impl Instance {
    /// Writes configuration, creates the namespace and spawns containerd inside it.
    fn spawn(layout: Layout, id: &str) -> anyhow::Result<Self> {
        let mut this = Self {
            layout,
            cgroup_root: format!("/kwkt-{id}"),
            netns: None,
            child: None,
            cri: None,
        };
        let layout = &this.layout;
        for dir in [
            layout.cni_conf_dir(),
            layout.cni_data_dir(),
            layout.pod_logs(),
        ] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(layout.config_file(), containerd_toml(layout))?;
        if let Some(conflist) = cni_conflist(layout) {
            std::fs::write(layout.cni_conf_dir().join("10-kwk-test.conflist"), conflist)?;
        }
        for (link, target) in layout.cni_bin_links() {
            if let Some(dir) = link.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::os::unix::fs::symlink(&target, &link)
                .with_context(|| format!("linking {} to {}", link.display(), target.display()))?;
        }
        let netns = this.netns.insert(NetNs::create(&format!("kwkt-{id}"))?);
        let log = std::fs::File::create(layout.log_file())?;
        let config = layout.config_file();
        let child = netns.run(|| {
            Command::new("containerd")
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
        })?;
        this.child =
            Some(child.context("starting containerd (is the containerd package installed?)")?);
        Ok(this)
    }

    async fn connect(&mut self) -> anyhow::Result<(CriClient, ContainerdClient)> {
        let socket = self.layout.socket();
        let options = ConnectOptions {
            attempts: 100,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
        };
        let cri = CriClient::connect(&socket, &options, Timeouts::default()).await?;
        self.cri = Some(cri.clone());
        let native = ContainerdClient::connect(&socket, &options, CRI_NAMESPACE).await?;
        wait_for(Duration::from_secs(20), "CRI to answer Version", || async {
            cri.version().await.is_ok()
        })
        .await?;
        Ok((cri, native))
    }

    fn diagnostics(&self) -> String {
        let log = std::fs::read_to_string(self.layout.log_file()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        format!(
            "containerd log ({}):\n{}",
            self.layout.log_file().display(),
            tail.join("\n")
        )
    }

    /// Stops and removes every sandbox through CRI (so CNI DEL runs).
    async fn remove_all_sandboxes(cri: &CriClient) {
        let Ok(sandboxes) = cri.list_pod_sandbox(None).await else {
            return;
        };
        for sandbox in sandboxes {
            let _ = cri.stop_pod_sandbox(&sandbox.id).await;
            let _ = cri.remove_pod_sandbox(&sandbox.id).await;
        }
    }

    fn teardown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(cri) = self.cri.take() {
            // Drop may run inside a runtime (a failing async test): use a thread of our own.
            let graceful = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(runtime) = runtime {
                    runtime.block_on(async {
                        let budget = Duration::from_secs(20);
                        let _ =
                            tokio::time::timeout(budget, Self::remove_all_sandboxes(&cri)).await;
                    });
                }
            });
            let _ = graceful.join();
        }
        if let Some(mut child) = self.child.take() {
            cleanup::stop_process(child.id(), Duration::from_secs(5));
            let _ = child.wait();
        }
        let socket = self.layout.socket().to_string_lossy().into_owned();
        cleanup::kill_processes_mentioning(&socket);
        problems.extend(cleanup::remove_cgroups(&self.cgroup_root));
        problems.extend(cleanup::unmount_below(&self.layout.dir));
        problems.extend(cleanup::remove_dir(&self.layout.dir));
        drop(self.netns.take());
        problems
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        for problem in self.teardown() {
            eprintln!("warning: teardown: {problem}");
        }
    }
}

/// `<pid>-<n>`: unique per process and instance, short enough for socket paths.
fn unique_id() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `ready` every 20 ms until it holds or `within` passes.
pub async fn wait_for<F, Fut>(within: Duration, what: &str, mut ready: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if ready().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
