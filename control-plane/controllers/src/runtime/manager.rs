//! The controller manager: the list of controllers, `--controllers` selection, and running
//! the selected ones (under leader election or not).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::RuntimeError;
use super::controller::Controller;
use super::leader::{LeaderElector, LeaseConfig};

/// Builds a controller (its watches and reconcile function) on a client.
pub type ControllerFactory = fn(&kube::Client) -> Controller;

/// A registered constructor: a [`ControllerFactory`] or a closure (tests register closures
/// that capture what they observe).
type Constructor = Arc<dyn Fn(&kube::Client) -> Controller + Send + Sync>;

/// Every controller `kwk-control-plane controller-manager` runs by default, by the name
/// `--controllers` uses (upstream's names). Append new controllers here.
pub const DEFAULT_CONTROLLERS: &[(&str, ControllerFactory)] = &[
    ("serviceaccount", crate::serviceaccount::controller),
    ("job", crate::job::controller::controller),
    ("cronjob", crate::cronjob::controller::controller),
    ("daemonset", crate::daemonset::controller::controller),
    ("statefulset", crate::statefulset::controller::controller),
    (
        "endpointslice",
        crate::endpointslice::controller::controller,
    ),
    ("disruption", crate::disruption::controller::controller),
    ("podgc", crate::podgc::controller::controller),
    (
        "garbagecollector",
        crate::garbagecollector::controller::controller,
    ),
    ("replicaset", crate::replicaset::controller::controller),
    ("deployment", crate::deployment::controller::controller),
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

/// A set of controllers sharing one client.
pub struct ControllerManager {
    client: kube::Client,
    controllers: Vec<(&'static str, Constructor)>,
}

impl ControllerManager {
    /// A manager with no controllers.
    pub fn new(client: kube::Client) -> Self {
        ControllerManager {
            client,
            controllers: Vec::new(),
        }
    }

    /// A manager with [`DEFAULT_CONTROLLERS`].
    pub fn with_default_controllers(client: kube::Client) -> Self {
        DEFAULT_CONTROLLERS
            .iter()
            .fold(Self::new(client), |manager, (name, factory)| {
                manager.register(name, *factory)
            })
    }

    /// Adds a controller under `name` (the name `--controllers` uses).
    pub fn register(
        mut self,
        name: &'static str,
        factory: impl Fn(&kube::Client) -> Controller + Send + Sync + 'static,
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

    /// Runs every controller until `token` is cancelled.
    pub async fn run(self, token: CancellationToken) {
        tracing::info!(controllers = ?self.names(), "starting controllers");
        let runs = self.controllers.iter().map(|(_, factory)| {
            let controller = factory(&self.client);
            controller.run(token.clone())
        });
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
}
