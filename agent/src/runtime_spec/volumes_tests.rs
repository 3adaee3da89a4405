use super::*;
use crate::runtime_spec::testpod::pod;

const POD: &str = r#"
metadata: {name: web, namespace: prod, uid: u1}
spec:
  hostname: h
  subdomain: sub
  hostAliases: [{ip: 10.9.9.9, hostnames: [foo]}]
  securityContext: {fsGroup: 2000}
  volumes:
  - {name: data, hostPath: {path: /srv/data, type: DirectoryOrCreate}}
  - {name: sock, hostPath: {path: /run/x.sock, type: Socket}}
  - {name: scratch, emptyDir: {}}
  containers:
  - name: app
    terminationMessagePath: /dev/termination-log
    env: [{name: SUB, value: logs}]
    volumeMounts:
    - {name: data, mountPath: /data, readOnly: true, mountPropagation: HostToContainer}
    - {name: scratch, mountPath: cache, subPathExpr: "$(SUB)/./x"}
    - {name: sock, mountPath: /run/x.sock, mountPropagation: None}
"#;

fn env_of(p: &Pod) -> EnvVars {
    let c = &p.spec.as_ref().unwrap().containers[0];
    super::super::env::resolve_env(
        p,
        c,
        "spec.containers[0]",
        &Default::default(),
        &ApiObjects::default(),
    )
    .unwrap()
}

fn plan(p: &Pod, pod_ips: &[&str]) -> Result<VolumePlan, SpecError> {
    let env = env_of(p);
    let ctx = VolumeContext {
        env: &env,
        pod_ips: pod_ips.iter().map(|s| s.to_string()).collect(),
        cluster_domain: "cluster.local".into(),
        node_hosts_file: "/etc/hosts".into(),
        termination_file_id: "0000abcd".into(),
        sources: VolumeSources {
            objects: &ApiObjects::default(),
            downward: &DownwardContext::default(),
        },
    };
    plan_volumes(p, &p.spec.as_ref().unwrap().containers[0], &ctx)
}

