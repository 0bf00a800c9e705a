//! `register_host`: register this host with a key manager, interactively
//! (CTE's dialogue) or silently from a parameter file (`-s FILE`, CTE's
//! `SERVER_HOSTNAME`, `REG_TOKEN`, ... names, `KEY=VALUE` overrides on the
//! command line). The key pair and the CSR are made here; the private key
//! never leaves `.sec/`.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::{KmClient, Registration, Trust, hwsig, server_url};
use crate::state::{AgentConf, Layout, write_atomic};

/// Everything registration needs.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// `host[:port]`
    pub server: String,
    pub host_name: String,
    pub token: String,
    pub profile: String,
    pub host_group: String,
    pub description: String,
    pub hardware_association: bool,
    /// PEM of the CA to pin; none = trust the server on first use.
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// Register with the key manager and store the result under `.sec/`.
pub fn register(layout: &Layout, p: &Params, out: &mut dyn Write) -> Result<Registration, String> {
    let url = server_url(&p.server)?;
    if p.token.trim().is_empty() {
        return Err("a registration token is required".into());
    }
    if p.host_name.trim().is_empty() {
        return Err("a host name is required".into());
    }
    layout.create_dirs().map_err(|e| e.to_string())?;
    let conf = AgentConf::load(&layout.agent_conf()).map_err(|e| e.to_string())?;
    let _ = writeln!(
        out,
        "Generating EC key pair and certificate signing request..."
    );
    let (key, csr) = super::new_csr(p.host_name.trim())?;
    let hw = p
        .hardware_association
        .then(|| hwsig::current(conf.get("hwsig_extra_file").map(Path::new)));
    let trust = match &p.ca_pem {
        Some(pem) => Trust::Pinned(pem),
        None => {
            let _ = writeln!(
                out,
                "No CA certificate given: trusting {url} on first use and pinning its CA."
            );
            Trust::FirstUse
        }
    };
    let client = KmClient::new(&url, trust, None, p.timeout)?;
    let _ = writeln!(out, "Enrolling agent with service on {url}...");
    let mut body = json!({
        "token": p.token.trim(), "csr": csr, "name": p.host_name.trim(), "description": p.description,
        "profile": p.profile, "host_group": p.host_group,
    });
    if let Some(h) = &hw {
        body["hw_signature"] = json!(h);
    }
    let reply = client
        .post("/api/v1/transparent-encryption/register", &body)?
        .ok()?;
    let get = |k: &str| {
        reply
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or(format!("reply lacks {k}"))
    };
    let (client_id, cert, ca) = (get("client_id")?, get("certificate")?, get("ca")?);
    if let Some(pinned) = &p.ca_pem
        && pem_der(pinned) != pem_der(ca.as_bytes())
    {
        return Err("the key manager's CA is not the pinned CA; nothing was stored".into());
    }
    // Prove the new identity works before anything is stored: a failed
    // re-registration leaves the current one intact.
    let identity = zeroize::Zeroizing::new(format!("{}\n{}", cert.trim_end(), key.as_str()));
    KmClient::new(
        &url,
        Trust::Pinned(ca.as_bytes()),
        Some((identity.as_bytes(), identity.as_bytes())),
        p.timeout,
    )?
    .get("/api/v1/agent/config", None)?
    .ok()?;
    let sec = &layout.sec;
    write_atomic(&sec.join("ca.pem"), ca.as_bytes(), 0o600).map_err(|e| e.to_string())?;
    super::store_identity(sec, &cert, &key)?;
    let reg = Registration {
        url: url.clone(),
        client_id,
        name: p.host_name.trim().to_owned(),
        hw_signature: hw,
        registered: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    reg.save(sec)?;
    let _ = writeln!(
        out,
        "Successfully registered the GuardFS agent with the key manager on {url}."
    );
    Ok(reg)
}

/// The DER bytes of the first certificate in a PEM, to compare CAs.
fn pem_der(pem: &[u8]) -> Option<Vec<u8>> {
    ureq::tls::Certificate::from_pem(pem)
        .ok()
        .map(|c| c.der().to_vec())
}

/// Parse a silent-registration parameter file (`KEY=VALUE` lines, `#`
/// comments) plus command-line overrides.
pub fn silent_params(file_text: &str, overrides: &[String]) -> Result<Params, String> {
    let mut kv = BTreeMap::new();
    for (i, line) in file_text
        .lines()
        .chain(overrides.iter().map(String::as_str))
        .enumerate()
    {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or(format!("line {}: expected KEY=VALUE: {line:?}", i + 1))?;
        kv.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    const KNOWN: &[&str] = &[
        "SERVER_HOSTNAME",
        "SERVER_IP",
        "REG_TOKEN",
        "HOST_PROFILE",
        "AGENT_HOST_NAME",
        "AGENT_USEIP",
        "HOST_GROUP",
        "HOST_DESC",
        "USEHWSIG",
        "CA_FILE",
        "CA_CERT",
        "EXTERNAL_CERT_DIR",
        "TMPDIR",
        "AGENT_HOST_PORT",
    ];
    if let Some(k) = kv.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!(
            "unknown parameter {k} (known: {})",
            KNOWN.join(", ")
        ));
    }
    let get = |k: &str| kv.get(k).cloned().unwrap_or_default();
    let server = kv
        .get("SERVER_HOSTNAME")
        .or(kv.get("SERVER_IP"))
        .cloned()
        .ok_or("SERVER_HOSTNAME (or SERVER_IP) is required")?;
    let yes = |k: &str| {
        matches!(
            get(k).to_ascii_lowercase().as_str(),
            "1" | "y" | "yes" | "true"
        )
    };
    let host_name = match kv.get("AGENT_HOST_NAME") {
        Some(h) => h.clone(),
        None if yes("AGENT_USEIP") => host_choices().into_iter().nth(1).unwrap_or_default(),
        None => host_choices().into_iter().next().unwrap_or_default(),
    };
    let ca_pem = match (kv.get("CA_FILE"), kv.get("CA_CERT")) {
        (Some(f), _) => Some(std::fs::read(f).map_err(|e| format!("CA_FILE {f}: {e}"))?),
        (None, Some(pem)) => Some(pem.replace("\\n", "\n").into_bytes()),
        (None, None) => match kv.get("EXTERNAL_CERT_DIR") {
            Some(d) => Some(
                std::fs::read(Path::new(d).join("ca.pem"))
                    .map_err(|e| format!("EXTERNAL_CERT_DIR {d}: {e}"))?,
            ),
            None => None,
        },
    };
    Ok(Params {
        server,
        host_name,
        token: get("REG_TOKEN"),
        profile: get("HOST_PROFILE"),
        host_group: get("HOST_GROUP"),
        description: get("HOST_DESC"),
        hardware_association: yes("USEHWSIG"),
        ca_pem,
        timeout: timeout(),
    })
}

