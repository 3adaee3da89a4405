//! Service ClusterIP and NodePort allocation and the `kubernetes` Service, driven by the real
//! kubectl: outputs and error texts are asserted.

mod support;

use std::collections::BTreeSet;

use kwk_control_plane::apiserver::allocator::ServiceRanges;
use kwk_control_plane::apiserver::kinds::service_alloc::Cidr;
use support::{TestApiServer, stderr};

async fn field(api: &TestApiServer, kind_name: &str, path: &str) -> String {
    api.kubectl_ok(&["get", kind_name, "-o", &format!("jsonpath={{{path}}}")])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_service_and_its_endpoints() {
    let api = TestApiServer::start().await;
    let svc = api.kubectl_ok(&["get", "svc", "kubernetes"]).await;
    let row = svc.lines().nth(1).expect("row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..5],
        ["kubernetes", "ClusterIP", "10.96.0.1", "<none>", "443/TCP"],
        "{svc}"
    );
    let port = api.addr.port().to_string();
    assert_eq!(
        field(&api, "svc/kubernetes", ".spec.ports[0].targetPort").await,
        port
    );
    assert_eq!(
        field(&api, "svc/kubernetes", ".spec.ports[0].name").await,
        "https"
    );
    let slices = api.kubectl_ok(&["get", "endpointslices"]).await;
    let row = slices.lines().nth(1).expect("row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..4],
        ["kubernetes", "IPv4", port.as_str(), "127.0.0.1"],
        "{slices}"
    );
    assert_eq!(
        field(&api, "endpoints/kubernetes", ".subsets[0].addresses[0].ip").await,
        "127.0.0.1"
    );
    // A restart keeps one kubernetes Service with the same address.
    let api = api.restart().await;
    assert_eq!(
        field(&api, "svc/kubernetes", ".spec.clusterIP").await,
        "10.96.0.1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_expose_specific_values_release_and_reuse() {
    let api = TestApiServer::start().await;
    api.kubectl_ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"])
        .await;
    let web_ip = field(&api, "svc/web", ".spec.clusterIP").await;
    let cidr = Cidr::parse("10.96.0.0/12").expect("cidr");
    assert!(
        cidr.contains(web_ip.parse().expect("ip")) && web_ip != "10.96.0.1",
        "{web_ip}"
    );
    assert_eq!(field(&api, "svc/web", ".spec.clusterIPs[0]").await, web_ip);
    // A taken address is refused naming the field, with upstream's text.
    let out = api
        .kubectl(&[
            "create",
            "service",
            "clusterip",
            "copy",
            "--tcp=80",
            &format!("--clusterip={web_ip}"),
        ])
        .await;
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "error: failed to create ClusterIP service: Service \"copy\" is invalid: spec.clusterIPs: Invalid value: []string{{\"{web_ip}\"}}: failed to allocate IP {web_ip}: provided IP is already allocated"
        )
    );
    let out = api
        .kubectl(&[
            "create",
            "service",
            "clusterip",
            "far",
            "--tcp=80",
            "--clusterip=10.0.0.1",
        ])
        .await;
    assert!(
        stderr(&out).contains("failed to allocate IP 10.0.0.1: the provided IP (10.0.0.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12"),
        "{}",
        stderr(&out)
    );
    // Node ports: a specific one, then the same again.
    api.kubectl_ok(&[
        "create",
        "service",
        "nodeport",
        "np",
        "--tcp=80:8080",
        "--node-port=30080",
    ])
    .await;
    assert_eq!(
        field(&api, "svc/np", ".spec.ports[0].nodePort").await,
        "30080"
    );
    let out = api
        .kubectl(&[
            "create",
            "service",
            "nodeport",
            "np2",
            "--tcp=80",
            "--node-port=30080",
        ])
        .await;
    assert_eq!(
        stderr(&out).trim(),
        "error: failed to create NodePort service: Service \"np2\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
    );
    let out = api
        .kubectl(&[
            "create",
            "service",
            "nodeport",
            "np3",
            "--tcp=80",
            "--node-port=40000",
        ])
        .await;
    assert!(
        stderr(&out).contains("spec.ports[0].nodePort: Invalid value: 40000: provided port is not in the valid range. The range of valid ports is 30000-32767"),
        "{}",
        stderr(&out)
    );
    // Headless and ExternalName get nothing.
    api.kubectl_ok(&[
        "create",
        "service",
        "clusterip",
        "headless",
        "--clusterip=None",
    ])
    .await;
    assert_eq!(field(&api, "svc/headless", ".spec.clusterIP").await, "None");
    api.kubectl_ok(&[
        "create",
        "service",
        "externalname",
        "ext",
        "--external-name=example.com",
    ])
    .await;
    assert_eq!(field(&api, "svc/ext", ".spec.clusterIP").await, "");
    // expose
    api.kubectl_ok(&[
        "create",
        "deployment",
        "app",
        "--image=nginx",
        "--port=8080",
    ])
    .await;
    api.kubectl_ok(&[
        "expose",
        "deployment",
        "app",
        "--port=80",
        "--target-port=8080",
        "--type=NodePort",
    ])
    .await;
    let exposed_port: i32 = field(&api, "svc/app", ".spec.ports[0].nodePort")
        .await
        .parse()
        .expect("node port");
    assert!((30000..=32767).contains(&exposed_port));
    assert_eq!(field(&api, "svc/app", ".spec.selector.app").await, "app");
    // NodePort → ClusterIP drops (and releases) the node port; the address stays.
    let np_ip = field(&api, "svc/np", ".spec.clusterIP").await;
    api.kubectl_ok(&[
        "patch",
        "svc",
        "np",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ])
    .await;
    assert_eq!(field(&api, "svc/np", ".spec.ports[0].nodePort").await, "");
    assert_eq!(field(&api, "svc/np", ".spec.clusterIP").await, np_ip);
    api.kubectl_ok(&[
        "create",
        "service",
        "nodeport",
        "np2",
        "--tcp=80",
        "--node-port=30080",
    ])
    .await;
    // ClusterIP → ExternalName releases the address.
    api.kubectl_ok(&[
        "patch",
        "svc",
        "np",
        "-p",
        r#"{"spec":{"type":"ExternalName","externalName":"example.com"}}"#,
    ])
    .await;
    assert_eq!(field(&api, "svc/np", ".spec.clusterIP").await, "");
    api.kubectl_ok(&[
        "create",
        "service",
        "clusterip",
        "np-ip",
        "--tcp=80",
        &format!("--clusterip={np_ip}"),
    ])
    .await;
    // Delete, then the address is free for another Service.
    api.kubectl_ok(&["delete", "svc", "web"]).await;
    api.kubectl_ok(&[
        "create",
        "service",
        "clusterip",
        "copy",
        "--tcp=80",
        &format!("--clusterip={web_ip}"),
    ])
    .await;
    assert_eq!(field(&api, "svc/copy", ".spec.clusterIP").await, web_ip);
    // ExternalName → ClusterIP allocates an address.
    api.kubectl_ok(&[
        "patch",
        "svc",
        "ext",
        "-p",
        r#"{"spec":{"type":"ClusterIP","externalName":null,"ports":[{"port":80}]}}"#,
    ])
    .await;
    let ext_ip = field(&api, "svc/ext", ".spec.clusterIP").await;
    assert!(cidr.contains(ext_ip.parse().expect("ip")), "{ext_ip:?}");
    // LoadBalancer with externalTrafficPolicy Local gets a health check node port, released
    // when the policy goes back to Cluster.
    api.kubectl_ok(&["create", "service", "loadbalancer", "lb", "--tcp=80"])
        .await;
    assert_eq!(field(&api, "svc/lb", ".spec.healthCheckNodePort").await, "");
    api.kubectl_ok(&[
        "patch",
        "svc",
        "lb",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
    ])
    .await;
    let hc = field(&api, "svc/lb", ".spec.healthCheckNodePort").await;
    assert!(
        hc.parse::<i32>()
            .is_ok_and(|p| (30000..=32767).contains(&p)),
        "{hc:?}"
    );
    api.kubectl_ok(&[
        "patch",
        "svc",
        "lb",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Cluster"}}"#,
    ])
    .await;
    assert_eq!(field(&api, "svc/lb", ".spec.healthCheckNodePort").await, "");
    api.kubectl_ok(&[
        "create",
        "service",
        "nodeport",
        "on-hc",
        "--tcp=80",
        &format!("--node-port={hc}"),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_get_distinct_values_that_survive_a_restart() {
    let api = TestApiServer::start().await;
    let creates = (0..50).map(|i| {
        let name = format!("s{i}");
        let api = &api;
        async move {
            api.kubectl_ok(&["create", "service", "nodeport", &name, "--tcp=80"])
                .await
        }
    });
    futures::future::join_all(creates).await;
    let listed = api
        .kubectl_ok(&[
            "get",
            "svc",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name} {.spec.clusterIP} {.spec.ports[0].nodePort}{"\n"}{end}"#,
        ])
        .await;
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|r: &Vec<&str>| r[0].starts_with('s'))
        .collect();
    assert_eq!(rows.len(), 50, "{listed}");
    let ips: BTreeSet<&str> = rows.iter().map(|r| r[1]).collect();
    let ports: BTreeSet<&str> = rows.iter().map(|r| r[2]).collect();
    assert_eq!((ips.len(), ports.len()), (50, 50), "{listed}");
    let held_ip = rows[0][1].to_string();
    let held_port = rows[0][2].to_string();
    let api = api.restart().await;
    assert_eq!(field(&api, "svc/s0", ".spec.clusterIP").await, held_ip);
    let out = api
        .kubectl(&[
            "create",
            "service",
            "clusterip",
            "late",
            "--tcp=80",
            &format!("--clusterip={held_ip}"),
        ])
        .await;
    assert!(
        stderr(&out).contains("provided IP is already allocated"),
        "{}",
        stderr(&out)
    );
    let out = api
        .kubectl(&[
            "create",
            "service",
            "nodeport",
            "late",
            "--tcp=80",
            &format!("--node-port={held_port}"),
        ])
        .await;
    assert!(
        stderr(&out).contains("provided port is already allocated"),
        "{}",
        stderr(&out)
    );
    api.kubectl_ok(&["create", "service", "nodeport", "late", "--tcp=80"])
        .await;
    let late_ip = field(&api, "svc/late", ".spec.clusterIP").await;
    assert!(
        !ips.contains(late_ip.as_str()) && late_ip != "10.96.0.1",
        "{late_ip}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_range_runs_out_with_upstreams_error() {
    let api = TestApiServer::start_with_ranges(ServiceRanges {
        cluster_ip_range: Cidr::parse("10.200.0.0/29").expect("cidr"),
        ..ServiceRanges::default()
    })
    .await;
    assert_eq!(
        field(&api, "svc/kubernetes", ".spec.clusterIP").await,
        "10.200.0.1"
    );
    // .0 is the network, .7 the broadcast address, .1 the kubernetes Service: five left.
    for i in 0..5 {
        api.kubectl_ok(&[
            "create",
            "service",
            "clusterip",
            &format!("s{i}"),
            "--tcp=80",
        ])
        .await;
    }
    let out = api
        .kubectl(&["create", "service", "clusterip", "full", "--tcp=80"])
        .await;
    assert_eq!(
        stderr(&out).trim(),
        "error: failed to create ClusterIP service: Internal error occurred: failed to allocate a serviceIP: range is full"
    );
    // Freeing one makes room again.
    api.kubectl_ok(&["delete", "svc", "s3"]).await;
    api.kubectl_ok(&["create", "service", "clusterip", "full", "--tcp=80"])
        .await;
}
