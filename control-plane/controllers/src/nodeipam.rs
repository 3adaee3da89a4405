//! The nodeipam controller (to be written).
