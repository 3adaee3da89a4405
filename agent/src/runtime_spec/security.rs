//! Security settings: the pod's namespace modes, the container's effective security context
//! (pod settings overridden by the container's, as upstream `DetermineEffectiveSecurityContext`)
//! and its CRI form (`determineEffectiveSecurityContext`: capabilities, seccomp, AppArmor,
//! no_new_privs, masked and read-only /proc paths), and the `runAsNonRoot` check.

use std::path::Path;

use k8s_openapi::api::core::v1::{
    AppArmorProfile, Capabilities, Container, Pod, SeccompProfile, SecurityContext,
};
use kwk_cri::api::{
    Capability, Int64Value, LinuxContainerSecurityContext, NamespaceMode, NamespaceOption,
    SecurityProfile, UserNamespace, security_profile::ProfileType,
};

use super::{SpecError, podx};

/// Paths the runtime masks in /proc and /sys unless `procMount: Unmasked` (upstream's list for
/// Kubernetes 1.33, kept in sync with moby).
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// Paths the runtime makes read-only unless `procMount: Unmasked`.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];
/// The per-container AppArmor annotation prefix (deprecated, still honoured upstream).
const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// The pod's namespace modes: network NODE with hostNetwork else POD; pid NODE with hostPID,
/// POD with shareProcessNamespace, else CONTAINER; ipc NODE with hostIPC else POD; user
/// namespace NODE (`hostUsers: false` is not supported yet).
pub fn namespace_options(pod: &Pod) -> Result<NamespaceOption, SpecError> {
    let spec = podx::spec(pod);
    let flag = |f: fn(&k8s_openapi::api::core::v1::PodSpec) -> Option<bool>| {
        spec.and_then(f).unwrap_or(false)
    };
    if spec.and_then(|s| s.host_users) == Some(false) {
        return Err(SpecError::unsupported(
            "spec.hostUsers",
            "hostUsers: false (user namespaces)",
        ));
    }
    let mode =
        |node: bool, otherwise: NamespaceMode| if node { NamespaceMode::Node } else { otherwise };
    let pid = if flag(|s| s.host_pid) {
        NamespaceMode::Node
    } else if flag(|s| s.share_process_namespace) {
        NamespaceMode::Pod
    } else {
        NamespaceMode::Container
    };
    Ok(NamespaceOption {
        network: mode(podx::host_network(pod), NamespaceMode::Pod) as i32,
        pid: pid as i32,
        ipc: mode(flag(|s| s.host_ipc), NamespaceMode::Pod) as i32,
        target_id: String::new(),
        userns_options: Some(UserNamespace {
            mode: NamespaceMode::Node as i32,
            ..Default::default()
        }),
    })
}

/// Whether any container (init, app or ephemeral) is privileged.
pub fn has_privileged_container(pod: &Pod) -> bool {
    let Some(spec) = podx::spec(pod) else {
        return false;
    };
    let privileged = |sc: Option<&SecurityContext>| sc.and_then(|s| s.privileged).unwrap_or(false);
    spec.init_containers
        .iter()
        .flatten()
        .any(|c| privileged(c.security_context.as_ref()))
        || spec
            .containers
            .iter()
            .any(|c| privileged(c.security_context.as_ref()))
        || spec
            .ephemeral_containers
            .iter()
            .flatten()
            .any(|c| privileged(c.security_context.as_ref()))
}

/// The container's security context with the pod-level fields it inherits filled in.
pub fn effective_security_context(pod: &Pod, container: &Container) -> SecurityContext {
    let mut eff = SecurityContext::default();
    if let Some(psc) = podx::spec(pod).and_then(|s| s.security_context.as_ref()) {
        eff.se_linux_options = psc.se_linux_options.clone();
        eff.windows_options = psc.windows_options.clone();
        eff.run_as_user = psc.run_as_user;
        eff.run_as_group = psc.run_as_group;
        eff.run_as_non_root = psc.run_as_non_root;
    }
    let Some(csc) = container.security_context.as_ref() else {
        return eff;
    };
    macro_rules! over {
        ($($field:ident),*) => {$(
            if csc.$field.is_some() {
                eff.$field = csc.$field.clone();
            }
        )*};
    }
    over!(
        se_linux_options,
        windows_options,
        capabilities,
        privileged,
        run_as_user,
        run_as_group,
        run_as_non_root,
        read_only_root_filesystem,
        allow_privilege_escalation,
        proc_mount,
        seccomp_profile,
        app_armor_profile
    );
    eff
}

