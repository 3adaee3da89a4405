//! Leader election on a coordination.k8s.io/v1 Lease, like upstream's leaderelection package:
//! a candidate takes the Lease when it is free or its holder has not renewed it for
//! `leaseDurationSeconds` (measured on the candidate's own clock from when it last saw the
//! record change, so clock skew between machines does not matter), the leader renews every
//! `retry_period`, and steps down when it cannot renew for `renew_deadline`. Every write
//! carries the `resourceVersion` it was read at, so two candidates never both win.
//! [`plan_lease`] is the pure decision; [`LeaderElector`] does the I/O. The controller
//! manager uses `kube-system/kube-controller-manager`, the scheduler `kube-system/kube-scheduler`.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Which Lease, who we are, and the timing (upstream's flags and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// `holderIdentity`: unique per process.
    pub identity: String,
    /// `--leader-elect-lease-duration` (15 s): how long others wait before taking over.
    pub lease_duration: Duration,
    /// `--leader-elect-renew-deadline` (10 s): how long the leader keeps trying to renew.
    pub renew_deadline: Duration,
    /// `--leader-elect-retry-period` (2 s): between attempts.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// `namespace/name` with upstream's default timing and [`default_identity`].
    pub fn new(namespace: &str, name: &str) -> Self {
        LeaseConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: default_identity(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// `<hostname>_<random hex>`, as upstream components name themselves.
pub fn default_identity() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    // RandomState is seeded randomly per process: two hashes give 128 random-enough bits.
    let mut random = String::new();
    for salt in 0..2u32 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(salt);
        hasher.write_u32(std::process::id());
        random.push_str(&format!("{:016x}", hasher.finish()));
    }
    format!("{host}_{random}")
}

/// Why an election ended badly.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader election lost: lease {namespace}/{name} not renewed within the renew deadline")]
    Lost { namespace: String, name: String },
}

/// What a candidate knows about the Lease from its previous reads.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The spec last read.
    spec: Option<LeaseSpec>,
    /// When (on our clock) the spec last changed.
    changed_at: Option<Instant>,
}

impl Observed {
    /// Records a freshly read spec.
    pub fn record(&mut self, spec: Option<&LeaseSpec>, now: Instant) {
        if self.spec.as_ref() != spec || self.changed_at.is_none() {
            self.spec = spec.cloned();
            self.changed_at = Some(now);
        }
    }

    /// Whether the holder (if any) has let the lease lapse as of `now`.
    fn expired(&self, now: Instant) -> bool {
        let Some(spec) = &self.spec else {
            return true;
        };
        let seconds = spec.lease_duration_seconds.unwrap_or(0).max(0);
        let duration = Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
        match self.changed_at {
            Some(changed) => now.saturating_duration_since(changed) > duration,
            None => true,
        }
    }
}

/// The spec to write to hold the lease as `identity` at `now`, or `None` when someone else
/// holds it and has not let it lapse.
pub fn plan_lease(
    observed: &Observed,
    identity: &str,
    lease_duration: Duration,
    now: Timestamp,
    now_instant: Instant,
) -> Option<LeaseSpec> {
    let current = observed.spec.clone().unwrap_or_default();
    let holder = current.holder_identity.as_deref().unwrap_or("");
    let seconds = i32::try_from(lease_duration.as_secs())
        .unwrap_or(i32::MAX)
        .max(1);
    if holder == identity {
        return Some(LeaseSpec {
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(seconds),
            ..current
        });
    }
    if !holder.is_empty() && !observed.expired(now_instant) {
        return None;
    }
    Some(LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(seconds),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(
            current
                .lease_transitions
                .unwrap_or(0)
                .saturating_add(i32::from(!holder.is_empty())),
        ),
        ..current
    })
}

/// One candidate for one Lease.
#[derive(Debug)]
pub struct LeaderElector {
    leases: Api<Lease>,
    config: LeaseConfig,
    observed: Observed,
}

