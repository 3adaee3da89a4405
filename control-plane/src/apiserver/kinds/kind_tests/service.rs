//! core/v1 Services: defaults per type, causes, cluster IP immutability, allocated values
//! kept on update, rows, field selectors.

use serde_json::{Value, json};

use super::*;

fn service(spec: Value) -> Value {
    let mut object = json!({"apiVersion": "v1", "kind": "Service", "metadata": meta("web", 300)});
    object["spec"] = spec;
    object
}

#[test]
fn defaults_per_type() {
    let plain = defaulted(
        "",
        "Service",
        service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]})),
    );
    assert_eq!(
        plain["spec"],
        json!({"type": "ClusterIP", "sessionAffinity": "None", "selector": {"app": "web"},
               "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
               "internalTrafficPolicy": "Cluster", "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"]})
    );
    let lb = defaulted(
        "",
        "Service",
        service(
            json!({"type": "LoadBalancer", "ports": [{"port": 443, "targetPort": "https"}],
        "sessionAffinity": "ClientIP"}),
        ),
    );
    assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
    assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
    assert_eq!(lb["spec"]["ports"][0]["targetPort"], "https");
    assert_eq!(
        lb["spec"]["sessionAffinityConfig"],
        json!({"clientIP": {"timeoutSeconds": 10800}})
    );
    let external = defaulted(
        "",
        "Service",
        service(json!({"type": "ExternalName", "externalName": "db.example.com"})),
    );
    assert!(external["spec"].get("ipFamilies").is_none());
    assert!(external["spec"].get("internalTrafficPolicy").is_none());
    let v6 = defaulted(
        "",
        "Service",
        service(json!({"clusterIP": "fd00::10", "ports": [{"port": 80}]})),
    );
    assert_eq!(v6["spec"]["clusterIPs"], json!(["fd00::10"]));
    assert_eq!(v6["spec"]["ipFamilies"], json!(["IPv6"]));
}

#[test]
fn causes_of_bad_services() {
    assert_eq!(
        causes(
            "",
            "Service",
            service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]})),
            None
        ),
        Vec::<String>::new()
    );
    let cases = [
        (
            json!({"ports": []}),
            "spec.ports: Required value [FieldValueRequired]",
        ),
        (
            json!({"ports": [{"port": 0}]}),
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
        ),
        (
            json!({"ports": [{"port": 80, "name": "a"}, {"port": 81}]}),
            "spec.ports[1].name: Required value",
        ),
        (
            json!({"ports": [{"port": 80, "protocol": "ICMP"}]}),
            "spec.ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        ),
        (
            json!({"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]}),
            "spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\"",
        ),
        (
            json!({"type": "Magic", "ports": [{"port": 80}]}),
            "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
        ),
        (
            json!({"ports": [{"port": 80, "nodePort": 30080}]}),
            "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
        ),
        (
            json!({"type": "ExternalName"}),
            "spec.externalName: Required value",
        ),
        (
            json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}]}),
            "spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services",
        ),
        (
            json!({"clusterIP": "10.0.0.300", "ports": [{"port": 80}]}),
            "spec.clusterIPs[0]: Invalid value: \"10.0.0.300\": must be a valid IP address",
        ),
        (
            json!({"sessionAffinity": "Sticky", "ports": [{"port": 80}]}),
            "spec.sessionAffinity: Unsupported value: \"Sticky\"",
        ),
        (
            json!({"externalTrafficPolicy": "Local", "ports": [{"port": 80}]}),
            "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services",
        ),
    ];
    for (spec, want) in cases {
        assert_cause(&causes("", "Service", service(spec), None), want);
    }
    assert_cause(
        &causes(
            "",
            "Service",
            service(
                json!({"type": "ExternalName", "externalName": "x.example.com", "clusterIP": "10.0.0.1"}),
            ),
            None,
        ),
        "spec.clusterIPs: Forbidden: may not be set for ExternalName services",
    );
}

#[test]
fn cluster_ip_is_immutable_and_kept_on_update() {
    let old = defaulted(
        "",
        "Service",
        service(json!({"clusterIP": "10.96.0.20", "type": "NodePort",
        "ports": [{"name": "http", "port": 80, "nodePort": 30080}]})),
    );
    let mut changed = old.clone();
    changed["spec"]["clusterIP"] = json!("10.96.0.21");
    changed["spec"]["clusterIPs"] = json!(["10.96.0.21"]);
    assert_cause(
        &causes("", "Service", changed, Some(old.clone())),
        "spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.21\"}: may not change once set [FieldValueInvalid]",
    );
    // An apply or replace that leaves the allocated values out keeps them.
    let mut replaced =
        service(json!({"type": "NodePort", "ports": [{"name": "http", "port": 80}]}));
    strategy_for("", "Service").prepare_for_update(&mut replaced, &old);
    let replaced = defaulted("", "Service", replaced);
    assert_eq!(replaced["spec"]["clusterIP"], "10.96.0.20");
    assert_eq!(replaced["spec"]["clusterIPs"], json!(["10.96.0.20"]));
    assert_eq!(replaced["spec"]["ports"][0]["nodePort"], 30080);
    assert_eq!(
        causes("", "Service", replaced, Some(old)),
        Vec::<String>::new()
    );
}

#[test]
fn rows_and_fields() {
    let cases = [
        (
            json!({"type": "ClusterIP", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                   "ports": [{"port": 443, "protocol": "TCP"}]}),
            ["ClusterIP", "10.96.0.1", "<none>", "443/TCP"],
        ),
        (
            json!({"type": "NodePort", "clusterIPs": ["10.96.5.5"], "externalIPs": ["192.0.2.1"],
                   "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "nodePort": 30053, "protocol": "UDP"}]}),
            [
                "NodePort",
                "10.96.5.5",
                "192.0.2.1",
                "80:30080/TCP,53:30053/UDP",
            ],
        ),
        (
            json!({"type": "LoadBalancer", "clusterIPs": ["10.96.7.7"], "ports": [{"port": 80, "nodePort": 31000, "protocol": "TCP"}]}),
            ["LoadBalancer", "10.96.7.7", "<pending>", "80:31000/TCP"],
        ),
        (
            json!({"type": "ExternalName", "externalName": "db.example.com"}),
            ["ExternalName", "<none>", "db.example.com", "<none>"],
        ),
        (
            json!({"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"], "selector": {"app": "db"}}),
            ["ClusterIP", "None", "<none>", "<none>"],
        ),
    ];
    for (spec, want) in cases {
        let r = row("", "Service", &service(spec));
        let got: Vec<&str> = r[1..5].iter().map(|c| c.as_str().unwrap()).collect();
        assert_eq!(got, want);
        assert_eq!(r[5], "5m");
    }
    let mut lb = service(
        json!({"type": "LoadBalancer", "clusterIPs": ["10.96.7.7"], "externalIPs": ["198.51.100.9"],
        "selector": {"app": "web", "tier": "fe"}, "ports": [{"port": 80, "protocol": "TCP"}]}),
    );
    lb["status"] = json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}, {"hostname": "lb.example.com"}]}});
    let r = row("", "Service", &lb);
    assert_eq!(r[3], "203.0.113.5,lb.example.com,198.51.100.9");
    assert_eq!(r[6], "app=web,tier=fe");
    let strategy = strategy_for("", "Service");
    assert_eq!(
        strategy.field(&lb, "spec.type").as_deref(),
        Some("LoadBalancer")
    );
    assert_eq!(strategy.field(&lb, "spec.clusterIP").as_deref(), Some(""));
    assert_eq!(strategy.field(&lb, "spec.selector"), None);
}
