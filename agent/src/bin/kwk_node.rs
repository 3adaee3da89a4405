//! `kwk-node`: the node agent daemon.

fn main() {}
