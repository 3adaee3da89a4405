//! `kwk-control-plane all`: the apiserver, the controller manager and the scheduler in one
//! process and one runtime. The controllers and the scheduler talk to the apiserver like
//! any client, over its loopback address with the admin client certificate of `--pki-dir`;
//! they start once it answers `/readyz`. One [`CancellationToken`] stops everything:
//! SIGINT/SIGTERM, or the first component to fail (the process then exits non-zero with an
//! error naming it). Shutdown order: controllers and scheduler first (they release their
//! Leases through the apiserver), then the apiserver, then the store.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use kwk_control_plane::apiserver::pki::{self, CertAndKey, PkiPaths};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{
    ApiServerFlags, CONTROLLER_MANAGER_LEASE, ControllerManagerFlags, LeaderElectionFlags,
    SCHEDULER_LEASE, SchedulerFlags,
};

/// How long the apiserver may take to answer `/readyz` after it started listening.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Time between `/readyz` probes.
const READY_POLL: Duration = Duration::from_millis(200);
/// How long the controllers and the scheduler get to stop before they are aborted.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The user of the client certificate issued when `--pki-dir` has no admin certificate.
const LOOPBACK_USER: &str = "system:kwk-control-plane";

/// The in-process components' flags.
pub(super) struct ComponentFlags {
    pub leader_election: LeaderElectionFlags,
    pub controllers: ControllerManagerFlags,
    pub scheduler: SchedulerFlags,
}

/// Runs all three components until a signal (`Ok`) or the first failure (an error naming
/// the component).
pub(super) async fn run(
    apiserver: ApiServerFlags,
    mut components: ComponentFlags,
) -> anyhow::Result<()> {
    // The cluster CA the apiserver serves with is the bundle pods are given.
    components
        .controllers
        .root_ca_file
        .get_or_insert_with(|| apiserver.pki_dir.join("ca.crt"));
    // Bad controller flags fail before anything starts.
    super::controller_options(&components.controllers).context("controller-manager")?;
    let token = CancellationToken::new();
    super::cancel_on_signal(token.clone())?;
    let pki_paths = PkiPaths::new(&apiserver.pki_dir);
    let (opened, server) = super::start_apiserver(apiserver).await?;
    let addr = server.addr;
    let stop_apiserver = server.stop_token();
    let apiserver_stopped = CancellationToken::new();
    let apiserver_task = tokio::spawn({
        let stopped = apiserver_stopped.clone();
        async move {
            server.wait().await;
            stopped.cancel();
        }
    });
    let outcome = supervise(
        &pki_paths,
        addr,
        &apiserver_stopped,
        components,
        token.clone(),
    )
    .await;
    token.cancel();
    stop_apiserver.cancel();
    if let Err(err) = apiserver_task.await {
        tracing::warn!("apiserver task: {err}");
    }
    opened.close().await;
    if outcome.is_ok() {
        tracing::info!("all components stopped");
    }
    outcome
}

