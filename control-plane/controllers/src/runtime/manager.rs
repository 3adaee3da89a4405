//! The controller manager: the list of controllers, `--controllers` selection, and running
//! the selected ones (under leader election or not).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::RuntimeError;
use super::controller::Controller;
use super::informers::Informers;
use super::leader::{LeaderElector, LeaseConfig};

/// The controller manager's flags that controllers read (upstream's
/// `--node-monitor-grace-period`, `--allocate-node-cidrs`, ...). Each controller validates
/// the ones it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerOptions {
    /// `--node-monitor-grace-period`: how long a node may stay silent before it is
    /// considered unreachable.
    pub node_monitor_grace_period: Duration,
    /// `--allocate-node-cidrs`: whether node IPAM hands out pod CIDRs.
    pub allocate_node_cidrs: bool,
    /// `--cluster-cidr`: comma-separated, at most one IPv4 and one IPv6 CIDR.
    pub cluster_cidr: Option<String>,
    /// `--node-cidr-mask-size` (single-stack clusters).
    pub node_cidr_mask_size: Option<u8>,
    /// `--node-cidr-mask-size-ipv4` (dual-stack clusters).
    pub node_cidr_mask_size_ipv4: Option<u8>,
    /// `--node-cidr-mask-size-ipv6` (dual-stack clusters).
    pub node_cidr_mask_size_ipv6: Option<u8>,
    /// `--root-ca-file`: the CA bundle published as `kube-root-ca.crt` in every namespace.
    pub root_ca_file: Option<std::path::PathBuf>,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            node_monitor_grace_period: crate::nodelifecycle::DEFAULT_MONITOR_GRACE_PERIOD,
            allocate_node_cidrs: false,
            cluster_cidr: None,
            node_cidr_mask_size: None,
            node_cidr_mask_size_ipv4: None,
            node_cidr_mask_size_ipv6: None,
            root_ca_file: None,
        }
    }
}

/// Builds a controller (its watches and reconcile function) on a client, configured by
/// the manager's options.
pub type ControllerFactory = fn(&kube::Client, &ControllerOptions) -> Controller;

/// A registered constructor: a [`ControllerFactory`] or a closure (tests register closures
/// that capture what they observe).
type Constructor = Arc<dyn Fn(&kube::Client, &ControllerOptions) -> Controller + Send + Sync>;

/// Every controller `kwk-control-plane controller-manager` runs by default, by the name
/// `--controllers` uses (upstream's names). Append new controllers here.
/// Controllers without options are wrapped in a closure that ignores them.
pub const DEFAULT_CONTROLLERS: &[(&str, ControllerFactory)] = &[
    ("serviceaccount", crate::serviceaccount::controller),
    (
        "root-ca-cert-publisher",
        crate::rootcacertpublisher::controller,
    ),
    ("job", |c, _| crate::job::controller::controller(c)),
    ("cronjob", |c, _| crate::cronjob::controller::controller(c)),
    ("daemonset", |c, _| {
        crate::daemonset::controller::controller(c)
    }),
    ("statefulset", |c, _| {
        crate::statefulset::controller::controller(c)
    }),
    ("endpointslice", |c, _| {
        crate::endpointslice::controller::controller(c)
    }),
    ("disruption", |c, _| {
        crate::disruption::controller::controller(c)
    }),
    ("podgc", |c, _| crate::podgc::controller::controller(c)),
    ("persistentvolume-binder", |c, _| {
        crate::persistentvolume::controller::controller(c)
    }),
    ("pvc-protection", |c, _| {
        crate::volumeprotection::controller::pvc_controller(c)
    }),
    ("pv-protection", |c, _| {
        crate::volumeprotection::controller::pv_controller(c)
    }),
    ("garbagecollector", |c, _| {
        crate::garbagecollector::controller::controller(c)
    }),
    (
        "nodelifecycle",
        crate::nodelifecycle::controller::controller,
    ),
    ("nodeipam", crate::nodeipam::controller::controller),
    ("namespace", crate::namespace::controller::controller),
    ("replicaset", |c, _| {
        crate::replicaset::controller::controller(c)
    }),
    ("deployment", |c, _| {
        crate::deployment::controller::controller(c)
    }),
];

/// Upstream's `--controllers` rule: `*` turns on every controller, `name` turns one on,
/// `-name` turns one off (winning over `*`). Returns the selected names in `known` order.
pub fn select<'a>(known: &[&'a str], flags: &[String]) -> Result<Vec<&'a str>, RuntimeError> {
    for flag in flags {
        let name = flag.strip_prefix('-').unwrap_or(flag);
        if name != "*" && !known.contains(&name) {
            return Err(RuntimeError::UnknownController {
                name: name.to_string(),
                known: known.join(", "),
            });
        }
    }
    let star = flags.iter().any(|f| f == "*");
    Ok(known
        .iter()
        .copied()
        .filter(|name| {
            let on = flags.iter().any(|f| f == name);
            let off = flags.iter().any(|f| f.strip_prefix('-') == Some(name));
            on || (star && !off)
        })
        .collect())
}

/// A set of controllers sharing one client and one set of watches ([`Informers`]).
pub struct ControllerManager {
    client: kube::Client,
    options: ControllerOptions,
    controllers: Vec<(&'static str, Constructor)>,
    informers: Informers,
}

impl ControllerManager {
    /// A manager with no controllers.
    pub fn new(client: kube::Client) -> Self {
        ControllerManager {
            client,
            options: ControllerOptions::default(),
            controllers: Vec::new(),
            informers: Informers::new(),
        }
    }

