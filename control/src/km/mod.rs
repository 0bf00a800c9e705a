//! The agent as a key-manager client: registration (`register_host`), the
//! mutually authenticated HTTPS client vmd polls keymgr with, the key
//! source backed by the key manager, and the hardware signature.
//!
//! Files, all under `.sec/` (0700): `km.json` (server URL, client id,
//! name, hardware signature), `client.pem` (0600: the client certificate
//! and its private key in one file, so a renewal replaces both in one
//! atomic rename), `ca.pem` (the pinned CA), `km_keys.json` (persistent
//! keys, sealed under the host key like the local store).

pub mod hwsig;
pub mod keys;
pub mod register;
pub mod unlock;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

use crate::state::{read_file, write_atomic};

/// The client certificate and key (PEM, one file, 0600) under `.sec/`.
pub const IDENTITY: &str = "client.pem";

/// A new key pair and a CSR for `name`: (key PEM, CSR PEM).
pub fn new_csr(name: &str) -> Result<(zeroize::Zeroizing<String>, String), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("key pair: {e}"))?;
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| format!("CSR: {e}"))?;
    Ok((zeroize::Zeroizing::new(key.serialize_pem()), csr))
}

/// Store certificate + key as the identity, atomically.
pub fn store_identity(sec: &Path, cert_pem: &str, key_pem: &str) -> Result<(), String> {
    let both = zeroize::Zeroizing::new(format!("{}\n{}", cert_pem.trim_end(), key_pem));
    write_atomic(&sec.join(IDENTITY), both.as_bytes(), 0o600).map_err(|e| e.to_string())
}

/// When the client certificate expires (Unix seconds).
pub fn cert_not_after(sec: &Path) -> Result<i64, String> {
    let pem = std::fs::read(sec.join(IDENTITY))
        .map_err(|e| format!("{}: {e}", sec.join(IDENTITY).display()))?;
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(&pem).map_err(|e| format!("client certificate: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("client certificate: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

/// Renew the client certificate with a new key pair (the server then
/// accepts only the new one). Returns the new expiry.
pub fn renew(sec: &Path, reg: &Registration, client: &KmClient) -> Result<i64, String> {
    let (key, csr) = new_csr(&reg.name)?;
    let reply = client
        .post("/api/v1/agent/renew", &serde_json::json!({ "csr": csr }))?
        .ok()?;
    let cert = reply
        .get("certificate")
        .and_then(Value::as_str)
        .ok_or("renewal reply lacks the certificate")?;
    store_identity(sec, cert, &key)?;
    cert_not_after(sec)
}

/// What registration leaves in `.sec/km.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// `https://host:port`
    pub url: String,
    pub client_id: String,
    pub name: String,
    /// Hex SHA-256 hardware signature, when hardware association is on.
    #[serde(default)]
    pub hw_signature: Option<String>,
    pub registered: u64,
}

impl Registration {
    pub fn path(sec: &Path) -> PathBuf {
        sec.join("km.json")
    }

    /// The registration, if this host is registered.
    pub fn load(sec: &Path) -> Result<Option<Registration>, String> {
        let p = Self::path(sec);
        match read_file(&p).map_err(|e| e.to_string())? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| format!("{}: {e}", p.display())),
        }
    }

    pub fn save(&self, sec: &Path) -> Result<(), String> {
        let b = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        write_atomic(&Self::path(sec), &b, 0o600).map_err(|e| e.to_string())
    }
}

/// `host[:port]` (default port 443) as an https URL.
pub fn server_url(server: &str) -> Result<String, String> {
    let s = server
        .trim()
        .trim_start_matches("https://")
        .trim_end_matches('/');
    if s.is_empty() || s.contains(['/', ' ', '@', '?', '#']) {
        return Err(format!("{server:?} is not a host name or host:port"));
    }
    Ok(
        if s.rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !s.ends_with(']')
        {
            format!("https://{s}")
        } else {
            format!("https://{s}:443")
        },
    )
}

fn tls_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// How the client checks the server.
pub enum Trust<'a> {
    /// Only servers whose chain ends at this CA (PEM).
    Pinned(&'a [u8]),
    /// Trust on first use: any server (registration without a CA file;
    /// the CA the server returns is pinned from then on).
    FirstUse,
}

/// An HTTPS client for one key manager.
#[derive(Clone)]
pub struct KmClient {
    agent: ureq::Agent,
    url: String,
}

impl std::fmt::Debug for KmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmClient")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A reply: HTTP status and JSON body (`Null` when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub etag: Option<String>,
}

impl Answer {
    /// The body, or the server's JSON error as text.
    pub fn ok(self) -> Result<Value, String> {
        if (200..300).contains(&self.status) {
            return Ok(self.body);
        }
        let msg = self
            .body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        Err(format!("key manager answered {}: {msg}", self.status))
    }
}

impl KmClient {
    /// A client for `url` trusting `trust`, presenting `identity`
    /// (certificate PEM, key PEM) when given.
    pub fn new(
        url: &str,
        trust: Trust<'_>,
        identity: Option<(&[u8], &[u8])>,
        timeout: Duration,
    ) -> Result<KmClient, String> {
        let mut tls = TlsConfig::builder().unversioned_rustls_crypto_provider(tls_provider());
        tls = match trust {
            Trust::Pinned(pem) => {
                let ca = Certificate::from_pem(pem).map_err(|e| format!("CA certificate: {e}"))?;
                tls.root_certs(RootCerts::new_with_certs(&[ca]))
            }
            Trust::FirstUse => tls.disable_verification(true),
        };
        if let Some((cert, key)) = identity {
            let cert =
                Certificate::from_pem(cert).map_err(|e| format!("client certificate: {e}"))?;
            let key = PrivateKey::from_pem(key).map_err(|e| format!("client key: {e}"))?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
        }
        let config = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build();
        Ok(KmClient {
            agent: config.into(),
            url: url.trim_end_matches('/').to_owned(),
        })
    }

    /// The client of a registered agent (pinned CA, its certificate).
    pub fn registered(
        sec: &Path,
        reg: &Registration,
        timeout: Duration,
    ) -> Result<KmClient, String> {
        let read = |n: &str| {
            std::fs::read(sec.join(n)).map_err(|e| format!("{}: {e}", sec.join(n).display()))
        };
        let (ca, identity) = (read("ca.pem")?, zeroize::Zeroizing::new(read(IDENTITY)?));
        KmClient::new(
            &reg.url,
            Trust::Pinned(&ca),
            Some((&identity, &identity)),
            timeout,
        )
    }

    fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Answer, String> {
        let mut r = r.map_err(|e| format!("key manager unreachable: {e}"))?;
        let status = r.status().as_u16();
        let etag = r
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = r
            .body_mut()
            .with_config()
            .limit(16 << 20)
            .read_to_string()
            .unwrap_or_default();
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok(Answer { status, body, etag })
    }

    pub fn get(&self, path: &str, etag: Option<&str>) -> Result<Answer, String> {
        let mut req = self.agent.get(format!("{}{path}", self.url));
        if let Some(e) = etag {
            req = req.header("If-None-Match", e);
        }
        Self::answer(req.call())
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Answer, String> {
        let text = serde_json::to_string(body).map_err(|e| e.to_string())?;
        Self::answer(
            self.agent
                .post(format!("{}{path}", self.url))
                .header("Content-Type", "application/json")
                .send(text),
        )
    }
}
