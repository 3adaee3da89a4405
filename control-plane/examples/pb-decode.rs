//! Prints the Kubernetes JSON of a protobuf request body read from stdin (a debugging aid):
//! `pb-decode < body.bin`.

use std::io::Read as _;
use std::process::ExitCode;

use kwk_control_plane::apiserver::protobuf::decode_body;

fn main() -> ExitCode {
    let mut body = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut body) {
        eprintln!("pb-decode: reading stdin: {e}");
        return ExitCode::FAILURE;
    }
    match decode_body(&body) {
        Ok(value) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pb-decode: {e}");
            ExitCode::FAILURE
        }
    }
}
