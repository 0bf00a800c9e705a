//! A small blocking REST client (ureq + rustls) for the admin CLI. It
//! trusts only the given CA certificate (the local CA by default).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

/// A REST error: the server's JSON error, or a transport problem.
#[derive(Debug)]
pub enum CallError {
    /// The server answered with an error status.
    Api {
        /// HTTP status.
        status: u16,
        /// The JSON error body (or a synthetic one).
        body: Value,
    },
    /// Could not talk to the server.
    Transport(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Api { status, body } => write!(
                f,
                "{status} {}: {}",
                body.get("codeDesc").and_then(Value::as_str).unwrap_or(""),
                body.get("message").and_then(Value::as_str).unwrap_or("")
            ),
            CallError::Transport(m) => f.write_str(m),
        }
    }
}

/// A logged-in (or not yet) client of one keymgr server.
pub struct ApiClient {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl ApiClient {
    /// A client of `base` (e.g. `https://127.0.0.1:8443`) trusting `ca_pem`.
    ///
    /// # Errors
    /// When the CA PEM holds no certificate.
    pub fn new(base: &str, ca_pem: &[u8]) -> Result<ApiClient, String> {
        let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(ca_pem)
            .filter_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err("the CA file holds no certificate".into());
        }
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::new_with_certs(&certs))
            .unversioned_rustls_crypto_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        Ok(ApiClient {
            agent,
            base: base.trim_end_matches('/').to_owned(),
            token: None,
        })
    }

    /// Log in with a password; later calls carry the bearer token.
    ///
    /// # Errors
    /// On bad credentials or transport failure.
    pub fn login(&mut self, user: &str, password: &str) -> Result<(), CallError> {
        let v = self.call(
            "POST",
            "/api/v1/auth/tokens",
            Some(&json!({"grant_type": "password", "username": user, "password": password})),
        )?;
        let tok = v
            .get("jwt")
            .and_then(Value::as_str)
            .ok_or_else(|| CallError::Transport("login answer carries no token".into()))?;
        self.token = Some(tok.to_owned());
        Ok(())
    }

    /// One call; `Ok` holds the JSON body (`Null` for 204).
    ///
    /// # Errors
    /// A [`CallError::Api`] for any status >= 400.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, CallError> {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        self.call_raw(method, path, bytes)
    }

    /// As [`ApiClient::call`] with a raw body.
    ///
    /// # Errors
    /// As [`ApiClient::call`].
    pub fn call_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Value, CallError> {
        let url = format!("{}{path}", self.base);
        let mut b = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        let t = |e: &dyn std::fmt::Display| CallError::Transport(format!("{url}: {e}"));
        let resp = match body {
            Some(bytes) => {
                let req = b
                    .header("Content-Type", "application/json")
                    .body(bytes)
                    .map_err(|e| t(&e))?;
                self.agent.run(req)
            }
            None => {
                let req = b.body(()).map_err(|e| t(&e))?;
                self.agent.run(req)
            }
        };
        let mut resp = resp.map_err(|e| t(&e))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().map_err(|e| t(&e))?;
        let v: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| json!({"message": text}))
        };
        if status >= 400 {
            return Err(CallError::Api { status, body: v });
        }
        Ok(v)
    }
}
