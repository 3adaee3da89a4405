//! The deployment controller (to be written).