/// `REGISTER_HOST_TIMEOUT` (seconds, default 60).
pub fn timeout() -> Duration {
    let secs = std::env::var("REGISTER_HOST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60u64);
    Duration::from_secs(secs.clamp(1, 3600))
}

/// This machine's names: host name, then its first non-loopback address.
pub fn host_choices() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(h) = nix::unistd::gethostname()
        && let Some(h) = h.to_str()
    {
        out.push(h.to_owned());
    }
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            if let Some(ip) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
                let ip = ip.ip();
                if !ip.is_loopback() {
                    out.push(ip.to_string());
                }
            }
        }
    }
    out
}

/// CTE's registration dialogue on `input`/`out`.
pub fn interactive(input: &mut dyn BufRead, out: &mut dyn Write) -> Result<Option<Params>, String> {
    let mut ask = |q: &str, default: &str| -> Result<String, String> {
        write!(out, "{q}")
            .and_then(|()| out.flush())
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        if input.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("input ended before registration was complete".into());
        }
        let line = line.trim().to_owned();
        Ok(if line.is_empty() {
            default.to_owned()
        } else {
            line
        })
    };
    let yes = |a: &str| a.eq_ignore_ascii_case("y") || a.eq_ignore_ascii_case("yes");
    let intro = format!(
        "Welcome to the GuardFS Agent Registration Program.\n\nAgent Type: GuardFS File System Agent\nAgent Version: {}\n\n\
         In order to register with a key manager you need a valid\nregistration token from the key manager.\n\n\
         Do you want to continue with agent registration? (Y/N) [Y]: ",
        env!("CARGO_PKG_VERSION")
    );
    if !yes(&ask(&intro, "Y")?) {
        return Ok(None);
    }
    let server = loop {
        let s = ask("\nPlease enter the primary key manager host name: ", "")?;
        if s.is_empty() {
            continue;
        }
        let host = s.rsplit_once(':').map(|(h, _)| h).unwrap_or(&s).to_owned();
        if yes(&ask(
            &format!("\nYou entered the host name {host}\nIs this host name correct? (Y/N) [Y]: "),
            "Y",
        )?) {
            break s;
        }
    };
    let choices = host_choices();
    let mut list = String::from(
        "\nPlease enter the host name of this machine, or select from the following list.\n\n",
    );
    for (i, c) in choices.iter().enumerate() {
        list.push_str(&format!("    [{}] {c}\n", i + 1));
    }
    list.push_str("\nEnter a number, or type a different host name or IP address in manually:\n\nWhat is the name of this machine? [1]: ");
    let pick = ask(&list, "1")?;
    let host_name = match pick.parse::<usize>() {
        Ok(n) if (1..=choices.len()).contains(&n) => choices[n - 1].clone(),
        Ok(_) => return Err(format!("{pick} is not one of the listed names")),
        Err(_) => pick,
    };
    let mut head = format!("\nYou selected \"{host_name}\".\n\n");
    let (token, profile, host_group, description) = loop {
        head.push_str("Please enter the registration token: ");
        let token = ask(&head, "")?;
        let profile = ask("Please enter the profile name for this host: ", "")?;
        let group = ask(
            "Please enter the host group name for this host, if any: ",
            "",
        )?;
        let desc = ask("Please enter a description for this host: ", "")?;
        let summary = format!(
            "\nToken           : {token}\nProfile name    : {}\nHost Group      : {}\nHost description: {desc}\nAre the above values correct? (Y/N) [Y]: ",
            if profile.is_empty() {
                "(default)"
            } else {
                &profile
            },
            if group.is_empty() { "(none)" } else { &group },
        );
        if yes(&ask(&summary, "Y")?) {
            break (token, profile, group, desc);
        }
        head = String::new();
    };
    let hw = ask(
        "\nIt is possible to associate this installation with the hardware of this machine. If selected, the agent \
         will not contact the key manager or use any cryptographic keys if any of this machine's hardware is changed. \
         This can be rectified by running this registration program again. Do you want to enable this functionality? (Y/N) [Y]: ",
        "Y",
    )?;
    let ca = ask(
        "\nPath of the key manager's CA certificate to pin (empty: trust on first use): ",
        "",
    )?;
    let ca_pem = if ca.is_empty() {
        None
    } else {
        Some(std::fs::read(&ca).map_err(|e| format!("{ca}: {e}"))?)
    };
    Ok(Some(Params {
        server,
        host_name,
        token,
        profile,
        host_group,
        description,
        hardware_association: yes(&hw),
        ca_pem,
        timeout: timeout(),
    }))
}
