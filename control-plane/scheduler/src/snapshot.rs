//! The scheduler's view of the cluster: every node with the pods bound to it and their
//! summed requests, used host ports and images, kept up to date incrementally (add or remove
//! one pod, upsert or remove one node) so a decision never rebuilds the whole picture.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::pod_info::{HostPort, NamespaceLabels, PodInfo, node_labels};
use crate::resources::Resources;
use crate::volumes::VolumeCache;

/// One node and what is bound to it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub name: String,
    pub allocatable: Resources,
    /// Sum of the effective requests of the pods on the node.
    pub requested: Resources,
    /// Sum of the pods' non-zero CPU and memory requests (see [`PodInfo`]).
    pub non_zero_milli_cpu: i64,
    pub non_zero_memory: i64,
    pub pods: Vec<Arc<PodInfo>>,
    pub used_ports: Vec<HostPort>,
    /// Image sizes by normalised image name (`status.images`).
    pub images: HashMap<String, i64>,
    /// Pods on the node with any pod (anti-)affinity term.
    pub pods_with_affinity: usize,
    /// Pods on the node with a required anti-affinity term.
    pub pods_with_required_anti_affinity: usize,
}

/// Appends `:latest` to an image reference without a tag or digest, as upstream's image
/// locality does before comparing names.
pub fn normalized_image_name(name: &str) -> String {
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    if name.contains('@') || name[last_slash..].contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

impl NodeInfo {
    fn new(node: Arc<Node>) -> Self {
        let status = node.status.as_ref();
        let mut images = HashMap::new();
        for image in status.and_then(|s| s.images.as_ref()).into_iter().flatten() {
            let size = image.size_bytes.unwrap_or(0);
            for name in image.names.iter().flatten() {
                images.insert(normalized_image_name(name), size);
            }
        }
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            allocatable: Resources::from_api(status.and_then(|s| s.allocatable.as_ref())),
            requested: Resources::default(),
            non_zero_milli_cpu: 0,
            non_zero_memory: 0,
            pods: Vec::new(),
            used_ports: Vec::new(),
            images,
            pods_with_affinity: 0,
            pods_with_required_anti_affinity: 0,
            node,
        }
    }

    /// The node's labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        node_labels(&self.node)
    }

    /// Accounts for one more pod on the node.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.non_zero_milli_cpu += pod.non_zero_milli_cpu;
        self.non_zero_memory += pod.non_zero_memory;
        self.used_ports.extend(pod.host_ports.iter().cloned());
        if pod.has_affinity() {
            self.pods_with_affinity += 1;
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity += 1;
        }
        self.pods.push(pod);
    }

    /// Forgets the pod with `key`; returns it when it was there.
    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let i = self.pods.iter().position(|p| p.key == key)?;
        let pod = self.pods.swap_remove(i);
        self.requested.subtract(&pod.requests);
        self.non_zero_milli_cpu -= pod.non_zero_milli_cpu;
        self.non_zero_memory -= pod.non_zero_memory;
        for port in &pod.host_ports {
            if let Some(j) = self.used_ports.iter().position(|p| p == port) {
                self.used_ports.swap_remove(j);
            }
        }
        if pod.has_affinity() {
            self.pods_with_affinity -= 1;
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity -= 1;
        }
        Some(pod)
    }
}

/// Nodes and the pods bound to them.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    nodes: Vec<NodeInfo>,
    node_index: HashMap<String, usize>,
    /// Node name of each bound pod, by pod key.
    pod_nodes: HashMap<String, String>,
    /// Pods bound to nodes the snapshot does not (yet) know, by node name.
    orphans: HashMap<String, Vec<Arc<PodInfo>>>,
    /// How many nodes hold each normalised image name.
    image_nodes: HashMap<String, usize>,
    namespace_labels: HashMap<String, BTreeMap<String, String>>,
    /// Claims, volumes and StorageClasses (VolumeBinding).
    volumes: VolumeCache,
}

