//! Table tests of plugins::topology_spread.
