//! `register_host`: register this host with a key manager (see
//! [`crate::km::register`]), then tell a running vmd to use it.

use std::io::Write;
use std::path::PathBuf;

use super::{CmdResult, FAILED, Failure, USAGE, layout, require_root};
use crate::api::{self, Request};
use crate::km::register;

const USAGE_TEXT: &str = "usage: register_host [--root DIR]                      (interactive)
       register_host [--root DIR] -s FILE [KEY=VALUE ...] (silent: SERVER_HOSTNAME, REG_TOKEN,
           HOST_PROFILE, AGENT_HOST_NAME, AGENT_USEIP, HOST_GROUP, HOST_DESC, USEHWSIG,
           CA_FILE or CA_CERT or EXTERNAL_CERT_DIR; REGISTER_HOST_TIMEOUT in the environment;
           REG_TOKEN=- reads the token from standard input)";

pub fn register_host(args: Vec<String>) -> CmdResult {
    let mut root: Option<PathBuf> = None;
    let mut silent: Option<PathBuf> = None;
    let mut overrides = Vec::new();
    let mut it = args.into_iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--root" => {
                root = Some(
                    it.next()
                        .ok_or_else(|| Failure(USAGE, USAGE_TEXT.into()))?
                        .into(),
                )
            }
            "-s" => {
                silent = Some(
                    it.next()
                        .ok_or_else(|| Failure(USAGE, USAGE_TEXT.into()))?
                        .into(),
                )
            }
            "-h" | "--help" => {
                println!("{USAGE_TEXT}");
                return Ok(());
            }
            // A registration token is a secret: `REG_TOKEN=-` reads it from
            // standard input; one in argv works but is warned about.
            "REG_TOKEN=-" if silent.is_some() => {
                let token = super::read_secret_line(&mut std::io::stdin().lock())?;
                overrides.push(format!("REG_TOKEN={token}"));
            }
            kv if kv.contains('=') && silent.is_some() => {
                if kv.starts_with("REG_TOKEN=") {
                    super::warn_secret_in_argv("REG_TOKEN=");
                }
                overrides.push(kv.to_owned())
            }
            _ => return Err(Failure(USAGE, USAGE_TEXT.into())),
        }
    }
    require_root()?;
    let l = layout(root.as_deref())?;
    let params = match silent {
        Some(file) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Failure(FAILED, format!("{}: {e}", file.display())))?;
            register::silent_params(&text, &overrides).map_err(|e| Failure(USAGE, e))?
        }
        None => {
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            let mut out = std::io::stdout();
            match register::interactive(&mut input, &mut out).map_err(|e| Failure(FAILED, e))? {
                Some(p) => p,
                None => {
                    println!("Registration skipped.");
                    return Ok(());
                }
            }
        }
    };
    let mut out = std::io::stdout();
    register::register(&l, &params, &mut out)
        .map_err(|e| Failure(FAILED, format!("registration failed: {e}")))?;
    match api::call(
        &l.run_dir,
        &Request::Reload,
        std::time::Duration::from_secs(60),
    ) {
        Ok(r) if r.ok => {
            println!("vmd now takes keys, policies and GuardPoints from the key manager.")
        }
        Ok(r) => eprintln!("register_host: vmd: {}", r.error.unwrap_or_default()),
        Err(_) => println!("Start vmd to apply the key manager's configuration."),
    }
    let _ = out.flush();
    Ok(())
}
