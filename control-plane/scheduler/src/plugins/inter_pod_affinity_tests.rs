//! Table tests of plugins::inter_pod_affinity.
