//! A pod's DNS config (`PodSandboxConfig.dns_config`), as upstream `pkg/kubelet/network/dns`
//! forms it from `dnsPolicy`, `dnsConfig`, the cluster DNS settings and the node's resolv.conf;
//! and a resolv.conf parser.
//!
//! One deliberate difference: upstream merges options through a Go map, so their order is
//! random; here options keep the order in which their names first appeared.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, PodDNSConfig};
use kwk_cri::api::DnsConfig;

use super::podx;

/// Most nameservers libc reads from resolv.conf.
pub const MAX_NAMESERVERS: usize = 3;
/// Most search domains upstream passes on.
pub const MAX_SEARCH_DOMAINS: usize = 32;
/// Longest search line (domains joined by spaces) upstream passes on.
pub const MAX_SEARCH_LINE_CHARS: usize = 2048;
/// Longest single search domain (a DNS-1123 subdomain); longer ones crash some libcs.
const MAX_SEARCH_DOMAIN_CHARS: usize = 253;
/// Options a ClusterFirst pod gets in place of the node's.
const CLUSTER_FIRST_OPTIONS: &[&str] = &["ndots:5"];

/// The node's DNS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsContext {
    /// The cluster DNS service IPs (kubelet `clusterDNS`).
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster domain (kubelet `clusterDomain`, e.g. `cluster.local`).
    pub cluster_domain: String,
    /// The node's resolv.conf contents (kubelet `resolvConf`), already read; `None` when the
    /// kubelet setting is empty (pods with host DNS then resolve through 127.0.0.1 only).
    pub host_resolv_conf: Option<String>,
}

/// What a resolv.conf says, the parts the kubelet uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, in order.
    pub nameservers: Vec<String>,
    /// The last `search` line's domains, trailing dots removed.
    pub searches: Vec<String>,
    /// All `options` lines; a later option with the same name replaces an earlier one.
    pub options: Vec<String>,
}

/// Parses resolv.conf text the way the kubelet does: `#` comments, `nameserver` lines
/// accumulate, the last `search` line wins, options merge by name. Malformed lines are skipped.
pub fn parse_resolv_conf(text: &str) -> ResolvConf {
    let mut conf = ResolvConf::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut fields = line.split_whitespace();
        match fields.next() {
            Some("nameserver") => conf.nameservers.extend(fields.next().map(str::to_string)),
            Some("search") => {
                conf.searches = fields
                    .filter(|d| *d != ".")
                    .map(|d| d.strip_suffix('.').unwrap_or(d).to_string())
                    .collect();
            }
            Some("options") => {
                for option in fields {
                    merge_option(&mut conf.options, option.to_string());
                }
            }
            _ => {}
        }
    }
    conf
}

/// The DNS config for a pod's sandbox.
pub fn pod_dns_config(pod: &Pod, ctx: &DnsContext) -> DnsConfig {
    let host = ctx
        .host_resolv_conf
        .as_deref()
        .map(parse_resolv_conf)
        .unwrap_or_default();
    let mut config = DnsConfig {
        servers: host.nameservers,
        searches: host.searches,
        options: host.options,
    };
    let spec = podx::spec(pod);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let cluster = match policy {
        "None" => {
            config = DnsConfig::default();
            None
        }
        "ClusterFirstWithHostNet" => Some(()),
        "Default" => None,
        // ClusterFirst on the host network falls back to the node's DNS; unknown policies
        // (the API rejects them) are treated as ClusterFirst, as upstream does.
        _ if podx::host_network(pod) && policy == "ClusterFirst" => None,
        _ => Some(()),
    };
    let use_host = match cluster {
        Some(()) if !ctx.cluster_dns.is_empty() => {
            config.servers = ctx.cluster_dns.iter().map(IpAddr::to_string).collect();
            config.searches =
                cluster_searches(podx::namespace(pod), &ctx.cluster_domain, config.searches);
            config.options = CLUSTER_FIRST_OPTIONS
                .iter()
                .map(|o| o.to_string())
                .collect();
            false
        }
        // No cluster DNS configured: upstream warns (MissingClusterDNS) and uses the node's.
        Some(()) => true,
        None => policy != "None",
    };
    if use_host && ctx.host_resolv_conf.is_none() {
        config.servers = vec!["127.0.0.1".to_string()];
        config.searches = vec![".".to_string()];
    }
    if let Some(extra) = spec.and_then(|s| s.dns_config.as_ref()) {
        append_pod_dns_config(&mut config, extra);
    }
    fit_limits(config)
}

