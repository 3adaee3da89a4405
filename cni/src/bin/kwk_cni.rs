//! The `kwk-cni` binary: reads `CNI_*` from the environment and the network config from stdin,
//! prints the result (or the error JSON) on stdout, exits non-zero on error. The config's `type`
//! picks the network: `loopback` (installed as a `loopback` link to this binary) or the bridge.
//! With `KWK_CNI_REAP_LINK` set it is DEL's background reaper instead (see `plugin::del`).

use std::io::{Read as _, Write as _};
use std::process::ExitCode;

fn main() -> ExitCode {
    // Started by DEL to finish deleting a retired veth pair in the background.
    if let Some(link) = std::env::var_os(kwk_cni::plugin::REAP_ENV) {
        return match kwk_cni::plugin::reap_link(&link.to_string_lossy()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    let mut stdin = Vec::new();
    if let Err(err) = std::io::stdin().read_to_end(&mut stdin) {
        eprintln!("kwk-cni: reading stdin: {err}");
        return ExitCode::FAILURE;
    }
    let outcome = kwk_cni::run(|key| std::env::var(key).ok(), &stdin);
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(outcome.stdout.as_bytes());
    let _ = stdout.flush();
    if outcome.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
