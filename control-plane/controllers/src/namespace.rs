//! The namespace controller (to be written).
