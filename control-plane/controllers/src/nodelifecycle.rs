//! The nodelifecycle controller (to be written).