/// `<ns>.svc.<domain>`, `svc.<domain>`, `<domain>`, then the host's search domains, without
/// duplicates.
fn cluster_searches(namespace: &str, domain: &str, host: Vec<String>) -> Vec<String> {
    if domain.is_empty() {
        return host;
    }
    let mut all = vec![
        format!("{namespace}.svc.{domain}"),
        format!("svc.{domain}"),
        domain.to_string(),
    ];
    all.extend(host);
    dedup_keep_first(all)
}

fn append_pod_dns_config(config: &mut DnsConfig, extra: &PodDNSConfig) {
    let servers = std::mem::take(&mut config.servers);
    config.servers = dedup_keep_first(
        servers
            .into_iter()
            .chain(extra.nameservers.iter().flatten().cloned())
            .collect(),
    );
    let searches = std::mem::take(&mut config.searches);
    config.searches = dedup_keep_first(
        searches
            .into_iter()
            .chain(extra.searches.iter().flatten().cloned())
            .collect(),
    );
    for option in extra.options.iter().flatten() {
        let name = option.name.clone().unwrap_or_default();
        let merged = match option.value.as_deref() {
            Some(value) if !value.is_empty() => format!("{name}:{value}"),
            _ => name,
        };
        merge_option(&mut config.options, merged);
    }
}

/// Adds `option` (`name` or `name:value`), replacing an existing option of the same name in place.
fn merge_option(options: &mut Vec<String>, option: String) {
    let name = option_name(&option).to_string();
    match options.iter_mut().find(|o| option_name(o) == name) {
        Some(existing) => *existing = option,
        None => options.push(option),
    }
}

fn option_name(option: &str) -> &str {
    option.split_once(':').map_or(option, |(name, _)| name)
}

