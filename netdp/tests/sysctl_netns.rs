//! A [`SysctlFile`] opened inside a network namespace keeps setting that namespace's value
//! when written from a thread outside it (how the IPVS mode, built in `--proxy-netns`, sets
//! `ip_forward` and `vs/conntrack` from its sync thread). Two fresh namespaces, so the host's
//! sysctls are never touched.

mod nft_support;

use kwk_netdp::sysctl::SysctlFile;
use nft_support::{TestNs, privileged_tests_enabled};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

fn ip_forward(ns: &TestNs) -> String {
    ns.exec(&["cat", IP_FORWARD]).trim().to_string()
}

#[test]
fn a_sysctl_opened_in_a_namespace_is_written_there_from_any_thread() {
    if !privileged_tests_enabled() {
        return;
    }
    let target = TestNs::new("sysctl-target");
    let other = TestNs::new("sysctl-other");
    assert_eq!(ip_forward(&target), "0", "a new namespace forwards nothing");
    assert_eq!(ip_forward(&other), "0");

    let sysctl = target.run(|| SysctlFile::open(IP_FORWARD));
    let from_other = other.run(|| {
        sysctl
            .ensure("1")
            .expect("write from another namespace's thread");
        std::fs::read_to_string(IP_FORWARD).expect("read")
    });
    assert_eq!(
        from_other.trim(),
        "0",
        "the writing thread's own namespace is untouched"
    );
    sysctl
        .ensure("1")
        .expect("write again from the test thread");
    assert_eq!(ip_forward(&target), "1");
    assert_eq!(ip_forward(&other), "0");
}
