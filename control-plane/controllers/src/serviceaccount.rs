//! The serviceaccount controller (to be written).
