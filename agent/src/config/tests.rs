//! Tests of loading whole configurations from disk: defaults, each honoured field, each kind of
//! invalid value, drop-in merging, an upstream-style config, unknown fields, and file errors.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;
use crate::config::convert::HONOURED_FIELDS;
use crate::config::fields::top_level;

const HEADER: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Loads a main file holding `HEADER` + `body`, with no drop-ins.
fn load_body(
    body: &str,
) -> (
    tempfile::TempDir,
    PathBuf,
    Result<LoadedConfig, ConfigError>,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "kubelet.yaml", &format!("{HEADER}{body}"));
    let loaded = load(&path);
    (dir, path, loaded)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn q(s: &str) -> crate::quantity::Quantity {
    crate::quantity::parse(s).unwrap()
}

#[test]
fn a_bare_file_has_upstream_defaults() {
    let (_dir, path, loaded) = load_body("");
    let loaded = loaded.unwrap();
    assert_eq!(loaded.config, KubeletConfig::default());
    assert_eq!(loaded.files, [path]);
    assert!(loaded.ignored_fields.is_empty());
    assert!(loaded.unknown_fields.is_empty());

    let defaults = KubeletConfig::default();
    assert_eq!(defaults.file_check_frequency, Duration::from_secs(20));
    assert_eq!(defaults.sync_frequency, Duration::from_secs(60));
    assert_eq!(defaults.runtime_request_timeout, Duration::from_secs(120));
    assert_eq!(
        defaults.container_runtime_endpoint.socket_path(),
        Path::new("/run/containerd/containerd.sock")
    );
    assert_eq!(
        defaults.container_runtime_endpoint.to_string(),
        "unix:///run/containerd/containerd.sock"
    );
    assert_eq!(defaults.cgroup_driver, CgroupDriver::Cgroupfs);
    assert_eq!(defaults.cgroup_root, "/");
    assert!(defaults.cgroups_per_qos);
    assert_eq!(defaults.pod_pids_limit, -1);
    assert_eq!(defaults.pod_pids_max(), None);
    assert_eq!(defaults.max_pods, 110);
    assert_eq!(defaults.container_log_max_size, 10 * 1024 * 1024);
    assert_eq!(defaults.container_log_max_files, 5);
    assert_eq!(
        defaults.resolv_conf,
        Some(PathBuf::from("/etc/resolv.conf"))
    );
    assert_eq!(defaults.address, ip("0.0.0.0"));
    assert_eq!(defaults.port, 10250);
    assert_eq!(
        defaults.enforce_node_allocatable,
        [NodeAllocatableEnforcement::Pods]
    );
    assert!(defaults.register_node);
    assert!(defaults.register_with_taints.is_empty());
    assert_eq!(
        defaults.node_status_update_frequency,
        Duration::from_secs(10)
    );
    assert_eq!(
        defaults.node_status_report_frequency,
        Duration::from_secs(300)
    );
    assert_eq!(defaults.node_lease_duration_seconds, 40);
    assert_eq!(defaults.node_status_max_images, 50);
}

type Expect = fn(&mut KubeletConfig);