impl NamespaceLabels for Snapshot {
    fn namespace_labels(&self, namespace: &str) -> Option<&BTreeMap<String, String>> {
        self.namespace_labels.get(namespace)
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl Snapshot {
    /// A snapshot of `nodes` with the bound, non-terminal ones of `pods`.
    pub fn new(nodes: Vec<Node>, pods: Vec<Pod>) -> Self {
        let mut snapshot = Snapshot::default();
        for node in nodes {
            snapshot.upsert_node(node);
        }
        for pod in pods {
            snapshot.add_pod(pod);
        }
        snapshot
    }

    /// All nodes, in a stable order (changed only by node removal).
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.node_index.get(name).map(|&i| &self.nodes[i])
    }

    /// The position of node `name` in [`Snapshot::nodes`].
    pub fn node_position(&self, name: &str) -> Option<usize> {
        self.node_index.get(name).copied()
    }

    /// How many nodes hold the (normalised) image.
    pub fn nodes_with_image(&self, normalized: &str) -> usize {
        self.image_nodes.get(normalized).copied().unwrap_or(0)
    }

    /// Claims, volumes and StorageClasses.
    pub fn volumes(&self) -> &VolumeCache {
        &self.volumes
    }

    /// [`Snapshot::volumes`], to update.
    pub fn volumes_mut(&mut self) -> &mut VolumeCache {
        &mut self.volumes
    }

    /// Records a namespace's labels (for affinity terms with a namespace selector).
    pub fn upsert_namespace(&mut self, name: &str, labels: BTreeMap<String, String>) {
        self.namespace_labels.insert(name.to_string(), labels);
    }

    /// Adds or replaces a node, keeping the pods bound to it.
    pub fn upsert_node(&mut self, node: Node) {
        let mut info = NodeInfo::new(Arc::new(node));
        for image in info.images.keys() {
            *self.image_nodes.entry(image.clone()).or_default() += 1;
        }
        let pods = match self.node_index.get(&info.name) {
            Some(&i) => {
                self.forget_images(i);
                std::mem::take(&mut self.nodes[i].pods)
            }
            None => self.orphans.remove(&info.name).unwrap_or_default(),
        };
        for pod in pods {
            info.add_pod(pod);
        }
        match self.node_index.get(&info.name) {
            Some(&i) => self.nodes[i] = info,
            None => {
                self.node_index.insert(info.name.clone(), self.nodes.len());
                self.nodes.push(info);
            }
        }
    }

    fn forget_images(&mut self, i: usize) {
        for image in self.nodes[i].images.keys() {
            if let Some(n) = self.image_nodes.get_mut(image) {
                *n -= 1;
                if *n == 0 {
                    self.image_nodes.remove(image);
                }
            }
        }
    }

    /// Removes a node; pods still bound to it are kept until they are removed or the node
    /// comes back.
    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.node_index.remove(name) else {
            return;
        };
        self.forget_images(i);
        let removed = self.nodes.swap_remove(i);
        if let Some(moved) = self.nodes.get(i) {
            self.node_index.insert(moved.name.clone(), i);
        }
        if !removed.pods.is_empty() {
            self.orphans.insert(removed.name, removed.pods);
        }
    }

    /// Accounts for a pod bound to a node (`spec.nodeName`); unbound and terminal pods are
    /// ignored. A pod already known is replaced.
    pub fn add_pod(&mut self, pod: Pod) {
        self.add_pod_arc(Arc::new(pod));
    }

    /// [`Snapshot::add_pod`] for a shared pod.
    pub fn add_pod_arc(&mut self, pod: Arc<Pod>) {
        let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            return;
        };
        if is_terminal(&pod) {
            return;
        }
        let info = Arc::new(PodInfo::new_lenient(pod));
        self.remove_pod_key(&info.key);
        self.pod_nodes.insert(info.key.clone(), node_name.clone());
        match self.node_index.get(&node_name) {
            Some(&i) => self.nodes[i].add_pod(info),
            None => self.orphans.entry(node_name).or_default().push(info),
        }
    }

    /// Forgets a pod (deleted, or terminal).
    pub fn remove_pod(&mut self, pod: &Pod) {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let key = format!("{namespace}/{}", pod.metadata.name.as_deref().unwrap_or(""));
        self.remove_pod_key(&key);
    }

    /// Forgets the pod `namespace/name`.
    pub fn remove_pod_key(&mut self, key: &str) {
        let Some(node_name) = self.pod_nodes.remove(key) else {
            return;
        };
        match self.node_index.get(&node_name) {
            Some(&i) => {
                self.nodes[i].remove_pod(key);
            }
            None => {
                if let Some(pods) = self.orphans.get_mut(&node_name) {
                    pods.retain(|p| p.key != key);
                    if pods.is_empty() {
                        self.orphans.remove(&node_name);
                    }
                }
            }
        }
    }

    /// The number of bound pods the snapshot accounts for.
    pub fn pod_count(&self) -> usize {
        self.pod_nodes.len()
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
