//! Node, QoS and pod cgroups, laid out as the upstream kubelet lays them out, for cgroup v1
//! (including hybrid hosts) and v2, with the cgroupfs and systemd naming drivers.
//!
//! ```text
//! <cgroupRoot>/kubepods                 node allocatable; Guaranteed pods directly below
//! <cgroupRoot>/kubepods/burstable       shares = sum of burstable pods' CPU requests
//! <cgroupRoot>/kubepods/besteffort      shares = 2
//! <cgroupRoot>/kubepods/<qos>/pod<uid>  the pod; the runtime puts its containers below
//! ```
//!
//! Layers: [`qos`] (QoS class, effective requests and limits; from `kwk-api`), [`values`] (what
//! to write) and `names` (where) are pure; `v1`, `v2` and `fs` do the file operations under a configurable
//! mount root, so tests run against a temp-dir tree. Every call is synchronous and cheap (a few
//! mkdir/write/rmdir calls; removal may sleep up to ~150 ms while killed processes exit).
//!
//! With the systemd driver the cgroups are slice units that systemd owns, as with the upstream
//! kubelet: `kubepods.slice`, `kubepods-burstable.slice`, `kubepods-besteffort.slice` and
//! `kubepods[-<qos>]-pod<uid>.slice` (and a slice for a non-root `cgroupRoot`) are started as
//! transient units over D-Bus with their limits as unit properties ([`systemd::properties`]),
//! an already loaded slice (a restart of kwk-node) is adopted and updated with
//! `SetUnitProperties`, and a pod's slice is stopped on removal (whatever systemd leaves behind,
//! such as cgroups a runtime made without telling systemd, is then removed from the
//! filesystem). Nothing is written to cgroupfs by us; it is still read (`list_pods`, existence).
//! Start-up fails if systemd cannot be reached. The calls block for a D-Bus round trip and,
//! for start and stop, until systemd's job is done (milliseconds; at most 30 s).

pub use kwk_api::pod::qos;
pub mod systemd;
pub mod values;

mod fs;
mod names;
pub mod node_memory;
mod stat_dirs;
mod v1;
mod v2;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_systemd;

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

pub use names::NameError;
pub use qos::{QosClass, ResourceError};
pub use stat_dirs::{CgroupLocator, StatDirs};
pub use values::NodeAllocatable;

use names::CgroupNamer;
use systemd::dbus::{ClientOptions, DbusSystemd};
use systemd::properties::{self, Target};
use systemd::{Started, SystemdApi, SystemdError};
use values::ResourceConfig;

/// How cgroups are named and who makes them (`cgroupDriver`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CgroupDriver {
    /// Plain paths: `kubepods/burstable/pod<uid>`, made by kwk-node in cgroupfs.
    #[default]
    Cgroupfs,
    /// Nested slices: `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`,
    /// transient units made by systemd on kwk-node's request.
    Systemd,
}

/// Where and how pod cgroups are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupConfig {
    /// Where the cgroup filesystems are mounted (`/sys/fs/cgroup`).
    pub mount_root: PathBuf,
    pub driver: CgroupDriver,
    /// `cgroupRoot`, in cgroupfs form (`/`, `/kwkt-abc`).
    pub cgroup_root: String,
    /// `cgroupsPerQOS`: without it, no node, QoS or pod cgroups are made and every pod's parent
    /// is the root.
    pub per_qos: bool,
    /// `podPidsLimit` (`-1` or `0`: unlimited).
    pub pod_pids_limit: i64,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        Self {
            mount_root: PathBuf::from("/sys/fs/cgroup"),
            driver: CgroupDriver::Cgroupfs,
            cgroup_root: "/".to_string(),
            per_qos: true,
            pod_pids_limit: -1,
        }
    }
}

/// Why a cgroup operation failed. OS errors carry the path (and the value, for writes) so that
/// kernel refusals such as a memory limit below current usage (`EBUSY`) can be told apart.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no usable cgroup hierarchy under {path}")]
    NoHierarchy { path: PathBuf },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("creating cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("removing cgroup {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("killing pid {pid} in cgroup {path}: {source}")]
    Kill {
        pid: i32,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("pod {pod}: {source}")]
    Resources {
        pod: String,
        #[source]
        source: ResourceError,
    },
    #[error("pod {pod} has no metadata.uid")]
    MissingUid { pod: String },
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Systemd(#[from] SystemdError),
}

/// A pod's cgroup as made by [`PodCgroups::ensure_pod`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodCgroup {
    /// For `LinuxPodSandboxConfig.cgroup_parent`.
    pub cri_parent: String,
    pub qos: QosClass,
    pub uid: String,
    /// The cgroup relative to each hierarchy root; `None` without per-QoS cgroups.
    pub path: Option<String>,
}

#[derive(Debug)]
enum Backend {
    V1(v1::V1),
    V2(v2::V2),
}

impl Backend {
    fn create(&self, cgroup: &str) -> Result<(), CgroupError> {
        match self {
            Backend::V1(v) => v.create(cgroup),
            Backend::V2(v) => v.create(cgroup),
        }
    }

