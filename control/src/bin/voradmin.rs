//! `voradmin`, and the same binary as `secfsd`, `vmsec`, `register_host`, `vmutil` and `dataxform` (chosen by the
//! name it is run under, as CTE installs them).

use std::process::ExitCode;

use guardfs_control::cli::{self, Failure};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let name = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("voradmin")
        .to_owned();
    let r = match name.as_str() {
        "secfsd" => cli::cte::secfsd(args),
        "vmsec" => cli::cte::vmsec(args),
        "register_host" => cli::register::register_host(args),
        "vmutil" => cli::vmutil::vmutil(args),
        "dataxform" => cli::dataxform::dataxform(args),
        _ => cli::voradmin(args),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, msg)) => {
            if !msg.is_empty() {
                eprintln!("{name}: {msg}");
            }
            ExitCode::from(code)
        }
    }
}
