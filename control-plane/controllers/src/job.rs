//! The job controller (to be written).
