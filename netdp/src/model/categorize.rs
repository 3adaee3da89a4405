//! Endpoint categorisation, upstream's `CategorizeEndpoints`: which endpoints serve
//! cluster-wide traffic and which serve `Local`-policy traffic, with topology (zone hint)
//! filtering and the fallback to serving-but-terminating endpoints when nothing is ready.

use std::net::IpAddr;

/// One endpoint of one Service port, as the slices describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    pub ip: IpAddr,
    /// The port on the endpoint: the Service's `targetPort` resolved for this endpoint.
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// The endpoint runs on this node.
    pub node_local: bool,
    /// `hints.forZones[].name`.
    pub zone_hints: Vec<String>,
}

impl EndpointInfo {
    fn serving_terminating(&self) -> bool {
        self.serving && self.terminating
    }
}

/// The result of [`categorize_endpoints`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Categorized<'a> {
    /// Endpoints for `Cluster`-policy traffic (empty when the port uses no cluster endpoints).
    pub cluster: Vec<&'a EndpointInfo>,
    /// Endpoints for `Local`-policy traffic (empty when the port uses no local endpoints).
    pub local: Vec<&'a EndpointInfo>,
    /// Whether any usable endpoint exists anywhere: when false, traffic is rejected rather than
    /// dropped.
    pub has_any: bool,
}

/// Whether zone hints are usable: every ready endpoint has one, the node has a zone, and some
/// ready endpoint is hinted for it.
fn can_use_topology(endpoints: &[&EndpointInfo], node_zone: Option<&str>) -> bool {
    let mut has_endpoint_for_zone = false;
    for ep in endpoints.iter().filter(|e| e.ready) {
        if ep.zone_hints.is_empty() {
            return false;
        }
        let Some(zone) = node_zone.filter(|z| !z.is_empty()) else {
            return false;
        };
        if ep.zone_hints.iter().any(|h| h == zone) {
            has_endpoint_for_zone = true;
        }
    }
    has_endpoint_for_zone
}