#[test]
fn each_honoured_field_is_read() {
    let cases: &[(&str, Expect)] = &[
        ("staticPodPath: /etc/kwk/manifests", |c| {
            c.static_pod_path = Some("/etc/kwk/manifests".into());
        }),
        ("staticPodPath: ''", |_| {}),
        ("fileCheckFrequency: 5s", |c| {
            c.file_check_frequency = Duration::from_secs(5)
        }),
        ("syncFrequency: 1m30s", |c| {
            c.sync_frequency = Duration::from_secs(90)
        }),
        ("syncFrequency: 1.5h", |c| {
            c.sync_frequency = Duration::from_secs(5400)
        }),
        ("runtimeRequestTimeout: 500ms", |c| {
            c.runtime_request_timeout = Duration::from_millis(500);
        }),
        (
            "containerRuntimeEndpoint: unix:///run/crio/crio.sock",
            |c| {
                c.container_runtime_endpoint =
                    RuntimeEndpoint::from_socket_path("/run/crio/crio.sock".into());
            },
        ),
        (
            "containerRuntimeEndpoint: /run/k3s/containerd/containerd.sock",
            |c| {
                c.container_runtime_endpoint =
                    RuntimeEndpoint::from_socket_path("/run/k3s/containerd/containerd.sock".into());
            },
        ),
        ("cgroupDriver: systemd", |c| {
            c.cgroup_driver = CgroupDriver::Systemd
        }),
        ("cgroupRoot: /kwk", |c| c.cgroup_root = "/kwk".into()),
        ("cgroupsPerQOS: false\nenforceNodeAllocatable: []", |c| {
            c.cgroups_per_qos = false;
            c.enforce_node_allocatable = vec![];
        }),
        ("podPidsLimit: 4096", |c| c.pod_pids_limit = 4096),
        ("podPidsLimit: 0", |c| c.pod_pids_limit = 0),
        ("maxPods: 250", |c| c.max_pods = 250),
        ("maxPods: 250.0", |c| c.max_pods = 250),
        ("containerLogMaxSize: 50Mi", |c| {
            c.container_log_max_size = 50 * 1024 * 1024
        }),
        ("containerLogMaxSize: 1048576", |c| {
            c.container_log_max_size = 1024 * 1024
        }),
        ("containerLogMaxFiles: 2", |c| c.container_log_max_files = 2),
        ("clusterDNS: [10.96.0.10, 'fd00::a']", |c| {
            c.cluster_dns = vec![ip("10.96.0.10"), ip("fd00::a")];
        }),
        ("clusterDomain: cluster.local", |c| {
            c.cluster_domain = "cluster.local".into()
        }),
        ("resolvConf: /run/systemd/resolve/resolv.conf", |c| {
            c.resolv_conf = Some("/run/systemd/resolve/resolv.conf".into());
        }),
        ("resolvConf: ''", |c| c.resolv_conf = None),
        ("podLogsDir: /srv/logs", |c| {
            c.pod_logs_dir = "/srv/logs".into()
        }),
        (
            "kubeReserved: {cpu: 100m, memory: 256Mi, ephemeral-storage: 1Gi, pid: 1000}",
            |c| {
                c.kube_reserved = [
                    (ReservedResource::Cpu, q("100m")),
                    (ReservedResource::Memory, q("256Mi")),
                    (ReservedResource::EphemeralStorage, q("1Gi")),
                    (ReservedResource::Pid, q("1000")),
                ]
                .into();
            },
        ),
        ("systemReserved: {memory: 1024}", |c| {
            c.system_reserved = [(ReservedResource::Memory, q("1024"))].into();
        }),
        ("address: 192.168.1.5", |c| c.address = ip("192.168.1.5")),
        ("address: '::'", |c| c.address = ip("::")),
        ("port: 10260", |c| c.port = 10260),
        ("readOnlyPort: 10255", |c| c.read_only_port = 10255),
        (
            "tlsCertFile: /pki/k.crt\ntlsPrivateKeyFile: /pki/k.key",
            |c| {
                c.tls_cert_file = Some(PathBuf::from("/pki/k.crt"));
                c.tls_private_key_file = Some(PathBuf::from("/pki/k.key"));
            },
        ),
        (
            "authentication: {x509: {clientCAFile: /ca.crt}, anonymous: {enabled: true}, \
             webhook: {enabled: false, cacheTTL: 10s}}",
            |c| {
                c.authentication = crate::config::KubeletAuthentication {
                    client_ca_file: Some(PathBuf::from("/ca.crt")),
                    webhook_enabled: false,
                    webhook_cache_ttl: Duration::from_secs(10),
                    anonymous_enabled: true,
                };
            },
        ),
        (
            "authorization: {mode: AlwaysAllow, webhook: {cacheAuthorizedTTL: 1m, cacheUnauthorizedTTL: 0s}}",
            |c| {
                c.authorization = crate::config::KubeletAuthorization {
                    mode: crate::config::AuthorizationMode::AlwaysAllow,
                    cache_authorized_ttl: Duration::from_secs(60),
                    cache_unauthorized_ttl: Duration::from_secs(30),
                };
            },
        ),
        (
            "enforceNodeAllocatable: [pods, kube-reserved-compressible, pods]\nkubeReservedCgroup: /kube",
            |c| {
                c.enforce_node_allocatable = vec![
                    NodeAllocatableEnforcement::Pods,
                    NodeAllocatableEnforcement::KubeReservedCompressible,
                ];
            },
        ),
        ("enforceNodeAllocatable: [none]", |c| {
            c.enforce_node_allocatable = vec![]
        }),
        ("registerNode: false", |c| c.register_node = false),
        ("localStorageCapacityIsolation: false", |c| {
            c.local_storage_capacity_isolation = false
        }),
        (
            "registerWithTaints: [{key: dedicated, value: db, effect: NoExecute}, {key: node-role.kubernetes.io/control-plane, effect: NoSchedule, timeAdded: null}]",
            |c| {
                c.register_with_taints = vec![
                    NodeTaint {
                        key: "dedicated".into(),
                        value: "db".into(),
                        effect: TaintEffect::NoExecute,
                    },
                    NodeTaint {
                        key: "node-role.kubernetes.io/control-plane".into(),
                        value: String::new(),
                        effect: TaintEffect::NoSchedule,
                    },
                ];
            },
        ),
        ("nodeStatusReportFrequency: 1m", |c| {
            c.node_status_report_frequency = Duration::from_secs(60)
        }),
        ("nodeStatusUpdateFrequency: 4s", |c| {
            // Upstream: the report frequency follows an explicit update frequency.
            c.node_status_update_frequency = Duration::from_secs(4);
            c.node_status_report_frequency = Duration::from_secs(4);
        }),
        (
            "nodeStatusUpdateFrequency: 4s\nnodeStatusReportFrequency: 2m",
            |c| {
                c.node_status_update_frequency = Duration::from_secs(4);
                c.node_status_report_frequency = Duration::from_secs(120);
            },
        ),
        ("nodeLeaseDurationSeconds: 20", |c| {
            c.node_lease_duration_seconds = 20
        }),
        ("nodeStatusMaxImages: -1", |c| c.node_status_max_images = -1),
        ("nodeStatusMaxImages: 0", |c| c.node_status_max_images = 0),
    ];
    for (body, expect) in cases {
        let (_dir, _path, loaded) = load_body(&format!("{body}\n"));
        let loaded = loaded.unwrap_or_else(|e| panic!("{body}: {e}"));
        let mut expected = KubeletConfig::default();
        expect(&mut expected);
        assert_eq!(loaded.config, expected, "{body}");
    }
}