    /// A manager with [`DEFAULT_CONTROLLERS`].
    pub fn with_default_controllers(client: kube::Client) -> Self {
        DEFAULT_CONTROLLERS
            .iter()
            .fold(Self::new(client), |manager, (name, factory)| {
                manager.register_with_options(name, *factory)
            })
    }

    /// Sets the options every controller is built with (default: upstream's defaults).
    pub fn with_options(mut self, options: ControllerOptions) -> Self {
        self.options = options;
        self
    }

    /// The options the controllers are built with.
    pub fn options(&self) -> &ControllerOptions {
        &self.options
    }

    /// Adds a controller under `name` (the name `--controllers` uses).
    pub fn register(
        self,
        name: &'static str,
        factory: impl Fn(&kube::Client) -> Controller + Send + Sync + 'static,
    ) -> Self {
        self.register_with_options(name, move |client, _| factory(client))
    }

    /// Adds a controller that reads the manager's [`ControllerOptions`].
    pub fn register_with_options(
        mut self,
        name: &'static str,
        factory: impl Fn(&kube::Client, &ControllerOptions) -> Controller + Send + Sync + 'static,
    ) -> Self {
        self.controllers.push((name, Arc::new(factory)));
        self
    }

    /// Keeps the controllers `--controllers` selects (see [`select`]).
    pub fn select(mut self, flags: &[String]) -> Result<Self, RuntimeError> {
        let names = self.names();
        let chosen = select(&names, flags)?;
        self.controllers.retain(|(name, _)| chosen.contains(name));
        Ok(self)
    }

    /// The registered controllers' names.
    pub fn names(&self) -> Vec<&'static str> {
        self.controllers.iter().map(|(name, _)| *name).collect()
    }

    /// The watches the controllers share (filled when [`Self::run`] builds them).
    pub fn informers(&self) -> &Informers {
        &self.informers
    }

    /// Runs every controller until `token` is cancelled.
    pub async fn run(self, token: CancellationToken) {
        tracing::info!(controllers = ?self.names(), "starting controllers");
        let controllers: Vec<Controller> = self
            .controllers
            .iter()
            .map(|(_, factory)| {
                self.informers
                    .scope(|| factory(&self.client, &self.options))
            })
            .collect();
        tracing::info!(
            watches = self.informers.watch_count(),
            "controllers share their watches"
        );
        let runs = controllers
            .into_iter()
            .map(|controller| controller.run(token.clone()));
        futures::future::join_all(runs).await;
    }

    /// Runs the controllers only while holding the `lease`; `Err(Leader(Lost))` when the
    /// lease is lost (the caller exits, like upstream), `Ok` when `token` is cancelled.
    pub async fn run_with_leader_election(
        self,
        lease: LeaseConfig,
        token: CancellationToken,
    ) -> Result<(), RuntimeError> {
        let elector = LeaderElector::new(self.client.clone(), lease);
        elector.run(token, |leading| self.run(leading)).await?;
        Ok(())
    }
}

impl std::fmt::Debug for ControllerManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerManager")
            .field("controllers", &self.names())
            .field("options", &self.options)
            .field("informers", &self.informers)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn controllers_flag_selects_like_upstream() {
        let known = ["deployment", "job", "serviceaccount"];
        let cases: &[(&[&str], &[&str])] = &[
            (&["*"], &["deployment", "job", "serviceaccount"]),
            (&["*", "-job"], &["deployment", "serviceaccount"]),
            (&["job"], &["job"]),
            (&["-job"], &[]),
            (&[], &[]),
        ];
        for (given, want) in cases {
            let got = select(&known, &flags(given)).expect("known names");
            assert_eq!(&got, want, "--controllers {given:?}");
        }
    }

    #[test]
    fn unknown_controller_names_are_rejected() {
        let err = select(&["job"], &flags(&["*", "-nope"])).expect_err("unknown");
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[tokio::test]
    async fn factories_are_built_with_the_managers_options() {
        use std::sync::Mutex;

        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        let client = kube::Client::try_from(config).expect("client");
        let options = ControllerOptions {
            node_monitor_grace_period: Duration::from_secs(3),
            allocate_node_cidrs: true,
            ..ControllerOptions::default()
        };
        let seen: Arc<Mutex<Vec<(&str, ControllerOptions)>>> = Arc::default();
        let (with, plain) = (seen.clone(), seen.clone());
        let manager = ControllerManager::new(client)
            .with_options(options.clone())
            .register_with_options("configured", move |client, options| {
                with.lock()
                    .expect("lock")
                    .push(("configured", options.clone()));
                Controller::new(
                    "configured",
                    super::super::Watches::new(client.clone()),
                    |_| super::super::Plan::default(),
                )
            })
            .register("plain", move |client| {
                plain
                    .lock()
                    .expect("lock")
                    .push(("plain", ControllerOptions::default()));
                Controller::new("plain", super::super::Watches::new(client.clone()), |_| {
                    super::super::Plan::default()
                })
            });
        let token = CancellationToken::new();
        token.cancel();
        manager.run(token).await;
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(
            seen,
            vec![
                ("configured", options),
                ("plain", ControllerOptions::default())
            ]
        );
    }
}
