//! The kwk scheduler's algorithm, kept free of I/O so it can be table-tested plugin by plugin
//! and benchmarked in-process: a snapshot of nodes and the pods on them goes in, a decision
//! (a node, or why none fits, or whom to preempt) comes out. Watching the apiserver, binding
//! and events live with the `kwk-control-plane scheduler` component, which feeds this crate.