#[test]
fn zero_values_take_defaults_as_upstream() {
    let body = "maxPods: 0\nport: 0\nsyncFrequency: 0s\nfileCheckFrequency: '0'\n\
                runtimeRequestTimeout: 0m\ncgroupDriver: ''\ncgroupRoot: ''\naddress: ''\n\
                containerLogMaxSize: ''\ncontainerRuntimeEndpoint: ''\nclusterDNS: null\n\
                nodeStatusUpdateFrequency: 0s\nnodeStatusReportFrequency: 0s\n\
                nodeLeaseDurationSeconds: 0\nregisterWithTaints: null\n";
    let (_dir, _path, loaded) = load_body(body);
    assert_eq!(loaded.unwrap().config, KubeletConfig::default());
}

#[test]
fn invalid_values_name_file_field_and_reason() {
    let cases: &[(&str, &str)] = &[
        (
            "maxPods: -3",
            "field maxPods: must be greater than 0 (got -3)",
        ),
        (
            "maxPods: '110'",
            "field maxPods: expected an integer, found a string",
        ),
        (
            "maxPods: 1.5",
            "field maxPods: must be an integer (got 1.5)",
        ),
        (
            "maxPods: 3000000000",
            "field maxPods: must be a 32-bit integer (got 3000000000)",
        ),
        (
            "port: 70000",
            "field port: must be between 1 and 65535 (got 70000)",
        ),
        (
            "port: -1",
            "field port: must be between 1 and 65535 (got -1)",
        ),
        (
            "authorization: {mode: RBAC}",
            "field authorization.mode: unknown value \"RBAC\" (expected one of: AlwaysAllow, Webhook)",
        ),
        (
            "authentication: {anonymous: {enabled: 'yes'}}",
            "field authentication.anonymous.enabled: expected a boolean (true or false), found a string",
        ),
        (
            "podPidsLimit: -2",
            "field podPidsLimit: must be -1 (unlimited) or at least 0 (got -2)",
        ),
        (
            "containerLogMaxFiles: 1",
            "field containerLogMaxFiles: must be at least 2 (got 1)",
        ),
        (
            "containerLogMaxFiles: 0",
            "field containerLogMaxFiles: must be at least 2 (got 0)",
        ),
        (
            "cgroupsPerQOS: 'yes'",
            "field cgroupsPerQOS: expected a boolean (true or false), found a string",
        ),
        (
            "syncFrequency: -5s",
            "field syncFrequency: must not be negative (got \"-5s\")",
        ),
        (
            "syncFrequency: 10",
            "field syncFrequency: duration \"10\" is missing a unit (ns, us, ms, s, m, h)",
        ),
        (
            "fileCheckFrequency: 3d",
            "field fileCheckFrequency: duration \"3d\" has unknown unit \"d\" (expected ns, us, ms, s, m, h)",
        ),
        (
            "runtimeRequestTimeout: [2m]",
            "field runtimeRequestTimeout: expected a string, found a list",
        ),
        (
            "cgroupDriver: systemdd",
            "field cgroupDriver: unknown value \"systemdd\" (expected one of: cgroupfs, systemd)",
        ),
        (
            "containerLogMaxSize: 10MB",
            "field containerLogMaxSize: quantity \"10MB\" has an unknown suffix",
        ),
        (
            "containerLogMaxSize: '-1Mi'",
            "field containerLogMaxSize: must be greater than 0 (got \"-1Mi\")",
        ),
        (
            "kubeReserved: {memory: lots}",
            "field kubeReserved.memory: quantity \"lots\" is not a number with an optional suffix (e.g. 100m, 64Mi, 1.5G)",
        ),
        (
            "kubeReserved: {cpu: '-100m'}",
            "field kubeReserved.cpu: must be non-negative (got \"-100m\")",
        ),
        (
            "systemReserved: {gpu: '1'}",
            "field systemReserved.gpu: unknown value \"gpu\" (expected one of: cpu, memory, ephemeral-storage, pid)",
        ),
        (
            "systemReserved: [cpu]",
            "field systemReserved: expected a map of resource name to quantity, found a list",
        ),
        (
            "clusterDNS: [10.96.0.10, 10.96.0.300]",
            "field clusterDNS[1]: \"10.96.0.300\" is not an IP address",
        ),
        (
            "clusterDNS: 10.96.0.10",
            "field clusterDNS: expected a list, found a string",
        ),
        (
            "address: localhost",
            "field address: \"localhost\" is not an IP address",
        ),
        (
            "containerRuntimeEndpoint: tcp://127.0.0.1:2375",
            "field containerRuntimeEndpoint: unsupported endpoint \"tcp://127.0.0.1:2375\": only unix sockets (unix:///path or /path) are supported",
        ),
        (
            "podLogsDir: logs",
            "field podLogsDir: path \"logs\" is not absolute",
        ),
        (
            "containerRuntimeEndpoint: run/containerd.sock",
            "field containerRuntimeEndpoint: socket path \"run/containerd.sock\" is not absolute",
        ),
        (
            "enforceNodeAllocatable: [pods, everything]",
            "field enforceNodeAllocatable[1]: unknown value \"everything\" (expected one of: none, pods, system-reserved, system-reserved-compressible, kube-reserved, kube-reserved-compressible)",
        ),
        (
            "enforceNodeAllocatable: [none, pods]",
            "field enforceNodeAllocatable: \"none\" and \"pods\" cannot be combined",
        ),
        (
            "enforceNodeAllocatable: [kube-reserved, kube-reserved-compressible]\nkubeReservedCgroup: /k",
            "field enforceNodeAllocatable: \"kube-reserved\" and \"kube-reserved-compressible\" cannot be combined",
        ),
        (
            "enforceNodeAllocatable: [pods, system-reserved]",
            "field enforceNodeAllocatable: \"system-reserved\" requires systemReservedCgroup to be set",
        ),
        (
            "cgroupsPerQOS: false",
            "field cgroupsPerQOS: false requires enforceNodeAllocatable to be set to [] or [\"none\"] (it defaults to [\"pods\"])",
        ),
        (
            "cgroupsPerQOS: false\nenforceNodeAllocatable: [pods]",
            "field enforceNodeAllocatable: is not supported unless cgroupsPerQOS is true",
        ),
        (
            "staticPodPath: {a: b}",
            "field staticPodPath: expected a string, found a map",
        ),
        (
            "registerNode: 'no'",
            "field registerNode: expected a boolean (true or false), found a string",
        ),
        (
            "registerWithTaints: [{effect: NoSchedule}]",
            "field registerWithTaints[0].key: is required",
        ),
        (
            "registerWithTaints: [{key: a, effect: NoScheduled}]",
            "field registerWithTaints[0].effect: unknown value \"NoScheduled\" (expected one of: NoSchedule, PreferNoSchedule, NoExecute)",
        ),
        (
            "registerWithTaints: [{key: a}]",
            "field registerWithTaints[0].effect: unknown value \"\" (expected one of: NoSchedule, PreferNoSchedule, NoExecute)",
        ),
        (
            "registerWithTaints: [a]",
            "field registerWithTaints[0]: expected a taint (key, value, effect), found a string",
        ),
        (
            "nodeStatusUpdateFrequency: -10s",
            "field nodeStatusUpdateFrequency: must not be negative (got \"-10s\")",
        ),
        (
            "nodeStatusReportFrequency: 5",
            "field nodeStatusReportFrequency: duration \"5\" is missing a unit (ns, us, ms, s, m, h)",
        ),
        (
            "nodeLeaseDurationSeconds: -40",
            "field nodeLeaseDurationSeconds: must be greater than 0 (got -40)",
        ),
        (
            "nodeStatusMaxImages: -2",
            "field nodeStatusMaxImages: must be -1 (no limit) or at least 0 (got -2)",
        ),
    ];
    for (body, reason) in cases {
        let (_dir, path, loaded) = load_body(&format!("{body}\n"));
        let error = loaded.expect_err(body);
        assert!(
            matches!(error, ConfigError::Field { .. }),
            "{body}: {error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!("{}: {reason}", path.display()),
            "{body}"
        );
    }
}