fn dedup_keep_first(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// Cuts the config to what resolvers accept, as upstream does (it also emits a warning event).
fn fit_limits(mut config: DnsConfig) -> DnsConfig {
    config.servers.truncate(MAX_NAMESERVERS);
    config.searches.truncate(MAX_SEARCH_DOMAINS);
    config
        .searches
        .retain(|d| d.len() <= MAX_SEARCH_DOMAIN_CHARS);
    let line_len =
        |s: &[String]| s.iter().map(String::len).sum::<usize>() + s.len().saturating_sub(1);
    while line_len(&config.searches) > MAX_SEARCH_LINE_CHARS {
        config.searches.pop();
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime_spec::testpod::pod;

    const HOST: &str = "# generated\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nsearch old.example\n\
                        search corp.example. lab.example .\noptions ndots:2 timeout:1\noptions ndots:3 rotate\n";

    fn ctx() -> DnsContext {
        DnsContext {
            cluster_dns: vec!["10.96.0.10".parse().unwrap()],
            cluster_domain: "cluster.local".into(),
            host_resolv_conf: Some(HOST.into()),
        }
    }

    fn s(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_resolv_conf_like_the_kubelet() {
        let conf = parse_resolv_conf(HOST);
        assert_eq!(conf.nameservers, s(&["10.0.0.2", "10.0.0.3"]));
        assert_eq!(conf.searches, s(&["corp.example", "lab.example"]));
        assert_eq!(conf.options, s(&["ndots:3", "timeout:1", "rotate"]));
        assert_eq!(
            parse_resolv_conf("nameserver\n  # x\n\n"),
            ResolvConf::default()
        );
    }

    #[test]
    fn policies_table() {
        let cluster_search = s(&[
            "prod.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
            "corp.example",
            "lab.example",
        ]);
        let host = DnsConfig {
            servers: s(&["10.0.0.2", "10.0.0.3"]),
            searches: s(&["corp.example", "lab.example"]),
            options: s(&["ndots:3", "timeout:1", "rotate"]),
        };
        let cluster = DnsConfig {
            servers: s(&["10.96.0.10"]),
            searches: cluster_search,
            options: s(&["ndots:5"]),
        };
        let cases: &[(&str, bool, DnsConfig)] = &[
            ("ClusterFirst", false, cluster.clone()),
            ("ClusterFirst", true, host.clone()),
            ("ClusterFirstWithHostNet", true, cluster.clone()),
            ("ClusterFirstWithHostNet", false, cluster),
            ("Default", false, host),
            ("None", false, DnsConfig::default()),
        ];
        for (policy, host_network, want) in cases {
            let p = pod(&format!(
                "metadata: {{name: a, namespace: prod}}\nspec:\n  dnsPolicy: {policy}\n  hostNetwork: {host_network}\n  containers: []\n"
            ));
            assert_eq!(
                &pod_dns_config(&p, &ctx()),
                want,
                "{policy} hostNetwork={host_network}"
            );
        }
    }

    #[test]
    fn cluster_first_without_cluster_dns_falls_back_to_host() {
        let mut c = ctx();
        c.cluster_dns.clear();
        let p = pod(
            "metadata: {name: a, namespace: prod}\nspec: {dnsPolicy: ClusterFirst, containers: []}\n",
        );
        assert_eq!(pod_dns_config(&p, &c).servers, s(&["10.0.0.2", "10.0.0.3"]));
        c.host_resolv_conf = None;
        let got = pod_dns_config(&p, &c);
        assert_eq!((got.servers, got.searches), (s(&["127.0.0.1"]), s(&["."])));
    }

    #[test]
    fn dns_config_is_appended_and_options_override() {
        let p = pod(r#"
metadata: {name: a, namespace: prod}
spec:
  dnsPolicy: ClusterFirst
  dnsConfig:
    nameservers: [10.96.0.10, 1.1.1.1]
    searches: [svc.cluster.local, extra.example]
    options: [{name: ndots, value: "2"}, {name: edns0}]
  containers: []
"#);
        let got = pod_dns_config(&p, &ctx());
        assert_eq!(got.servers, s(&["10.96.0.10", "1.1.1.1"]));
        assert_eq!(
            got.searches.last().map(String::as_str),
            Some("extra.example")
        );
        assert_eq!(got.searches.len(), 6);
        assert_eq!(got.options, s(&["ndots:2", "edns0"]));
    }

    #[test]
    fn none_policy_uses_only_dns_config() {
        let p = pod(r#"
metadata: {name: a, namespace: prod}
spec:
  dnsPolicy: None
  dnsConfig: {nameservers: [1.1.1.1], searches: [a.example]}
  containers: []
"#);
        let got = pod_dns_config(&p, &ctx());
        assert_eq!(
            got,
            DnsConfig {
                servers: s(&["1.1.1.1"]),
                searches: s(&["a.example"]),
                options: vec![]
            }
        );
    }

    #[test]
    fn none_policy_never_gets_the_localhost_fallback() {
        let mut c = ctx();
        c.host_resolv_conf = None;
        let none = pod("metadata: {name: a}\nspec: {dnsPolicy: None, containers: []}\n");
        assert_eq!(pod_dns_config(&none, &c), DnsConfig::default());
        let default = pod("metadata: {name: a}\nspec: {dnsPolicy: Default, containers: []}\n");
        assert_eq!(pod_dns_config(&default, &c).servers, s(&["127.0.0.1"]));
    }

    #[test]
    fn limits_are_applied() {
        let servers: Vec<String> = (1..=5).map(|i| format!("10.0.0.{i}")).collect();
        let searches: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
        let got = fit_limits(DnsConfig {
            servers,
            searches,
            options: vec![],
        });
        assert_eq!(got.servers.len(), MAX_NAMESERVERS);
        assert_eq!(got.searches.len(), MAX_SEARCH_DOMAINS);

        let long: Vec<String> = (0..10).map(|i| format!("{i}{}", "x".repeat(249))).collect();
        let mut with_too_long = long.clone();
        with_too_long.insert(0, "y".repeat(254));
        let got = fit_limits(DnsConfig {
            servers: vec![],
            searches: with_too_long,
            options: vec![],
        });
        // 254 chars dropped; 250-char domains: 8 of them fit in 2048 (8*250 + 7 = 2007).
        assert_eq!(got.searches, long[..8].to_vec());
    }
}
