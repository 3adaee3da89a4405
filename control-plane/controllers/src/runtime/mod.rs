//! The controller runtime: everything between the pure planners and the apiserver.
//!
//! - [`client_from_kubeconfig`]: a kube-rs client from a kubeconfig file.
//! - [`queue`]: the work queue of object keys (dedup, per-key exponential backoff, delays).
//! - [`controller`]: watch caches (kube-rs reflectors, read-only stores) that feed the queue,
//!   and the loop that plans one key at a time and executes the plan.
//! - [`informers`]: the registry that lets a manager's controllers share one list+watch and
//!   one store per (kind, namespace scope, selectors) — upstream's shared informers.
//! - [`executor`]: performs a planner's [`Action`](crate::action::Action)s in order.
//! - [`leader`]: leader election on a coordination.k8s.io/v1 Lease (reused by the scheduler).
//! - [`manager`]: the controller manager — the list of controllers and how they are selected
//!   and run.
//!
//! # Adding a controller
//!
//! Write the planner as a pure function in its module (`crate::replicaset::plan`, ...), then a
//! factory `pub fn controller(client: &kube::Client, options: &ControllerOptions) ->
//! Controller` next to it (a [`manager::ControllerFactory`]) that creates its watches with
//! [`Watches::new`] and declares each with [`Watches::watch`] (each watched kind maps a changed
//! object to the keys to reconcile), reads the [`ControllerOptions`] it needs (validating
//! them), and returns a [`Controller`] with a reconcile closure that reads the stores and calls
//! the planner (`crate::serviceaccount::controller` is the worked example). Finally append
//! `("name", crate::module::controller)` to [`manager::DEFAULT_CONTROLLERS`].
//!
//! Call [`Watches::new`] inside the factory (not earlier, not on another thread): it joins the
//! shared watches of the manager building the controller, so a watch another controller
//! already has (same kind, namespace scope and `watcher::Config`) costs no extra list+watch.

pub mod controller;
pub mod executor;
pub mod informers;
pub mod leader;
pub mod manager;
pub mod queue;

use std::path::{Path, PathBuf};

pub use controller::{Controller, ObjectKey, Plan, Watches};
pub use executor::{ExecError, execute};
pub use informers::Informers;
pub use leader::{LeaderElector, LeaderError, LeaseConfig};
pub use manager::{ControllerManager, ControllerOptions, DEFAULT_CONTROLLERS};

/// Failures of the runtime itself (not of one reconcile).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("reading kubeconfig {path}")]
    ReadKubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("kubeconfig {path} does not configure a usable client")]
    ConfigureClient {
        path: PathBuf,
        #[source]
        source: kube::Error,
    },
    #[error("--controllers names unknown controller {name:?} (known: {known})")]
    UnknownController { name: String, known: String },
    #[error(transparent)]
    Leader(#[from] LeaderError),
}

/// A client for the apiserver that `path` (a kubeconfig file) names, with its current context.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, RuntimeError> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|source| {
        RuntimeError::ReadKubeconfig {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|source| RuntimeError::ReadKubeconfig {
        path: path.to_path_buf(),
        source,
    })?;
    kube::Client::try_from(config).map_err(|source| RuntimeError::ConfigureClient {
        path: path.to_path_buf(),
        source,
    })
}