#[test]
fn drop_ins_merge_in_file_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "kubelet.yaml",
        &format!(
            "{HEADER}maxPods: 50\nclusterDNS: [10.0.0.9, 10.0.0.8]\n\
             kubeReserved: {{cpu: 100m, memory: 1Gi}}\nfeatureGates: {{A: true}}\nport: 10251\n"
        ),
    );
    let drop_ins = drop_in_dir(&main);
    assert_eq!(drop_ins, dir.path().join("kubelet.yaml.d"));
    std::fs::create_dir(&drop_ins).unwrap();
    // Written out of order; read as 10, 20, 30.
    let third = write(
        &drop_ins,
        "30-last.json",
        r#"{"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "maxPods": 70, "port": null}"#,
    );
    let first = write(
        &drop_ins,
        "10-dns.yaml",
        &format!("{HEADER}maxPods: 60\nclusterDNS: [10.0.0.2]\nkubeReserved: {{memory: 2Gi}}\n"),
    );
    let second = write(
        &drop_ins,
        "20-gates.conf",
        &format!("{HEADER}featureGates: {{B: false}}\n"),
    );
    let empty = write(&drop_ins, "25-empty.yaml", "# nothing here yet\n");
    // Not drop-ins: other extensions, hidden files, directories.
    write(&drop_ins, "README.md", "maxPods: -1\n");
    write(&drop_ins, "15-old.yaml.bak", "maxPods: -1\n");
    write(&drop_ins, ".15-editor.yaml", "maxPods: -1\n");
    std::fs::create_dir(drop_ins.join("40-dir.yaml")).unwrap();

    let loaded = load(&main).unwrap();
    assert_eq!(loaded.files, [main, first, second, empty, third]);
    let config = &loaded.config;
    assert_eq!(config.max_pods, 70, "the last drop-in wins");
    assert_eq!(
        config.cluster_dns,
        [ip("10.0.0.2")],
        "a list is replaced whole"
    );
    assert_eq!(
        config.kube_reserved,
        [
            (ReservedResource::Cpu, q("100m")),
            (ReservedResource::Memory, q("2Gi"))
        ]
        .into(),
        "a map is merged key by key"
    );
    assert_eq!(config.port, 10250, "null resets to the default");
    assert_eq!(loaded.ignored_fields, ["featureGates"]);
}

