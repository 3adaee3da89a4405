//! The replicaset controller (to be written).
