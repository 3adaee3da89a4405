//! `kwk-tests`: the test harness and end-to-end tests.
//!
//! - [`TestContainerd`]: an isolated containerd per test (own directory, socket, runc root,
//!   network namespace and cgroup parent), with the offline-built `pause` and busybox images
//!   imported, torn down on drop even when the test fails.
//! - [`images`]: builds those images (static pause via a nested cargo build, busybox from
//!   Debian's `busybox-static`).
//! - [`pods`]: CRI sandbox and container configurations for tests.
//! - [`vm`]: the VM tier: a cached Debian 12 guest (systemd PID 1, cgroup v2, stock kernel)
//!   booted under qemu to run a script with files sent in and fetched back.
//! - [`etcd::TestEtcd`]: a real etcd per test on free loopback ports (plain or TLS).
//!
//! Tests that need root fail without it, unless `KWK_SKIP_PRIVILEGED=1` says to skip them.

pub mod apiserver;
pub mod cgroups;
pub mod cleanup;
pub mod cluster;
pub mod config;
pub mod containerd;
pub mod etcd;
pub mod http;
pub mod images;
pub mod netns;
pub mod node;
pub mod pods;
pub mod vm;

pub use containerd::{TestContainerd, privileged_tests_enabled, wait_for};
pub use netns::NetNs;
