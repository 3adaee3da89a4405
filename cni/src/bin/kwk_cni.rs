//! The `kwk-cni` binary: reads `CNI_*` from the environment and the network config from stdin,
//! prints the result (or the error JSON) on stdout, exits non-zero on error.

use std::io::{Read as _, Write as _};
use std::process::ExitCode;

fn main() -> ExitCode {
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
