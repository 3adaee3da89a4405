//! Cgroup names: where the node, QoS and pod cgroups live for each driver, the `cgroup_parent`
//! string handed to the runtime, and the way back from a directory name to (QoS class, pod UID).
//! Pure; no I/O.
//!
//! As upstream, a cgroup is named by a list of components (`[<cgroupRoot parts>, "kubepods",
//! "burstable", "pod<uid>"]`). The cgroupfs driver joins them with `/`; the systemd driver escapes
//! `-` to `_` in each component and nests one slice per prefix
//! (`kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`).

use super::CgroupDriver;
use super::qos::QosClass;

const NODE_COMPONENT: &str = "kubepods";
const POD_PREFIX: &str = "pod";
const SLICE_SUFFIX: &str = ".slice";

/// A cgroup name or pod UID that cannot be used as a path component.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A `cgroupRoot` component is `.` or `..`, or contains `_` with the systemd driver (which
    /// escapes `-` as `_`).
    #[error("cgroupRoot {root:?}: component {component:?} is not allowed")]
    Root { root: String, component: String },
    /// A pod UID with characters other than ASCII letters, digits and `-`.
    #[error("pod UID {0:?} is not usable in a cgroup name (letters, digits and '-' only)")]
    Uid(String),
}

/// Computes cgroup paths for one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupNamer {
    driver: CgroupDriver,
    root: Vec<String>,
    per_qos: bool,
}

impl CgroupNamer {
    /// `cgroup_root` is in cgroupfs form (`/`, `/kwkt-abc`), as upstream's `--cgroup-root`.
    pub(crate) fn new(
        driver: CgroupDriver,
        cgroup_root: &str,
        per_qos: bool,
    ) -> Result<Self, NameError> {
        let root: Vec<String> = cgroup_root
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        for component in &root {
            let bad = component == "."
                || component == ".."
                || (driver == CgroupDriver::Systemd && component.contains('_'));
            if bad {
                return Err(NameError::Root {
                    root: cgroup_root.to_string(),
                    component: component.clone(),
                });
            }
        }
        Ok(Self {
            driver,
            root,
            per_qos,
        })
    }

    /// Renders a component list as a path relative to a hierarchy root (`""` is the root).
    fn render(&self, components: &[String]) -> String {
        match self.driver {
            CgroupDriver::Cgroupfs => components.join("/"),
            CgroupDriver::Systemd => {
                let escaped: Vec<String> = components.iter().map(|c| c.replace('-', "_")).collect();
                (1..=escaped.len())
                    .map(|n| format!("{}{SLICE_SUFFIX}", escaped[..n].join("-")))
                    .collect::<Vec<_>>()
                    .join("/")
            }
        }
    }

    fn node_components(&self) -> Vec<String> {
        let mut c = self.root.clone();
        c.push(NODE_COMPONENT.to_string());
        c
    }

    fn qos_components(&self, qos: QosClass) -> Vec<String> {
        let mut c = self.node_components();
        match qos {
            QosClass::Guaranteed => {}
            QosClass::Burstable => c.push("burstable".to_string()),
            QosClass::BestEffort => c.push("besteffort".to_string()),
        }
        c
    }

    /// The configured root (`cgroupRoot`), relative to a hierarchy root.
    pub(crate) fn root_path(&self) -> String {
        self.render(&self.root)
    }

    /// The node-level cgroup (`<root>/kubepods`), or `None` without per-QoS cgroups.
    pub(crate) fn node_path(&self) -> Option<String> {
        self.per_qos.then(|| self.render(&self.node_components()))
    }

    /// The cgroup of a QoS class (Guaranteed pods sit directly in `kubepods`), or `None` without
    /// per-QoS cgroups.
    pub(crate) fn qos_path(&self, qos: QosClass) -> Option<String> {
        self.per_qos.then(|| self.render(&self.qos_components(qos)))
    }

    /// The pod's cgroup, or `None` without per-QoS cgroups (pods then share the root).
    pub(crate) fn pod_path(&self, qos: QosClass, uid: &str) -> Result<Option<String>, NameError> {
        validate_uid(uid)?;
        if !self.per_qos {
            return Ok(None);
        }
        let mut c = self.qos_components(qos);
        c.push(format!("{POD_PREFIX}{uid}"));
        Ok(Some(self.render(&c)))
    }

    /// The `cgroup_parent` upstream passes in the CRI `LinuxPodSandboxConfig`: the absolute
    /// cgroupfs path, or for systemd the expanded slice path
    /// (`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`), of which
    /// runtimes use the last slice name. Without per-QoS cgroups, the root for every pod.
    pub(crate) fn cri_parent(&self, qos: QosClass, uid: &str) -> Result<String, NameError> {
        let path = match self.pod_path(qos, uid)? {
            Some(path) => path,
            None => self.root_path(),
        };
        Ok(format!("/{path}"))
    }

