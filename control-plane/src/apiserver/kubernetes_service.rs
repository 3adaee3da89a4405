//! The `kubernetes` Service in `default` (the first address of the service range, port 443
//! `https` → the apiserver's secure port) and its Endpoints and EndpointSlice pointing at the
//! advertise address, created at start-up and corrected on every start (a changed port or
//! address is rewritten), as upstream's bootstrap controller and endpoint reconciler do.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

use serde_json::{Value, json};

use super::errors::ApiError;
use super::rest::write::WriteParams;
use super::rest::{Registry, Target};

const NAME: &str = "kubernetes";
const NAMESPACE: &str = "default";

/// The address other components reach the apiserver at: `--advertise-address`, else the
/// bind address when it is specific, else the host's primary non-loopback IPv4 address
/// (the source address of its default route), else loopback.
pub fn advertise_address(explicit: Option<IpAddr>, bind: IpAddr) -> IpAddr {
    if let Some(ip) = explicit {
        return ip;
    }
    if !bind.is_unspecified() {
        return bind;
    }
    host_ipv4().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The source address the kernel picks for a public destination (no packet is sent).
fn host_ipv4() -> Option<IpAddr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect(SocketAddr::from(([192, 0, 2, 1], 9))).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

fn target(registry: &Registry, plural: &str, group: &str) -> Result<Target, ApiError> {
    let catalog = registry.catalog();
    let version = "v1";
    let def = catalog
        .lookup(group, version, plural)
        .cloned()
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))?;
    Ok(Target {
        def,
        namespace: Some(NAMESPACE.into()),
        name: Some(NAME.into()),
        subresource: None,
    })
}

/// Creates `body`, or when it exists, sets the fields `fields` lists to `body`'s.
async fn ensure(
    registry: &Registry,
    target: &Target,
    body: Value,
    fields: &[&str],
) -> Result<(), ApiError> {
    match registry
        .create(target, body.clone(), &WriteParams::default())
        .await
    {
        Ok(_) => return Ok(()),
        Err(e) if e.code == 409 => {}
        Err(e) => return Err(e),
    }
    registry
        .guaranteed_update(target, None, false, |current| {
            let mut next = current.clone();
            for field in fields {
                let wanted = body.pointer(field).cloned().unwrap_or(Value::Null);
                if let Some(slot) = next.pointer_mut(field) {
                    *slot = wanted;
                } else if let Some((parent, leaf)) = field.rsplit_once('/')
                    && let Some(map) = next.pointer_mut(parent).and_then(Value::as_object_mut)
                {
                    map.insert(leaf.to_string(), wanted);
                }
            }
            Ok(next)
        })
        .await
        .map(|_| ())
}

/// Creates or corrects the `kubernetes` Service, Endpoints and EndpointSlice.
pub async fn bootstrap(
    registry: &Registry,
    advertise: IpAddr,
    secure_port: u16,
) -> Result<(), ApiError> {
    let range = registry.services().ranges().cluster_ip_range;
    let cluster_ip = range
        .first_service_ip()
        .ok_or_else(|| ApiError::internal("the service range has no addresses"))?;
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip.to_string(),
            "sessionAffinity": "None",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": secure_port}],
        },
    });
    ensure(
        registry,
        &target(registry, "services", "")?,
        service,
        &["/spec/ports"],
    )
    .await?;
    let port = json!({"name": "https", "port": secure_port, "protocol": "TCP"});
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": advertise.to_string()}], "ports": [port]}],
    });
    ensure(
        registry,
        &target(registry, "endpoints", "")?,
        endpoints,
        &["/subsets"],
    )
    .await?;
    let family = if advertise.is_ipv4() { "IPv4" } else { "IPv6" };
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": NAME}},
        "addressType": family,
        "endpoints": [{"addresses": [advertise.to_string()], "conditions": {"ready": true}}],
        "ports": [port],
    });
    ensure(
        registry,
        &target(registry, "endpointslices", "discovery.k8s.io")?,
        slice,
        &["/addressType", "/endpoints", "/ports"],
    )
    .await
}