#[test]
fn a_bad_value_in_a_drop_in_names_the_drop_in() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "kubelet.yaml",
        &format!("{HEADER}kubeReserved: {{cpu: 1}}\n"),
    );
    std::fs::create_dir(drop_in_dir(&main)).unwrap();
    write(
        &drop_in_dir(&main),
        "10-ok.yaml",
        &format!("{HEADER}kubeReserved: {{memory: 1Gi}}\n"),
    );
    let bad = write(
        &drop_in_dir(&main),
        "20-bad.yaml",
        &format!("{HEADER}kubeReserved: {{memory: 1GiB}}\n"),
    );
    write(
        &drop_in_dir(&main),
        "30-ok.yaml",
        &format!("{HEADER}kubeReserved: {{cpu: 2}}\n"),
    );
    let error = load(&main).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}: field kubeReserved.memory: quantity \"1GiB\" has an unknown suffix",
            bad.display()
        )
    );
}

#[test]
fn cross_field_rules_apply_to_the_merged_config() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "kubelet.yaml",
        &format!("{HEADER}systemReservedCgroup: /system.slice\n"),
    );
    std::fs::create_dir(drop_in_dir(&main)).unwrap();
    let drop_in = write(
        &drop_in_dir(&main),
        "10-enforce.yaml",
        &format!("{HEADER}enforceNodeAllocatable: [pods, system-reserved]\n"),
    );
    let loaded = load(&main).unwrap();
    assert_eq!(
        loaded.config.enforce_node_allocatable,
        [
            NodeAllocatableEnforcement::Pods,
            NodeAllocatableEnforcement::SystemReserved
        ]
    );

    write(
        &drop_in_dir(&main),
        "20-unset.yaml",
        &format!("{HEADER}systemReservedCgroup: null\n"),
    );
    let error = load(&main).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}: field enforceNodeAllocatable: \"system-reserved\" requires systemReservedCgroup to be set",
            drop_in.display()
        )
    );
}