    /// The pod UID in the name of a directory directly under the cgroup of `qos`, if that
    /// directory is a pod cgroup.
    pub(crate) fn parse_pod_dir(&self, qos: QosClass, dir_name: &str) -> Option<String> {
        let uid = match self.driver {
            CgroupDriver::Cgroupfs => dir_name.strip_prefix(POD_PREFIX)?.to_string(),
            CgroupDriver::Systemd => {
                let mut c = self.qos_components(qos);
                c.push(POD_PREFIX.to_string());
                let prefix = c
                    .iter()
                    .map(|p| p.replace('-', "_"))
                    .collect::<Vec<_>>()
                    .join("-");
                dir_name
                    .strip_prefix(&prefix)?
                    .strip_suffix(SLICE_SUFFIX)?
                    .replace('_', "-")
            }
        };
        validate_uid(&uid).ok()?;
        Some(uid)
    }

    /// (QoS class, UID) of a pod cgroup given its path relative to a hierarchy root.
    pub(crate) fn parse_pod_path(&self, path: &str) -> Option<(QosClass, String)> {
        let (parent, leaf) = path.trim_matches('/').rsplit_once('/')?;
        QosClass::ALL.into_iter().find_map(|qos| {
            let qos_path = self.qos_path(qos)?;
            if qos_path != parent {
                return None;
            }
            self.parse_pod_dir(qos, leaf).map(|uid| (qos, uid))
        })
    }
}

/// The slice unit of a systemd-driver cgroup path and its parent slice (`-.slice` at the
/// top): `kubepods.slice/kubepods-burstable.slice` → (`kubepods-burstable.slice`,
/// `kubepods.slice`).
pub(crate) fn slice_unit(path: &str) -> (String, String) {
    let mut parts = path.rsplit('/').filter(|c| !c.is_empty());
    let unit = parts.next().unwrap_or("-.slice");
    let parent = parts.next().unwrap_or("-.slice");
    (unit.to_string(), parent.to_string())
}

