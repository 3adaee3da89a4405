//! The pause binary exits 0 on SIGTERM and SIGINT, and otherwise keeps running.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed expectation aborts the test"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "synchronous test: no executor to block"
)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn exits_cleanly_on(signal: Signal) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pause"))
        .stderr(Stdio::null())
        .spawn()
        .expect("pause starts");
    // Still running after a moment: it waits for a signal rather than exiting.
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        child.try_wait().unwrap().is_none(),
        "pause exited on its own"
    );
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(
                status.code(),
                Some(0),
                "{signal} should end pause with status 0"
            );
            return;
        }
        assert!(Instant::now() < deadline, "pause ignored {signal}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sigterm_ends_pause() {
    exits_cleanly_on(Signal::SIGTERM);
}

#[test]
fn sigint_ends_pause() {
    exits_cleanly_on(Signal::SIGINT);
}

#[test]
fn version_flag_prints_and_exits() {
    let out = Command::new(env!("CARGO_BIN_EXE_pause"))
        .arg("-v")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("kwk pause "));
    let bad = Command::new(env!("CARGO_BIN_EXE_pause"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
