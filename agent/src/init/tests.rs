use std::os::unix::fs::PermissionsExt;

use super::*;

fn options(dir: &Path) -> InitOptions {
    InitOptions {
        layout: Layout::new(dir.join("etc"), dir.join("var")),
        node_name: "server-1".into(),
        advertise_address: "10.1.2.3".parse().expect("ip"),
        apiserver_port: 6443,
        admin_server: "https://10.1.2.3:6443".into(),
        image: "localhost/kwk/control-plane:0.1.0".into(),
        service_cidr: "10.96.0.0/12".into(),
        cluster_cidr: "10.244.0.0/16".into(),
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn writes_everything_once_and_keeps_it_on_a_second_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = options(dir.path());
    let first = init(&options).expect("first init");
    assert!(
        first.files.iter().all(|(_, o)| *o == FileOutcome::Written),
        "{:?}",
        first.files
    );
    let layout = &options.layout;
    let admin = layout.kubeconfig("admin");
    let before = std::fs::read(&admin).expect("admin kubeconfig");

    let second = init(&options).expect("second init");
    assert!(second.all_kept(), "{:?}", second.files);
    assert_eq!(second.files.len(), first.files.len());
    assert_eq!(
        std::fs::read(&admin).expect("admin"),
        before,
        "not rewritten"
    );

    assert_eq!(mode(&admin), 0o600);
    assert_eq!(mode(&layout.pair("kubelet").1), 0o600);
    assert_eq!(mode(&layout.pair("ca").0), 0o644);
}

#[test]
fn a_half_written_pair_is_reissued_and_other_files_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = options(dir.path());
    init(&options).expect("first init");
    let (cert, key) = options.layout.pair("kubelet");
    std::fs::remove_file(&key).expect("rm key");
    let old_cert = std::fs::read(&cert).expect("cert");
    let report = init(&options).expect("second init");
    let written: Vec<&PathBuf> = report
        .files
        .iter()
        .filter(|(_, o)| *o == FileOutcome::Written)
        .map(|(p, _)| p)
        .collect();
    assert_eq!(written, vec![&cert]);
    assert!(key.exists());
    assert_ne!(std::fs::read(&cert).expect("cert"), old_cert);
}

#[test]
fn kubeconfigs_point_at_the_right_server_with_the_right_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = options(dir.path());
    init(&options).expect("init");
    let cases = [
        ("admin", "https://10.1.2.3:6443", "kubernetes-admin"),
        ("kubelet", "https://10.1.2.3:6443", "system:node:server-1"),
        (
            "controller-manager",
            "https://127.0.0.1:6443",
            "system:kube-controller-manager",
        ),
        (
            "scheduler",
            "https://127.0.0.1:6443",
            "system:kube-scheduler",
        ),
    ];
    for (stem, server, user) in cases {
        let path = options.layout.kubeconfig(stem);
        let config = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig parses");
        let cluster = config.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some(server), "{stem}");
        assert_eq!(config.auth_infos[0].name, user, "{stem}");
    }
}

#[test]
fn the_static_pods_are_valid_manifests_mounting_what_init_wrote() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = options(dir.path());
    init(&options).expect("init");
    let manifests = options.layout.manifests_dir();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&manifests).expect("manifests") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read");
        let pod = crate::static_pods::parse_manifest(&path, &bytes, "server-1")
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.host_network, Some(true));
        let container = &spec.containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some("localhost/kwk/control-plane:0.1.0")
        );
        let command = container.command.clone().unwrap_or_default();
        assert_eq!(command[0], render::CONTROL_PLANE_BINARY);
        for volume in spec.volumes.unwrap_or_default() {
            let host = volume.host_path.expect("hostPath").path;
            assert!(
                Path::new(&host).exists(),
                "{}: {host} does not exist",
                path.display()
            );
        }
        names.push(pod.metadata.name.unwrap_or_default());
    }
    names.sort();
    assert_eq!(
        names,
        [
            "kube-apiserver-server-1",
            "kube-controller-manager-server-1",
            "kube-scheduler-server-1"
        ]
    );
}

#[test]
fn the_kubelet_configuration_loads_and_names_the_manifests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = options(dir.path());
    init(&options).expect("init");
    let loaded = crate::config::load(&options.layout.kubelet_config()).expect("loads");
    assert_eq!(
        loaded.config.static_pod_path.as_deref(),
        Some(options.layout.manifests_dir().as_path())
    );
    assert!(
        loaded.unknown_fields.is_empty(),
        "{:?}",
        loaded.unknown_fields
    );
    let env = std::fs::read_to_string(options.layout.node_env()).expect("env");
    assert!(env.contains("--node-ip=10.1.2.3"), "{env}");
    let proxy_flag = format!("--proxy-config={}", options.layout.proxy_config().display());
    assert!(env.contains(&proxy_flag), "{env}");
    let proxy = crate::proxy::config::load(&options.layout.proxy_config()).expect("proxy config");
    assert_eq!(proxy.mode, crate::proxy::ProxyMode::Nftables);
    assert_eq!(proxy.cluster_cidrs, vec!["10.244.0.0/16".parse().unwrap()]);
    assert!(
        proxy.ignored_fields.is_empty(),
        "{:?}",
        proxy.ignored_fields
    );
}

#[test]
fn the_default_image_is_the_one_the_image_builder_makes() {
    use kwk_image_builder::images;
    assert_eq!(
        DEFAULT_IMAGE,
        format!(
            "{}:{}",
            images::CONTROL_PLANE_REPOSITORY,
            env!("CARGO_PKG_VERSION")
        )
    );
    assert_eq!(render::CONTROL_PLANE_BINARY, images::CONTROL_PLANE_BINARY);
}
