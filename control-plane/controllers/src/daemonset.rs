//! The daemonset controller (to be written).