/// The image's user, as the runtime reports it (`ImageStatus` → `uid` or `username`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageUser {
    /// The numeric user, when the image names one (an image with no user runs as 0).
    pub uid: Option<i64>,
    /// The user name, when the image's user is not numeric.
    pub username: String,
}

/// Settings of the node that shape security profiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityDefaults {
    /// kubelet `seccompDefault`: RuntimeDefault instead of Unconfined when nothing is set.
    pub seccomp_default: bool,
    /// Where `Localhost` seccomp profiles live (`<root dir>/seccomp`).
    pub seccomp_profile_root: std::path::PathBuf,
}

impl Default for SecurityDefaults {
    fn default() -> Self {
        Self {
            seccomp_default: false,
            seccomp_profile_root: "/var/lib/kwk/seccomp".into(),
        }
    }
}

/// The CRI security context of a container.
pub fn container_security_context(
    pod: &Pod,
    container: &Container,
    field: &str,
    image_user: Option<&ImageUser>,
    defaults: &SecurityDefaults,
) -> Result<LinuxContainerSecurityContext, SpecError> {
    let eff = effective_security_context(pod, container);
    check_run_as_non_root(&eff, field, image_user)?;
    let unmasked = eff.proc_mount.as_deref() == Some("Unmasked");
    let to_strings = |paths: &[&str]| {
        if unmasked {
            vec![]
        } else {
            paths.iter().map(|p| p.to_string()).collect()
        }
    };
    let mut sc = LinuxContainerSecurityContext {
        capabilities: eff.capabilities.as_ref().map(runtime_capabilities),
        privileged: eff.privileged.unwrap_or(false),
        run_as_user: eff.run_as_user.map(|value| Int64Value { value }),
        run_as_group: eff.run_as_group.map(|value| Int64Value { value }),
        readonly_rootfs: eff.read_only_root_filesystem.unwrap_or(false),
        no_new_privs: eff.allow_privilege_escalation.is_some_and(|allow| !allow),
        masked_paths: to_strings(DEFAULT_MASKED_PATHS),
        readonly_paths: to_strings(DEFAULT_READONLY_PATHS),
        seccomp: Some(seccomp_profile(pod, container, field, defaults)?),
        namespace_options: Some(namespace_options(pod)?),
        ..Default::default()
    };
    if let Some((profile, legacy)) = apparmor_profile(pod, container, field)? {
        sc.apparmor = Some(profile);
        set_legacy_apparmor(&mut sc, legacy);
    }
    if let (None, Some(user)) = (sc.run_as_user.as_ref(), image_user) {
        sc.run_as_user = user.uid.map(|value| Int64Value { value });
        sc.run_as_username = user.username.clone();
    }
    if let Some(psc) = podx::spec(pod).and_then(|s| s.security_context.as_ref()) {
        sc.supplemental_groups.extend(psc.fs_group);
        sc.supplemental_groups
            .extend(psc.supplemental_groups.iter().flatten());
        if let Some(policy) = psc.supplemental_groups_policy.as_deref() {
            sc.supplemental_groups_policy = match policy {
                "Merge" => 0,
                "Strict" => 1,
                other => {
                    return Err(SpecError::invalid(
                        "spec.securityContext.supplementalGroupsPolicy",
                        format!("unknown policy {other:?}"),
                    ));
                }
            };
        }
    }
    Ok(sc)
}

/// Upstream still fills the deprecated string form for runtimes that predate the structured one.
#[allow(
    deprecated,
    reason = "the deprecated field is what older containerd releases read"
)]
fn set_legacy_apparmor(sc: &mut LinuxContainerSecurityContext, legacy: String) {
    sc.apparmor_profile = legacy;
}

/// Capabilities pass through as written; containerd adds the `CAP_` prefix where missing.
fn runtime_capabilities(caps: &Capabilities) -> Capability {
    Capability {
        add_capabilities: caps.add.clone().unwrap_or_default(),
        drop_capabilities: caps.drop.clone().unwrap_or_default(),
        ..Default::default()
    }
}

