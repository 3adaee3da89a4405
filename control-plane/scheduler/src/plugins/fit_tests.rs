//! Table tests of plugins::fit.
