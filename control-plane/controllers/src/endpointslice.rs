//! The endpointslice controller (to be written).
