//! Endpoints, EndpointSlices, Ingresses, IngressClasses, NetworkPolicies, CSRs.

use serde_json::json;

use super::*;

#[test]
fn endpoints_and_slices() {
    let ep = defaulted(
        "",
        "Endpoints",
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": meta("web", 60),
               "subsets": [{"addresses": [{"ip": "10.244.0.5"}, {"ip": "10.244.0.6"}, {"ip": "fd00::7"}],
                            "ports": [{"port": 8080}, {"port": 9090, "name": "metrics"}]}]}),
    );
    assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");
    assert_eq!(
        row("", "Endpoints", &ep),
        [
            json!("web"),
            json!("10.244.0.5:8080,10.244.0.6:8080,[fd00::7]:8080 + 3 more..."),
            json!("60s")
        ]
    );
    assert_cause(
        &causes("", "Endpoints", ep, None),
        "subsets[0].ports[0].name: Required value",
    );
    let empty = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": meta("none", 1)});
    assert_eq!(row("", "Endpoints", &empty)[1], "<none>");

    let slice = defaulted(
        "discovery.k8s.io",
        "EndpointSlice",
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": meta("web-abc", 30),
               "addressType": "IPv4", "ports": [{"port": 80}],
               "endpoints": [{"addresses": ["10.244.0.5"]}, {"addresses": ["10.244.0.6"]}]}),
    );
    assert_eq!(
        slice["ports"][0],
        json!({"name": "", "port": 80, "protocol": "TCP"})
    );
    assert_eq!(
        causes("discovery.k8s.io", "EndpointSlice", slice.clone(), None),
        Vec::<String>::new()
    );
    assert_eq!(
        row("discovery.k8s.io", "EndpointSlice", &slice),
        [
            json!("web-abc"),
            json!("IPv4"),
            json!("80"),
            json!("10.244.0.5,10.244.0.6"),
            json!("30s")
        ]
    );
    let mut bare = slice.clone();
    bare["endpoints"] = json!([{"addresses": []}]);
    assert_cause(
        &causes("discovery.k8s.io", "EndpointSlice", bare, None),
        "endpoints[0].addresses: Required value: must contain at least 1 address",
    );
    let mut retyped = slice.clone();
    retyped["addressType"] = json!("IPv6");
    retyped["endpoints"] = json!([{"addresses": ["fd00::1"]}]);
    assert_cause(
        &causes("discovery.k8s.io", "EndpointSlice", retyped, Some(slice)),
        "addressType: Invalid value: \"IPv6\": field is immutable",
    );
}

#[test]
fn ingresses() {
    let ing = defaulted(
        "networking.k8s.io",
        "Ingress",
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta("web", 600),
               "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["a.example.com"]}],
                        "rules": [{"host": "a.example.com", "http": {"paths": [{"path": "/", "backend":
                                   {"service": {"name": "web", "port": {"number": 80}}}}]}},
                                  {"host": "b.example.com"}, {"host": "c.example.com"}, {"host": "d.example.com"}]},
               "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}}),
    );
    assert_eq!(
        ing["spec"]["rules"][0]["http"]["paths"][0]["pathType"],
        "ImplementationSpecific"
    );
    assert_eq!(
        causes("networking.k8s.io", "Ingress", ing.clone(), None),
        Vec::<String>::new()
    );
    assert_eq!(
        row("networking.k8s.io", "Ingress", &ing),
        [
            json!("web"),
            json!("nginx"),
            json!("a.example.com,b.example.com,c.example.com + 1 more..."),
            json!("192.0.2.10"),
            json!("80, 443"),
            json!("10m")
        ]
    );
    let mut relative = ing;
    relative["spec"]["rules"][0]["http"]["paths"][0]["pathType"] = json!("Prefix");
    relative["spec"]["rules"][0]["http"]["paths"][0]["path"] = json!("api");
    assert_cause(
        &causes("networking.k8s.io", "Ingress", relative, None),
        "spec.rules[0].http.paths[0].path: Invalid value: \"api\": must be an absolute path",
    );
    let class = json!({"metadata": {"name": "nginx", "creationTimestamp": ago(3)},
        "spec": {"controller": "k8s.io/ingress-nginx",
                 "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-lb"}}});
    assert_eq!(
        row("networking.k8s.io", "IngressClass", &class),
        [
            json!("nginx"),
            json!("k8s.io/ingress-nginx"),
            json!("IngressParameters.k8s.example.com/external-lb"),
            json!("3s")
        ]
    );
}

#[test]
fn network_policies() {
    let np = defaulted(
        "networking.k8s.io",
        "NetworkPolicy",
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta("deny", 120),
               "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                        "ingress": [{"ports": [{"port": 5432}]}], "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}}),
    );
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(np["spec"]["ingress"][0]["ports"][0]["protocol"], "TCP");
    assert_eq!(
        causes("networking.k8s.io", "NetworkPolicy", np.clone(), None),
        Vec::<String>::new()
    );
    assert_eq!(
        row("networking.k8s.io", "NetworkPolicy", &np),
        [json!("deny"), json!("app=db"), json!("2m")]
    );
    let mut bad = np;
    bad["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"] = json!("10.0.0.0/40");
    assert_cause(
        &causes("networking.k8s.io", "NetworkPolicy", bad, None),
        "spec.egress[0].to[0].ipBlock.cidr: Invalid value: \"10.0.0.0/40\": must be a valid CIDR value",
    );
}

#[test]
fn certificate_signing_requests() {
    let pem = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n";
    let request = base64_of(pem);
    let csr = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": "node-csr-1", "creationTimestamp": ago(20)},
        "spec": {"request": request, "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                 "usages": ["digital signature", "client auth"], "username": "system:node:server-1",
                 "expirationSeconds": 86400},
        "status": {"conditions": [{"type": "Approved", "status": "True"}], "certificate": "Y2VydA=="}});
    const C: &str = "certificates.k8s.io";
    assert_eq!(
        causes(C, "CertificateSigningRequest", csr.clone(), None),
        Vec::<String>::new()
    );
    assert_eq!(
        row(C, "CertificateSigningRequest", &csr),
        [
            json!("node-csr-1"),
            json!("20s"),
            json!("kubernetes.io/kube-apiserver-client-kubelet"),
            json!("system:node:server-1"),
            json!("24h"),
            json!("Approved,Issued")
        ]
    );
    assert_eq!(
        strategy_for(C, "CertificateSigningRequest")
            .field(&csr, "spec.signerName")
            .as_deref(),
        Some("kubernetes.io/kube-apiserver-client-kubelet")
    );
    let mut bad = csr;
    bad["spec"]["signerName"] = json!("");
    bad["spec"]["usages"] = json!(["time travel"]);
    bad["spec"]["expirationSeconds"] = json!(60);
    let got = causes(C, "CertificateSigningRequest", bad, None);
    assert_cause(&got, "spec.signerName: Required value");
    assert_cause(&got, "spec.usages[0]: Unsupported value: \"time travel\"");
    assert_cause(
        &got,
        "spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 600 seconds (10 minutes)",
    );
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}