impl LeaderElector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        LeaderElector {
            leases: Api::namespaced(client, &config.namespace),
            config,
            observed: Observed::default(),
        }
    }

    /// Campaigns until elected, then runs `on_started_leading` with a token that is cancelled
    /// when leadership ends. Returns `Ok` when `token` is cancelled (the lease is released
    /// so a successor need not wait out the lease duration), or [`LeaderError::Lost`] when
    /// renewing failed for `renew_deadline` — the caller must stop working for good (upstream
    /// components exit).
    pub async fn run<F, Fut>(
        mut self,
        token: CancellationToken,
        on_started_leading: F,
    ) -> Result<(), LeaderError>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()>,
    {
        let lease = format!("{}/{}", self.config.namespace, self.config.name);
        tracing::info!(%lease, identity = %self.config.identity, "attempting to acquire leader lease");
        loop {
            if self.try_acquire_or_renew().await {
                break;
            }
            tokio::select! {
                () = token.cancelled() => return Ok(()),
                () = tokio::time::sleep(self.config.retry_period) => {}
            }
        }
        tracing::info!(%lease, identity = %self.config.identity, "acquired leader lease");
        let leading = token.child_token();
        let work = on_started_leading(leading.clone());
        let mut work = std::pin::pin!(work);
        let mut work_done = false;
        let lost = tokio::select! {
            () = &mut work => { work_done = true; false }
            lost = self.renew(&leading) => lost,
        };
        leading.cancel();
        if !work_done {
            work.await;
        }
        if lost {
            tracing::error!(%lease, "leader lease lost");
            return Err(LeaderError::Lost {
                namespace: self.config.namespace.clone(),
                name: self.config.name.clone(),
            });
        }
        self.release().await;
        Ok(())
    }

    /// Renews every retry period until `leading` is cancelled (false) or renewing failed for
    /// the renew deadline (true).
    async fn renew(&mut self, leading: &CancellationToken) -> bool {
        let mut last_renewed = Instant::now();
        loop {
            tokio::select! {
                () = leading.cancelled() => return false,
                () = tokio::time::sleep(self.config.retry_period) => {}
            }
            let attempt = tokio::time::timeout(
                self.config.retry_period.max(Duration::from_millis(100)),
                self.try_acquire_or_renew(),
            )
            .await;
            if attempt == Ok(true) {
                last_renewed = Instant::now();
            } else if last_renewed.elapsed() >= self.config.renew_deadline {
                return true;
            }
        }
    }

    /// One attempt; true when we hold the lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> bool {
        let now = Timestamp::now();
        let now_instant = Instant::now();
        let existing = match self.leases.get_opt(&self.config.name).await {
            Ok(existing) => existing,
            Err(err) => {
                tracing::warn!(lease = %self.config.name, "reading the leader lease: {err}");
                return false;
            }
        };
        self.observed
            .record(existing.as_ref().and_then(|l| l.spec.as_ref()), now_instant);
        let Some(spec) = plan_lease(
            &self.observed,
            &self.config.identity,
            self.config.lease_duration,
            now,
            now_instant,
        ) else {
            return false;
        };
        let written = match existing {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                self.leases.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                // metadata.resourceVersion stays as read: a concurrent writer makes this 409.
                lease.spec = Some(spec);
                self.leases
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(lease) => {
                self.observed.record(lease.spec.as_ref(), Instant::now());
                true
            }
            Err(kube::Error::Api(status)) if status.code == 409 => false,
            Err(err) => {
                tracing::warn!(lease = %self.config.name, "writing the leader lease: {err}");
                false
            }
        }
    }

    /// Gives the lease up (holder cleared, 1 s duration) if we still hold it.
    async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.leases.get_opt(&self.config.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        if let Err(err) = self
            .leases
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(lease = %self.config.name, "releasing the leader lease: {err}");
        }
    }
}

#[cfg(test)]
#[path = "leader_tests.rs"]
mod tests;
