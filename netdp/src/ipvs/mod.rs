//! IPVS (placeholder)
