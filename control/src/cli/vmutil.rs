//! `vmutil`: the key-manager side of the agent (certificates, status
//! reports, registration).

use super::{CmdResult, Failure, USAGE, call, layout, require_root};
use crate::api::Request;

const USAGE_TEXT: &str =
    "usage: vmutil certexpiry | renewcerts | updatecerts | reportstate | unregister | deletehost
       (options: --root DIR)";

pub fn vmutil(args: Vec<String>) -> CmdResult {
    let mut root = None;
    let mut rest = Vec::new();
    let mut it = args.into_iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--root" => {
                root = Some(std::path::PathBuf::from(
                    it.next().ok_or_else(|| Failure(USAGE, USAGE_TEXT.into()))?,
                ))
            }
            "-h" | "--help" => {
                println!("{USAGE_TEXT}");
                return Ok(());
            }
            _ => rest.push(a),
        }
    }
    let [op] = rest.as_slice() else {
        return Err(Failure(USAGE, USAGE_TEXT.into()));
    };
    require_root()?;
    let l = layout(root.as_deref())?;
    match op.as_str() {
        "certexpiry" => {
            let t = crate::km::cert_not_after(&l.sec)
                .map_err(|e| Failure(super::FAILED, format!("not registered? {e}")))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            println!(
                "Client certificate expires at {t} (Unix time), in {} days",
                (t - now) / 86_400
            );
        }
        "renewcerts" | "updatecerts" => {
            let v = call(&l, Request::KmRenew)?;
            println!(
                "Client certificate renewed; valid until {} (Unix time)",
                v["cert_not_after"]
            );
        }
        "reportstate" => {
            call(&l, Request::KmReport)?;
            println!("Guard status reported to the key manager");
        }
        "unregister" => {
            call(&l, Request::KmUnregister)?;
            println!("This host is no longer registered; it uses the local key store.");
        }
        "deletehost" => {
            call(&l, Request::KmDeleteHost)?;
            println!("This host was deleted at the key manager and is no longer registered.");
        }
        _ => return Err(Failure(USAGE, USAGE_TEXT.into())),
    }
    Ok(())
}