/// Waits for the apiserver to be ready, runs the controller manager and the scheduler, and
/// returns at the first of: `token` cancelled (`Ok`), a component stopping on its own or
/// failing, the apiserver stopping unexpectedly. The components are stopped on return.
async fn supervise(
    pki_paths: &PkiPaths,
    addr: SocketAddr,
    apiserver_stopped: &CancellationToken,
    flags: ComponentFlags,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let client = loopback_client(pki_paths, addr)
        .await
        .context("apiserver: building the loopback client")?;
    tokio::select! {
        ready = wait_ready(&client, &token) => {
            if !ready.context("apiserver")? {
                return Ok(());
            }
        }
        () = apiserver_stopped.cancelled() => anyhow::bail!("apiserver: stopped unexpectedly"),
    }
    tracing::info!("apiserver ready; starting the controller manager and the scheduler");
    let ComponentFlags {
        leader_election,
        controllers,
        scheduler,
    } = flags;
    let mut components = JoinSet::new();
    let mut names = HashMap::new();
    let handle = components.spawn(super::run_controller_manager(
        client.clone(),
        controllers,
        leader_election.lease(CONTROLLER_MANAGER_LEASE),
        token.clone(),
    ));
    names.insert(handle.id(), "controller-manager");
    let handle = components.spawn(super::run_scheduler(
        client,
        scheduler,
        leader_election.lease(SCHEDULER_LEASE),
        token.clone(),
    ));
    names.insert(handle.id(), "scheduler");
    let name_of = |id| names.get(&id).copied().unwrap_or("a component");

    let failure = tokio::select! {
        () = token.cancelled() => None,
        () = apiserver_stopped.cancelled() => Some(anyhow::anyhow!("apiserver: stopped unexpectedly")),
        Some(done) = components.join_next_with_id() => match done {
            Ok((id, Ok(()))) if !token.is_cancelled() => {
                Some(anyhow::anyhow!("{}: stopped unexpectedly", name_of(id)))
            }
            Ok((_, Ok(()))) => None,
            Ok((id, Err(err))) => Some(err.context(name_of(id))),
            Err(err) => Some(anyhow::anyhow!("{}: {err}", name_of(err.id()))),
        },
    };
    token.cancel();
    let drain = async {
        while let Some(done) = components.join_next_with_id().await {
            match done {
                Ok((_, Ok(()))) => {}
                Ok((id, Err(err))) => tracing::warn!("{} while stopping: {err:#}", name_of(id)),
                Err(err) => tracing::warn!("{} while stopping: {err}", name_of(err.id())),
            }
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::warn!("components did not stop within {SHUTDOWN_GRACE:?}; aborting them");
        components.abort_all();
    }
    failure.map_or(Ok(()), Err)
}

/// A client for the apiserver listening on `addr`, over loopback when it listens on all
/// addresses, as the admin (`admin.crt`/`admin.key` in `--pki-dir`) or, without those, as
/// a `system:masters` user certified by `ca.key`.
async fn loopback_client(paths: &PkiPaths, addr: SocketAddr) -> anyhow::Result<kube::Client> {
    let ca_pem = std::fs::read_to_string(paths.ca_cert())
        .with_context(|| format!("reading {}", paths.ca_cert().display()))?;
    let (user, credentials) = loopback_credentials(paths)?;
    let text = pki::kubeconfig(&loopback_url(addr), &ca_pem, &credentials, user);
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text)?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

/// The admin certificate of `--pki-dir`, or a fresh one (kept in memory) from the CA key.
fn loopback_credentials(paths: &PkiPaths) -> anyhow::Result<(&'static str, CertAndKey)> {
    if paths.admin_cert().exists() && paths.admin_key().exists() {
        return Ok((
            "kubernetes-admin",
            pki::load_pair(&paths.admin_cert(), &paths.admin_key())?,
        ));
    }
    let ca = pki::load_pair(&paths.ca_cert(), &paths.ca_key()).with_context(|| {
        format!(
            "{} has no admin.crt/admin.key to reach the apiserver with (--generate-pki \
             creates them) and no CA key to issue a client certificate from",
            paths.dir().display()
        )
    })?;
    let issued = pki::issue_client(&ca, LOOPBACK_USER, Some("system:masters"))?;
    Ok((LOOPBACK_USER, issued))
}

/// `https://` + the address to reach a server bound to `addr` from this host.
fn loopback_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("https://{}", SocketAddr::new(ip, addr.port()))
}

/// Polls `/readyz` until it answers `ok` (`true`), `token` is cancelled (`false`), or
/// [`READY_TIMEOUT`] passes (an error with the last answer).
async fn wait_ready(client: &kube::Client, token: &CancellationToken) -> anyhow::Result<bool> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let request = http::Request::get("/readyz").body(Vec::new())?;
        let last = match client.request_text(request).await {
            Ok(body) if body.trim() == "ok" => return Ok(true),
            Ok(body) => body,
            Err(err) => err.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("not ready within {READY_TIMEOUT:?}: /readyz answered {last:?}");
        }
        tokio::select! {
            () = token.cancelled() => return Ok(false),
            () = tokio::time::sleep(READY_POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_url_reaches_a_server_bound_to_all_addresses_over_loopback() {
        let cases = [
            ("0.0.0.0:6443", "https://127.0.0.1:6443"),
            ("[::]:6443", "https://[::1]:6443"),
            ("127.0.0.1:7000", "https://127.0.0.1:7000"),
            ("10.1.2.3:6443", "https://10.1.2.3:6443"),
        ];
        for (bind, want) in cases {
            let addr: SocketAddr = bind.parse().expect("addr");
            assert_eq!(loopback_url(addr), want, "{bind}");
        }
    }
}
