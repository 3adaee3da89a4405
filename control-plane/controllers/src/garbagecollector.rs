//! The garbagecollector controller (to be written).