/// Upstream `verifyRunAsNonRoot`. With no image user known, a container that must not run as
/// root and names no numeric user is refused (it cannot be verified).
pub fn check_run_as_non_root(
    eff: &SecurityContext,
    field: &str,
    image_user: Option<&ImageUser>,
) -> Result<(), SpecError> {
    if eff.run_as_non_root != Some(true) {
        return Ok(());
    }
    let refuse = |reason: String| {
        Err(SpecError::RunAsNonRoot {
            field: format!("{field}.securityContext.runAsNonRoot"),
            reason,
        })
    };
    if let Some(uid) = eff.run_as_user {
        return if uid == 0 {
            refuse("runAsUser 0 breaks the non-root policy".into())
        } else {
            Ok(())
        };
    }
    match image_user {
        Some(ImageUser { uid: Some(0), .. }) => refuse("the image will run as root".into()),
        Some(ImageUser {
            uid: None,
            username,
        }) if !username.is_empty() => refuse(format!(
            "the image has a non-numeric user ({username}), cannot verify it is not root"
        )),
        Some(_) => Ok(()),
        None => refuse("the image's user is not known, cannot verify it is not root".into()),
    }
}

/// Upstream `getSeccompProfile`: the container's profile, else the pod's, else RuntimeDefault
/// with `seccompDefault`, else Unconfined.
fn seccomp_profile(
    pod: &Pod,
    container: &Container,
    field: &str,
    defaults: &SecurityDefaults,
) -> Result<SecurityProfile, SpecError> {
    let from_container = container
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref());
    let from_pod = podx::spec(pod)
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.seccomp_profile.as_ref());
    let (profile, field) = match (from_container, from_pod) {
        (Some(p), _) => (Some(p), format!("{field}.securityContext.seccompProfile")),
        (None, Some(p)) => (Some(p), "spec.securityContext.seccompProfile".to_string()),
        (None, None) => (None, String::new()),
    };
    let plain = |t: ProfileType| SecurityProfile {
        profile_type: t as i32,
        localhost_ref: String::new(),
    };
    Ok(match profile {
        None if defaults.seccomp_default => plain(ProfileType::RuntimeDefault),
        None => plain(ProfileType::Unconfined),
        Some(SeccompProfile {
            type_,
            localhost_profile,
        }) => match type_.as_str() {
            "RuntimeDefault" => plain(ProfileType::RuntimeDefault),
            "Localhost" => match localhost_profile.as_deref().filter(|p| !p.is_empty()) {
                Some(name) => SecurityProfile {
                    profile_type: ProfileType::Localhost as i32,
                    localhost_ref: join_profile(&defaults.seccomp_profile_root, name),
                },
                None => {
                    return Err(SpecError::invalid(
                        field,
                        "localhostProfile must be set for type Localhost",
                    ));
                }
            },
            _ => plain(ProfileType::Unconfined),
        },
    })
}

fn join_profile(root: &Path, name: &str) -> String {
    root.join(name).to_string_lossy().into_owned()
}