#[test]
fn drop_ins_must_be_kubelet_configurations_too() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "kubelet.yaml", HEADER);
    std::fs::create_dir(drop_in_dir(&main)).unwrap();
    let bare = write(&drop_in_dir(&main), "10-bare.conf", "maxPods: 10\n");
    let error = load(&main).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}: field apiVersion: must be \"kubelet.config.k8s.io/v1beta1\" (got nothing)",
            bare.display()
        )
    );
}

/// A config as kubeadm and distributions write them for the upstream kubelet.
const UPSTREAM_CONFIG: &str = include_str!("testdata/upstream-kubelet.yaml");

#[test]
fn an_upstream_config_loads_with_its_unimplemented_fields_listed() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "config.yaml", UPSTREAM_CONFIG);
    let loaded = load(&path).unwrap();
    assert_eq!(
        loaded.ignored_fields,
        [
            "cpuManagerReconcilePeriod",
            "featureGates",
            "healthzBindAddress",
            "healthzPort",
            "httpCheckFrequency",
            "logging",
            "memorySwap",
            "rotateCertificates",
            "serializeImagePulls",
            "shutdownGracePeriod",
            "shutdownGracePeriodCriticalPods",
            "streamingConnectionIdleTimeout",
            "tlsCipherSuites",
            "volumeStatsAggPeriod",
        ]
    );
    assert!(
        loaded.unknown_fields.is_empty(),
        "{:?}",
        loaded.unknown_fields
    );
    let config = &loaded.config;
    assert_eq!(config.cgroup_driver, CgroupDriver::Systemd);
    assert_eq!(config.cluster_dns, [ip("10.96.0.10")]);
    assert_eq!(config.cluster_domain, "cluster.local");
    assert_eq!(
        config.container_runtime_endpoint.socket_path(),
        Path::new("/var/run/containerd/containerd.sock")
    );
    assert_eq!(
        config.static_pod_path,
        Some(PathBuf::from("/etc/kubernetes/manifests"))
    );
    assert_eq!(
        config.sync_frequency,
        Duration::from_secs(60),
        "0s means the default"
    );
    assert_eq!(config.max_pods, 200);
    assert_eq!(config.kube_reserved[&ReservedResource::Memory], q("512Mi"));
    assert_eq!(
        config.register_with_taints,
        [NodeTaint {
            key: "node-role.kubernetes.io/control-plane".into(),
            value: String::new(),
            effect: TaintEffect::NoSchedule,
        }]
    );
    assert_eq!(
        config.node_status_report_frequency,
        Duration::from_secs(300),
        "0s means the default"
    );
    // The loader never logs by itself; these helpers must not panic without a subscriber.
    loaded.log_ignored();
    loaded.log_unknown();
}