    fn apply(&self, cgroup: &str, config: &ResourceConfig) -> Result<(), CgroupError> {
        match self {
            Backend::V1(v) => v.apply(cgroup, &values::v1_writes(config)),
            Backend::V2(v) => v.apply(cgroup, &values::v2_writes(config)),
        }
    }

    fn exists(&self, cgroup: &str) -> bool {
        match self {
            Backend::V1(v) => v.exists(cgroup),
            Backend::V2(v) => v.exists(cgroup),
        }
    }

    fn remove(&self, cgroup: &str) -> Result<(), CgroupError> {
        match self {
            Backend::V1(v) => v.remove(cgroup),
            Backend::V2(v) => v.remove(cgroup),
        }
    }

    fn children(&self, cgroup: &str) -> Result<Vec<String>, CgroupError> {
        match self {
            Backend::V1(v) => v.children(cgroup),
            Backend::V2(v) => v.children(cgroup),
        }
    }
}

/// The node's pod cgroups.
#[derive(Debug)]
pub struct PodCgroups {
    config: CgroupConfig,
    namer: CgroupNamer,
    backend: Backend,
    /// With the systemd driver: systemd, which makes, updates and removes the slices.
    systemd: Option<Arc<dyn SystemdApi>>,
}

fn pod_label(pod: &Pod) -> String {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("<unnamed>");
    format!("{namespace}/{name}")
}

impl PodCgroups {
    /// Detects the cgroup version under the mount root and validates the names; with the
    /// systemd driver, connects to systemd over D-Bus and fails if it does not answer.
    pub fn new(config: CgroupConfig) -> Result<Self, CgroupError> {
        let mut cgroups = Self::open(config)?;
        if cgroups.config.driver == CgroupDriver::Systemd {
            let client = DbusSystemd::connect(ClientOptions::default())?;
            cgroups.systemd = Some(Arc::new(client));
        }
        Ok(cgroups)
    }

    /// The systemd driver talking to `systemd` (whatever `config.driver` says).
    pub fn with_systemd(
        mut config: CgroupConfig,
        systemd: Arc<dyn SystemdApi>,
    ) -> Result<Self, CgroupError> {
        config.driver = CgroupDriver::Systemd;
        let mut cgroups = Self::open(config)?;
        cgroups.systemd = Some(systemd);
        Ok(cgroups)
    }

    fn open(config: CgroupConfig) -> Result<Self, CgroupError> {
        let namer = CgroupNamer::new(config.driver, &config.cgroup_root, config.per_qos)?;
        let backend = match fs::detect_version(&config.mount_root) {
            fs::Version::V2 => Backend::V2(v2::V2::open(&config.mount_root)?),
            fs::Version::V1 => Backend::V1(v1::V1::discover(&config.mount_root)?),
        };
        Ok(Self {
            config,
            namer,
            backend,
            systemd: None,
        })
    }

    fn target(&self, systemd: &dyn SystemdApi) -> Target {
        Target {
            unified: self.is_v2(),
            systemd_version: systemd.version(),
        }
    }

    /// Makes sure the cgroup exists with `config` applied: cgroupfs creates it (and missing
    /// ancestors) and writes the files; systemd starts the slice, or adopts and updates one
    /// already loaded.
    fn ensure(
        &self,
        path: &str,
        config: &ResourceConfig,
        description: &str,
    ) -> Result<(), CgroupError> {
        let Some(systemd) = &self.systemd else {
            self.backend.create(path)?;
            return self.backend.apply(path, config);
        };
        let (unit, parent) = names::slice_unit(path);
        let target = self.target(systemd.as_ref());
        let properties = properties::new_slice(description, &parent, config, target);
        match systemd.start_transient_unit(&unit, &properties)? {
            Started::Created => {
                tracing::debug!(%unit, "started slice");
                Ok(())
            }
            Started::AlreadyLoaded => {
                systemd.set_unit_properties(&unit, &properties::update(config, target))?;
                Ok(())
            }
        }
    }