/// Splits the endpoints of one Service port (one family) into cluster and local sets.
///
/// `uses_cluster`: internal policy `Cluster`, or the Service is externally reachable (ETP
/// `Local` still short-circuits pod and node traffic to cluster endpoints). `uses_local`:
/// internal policy `Local`, or external policy `Local` on a reachable Service.
pub fn categorize_endpoints<'a>(
    endpoints: &[&'a EndpointInfo],
    uses_cluster: bool,
    uses_local: bool,
    node_zone: Option<&str>,
) -> Categorized<'a> {
    let mut out = Categorized::default();
    if uses_cluster {
        let use_topology = can_use_topology(endpoints, node_zone);
        out.cluster = endpoints
            .iter()
            .copied()
            .filter(|e| {
                e.ready
                    && (!use_topology
                        || node_zone.is_some_and(|z| e.zone_hints.iter().any(|h| h == z)))
            })
            .collect();
        if out.cluster.is_empty() {
            out.cluster = endpoints
                .iter()
                .copied()
                .filter(|e| e.serving_terminating())
                .collect();
        }
        out.has_any = !out.cluster.is_empty();
    }
    if !uses_local {
        return out;
    }
    let mut local_ready = false;
    let mut local_serving_terminating = false;
    for e in endpoints {
        if e.ready {
            out.has_any = true;
            local_ready |= e.node_local;
        } else if e.serving_terminating() {
            out.has_any = true;
            local_serving_terminating |= e.node_local;
        }
    }
    if local_ready {
        out.local = endpoints
            .iter()
            .copied()
            .filter(|e| e.node_local && e.ready)
            .collect();
    } else if local_serving_terminating {
        out.local = endpoints
            .iter()
            .copied()
            .filter(|e| e.node_local && e.serving_terminating())
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(last: u8, flags: &str, zones: &[&str]) -> EndpointInfo {
        EndpointInfo {
            ip: IpAddr::from([10, 0, 0, last]),
            port: 80,
            ready: flags.contains('R'),
            serving: flags.contains('S') || flags.contains('R'),
            terminating: flags.contains('T'),
            node_local: flags.contains('L'),
            zone_hints: zones.iter().map(|z| (*z).to_owned()).collect(),
        }
    }

    fn lasts(eps: &[&EndpointInfo]) -> Vec<u8> {
        eps.iter()
            .map(|e| match e.ip {
                IpAddr::V4(v4) => v4.octets()[3],
                IpAddr::V6(_) => 0,
            })
            .collect()
    }

    struct Case {
        name: &'static str,
        eps: Vec<EndpointInfo>,
        uses_cluster: bool,
        uses_local: bool,
        zone: Option<&'static str>,
        cluster: Vec<u8>,
        local: Vec<u8>,
        has_any: bool,
    }

    #[test]
    fn categorize_table() {
        let cases = vec![
            Case {
                name: "cluster: ready only",
                eps: vec![ep(1, "R", &[]), ep(2, "", &[]), ep(3, "ST", &[])],
                uses_cluster: true,
                uses_local: false,
                zone: None,
                cluster: vec![1],
                local: vec![],
                has_any: true,
            },
            Case {
                name: "cluster: fallback to serving terminating",
                eps: vec![ep(1, "ST", &[]), ep(2, "T", &[]), ep(3, "", &[])],
                uses_cluster: true,
                uses_local: false,
                zone: None,
                cluster: vec![1],
                local: vec![],
                has_any: true,
            },
            Case {
                name: "cluster: nothing usable",
                eps: vec![ep(2, "T", &[]), ep(3, "", &[])],
                uses_cluster: true,
                uses_local: false,
                zone: None,
                cluster: vec![],
                local: vec![],
                has_any: false,
            },
            Case {
                name: "local only: local ready",
                eps: vec![ep(1, "RL", &[]), ep(2, "R", &[]), ep(3, "STL", &[])],
                uses_cluster: false,
                uses_local: true,
                zone: None,
                cluster: vec![],
                local: vec![1],
                has_any: true,
            },
            Case {
                name: "local: fallback to local serving terminating",
                eps: vec![ep(1, "STL", &[]), ep(2, "R", &[])],
                uses_cluster: false,
                uses_local: true,
                zone: None,
                cluster: vec![],
                local: vec![1],
                has_any: true,
            },
            Case {
                name: "local: none local but some remote",
                eps: vec![ep(2, "R", &[])],
                uses_cluster: false,
                uses_local: true,
                zone: None,
                cluster: vec![],
                local: vec![],
                has_any: true,
            },
            Case {
                name: "topology: zone hints filter",
                eps: vec![
                    ep(1, "R", &["a"]),
                    ep(2, "R", &["b"]),
                    ep(3, "R", &["a", "b"]),
                ],
                uses_cluster: true,
                uses_local: false,
                zone: Some("a"),
                cluster: vec![1, 3],
                local: vec![],
                has_any: true,
            },
            Case {
                name: "topology: one ready endpoint without hints disables",
                eps: vec![ep(1, "R", &["a"]), ep(2, "R", &[])],
                uses_cluster: true,
                uses_local: false,
                zone: Some("a"),
                cluster: vec![1, 2],
                local: vec![],
                has_any: true,
            },
            Case {
                name: "topology: no endpoint for our zone disables",
                eps: vec![ep(1, "R", &["b"]), ep(2, "R", &["c"])],
                uses_cluster: true,
                uses_local: false,
                zone: Some("a"),
                cluster: vec![1, 2],
                local: vec![],
                has_any: true,
            },
            Case {
                name: "topology: node without zone disables",
                eps: vec![ep(1, "R", &["a"]), ep(2, "R", &["b"])],
                uses_cluster: true,
                uses_local: false,
                zone: None,
                cluster: vec![1, 2],
                local: vec![],
                has_any: true,
            },
        ];
        for c in cases {
            let refs: Vec<&EndpointInfo> = c.eps.iter().collect();
            let got = categorize_endpoints(&refs, c.uses_cluster, c.uses_local, c.zone);
            assert_eq!(lasts(&got.cluster), c.cluster, "{}: cluster", c.name);
            assert_eq!(lasts(&got.local), c.local, "{}: local", c.name);
            assert_eq!(got.has_any, c.has_any, "{}: has_any", c.name);
        }
    }
}