#[test]
fn unknown_fields_are_reported_with_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "kubelet.yaml",
        &format!(
            "{HEADER}maxPod: 10\nauthentication:\n  webhook:\n    enabled: true\n    ttl: 2m\n"
        ),
    );
    std::fs::create_dir(drop_in_dir(&main)).unwrap();
    let drop_in = write(
        &drop_in_dir(&main),
        "10-x.yaml",
        &format!("{HEADER}kwkSpecial: true\n"),
    );
    let loaded = load(&main).unwrap();
    assert_eq!(
        loaded.unknown_fields,
        [
            (main.clone(), "authentication.webhook.ttl".to_string()),
            (main, "maxPod".to_string()),
            (drop_in, "kwkSpecial".to_string()),
        ]
    );
    assert_eq!(loaded.config.max_pods, 110, "a misspelt field is not read");
    assert!(
        loaded.ignored_fields.is_empty(),
        "authentication is honoured: {:?}",
        loaded.ignored_fields
    );
}

#[test]
fn wrong_api_version_or_kind_is_rejected() {
    let cases: &[(&str, &str)] = &[
        (
            "apiVersion: kubelet.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n",
            "field apiVersion: must be \"kubelet.config.k8s.io/v1beta1\" (got \"kubelet.config.k8s.io/v1alpha1\")",
        ),
        (
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeProxyConfiguration\n",
            "field kind: must be \"KubeletConfiguration\" (got \"KubeProxyConfiguration\")",
        ),
        (
            "kind: KubeletConfiguration\nmaxPods: 3\n",
            "field apiVersion: must be \"kubelet.config.k8s.io/v1beta1\" (got nothing)",
        ),
        (
            "apiVersion: kubelet.config.k8s.io/v1beta1\n",
            "field kind: must be \"KubeletConfiguration\" (got nothing)",
        ),
        (
            "apiVersion: 1\nkind: KubeletConfiguration\n",
            "field apiVersion: must be \"kubelet.config.k8s.io/v1beta1\" (got 1)",
        ),
    ];
    for (text, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "kubelet.yaml", text);
        let error = load(&path).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("{}: {reason}", path.display()),
            "{text}"
        );
    }
}

