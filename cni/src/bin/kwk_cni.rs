//! The `kwk-cni` binary: reads `CNI_*` from the environment and the network config from stdin,
//! prints the result (or the error JSON) on stdout, exits non-zero on error. The config's `type`
//! picks the network: `loopback` (installed as a `loopback` link to this binary) or the bridge.
//! With `KWK_CNI_REAP_LINK` set it is DEL's background reaper instead (see `plugin::del`).
//!
//! The process starts at [`sys`]'s C `main`, not through Rust's runtime entry: that entry's
//! setup (the main thread's stack guard, found by parsing `/proc/self/maps`, an alternate signal
//! stack and handlers for stack-overflow messages) costs ~0.13 ms of every call here, and the
//! runtime waits for each call. `sys` keeps the parts that matter to a CLI: fds 0-2 open, and
//! `SIGPIPE` ignored so a closed stdout is an error, not a kill.

#![no_main]

use std::io::{Read as _, Write as _};

/// One invocation; returns the exit status.
fn run() -> i32 {
    // Started by DEL to finish deleting a retired veth pair in the background.
    if let Some(link) = std::env::var_os(kwk_cni::plugin::REAP_ENV) {
        return match kwk_cni::plugin::reap_link(&link.to_string_lossy()) {
            Ok(()) => 0,
            Err(_) => 1,
        };
    }
    // Room for a typical network config, so it arrives in one read (plus the one seeing EOF).
    let mut stdin = Vec::with_capacity(16 * 1024);
    if let Err(err) = std::io::stdin().read_to_end(&mut stdin) {
        eprintln!("kwk-cni: reading stdin: {err}");
        return 1;
    }
    let outcome = kwk_cni::run(|key| std::env::var(key).ok(), &stdin);
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(outcome.stdout.as_bytes());
    let _ = stdout.flush();
    if outcome.success { 0 } else { 1 }
}

/// The process entry point, and the two pieces of Rust's runtime setup this binary keeps.
mod sys {
    #![allow(
        unsafe_code,
        reason = "the C entry point and two libc calls at start-up, before anything else runs"
    )]

    use std::os::fd::IntoRawFd as _;

    use nix::libc;

    /// Called by the C runtime. `std::env` finds the arguments and environment on its own.
    // SAFETY: `#![no_main]` removes Rust's `main` symbol, so this is the only one, and it has
    // the signature the C runtime calls it with.
    #[unsafe(no_mangle)]
    extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
        keep_standard_fds_open();
        ignore_sigpipe();
        super::run()
    }

    /// Points any of fds 0-2 that is closed at `/dev/null` (as Rust's runtime does), so no file
    /// or socket opened later becomes stdout by accident.
    fn keep_standard_fds_open() {
        let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
            fd,
            events: 0,
            revents: 0,
        });
        // SAFETY: `fds` is a valid array of three pollfds for the duration of the call; a zero
        // timeout never blocks.
        if unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) } < 0 {
            return;
        }
        for pollfd in fds {
            if pollfd.revents & libc::POLLNVAL != 0 {
                // The lowest free descriptor is the closed one; it stays open for the process.
                if let Ok(null) = std::fs::File::options()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                {
                    let _ = null.into_raw_fd();
                }
            }
        }
    }

    /// Writing to a closed pipe then fails with `EPIPE` instead of killing the process.
    fn ignore_sigpipe() {
        // SAFETY: installs no handler function (`SIG_IGN`); the process is single-threaded here.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
    }
}
