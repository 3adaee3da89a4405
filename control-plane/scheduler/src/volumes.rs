//! The scheduler's view of storage: PersistentVolumeClaims, PersistentVolumes and
//! StorageClasses as the watches last saw them, plus the volumes the scheduler has assumed
//! bound (upstream's assume cache): once a pod's WaitForFirstConsumer claim is given a
//! volume, the volume reads as pre-bound to that claim until the watch delivers a newer
//! version of it, so the next pod cannot take it while the API write is in flight.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

/// Claims, volumes and classes, with assumed volumes laid over the watched ones.
#[derive(Clone, Debug, Default)]
pub struct VolumeCache {
    /// By `namespace/name`.
    claims: HashMap<String, Arc<PersistentVolumeClaim>>,
    /// By name, as watched.
    volumes: BTreeMap<String, Arc<PersistentVolume>>,
    /// By name: the volume as the scheduler assumed it (bound to a claim).
    assumed: HashMap<String, Arc<PersistentVolume>>,
    classes: HashMap<String, Arc<StorageClass>>,
}

fn claim_key(claim: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}",
        claim.metadata.namespace.as_deref().unwrap_or("default"),
        claim.metadata.name.as_deref().unwrap_or("")
    )
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

impl VolumeCache {
    /// The claim `namespace/name`.
    pub fn claim(&self, namespace: &str, name: &str) -> Option<&Arc<PersistentVolumeClaim>> {
        self.claims.get(&format!("{namespace}/{name}"))
    }

    /// Records a claim; returns the one it replaces.
    pub fn upsert_claim(
        &mut self,
        claim: PersistentVolumeClaim,
    ) -> Option<Arc<PersistentVolumeClaim>> {
        self.claims.insert(claim_key(&claim), Arc::new(claim))
    }

    pub fn remove_claim(&mut self, claim: &PersistentVolumeClaim) {
        self.claims.remove(&claim_key(claim));
    }

    /// Keeps only the claims whose `namespace/name` is listed.
    pub fn retain_claims(&mut self, listed: &HashSet<String>) {
        self.claims.retain(|key, _| listed.contains(key));
    }

    /// The volume `name`, assumed or watched.
    pub fn volume(&self, name: &str) -> Option<&Arc<PersistentVolume>> {
        self.assumed.get(name).or_else(|| self.volumes.get(name))
    }

    /// The volume `name` as the watch last delivered it (what the apiserver holds).
    pub fn watched_volume(&self, name: &str) -> Option<&Arc<PersistentVolume>> {
        self.volumes.get(name)
    }

    /// Every volume (assumed ones as assumed), by name.
    pub fn volumes(&self) -> impl Iterator<Item = &Arc<PersistentVolume>> {
        self.volumes
            .iter()
            .map(|(name, pv)| self.assumed.get(name).unwrap_or(pv))
    }

    /// Records a watched volume; returns the one it replaces. A newer version than the
    /// one assumed ends the assumption.
    pub fn upsert_volume(&mut self, pv: PersistentVolume) -> Option<Arc<PersistentVolume>> {
        let name = name_of(&pv.metadata);
        if let Some(assumed) = self.assumed.get(&name)
            && assumed.metadata.resource_version != pv.metadata.resource_version
        {
            self.assumed.remove(&name);
        }
        self.volumes.insert(name, Arc::new(pv))
    }

    pub fn remove_volume(&mut self, name: &str) {
        self.volumes.remove(name);
        self.assumed.remove(name);
    }

    /// Keeps only the volumes whose name is listed.
    pub fn retain_volumes(&mut self, listed: &HashSet<String>) {
        self.volumes.retain(|name, _| listed.contains(name));
        self.assumed.retain(|name, _| listed.contains(name));
    }

    /// Lays `pv` (a watched volume changed by the scheduler, same resourceVersion) over the
    /// watched one until the watch delivers a newer version or [`Self::restore`].
    pub fn assume(&mut self, pv: PersistentVolume) {
        self.assumed.insert(name_of(&pv.metadata), Arc::new(pv));
    }

    /// Drops the assumption on volume `name`.
    pub fn restore(&mut self, name: &str) {
        self.assumed.remove(name);
    }

    /// The StorageClass `name`.
    pub fn class(&self, name: &str) -> Option<&StorageClass> {
        self.classes.get(name).map(|c| c.as_ref())
    }

    /// Records a class; returns the one it replaces.
    pub fn upsert_class(&mut self, class: StorageClass) -> Option<Arc<StorageClass>> {
        self.classes
            .insert(name_of(&class.metadata), Arc::new(class))
    }

    pub fn remove_class(&mut self, name: &str) {
        self.classes.remove(name);
    }

    /// Keeps only the classes whose name is listed.
    pub fn retain_classes(&mut self, listed: &HashSet<String>) {
        self.classes.retain(|name, _| listed.contains(name));
    }
}
