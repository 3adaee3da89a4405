//! The disruption controller (to be written).
