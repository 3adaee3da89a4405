//! The podgc controller (to be written).