/// Pod UIDs become path components: letters, digits and `-` only.
pub(crate) fn validate_uid(uid: &str) -> Result<(), NameError> {
    let ok = !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(NameError::Uid(uid.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1234-abcd-5678";

    fn namer(driver: CgroupDriver, root: &str) -> CgroupNamer {
        CgroupNamer::new(driver, root, true).unwrap()
    }

    #[test]
    fn pod_paths_table() {
        use CgroupDriver::{Cgroupfs, Systemd};
        use QosClass::{BestEffort, Burstable, Guaranteed};
        // (driver, root, qos, relative path, cri parent)
        let cases = [
            (
                Cgroupfs,
                "/",
                Guaranteed,
                "kubepods/pod1234-abcd-5678",
                "/kubepods/pod1234-abcd-5678",
            ),
            (
                Cgroupfs,
                "/",
                Burstable,
                "kubepods/burstable/pod1234-abcd-5678",
                "/kubepods/burstable/pod1234-abcd-5678",
            ),
            (
                Cgroupfs,
                "",
                BestEffort,
                "kubepods/besteffort/pod1234-abcd-5678",
                "/kubepods/besteffort/pod1234-abcd-5678",
            ),
            (
                Cgroupfs,
                "/kwkt-abc",
                Burstable,
                "kwkt-abc/kubepods/burstable/pod1234-abcd-5678",
                "/kwkt-abc/kubepods/burstable/pod1234-abcd-5678",
            ),
            (
                Systemd,
                "/",
                Burstable,
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_abcd_5678.slice",
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_abcd_5678.slice",
            ),
            (
                Systemd,
                "/",
                Guaranteed,
                "kubepods.slice/kubepods-pod1234_abcd_5678.slice",
                "/kubepods.slice/kubepods-pod1234_abcd_5678.slice",
            ),
            (
                Systemd,
                "/kwkt-abc",
                BestEffort,
                "kwkt_abc.slice/kwkt_abc-kubepods.slice/kwkt_abc-kubepods-besteffort.slice/kwkt_abc-kubepods-besteffort-pod1234_abcd_5678.slice",
                "/kwkt_abc.slice/kwkt_abc-kubepods.slice/kwkt_abc-kubepods-besteffort.slice/kwkt_abc-kubepods-besteffort-pod1234_abcd_5678.slice",
            ),
        ];
        for (driver, root, qos, path, parent) in cases {
            let n = namer(driver, root);
            assert_eq!(
                n.pod_path(qos, UID).unwrap().as_deref(),
                Some(path),
                "{driver:?} {root} {qos}"
            );
            assert_eq!(
                n.cri_parent(qos, UID).unwrap(),
                parent,
                "{driver:?} {root} {qos}"
            );
            assert_eq!(
                n.parse_pod_path(path),
                Some((qos, UID.to_string())),
                "{path}"
            );
        }
    }

    #[test]
    fn node_and_qos_paths() {
        let fs = namer(CgroupDriver::Cgroupfs, "/kwkt-abc");
        assert_eq!(fs.node_path().as_deref(), Some("kwkt-abc/kubepods"));
        assert_eq!(
            fs.qos_path(QosClass::Guaranteed).as_deref(),
            Some("kwkt-abc/kubepods")
        );
        assert_eq!(
            fs.qos_path(QosClass::Burstable).as_deref(),
            Some("kwkt-abc/kubepods/burstable")
        );
        assert_eq!(fs.root_path(), "kwkt-abc");
        let sd = namer(CgroupDriver::Systemd, "/");
        assert_eq!(sd.node_path().as_deref(), Some("kubepods.slice"));
        assert_eq!(
            sd.qos_path(QosClass::BestEffort).as_deref(),
            Some("kubepods.slice/kubepods-besteffort.slice")
        );
        assert_eq!(sd.root_path(), "");
    }

    #[test]
    fn without_per_qos_pods_share_the_root() {
        let n = CgroupNamer::new(CgroupDriver::Cgroupfs, "/kwkt-abc", false).unwrap();
        assert_eq!(n.pod_path(QosClass::Burstable, UID).unwrap(), None);
        assert_eq!(n.node_path(), None);
        assert_eq!(n.cri_parent(QosClass::Burstable, UID).unwrap(), "/kwkt-abc");
        let root = CgroupNamer::new(CgroupDriver::Systemd, "/", false).unwrap();
        assert_eq!(root.cri_parent(QosClass::Guaranteed, UID).unwrap(), "/");
    }

    #[test]
    fn parse_rejects_what_is_not_a_pod_cgroup() {
        let fs = namer(CgroupDriver::Cgroupfs, "/");
        assert_eq!(fs.parse_pod_path("kubepods/burstable"), None);
        assert_eq!(fs.parse_pod_path("kubepods/burstable/pod"), None);
        assert_eq!(fs.parse_pod_path("other/burstable/pod1"), None);
        assert_eq!(fs.parse_pod_path("kubepods/burstable/pod1/ctr"), None);
        assert_eq!(fs.parse_pod_dir(QosClass::Guaranteed, "besteffort"), None);
        let sd = namer(CgroupDriver::Systemd, "/");
        assert_eq!(
            sd.parse_pod_dir(QosClass::Guaranteed, "kubepods-burstable.slice"),
            None
        );
        assert_eq!(
            sd.parse_pod_dir(QosClass::Burstable, "kubepods-burstable-podab_cd.slice")
                .as_deref(),
            Some("ab-cd")
        );
        assert_eq!(
            sd.parse_pod_dir(QosClass::Burstable, "kubepods-burstable-podab.scope"),
            None
        );
    }

    #[test]
    fn slice_units_and_parents() {
        let sd = namer(CgroupDriver::Systemd, "/kwkt-abc");
        let pod = sd.pod_path(QosClass::Burstable, UID).unwrap().unwrap();
        assert_eq!(
            slice_unit(&pod),
            (
                "kwkt_abc-kubepods-burstable-pod1234_abcd_5678.slice".to_string(),
                "kwkt_abc-kubepods-burstable.slice".to_string()
            )
        );
        assert_eq!(
            slice_unit(&sd.root_path()),
            ("kwkt_abc.slice".to_string(), "-.slice".to_string())
        );
        assert_eq!(
            slice_unit("/kubepods.slice"),
            ("kubepods.slice".to_string(), "-.slice".to_string())
        );
    }

    #[test]
    fn unsafe_names_are_rejected() {
        let n = namer(CgroupDriver::Cgroupfs, "/");
        for uid in ["", "../x", "a/b", "a_b", "a b"] {
            assert!(n.pod_path(QosClass::Burstable, uid).is_err(), "{uid:?}");
        }
        assert!(CgroupNamer::new(CgroupDriver::Cgroupfs, "/a/../b", true).is_err());
        assert!(CgroupNamer::new(CgroupDriver::Systemd, "/a_b", true).is_err());
        assert!(CgroupNamer::new(CgroupDriver::Cgroupfs, "/a_b", true).is_ok());
    }
}