    /// Applies `config` to a cgroup that should exist; one that does not is made.
    fn update(
        &self,
        path: &str,
        config: &ResourceConfig,
        description: &str,
    ) -> Result<(), CgroupError> {
        let Some(systemd) = &self.systemd else {
            return self.ensure(path, config, description);
        };
        let (unit, _) = names::slice_unit(path);
        let update = properties::update(config, self.target(systemd.as_ref()));
        match systemd.set_unit_properties(&unit, &update) {
            Ok(()) => Ok(()),
            Err(e) if e.is_no_such_unit() => self.ensure(path, config, description),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a cgroup: systemd stops the slice first; then whatever is left in the
    /// filesystem is killed and removed.
    fn remove(&self, path: &str) -> Result<(), CgroupError> {
        if let Some(systemd) = &self.systemd {
            let (unit, _) = names::slice_unit(path);
            systemd.stop_unit(&unit)?;
        }
        if self.backend.exists(path) {
            self.backend.remove(path)?;
        }
        Ok(())
    }

    /// Whether the host runs the unified (v2) hierarchy.
    pub fn is_v2(&self) -> bool {
        matches!(self.backend, Backend::V2(_))
    }

    pub fn config(&self) -> &CgroupConfig {
        &self.config
    }

    /// Creates the root, `kubepods` (limited to `allocatable` when given, i.e. when
    /// `enforceNodeAllocatable` has `pods`), `burstable` and `besteffort` (shares 2). Burstable
    /// shares come from [`Self::update_qos_shares`]. Without per-QoS cgroups, only the root.
    pub fn ensure_node_hierarchy(
        &self,
        allocatable: Option<NodeAllocatable>,
    ) -> Result<(), CgroupError> {
        let root = self.namer.root_path();
        if !root.is_empty() {
            self.ensure(&root, &ResourceConfig::default(), "kwk-node cgroup root")?;
        }
        let Some(node) = self.namer.node_path() else {
            return Ok(());
        };
        self.ensure(
            &node,
            &values::node_config(allocatable),
            "kwk-node pods (node allocatable)",
        )?;
        for (qos, config) in [
            (QosClass::Burstable, ResourceConfig::default()),
            (QosClass::BestEffort, values::besteffort_config()),
        ] {
            if let Some(path) = self.namer.qos_path(qos) {
                self.ensure(&path, &config, &format!("kwk-node QoS class {qos}"))?;
            }
        }
        Ok(())
    }

    /// Creates (or updates) the pod's cgroup with its limits and returns the runtime's
    /// `cgroup_parent`. Missing ancestors are created too.
    pub fn ensure_pod(&self, pod: &Pod) -> Result<PodCgroup, CgroupError> {
        let uid = pod
            .metadata
            .uid
            .clone()
            .ok_or_else(|| CgroupError::MissingUid {
                pod: pod_label(pod),
            })?;
        let resources = values::PodResources::of(pod).map_err(|source| CgroupError::Resources {
            pod: pod_label(pod),
            source,
        })?;
        let path = self.namer.pod_path(resources.qos, &uid)?;
        if let Some(path) = &path {
            let config = values::pod_config(&resources, self.config.pod_pids_limit);
            let description = format!("kwk-node pod {} ({uid})", pod_label(pod));
            self.ensure(path, &config, &description)?;
        }
        Ok(PodCgroup {
            cri_parent: self.namer.cri_parent(resources.qos, &uid)?,
            qos: resources.qos,
            uid,
            path,
        })
    }

    /// Kills whatever still runs in the pod's cgroup and removes it, under whichever QoS class it
    /// is found (with systemd: stops the pod's slice of each class, then removes what is left).
    /// A pod without a cgroup is fine.
    pub fn remove_pod(&self, uid: &str) -> Result<(), CgroupError> {
        for qos in QosClass::ALL {
            if let Some(path) = self.namer.pod_path(qos, uid)? {
                self.remove(&path)?;
            }
        }
        Ok(())
    }

    /// Every pod cgroup present, as (QoS class, UID), for orphan cleanup.
    pub fn list_pods(&self) -> Result<Vec<(QosClass, String)>, CgroupError> {
        let mut pods = Vec::new();
        for qos in QosClass::ALL {
            let Some(path) = self.namer.qos_path(qos) else {
                continue;
            };
            for name in self.backend.children(&path)? {
                if let Some(uid) = self.namer.parse_pod_dir(qos, &name) {
                    pods.push((qos, uid));
                }
            }
        }
        Ok(pods)
    }

    /// (QoS class, UID) of a pod cgroup path relative to a hierarchy root (a leading `/`, as in
    /// a `cri_parent`, is fine), or `None` for any other cgroup.
    pub fn parse_pod_cgroup(&self, path: &str) -> Option<(QosClass, String)> {
        self.namer.parse_pod_path(path)
    }

    /// Sets the QoS cgroups' CPU shares for the active pods: burstable gets the sum of its pods'
    /// CPU requests, besteffort the minimum.
    pub fn update_qos_shares(&self, pods: &[&Pod]) -> Result<(), CgroupError> {
        let (burstable, besteffort) =
            values::qos_configs(pods).map_err(|source| CgroupError::Resources {
                pod: "(active pods)".to_string(),
                source,
            })?;
        for (qos, config) in [
            (QosClass::Burstable, burstable),
            (QosClass::BestEffort, besteffort),
        ] {
            if let Some(path) = self.namer.qos_path(qos) {
                self.update(&path, &config, &format!("kwk-node QoS class {qos}"))?;
            }
        }
        Ok(())
    }

    /// Removes the whole configured root (with systemd: stops its slice; then kill and rmdir
    /// what is left), for tests and `kwk reset`. Refuses to remove the hierarchy roots
    /// themselves (`cgroupRoot` of `/`).
    pub fn remove_root(&self) -> Result<(), CgroupError> {
        let root = self.namer.root_path();
        if root.is_empty() {
            return Ok(());
        }
        self.remove(&root)
    }
}
