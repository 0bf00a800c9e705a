//! Test harness: a real `keymgr` child process on a loopback port with a
//! real data directory, driven over real TLS with ureq.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};

pub const PASSWORD: &str = "correct horse battery";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_keymgr")
}

/// A data directory made by `keymgr init`.
pub fn init_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(bin())
        .args(["init", "--data-dir"])
        .arg(&data)
        .args([
            "--admin-password",
            PASSWORD,
            "--san",
            "localhost",
            "--san",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "init failed: {out:?}");
    dir
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A running server.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub data: PathBuf,
}

impl Server {
    pub fn start(root: &Path) -> Server {
        let data = root.join("data");
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("server.log"))
            .unwrap();
        let child = Command::new(bin())
            .args(["serve", "--data-dir"])
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, port, data }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.data.join("ca.pem")).unwrap()
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// An HTTP client trusting the local CA, with an optional client cert.
    pub fn http(&self, identity: Option<&Identity>) -> Http {
        Http::new(self, identity)
    }

    /// Run the CLI against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .env("KEYMGR_URL", format!("https://127.0.0.1:{}", self.port))
            .env("KEYMGR_USER", "admin")
            .env("KEYMGR_PASSWORD", PASSWORD)
            .env("KEYMGR_DATA_DIR", &self.data)
            .output()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client key and certificate.
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CSR and its private key.
pub fn csr(cn: &str) -> (String, String) {
    let kp = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let req = p.serialize_request(&kp).unwrap();
    (req.pem().unwrap(), kp.serialize_pem())
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub etag: Option<String>,
}

impl Reply {
    /// Assert the CipherTrust-style error shape and status.
    pub fn assert_error(&self, status: u16) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert!(self.body["code"].is_u64(), "no code: {}", self.body);
        assert!(
            self.body["codeDesc"].is_string(),
            "no codeDesc: {}",
            self.body
        );
        assert!(
            self.body["message"].is_string(),
            "no message: {}",
            self.body
        );
    }
}

pub struct Http {
    agent: ureq::Agent,
    base: String,
    pub token: Option<String>,
}

impl Http {
    fn new(s: &Server, identity: Option<&Identity>) -> Http {
        let ca = Certificate::from_pem(s.ca_pem().as_bytes()).unwrap();
        let mut tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::new_with_certs(&[ca]))
            .unversioned_rustls_crypto_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ));
        if let Some(id) = identity {
            let cert = Certificate::from_pem(id.cert_pem.as_bytes()).unwrap();
            let key = PrivateKey::from_pem(id.key_pem.as_bytes()).unwrap();
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
        }
        let agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        Http {
            agent,
            base: format!("https://127.0.0.1:{}", s.port),
            token: None,
        }
    }

    pub fn login(&mut self) {
        let r = self.req(
            "POST",
            "/api/v1/auth/tokens",
            Some(json!({"grant_type": "password", "username": "admin", "password": PASSWORD})),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["duration"], 300);
        self.token = Some(r.body["jwt"].as_str().unwrap().to_owned());
    }

    pub fn req(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.raw(
            method,
            path,
            body.map(|b| serde_json::to_vec(&b).unwrap()),
            &[],
        )
    }

    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut b = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = match body {
            Some(bytes) => self.agent.run(
                b.header("Content-Type", "application/json")
                    .body(bytes)
                    .unwrap(),
            ),
            None => self.agent.run(b.body(()).unwrap()),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = resp.body_mut().read_to_string().unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        Reply { status, body, etag }
    }

    /// Try a request; transport errors are returned rather than panicking.
    pub fn try_raw(&self, method: &str, path: &str, body: Vec<u8>) -> Result<Reply, String> {
        let mut b = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = self
            .agent
            .run(b.body(body).unwrap())
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        Ok(Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            etag: None,
        })
    }
}

pub const TE: &str = "/api/v1/transparent-encryption";
pub const KEYS: &str = "/api/v1/vault/keys2";
pub const REGTOKENS: &str = "/api/v1/client-management/regtokens";

pub fn create_key(h: &Http, name: &str, mode: &str) -> Value {
    let r = h.req(
        "POST",
        KEYS,
        Some(json!({"name": name, "algorithm": "AES", "size": 256,
            "meta": {"cte": {"persistent_on_client": true, "encryption_mode": mode, "cte_versioned": true}}})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.body
}

pub fn policy_doc(name: &str, key: &str) -> Value {
    json!({
        "name": name,
        "policy_type": "Standard",
        "security_rules": [
            {"order_number": 1, "action": "key_op", "effect": "permit,applykey"},
            {"order_number": 2, "action": "all_ops", "effect": "permit,applykey,audit"}
        ],
        "key_rules": [{"key_id": key}]
    })
}

pub fn create_policy(h: &Http, name: &str, key: &str) -> Value {
    let r = h.req(
        "POST",
        &format!("{TE}/policies"),
        Some(policy_doc(name, key)),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.body
}

pub fn create_regtoken(h: &Http, body: Value) -> String {
    let r = h.req("POST", REGTOKENS, Some(body));
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["token"].as_str().unwrap().to_owned()
}

/// Register `name` with `token`; returns the reply and the identity.
pub fn register(s: &Server, token: &str, name: &str) -> (Reply, Identity) {
    let (csr_pem, key_pem) = csr(name);
    let h = s.http(None);
    let r = h.req(
        "POST",
        &format!("{TE}/register"),
        Some(
            json!({"token": token, "csr": csr_pem, "name": name, "description": "test host",
                    "profile": "", "host_group": "", "hw_signature": "hw-1"}),
        ),
    );
    let cert_pem = r.body["certificate"].as_str().unwrap_or("").to_owned();
    (r, Identity { cert_pem, key_pem })
}

pub fn add_gp(h: &Http, client: &str, path: &str, policy: &str) -> Value {
    let r = h.req(
        "POST",
        &format!("{TE}/clients/{client}/guardpoints"),
        Some(json!({"guard_paths": [path], "guard_point_params":
            {"guard_point_type": "directory_auto", "policy_id": policy, "guard_enabled": true}})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["guardpoints"][0].clone()
}

/// Everything an admin can list, for before/after comparisons.
pub fn snapshot(h: &Http) -> Value {
    let mut out = serde_json::Map::new();
    for p in [
        KEYS,
        REGTOKENS,
        &format!("{TE}/policies"),
        &format!("{TE}/clients"),
    ] {
        let r = h.req("GET", p, None);
        assert_eq!(r.status, 200, "{}", r.body);
        out.insert(p.to_owned(), r.body);
    }
    let clients = out[&format!("{TE}/clients")]["resources"]
        .as_array()
        .unwrap()
        .clone();
    for c in clients {
        let id = c["id"].as_str().unwrap();
        let p = format!("{TE}/clients/{id}/guardpoints");
        out.insert(p.clone(), h.req("GET", &p, None).body);
    }
    Value::Object(out)
}
