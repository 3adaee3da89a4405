//! `pause`: PID 1 of every pod sandbox.
//!
//! It holds the pod's namespaces open, reaps the zombies that processes sharing its PID
//! namespace leave behind, and exits 0 on SIGTERM or SIGINT. All signals of interest are blocked
//! and taken synchronously with `sigwait`, so no handler runs asynchronously and no `unsafe` is
//! needed. Blocked signals are queued even for a namespace's init, which ignores unhandled ones.

use std::process::ExitCode;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpid};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    if let Some(arg) = args.next() {
        return match arg.as_str() {
            "-v" | "--version" => {
                println!("kwk pause {}", env!("CARGO_PKG_VERSION"));
                ExitCode::SUCCESS
            }
            other => {
                eprintln!("pause: unknown argument {other:?} (only -v is accepted)");
                ExitCode::from(2)
            }
        };
    }
    if getpid() != Pid::from_raw(1) {
        eprintln!("pause: warning: not running as PID 1, zombies of other processes are not ours");
    }

    let mut signals = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
        signals.add(signal);
    }
    if let Err(err) = signals.thread_block() {
        eprintln!("pause: blocking signals: {err}");
        return ExitCode::FAILURE;
    }

    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => reap_children(),
            Ok(Signal::SIGTERM | Signal::SIGINT) => return ExitCode::SUCCESS,
            Ok(_) => {}
            Err(err) => {
                eprintln!("pause: sigwait: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
}

/// Reaps every child that has exited; several exits can collapse into one SIGCHLD.
fn reap_children() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(err) => {
                eprintln!("pause: waitpid: {err}");
                return;
            }
        }
    }
}
