//! The statefulset controller (to be written).