#[test]
fn plans_volumes_mounts_hosts_and_termination_file() {
    let p = pod(POD);
    let plan = plan(&p, &["10.1.0.5"]).unwrap();
    assert_eq!(
        plan.volumes,
        vec![
            VolumeSetup::HostPath {
                volume: "data".into(),
                field: "spec.volumes[0].hostPath".into(),
                path: "/srv/data".into(),
                kind: HostPathType::DirectoryOrCreate
            },
            VolumeSetup::HostPath {
                volume: "sock".into(),
                field: "spec.volumes[1].hostPath".into(),
                path: "/run/x.sock".into(),
                kind: HostPathType::Socket
            },
            VolumeSetup::EmptyDir {
                volume: "scratch".into(),
                field: "spec.volumes[2].emptyDir".into(),
                dir: "volumes/kubernetes.io~empty-dir/scratch".into(),
                fs_group: Some(2000),
                memory: None,
            },
        ]
    );
    let m: Vec<_> = plan
        .mounts
        .iter()
        .map(|m| {
            (
                m.source.clone(),
                m.sub_path.clone().map(|s| (s.path, s.bind)),
                m.container_path.as_str(),
                m.readonly,
                m.propagation,
            )
        })
        .collect();
    assert_eq!(
        m,
        vec![
            (
                MountSource::Host("/srv/data".into()),
                None,
                "/data",
                true,
                MountPropagation::PropagationHostToContainer
            ),
            (
                MountSource::PodDir("volumes/kubernetes.io~empty-dir/scratch".into()),
                Some((
                    PathBuf::from("logs/x"),
                    PathBuf::from("volume-subpaths/scratch/app/1")
                )),
                "/cache",
                false,
                MountPropagation::PropagationPrivate
            ),
            (
                MountSource::Host("/run/x.sock".into()),
                None,
                "/run/x.sock",
                false,
                MountPropagation::PropagationPrivate
            ),
        ]
    );
    match plan.hosts_file {
        Some(HostsFile::Managed { content }) => {
            assert!(
                content.contains("10.1.0.5\th.sub.prod.svc.cluster.local\th\n"),
                "{content}"
            );
            assert!(content.ends_with("10.9.9.9\tfoo\n"), "{content}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        plan.termination_file,
        Some(TerminationFile {
            container: "app".into(),
            id: "0000abcd".into(),
            container_path: "/dev/termination-log".into()
        })
    );
}

#[test]
fn hosts_file_rules() {
    // No pod IPs yet: no hosts file.
    assert_eq!(plan(&pod(POD), &[]).unwrap().hosts_file, None);
    // The container mounts its own /etc/hosts.
    let own = POD.replace("mountPath: /data,", "mountPath: /etc/hosts,");
    assert_eq!(plan(&pod(&own), &["10.1.0.5"]).unwrap().hosts_file, None);
    // Host network: the node's file plus aliases.
    let host = POD.replace("  hostname: h\n", "  hostname: h\n  hostNetwork: true\n");
    assert_eq!(
        plan(&pod(&host), &["192.168.1.10"]).unwrap().hosts_file,
        Some(HostsFile::FromNode {
            node_hosts: "/etc/hosts".into(),
            suffix: "\n# Entries added by HostAliases.\n10.9.9.9\tfoo\n".into()
        })
    );
}

#[test]
fn refusals_name_the_field() {
    let cases = [
        (
            POD.replace("subPathExpr: \"$(SUB)/./x\"", "subPath: /abs"),
            "spec.containers[0].volumeMounts[1].subPath",
        ),
        (
            POD.replace("subPathExpr: \"$(SUB)/./x\"", "subPath: a/../../b"),
            "spec.containers[0].volumeMounts[1].subPath",
        ),
        (
            POD.replace("subPathExpr: \"$(SUB)/./x\"", "subPathExpr: \"$(NOPE)/x\""),
            "spec.containers[0].volumeMounts[1].subPathExpr",
        ),
        (
            POD.replace("subPathExpr: \"$(SUB)/./x\"", "subPathExpr: \"$(SUB)/..\""),
            "spec.containers[0].volumeMounts[1].subPathExpr",
        ),
        (
            POD.replace(
                "mountPropagation: HostToContainer",
                "mountPropagation: Bidirectional",
            ),
            "spec.containers[0].volumeMounts[0].mountPropagation",
        ),
        (
            POD.replace("{name: data, mountPath", "{name: nope, mountPath"),
            "spec.containers[0].volumeMounts[0].name",
        ),
        (
            // The volume name becomes a path component of the subPath's bind mount.
            POD.replace("name: data", "name: \"d/ata\"")
                .replace("mountPath: /data,", "mountPath: /data, subPath: x,"),
            "spec.containers[0].volumeMounts[0].name",
        ),
        (
            POD.replace("emptyDir: {}", "emptyDir: {medium: HugePages}"),
            "spec.volumes[2].emptyDir.medium",
        ),
        (
            POD.replace(
                "emptyDir: {}",
                "emptyDir: {medium: Memory, sizeLimit: lots}",
            ),
            "spec.volumes[2].emptyDir.sizeLimit",
        ),
        (
            POD.replace("emptyDir: {}", "gitRepo: {repository: \"https://x/y.git\"}"),
            "spec.volumes[2].gitRepo",
        ),
        (
            POD.replace("type: Socket", "type: Pipe"),
            "spec.volumes[1].hostPath.type",
        ),
        (
            POD.replace("emptyDir: {}", "nfs: {server: nas, path: /x}"),
            "spec.volumes[2]",
        ),
        (
            POD.replace(
                "readOnly: true,",
                "readOnly: true, recursiveReadOnly: Enabled,",
            ),
            "spec.containers[0].volumeMounts[0].recursiveReadOnly",
        ),
    ];
    for (yaml, want) in cases {
        let err = plan(&pod(&yaml), &["10.1.0.5"]).unwrap_err();
        let field = match &err {
            SpecError::Invalid { field, .. }
            | SpecError::Unsupported { field, .. }
            | SpecError::MissingVolume { field, .. } => field.clone(),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(field, want, "{err}");
    }
    // Bidirectional is fine for a privileged container.
    let privileged = POD
        .replace(
            "mountPropagation: HostToContainer",
            "mountPropagation: Bidirectional",
        )
        .replace(
            "    terminationMessagePath",
            "    securityContext: {privileged: true}\n    terminationMessagePath",
        );
    let plan = plan(&pod(&privileged), &[]).unwrap();
    assert_eq!(
        plan.mounts[0].propagation,
        MountPropagation::PropagationBidirectional
    );
}

#[test]
fn memory_empty_dirs_are_sized_by_their_limit() {
    for (empty_dir, want) in [
        ("{medium: Memory}", TmpfsSize::Default),
        (
            "{medium: Memory, sizeLimit: 64Mi}",
            TmpfsSize::Limit(64 << 20),
        ),
        ("{medium: Memory, sizeLimit: \"0\"}", TmpfsSize::Limit(1)),
    ] {
        let yaml = POD.replace("emptyDir: {}", &format!("emptyDir: {empty_dir}"));
        let plan = plan(&pod(&yaml), &["10.1.0.5"]).unwrap();
        let memory = plan.volumes.iter().find_map(|v| match v {
            VolumeSetup::EmptyDir { memory, .. } => Some(*memory),
            _ => None,
        });
        assert_eq!(memory, Some(Some(want)), "{empty_dir}");
    }
}

#[test]
fn termination_file_ids_differ() {
    let a = new_termination_file_id();
    assert_eq!(a.len(), 8);
    assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(a, new_termination_file_id());
}
