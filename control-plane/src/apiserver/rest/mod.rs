//! The REST verbs over the store, on JSON objects: get, list, watch, create, update, patch,
//! delete. [`Registry`] holds the store and the catalogue; the HTTP layer decodes requests
//! into these calls and encodes what they return.

use std::sync::{Arc, RwLock};

use crate::apiserver::admission::AdmissionPlugins;
use crate::apiserver::allocator::{ServiceAllocator, ServiceRanges};
use crate::apiserver::catalog::{Catalog, ResourceDef};
use crate::apiserver::errors::ApiError;
use crate::storage::{Store, StoreError};

pub mod admission;
pub mod apply;
pub mod binding;
pub mod convert;
pub mod delete;
pub mod delete_plan;
pub mod eviction;
pub mod list_semantics;
pub mod object;
pub mod priority;
pub mod read;
pub mod scale;
pub mod watch;
pub mod write;

/// What a request addresses, resolved against the catalogue.
#[derive(Debug, Clone)]
pub struct Target {
    pub def: Arc<ResourceDef>,
    /// The namespace (only for namespaced resources; `None` = all namespaces for lists).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    pub fn key(&self) -> String {
        self.def.key(self.namespace.as_deref(), self.name())
    }

    pub fn not_found(&self) -> ApiError {
        ApiError::not_found(&self.def.group, &self.def.plural, self.name())
    }
}

/// The served resources and where they are stored.
#[derive(Debug)]
pub struct Registry {
    store: Arc<dyn Store>,
    catalog: RwLock<Catalog>,
    /// Service ClusterIP and NodePort reservations (over the same store).
    services: Arc<ServiceAllocator>,
    /// Which optional admission plugins run on create.
    admission: AdmissionPlugins,
}

impl Registry {
    pub fn new(store: Arc<dyn Store>, catalog: Catalog) -> Self {
        let services = Arc::new(ServiceAllocator::new(
            store.clone(),
            ServiceRanges::default(),
        ));
        Self {
            store,
            catalog: RwLock::new(catalog),
            services,
            admission: AdmissionPlugins::all(),
        }
    }

    /// The same registry running only `plugins` of the optional admission plugins.
    pub fn with_admission(mut self, plugins: AdmissionPlugins) -> Self {
        self.admission = plugins;
        self
    }

    pub fn admission(&self) -> &AdmissionPlugins {
        &self.admission
    }

    /// The same registry allocating Service addresses and node ports from `ranges`.
    pub fn with_service_ranges(mut self, ranges: ServiceRanges) -> Self {
        self.services = Arc::new(ServiceAllocator::new(self.store.clone(), ranges));
        self
    }

    pub fn services(&self) -> &Arc<ServiceAllocator> {
        &self.services
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// A snapshot of the catalogue.
    pub fn catalog(&self) -> Catalog {
        self.catalog
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes the catalogue (CRDs).
    pub fn update_catalog(&self, change: impl FnOnce(&mut Catalog)) {
        let mut catalog = self.catalog.write().unwrap_or_else(|e| e.into_inner());
        change(&mut catalog);
    }
}

/// Whether `def` is core/v1 Services (whose writes allocate cluster IPs and node ports).
pub fn is_service(def: &ResourceDef) -> bool {
    def.group.is_empty() && def.plural == "services"
}

/// Maps a store error about `target` to the API error clients expect.
pub fn store_error(target: &Target, error: StoreError) -> ApiError {
    let def = &target.def;
    match error {
        StoreError::NotFound(_) => target.not_found(),
        StoreError::AlreadyExists(_) => {
            ApiError::already_exists(&def.group, &def.plural, target.name())
        }
        StoreError::Conflict { .. } => ApiError::modified(&def.group, &def.plural, target.name()),
        StoreError::Compacted {
            requested,
            compacted,
        } => ApiError::expired(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        StoreError::FutureRevision { requested, current } => {
            list_semantics::too_large(requested, current)
        }
        StoreError::WatcherTooSlow => ApiError::internal("watch closed: the client fell behind"),
        StoreError::Backend(message) => ApiError::internal(format!("storage error: {message}")),
    }
}

/// Parses a `resourceVersion` parameter (`""` → `None`).
pub fn parse_revision(value: Option<&str>) -> Result<Option<i64>, ApiError> {
    match value {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|r| *r >= 0)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {text:?}"))),
    }
}
