//! Table tests of custom resource schemas, pruning, defaulting and printer columns.
