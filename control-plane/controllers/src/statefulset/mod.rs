//! The statefulset controller (being written).