#[test]
fn file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let error = load(&missing).unwrap_err();
    assert!(matches!(error, ConfigError::Missing { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!("{}: config file does not exist", missing.display())
    );

    let empty = write(dir.path(), "empty.yaml", "\n# only a comment\n");
    let error = load(&empty).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("{}: file is empty", empty.display())
    );

    let list = write(dir.path(), "list.yaml", "- a\n- b\n");
    let error = load(&list).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}: expected a KubeletConfiguration mapping, found a list",
            list.display()
        )
    );

    let broken = write(dir.path(), "broken.yaml", &format!("{HEADER}maxPods: [1\n"));
    let error = load(&broken).unwrap_err();
    assert!(matches!(error, ConfigError::Yaml { .. }), "{error:?}");
    assert!(error.to_string().starts_with(&broken.display().to_string()));

    let duplicate = write(
        dir.path(),
        "dup.yaml",
        &format!("{HEADER}maxPods: 1\nmaxPods: 2\n"),
    );
    assert!(
        matches!(load(&duplicate), Err(ConfigError::Yaml { .. })),
        "duplicate keys"
    );

    let two_documents = write(dir.path(), "two.yaml", &format!("{HEADER}---\n{HEADER}"));
    assert!(
        matches!(load(&two_documents), Err(ConfigError::Yaml { .. })),
        "two documents"
    );

    let bad_json = write(dir.path(), "bad.json", "{\"apiVersion\": ");
    assert!(matches!(load(&bad_json), Err(ConfigError::Json { .. })));

    let not_a_dir = write(dir.path(), "file.yaml", HEADER);
    write(dir.path(), "file.yaml.d", "not a directory");
    assert!(matches!(load(&not_a_dir), Err(ConfigError::ReadDir { .. })));
}

#[test]
fn json_files_load() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"{"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
                   "maxPods": 42, "clusterDNS": ["10.96.0.10"]}"#;
    for name in ["kubelet.json", "kubelet.yaml"] {
        let path = write(dir.path(), name, text);
        let config = load(&path).unwrap().config;
        assert_eq!(config.max_pods, 42, "{name}");
        assert_eq!(config.cluster_dns, [ip("10.96.0.10")], "{name}");
    }
}

#[test]
fn huge_files_and_alias_bombs_are_refused_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let padding = "#".repeat(usize::try_from(MAX_FILE_BYTES).unwrap());
    let huge = write(dir.path(), "huge.yaml", &format!("{HEADER}{padding}\n"));
    let error = load(&huge).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}: file is larger than the 1048576-byte limit",
            huge.display()
        )
    );

    let mut bomb = format!("{HEADER}featureGates:\n  a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    let mut previous = 'a';
    for name in 'b'..='j' {
        bomb.push_str(&format!(
            "  {name}: &{name} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}, \
             *{previous}, *{previous}, *{previous}, *{previous}, *{previous}]\n"
        ));
        previous = name;
    }
    let bomb = write(dir.path(), "bomb.yaml", &bomb);
    let started = Instant::now();
    let error = load(&bomb).unwrap_err();
    let cause = std::error::Error::source(&error)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(cause.contains("alias replay limit"), "{cause}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn small_aliases_still_work() {
    let body = "kubeReserved: &r {cpu: 100m}\nsystemReserved: *r\n";
    let (_dir, _path, loaded) = load_body(body);
    let config = loaded.unwrap().config;
    assert_eq!(config.system_reserved, config.kube_reserved);
}

#[test]
fn honoured_fields_are_upstream_fields() {
    for name in HONOURED_FIELDS {
        assert!(
            top_level(name).is_some(),
            "{name} is not in upstream's schema"
        );
    }
}