/// Upstream `getAppArmorProfile`: the container's field, else the deprecated annotation, else
/// the pod's field. `None` leaves the runtime default. Returns the profile and its legacy
/// string form (`runtime/default`, `unconfined`, `localhost/<name>`).
fn apparmor_profile(
    pod: &Pod,
    container: &Container,
    field: &str,
) -> Result<Option<(SecurityProfile, String)>, SpecError> {
    let from_annotation = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&format!("{APPARMOR_ANNOTATION_PREFIX}{}", container.name)))
        .map(|value| match value.as_str() {
            "runtime/default" => AppArmorProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            },
            "unconfined" => AppArmorProfile {
                type_: "Unconfined".into(),
                localhost_profile: None,
            },
            other => AppArmorProfile {
                type_: "Localhost".into(),
                localhost_profile: other.strip_prefix("localhost/").map(str::to_string),
            },
        });
    let profile = container
        .security_context
        .as_ref()
        .and_then(|s| s.app_armor_profile.clone())
        .or(from_annotation)
        .or_else(|| {
            podx::spec(pod)
                .and_then(|s| s.security_context.as_ref())
                .and_then(|s| s.app_armor_profile.clone())
        });
    let Some(profile) = profile else {
        return Ok(None);
    };
    let plain = |t: ProfileType| SecurityProfile {
        profile_type: t as i32,
        localhost_ref: String::new(),
    };
    Ok(Some(match profile.type_.as_str() {
        "RuntimeDefault" => (plain(ProfileType::RuntimeDefault), "runtime/default".into()),
        "Unconfined" => (plain(ProfileType::Unconfined), "unconfined".into()),
        "Localhost" => {
            let name = profile
                .localhost_profile
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    SpecError::invalid(
                        format!("{field}.securityContext.appArmorProfile"),
                        "missing localhost profile name",
                    )
                })?;
            (
                SecurityProfile {
                    profile_type: ProfileType::Localhost as i32,
                    localhost_ref: name.clone(),
                },
                format!("localhost/{name}"),
            )
        }
        other => {
            return Err(SpecError::invalid(
                format!("{field}.securityContext.appArmorProfile"),
                format!("unknown AppArmor profile type {other:?}"),
            ));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime_spec::testpod::pod;

    fn sc_of(
        yaml: &str,
        image_user: Option<&ImageUser>,
        defaults: &SecurityDefaults,
    ) -> Result<LinuxContainerSecurityContext, SpecError> {
        let p = pod(yaml);
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        container_security_context(&p, &c, "spec.containers[0]", image_user, defaults)
    }

    #[allow(deprecated, reason = "checks the legacy field upstream still fills")]
    fn legacy_apparmor(sc: &LinuxContainerSecurityContext) -> String {
        sc.apparmor_profile.clone()
    }

    fn root() -> ImageUser {
        ImageUser {
            uid: Some(0),
            username: String::new(),
        }
    }

    #[test]
    fn container_overrides_pod_and_defaults_apply() {
        let yaml = r#"
metadata: {name: p}
spec:
  securityContext: {runAsUser: 1000, runAsGroup: 1000, fsGroup: 2000, supplementalGroups: [3000]}
  containers:
  - name: c
    securityContext:
      runAsUser: 1001
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {add: [NET_ADMIN, CAP_SYS_TIME], drop: [ALL]}
"#;
        let sc = sc_of(yaml, Some(&root()), &SecurityDefaults::default()).unwrap();
        assert_eq!(sc.run_as_user, Some(Int64Value { value: 1001 }));
        assert_eq!(sc.run_as_group, Some(Int64Value { value: 1000 }));
        assert!(sc.readonly_rootfs && sc.no_new_privs && !sc.privileged);
        let caps = sc.capabilities.unwrap();
        assert_eq!(caps.add_capabilities, vec!["NET_ADMIN", "CAP_SYS_TIME"]);
        assert_eq!(caps.drop_capabilities, vec!["ALL"]);
        assert_eq!(sc.supplemental_groups, vec![2000, 3000]);
        assert_eq!(sc.masked_paths.len(), DEFAULT_MASKED_PATHS.len());
        assert_eq!(sc.readonly_paths.len(), DEFAULT_READONLY_PATHS.len());
        assert_eq!(
            sc.seccomp.unwrap().profile_type,
            ProfileType::Unconfined as i32
        );
        assert_eq!(sc.apparmor, None);
    }

    #[test]
    fn no_new_privs_only_when_escalation_is_disallowed() {
        for (ape, want) in [
            ("", false),
            ("allowPrivilegeEscalation: true", false),
            ("allowPrivilegeEscalation: false", true),
        ] {
            let yaml = format!(
                "metadata: {{name: p}}\nspec:\n  containers:\n  - name: c\n    securityContext: {{{ape}}}\n"
            );
            assert_eq!(
                sc_of(&yaml, Some(&root()), &SecurityDefaults::default())
                    .unwrap()
                    .no_new_privs,
                want,
                "{ape}"
            );
        }
    }

    #[test]
    fn unmasked_proc_mount_clears_paths_and_image_user_fills_run_as() {
        let yaml = "metadata: {name: p}\nspec:\n  containers:\n  - name: c\n    securityContext: {procMount: Unmasked}\n";
        let user = ImageUser {
            uid: None,
            username: "nginx".into(),
        };
        let sc = sc_of(yaml, Some(&user), &SecurityDefaults::default()).unwrap();
        assert!(sc.masked_paths.is_empty() && sc.readonly_paths.is_empty());
        assert_eq!(
            (sc.run_as_user, sc.run_as_username.as_str()),
            (None, "nginx")
        );
    }

    #[test]
    fn seccomp_table() {
        let defaults = SecurityDefaults {
            seccomp_default: false,
            seccomp_profile_root: "/var/lib/kwk/seccomp".into(),
        };
        let with_default = SecurityDefaults {
            seccomp_default: true,
            ..defaults.clone()
        };
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a SecurityDefaults,
            Option<(ProfileType, &'a str)>,
        );
        let cases: &[Case<'_>] = &[
            ("", "", &defaults, Some((ProfileType::Unconfined, ""))),
            (
                "",
                "",
                &with_default,
                Some((ProfileType::RuntimeDefault, "")),
            ),
            (
                "seccompProfile: {type: RuntimeDefault}",
                "",
                &defaults,
                Some((ProfileType::RuntimeDefault, "")),
            ),
            (
                "seccompProfile: {type: Unconfined}",
                "",
                &with_default,
                Some((ProfileType::Unconfined, "")),
            ),
            (
                "",
                "seccompProfile: {type: Localhost, localhostProfile: p.json}",
                &defaults,
                Some((ProfileType::Localhost, "/var/lib/kwk/seccomp/p.json")),
            ),
            (
                "seccompProfile: {type: Unconfined}",
                "seccompProfile: {type: RuntimeDefault}",
                &defaults,
                Some((ProfileType::Unconfined, "")),
            ),
            ("seccompProfile: {type: Localhost}", "", &defaults, None),
        ];
        for (csc, psc, d, want) in cases {
            let yaml = format!(
                "metadata: {{name: p}}\nspec:\n  securityContext: {{{psc}}}\n  containers:\n  - name: c\n    securityContext: {{{csc}}}\n"
            );
            let got = sc_of(&yaml, Some(&root()), d)
                .ok()
                .map(|sc| sc.seccomp.unwrap());
            let got = got.map(|s| (s.profile_type, s.localhost_ref));
            let want = want.map(|(t, r)| (t as i32, r.to_string()));
            assert_eq!(got, want, "container {csc:?} pod {psc:?}");
        }
    }

    #[test]
    fn apparmor_field_annotation_and_pod_precedence() {
        let yaml = r#"
metadata:
  name: p
  annotations: {container.apparmor.security.beta.kubernetes.io/c: localhost/k8s-nginx}
spec:
  securityContext: {appArmorProfile: {type: RuntimeDefault}}
  containers: [{name: c}, {name: d}, {name: e, securityContext: {appArmorProfile: {type: Unconfined}}}]
"#;
        let p = pod(yaml);
        let got: Vec<(i32, String, String)> = p
            .spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .map(|c| {
                let sc = container_security_context(
                    &p,
                    c,
                    "f",
                    Some(&root()),
                    &SecurityDefaults::default(),
                )
                .unwrap();
                let a = sc.apparmor.clone().unwrap();
                (a.profile_type, a.localhost_ref, legacy_apparmor(&sc))
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    ProfileType::Localhost as i32,
                    "k8s-nginx".into(),
                    "localhost/k8s-nginx".into()
                ),
                (
                    ProfileType::RuntimeDefault as i32,
                    String::new(),
                    "runtime/default".into()
                ),
                (
                    ProfileType::Unconfined as i32,
                    String::new(),
                    "unconfined".into()
                ),
            ]
        );
    }

    #[test]
    fn run_as_non_root_table() {
        let numeric = ImageUser {
            uid: Some(1000),
            username: String::new(),
        };
        let named = ImageUser {
            uid: None,
            username: "app".into(),
        };
        let cases: &[(&str, Option<&ImageUser>, bool)] = &[
            ("runAsNonRoot: true", Some(&numeric), true),
            ("runAsNonRoot: true", Some(&root()), false),
            ("runAsNonRoot: true", Some(&named), false),
            ("runAsNonRoot: true", None, false),
            ("runAsNonRoot: true, runAsUser: 0", Some(&numeric), false),
            ("runAsNonRoot: true, runAsUser: 7", None, true),
            ("runAsNonRoot: false", Some(&root()), true),
            ("", None, true),
        ];
        for (csc, user, ok) in cases {
            let yaml = format!(
                "metadata: {{name: p}}\nspec:\n  containers:\n  - name: c\n    securityContext: {{{csc}}}\n"
            );
            let got = sc_of(&yaml, *user, &SecurityDefaults::default());
            assert_eq!(got.is_ok(), *ok, "{csc} {user:?}: {got:?}");
            if let Err(e) = got {
                assert!(matches!(e, SpecError::RunAsNonRoot { .. }), "{e}");
            }
        }
    }

    #[test]
    fn host_users_false_is_unsupported() {
        let p = pod("metadata: {name: p}\nspec: {hostUsers: false, containers: []}\n");
        assert!(matches!(
            namespace_options(&p),
            Err(SpecError::Unsupported { .. })
        ));
        let p = pod(
            "metadata: {name: p}\nspec: {shareProcessNamespace: true, hostIPC: true, containers: []}\n",
        );
        let ns = namespace_options(&p).unwrap();
        assert_eq!(
            (ns.pid, ns.ipc),
            (NamespaceMode::Pod as i32, NamespaceMode::Node as i32)
        );
    }
}
