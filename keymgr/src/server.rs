//! `keymgr serve`: HTTPS (rustls, TLS 1.2/1.3) on one port. Client
//! certificates are optional at the TLS layer and, when presented, must
//! chain to the local CA; the application then decides per endpoint
//! (admin endpoints want a bearer token, agent endpoints a registered
//! client's certificate).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::api::{App, MAX_BODY, Request, Response};
use crate::ca::{Ca, Paths};
use crate::error::ApiError;
use crate::seal::MasterKey;
use crate::sqlite::SqliteStore;
use crate::util::sha256_hex;

/// Bodies past the limit are read and discarded up to this many bytes so
/// the client gets its 413; beyond it the connection is just closed.
const DRAIN_LIMIT: usize = 16 * MAX_BODY;
/// Concurrent connections. Agents keep theirs open between polls (one per
/// registered host), so this bounds the hosts one server holds at once;
/// each is one file descriptor (`ulimit -n` must be above it).
const MAX_CONNECTIONS: usize = 8192;

fn tls_config(paths: &Paths) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    let ca_certs = CertificateDer::pem_file_iter(&paths.ca_cert)
        .map_err(|e| format!("{}: {e}", paths.ca_cert.display()))?;
    for c in ca_certs {
        roots
            .add(c.map_err(|e| format!("{}: {e}", paths.ca_cert.display()))?)
            .map_err(|e| format!("{}: {e}", paths.ca_cert.display()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("client verifier: {e}"))?;
    let certs = CertificateDer::pem_file_iter(&paths.server_cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", paths.server_cert.display()))?;
    crate::ca::check_private_mode(&paths.server_key)?;
    let key = PrivateKeyDer::from_pem_file(&paths.server_key)
        .map_err(|e| format!("{}: {e}", paths.server_key.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("server certificate: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Run the server until SIGINT/SIGTERM.
///
/// # Errors
/// When the data directory is incomplete or the address cannot be bound.
/// The master key and unsealed key material pass through this process:
/// keep its memory out of swap and core dumps.
fn protect_memory() {
    use nix::sys::mman::{MlockAllFlags, mlockall};
    if let Err(e) = mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE) {
        log::warn!("mlockall failed ({e}); key material could reach swap");
    }
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        log::warn!("cannot disable core dumps: {e}");
    }
}

pub fn serve(data_dir: &Path, listen: SocketAddr) -> Result<(), String> {
    protect_memory();
    let paths = Paths::new(data_dir);
    let master = MasterKey::load(&paths.master_key)?;
    let ca = Ca::load(&paths)?;
    let tls = tls_config(&paths)?;
    let store = SqliteStore::open(&paths.db).map_err(|e| format!("database: {e}"))?;
    let app = Arc::new(App::new(Arc::new(store), master, ca));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(run(listen, TlsAcceptor::from(Arc::new(tls)), app))
}

async fn run(listen: SocketAddr, acceptor: TlsAcceptor, app: Arc<App>) -> Result<(), String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    log::info!("keymgr listening on https://{local}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("signal: {e}"))?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    log::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            log::warn!("too many connections; dropping {peer}");
            continue;
        };
        // Small request/response exchanges: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        log::info!("TLS handshake with {peer} failed: {e}");
                        return;
                    }
                    Err(_) => {
                        log::info!("TLS handshake with {peer} timed out");
                        return;
                    }
                };
            let fp = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| sha256_hex(c.as_ref()));
            let svc = service_fn(move |req| handle(app.clone(), fp.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(tls), svc);
            if let Err(e) = conn.await {
                log::debug!("connection with {peer}: {e}");
            }
        });
    }
    log::info!("keymgr shutting down");
    Ok(())
}

enum BodyRead {
    Ok(Vec<u8>),
    TooLarge,
    Broken,
}

async fn read_body(mut body: Incoming) -> BodyRead {
    let mut buf = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return BodyRead::Broken;
        };
        if let Ok(data) = frame.into_data() {
            total = total.saturating_add(data.len());
            if total > DRAIN_LIMIT {
                return BodyRead::TooLarge;
            }
            if total <= MAX_BODY {
                buf.extend_from_slice(&data);
            }
        }
    }
    if total > MAX_BODY {
        BodyRead::TooLarge
    } else {
        BodyRead::Ok(buf)
    }
}

fn to_hyper(r: Response, close: bool) -> hyper::Response<Full<Bytes>> {
    let mut b = hyper::Response::builder()
        .status(r.status)
        .header(CACHE_CONTROL, "no-store");
    if let Some(e) = &r.etag {
        b = b.header(ETAG, e.as_str());
    }
    if close {
        b = b.header(CONNECTION, "close");
    }
    let out = match r.body {
        Some(body) => b
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body))),
        None => b.body(Full::new(Bytes::new())),
    };
    out.unwrap_or_else(|_| {
        let mut resp = hyper::Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
        resp
    })
}

async fn handle(
    app: Arc<App>,
    fp: Option<String>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        Response::error(&ApiError::too_large(format!(
            "request body larger than {MAX_BODY} bytes"
        )))
    };
    if declared.is_some_and(|n| n > DRAIN_LIMIT as u64) {
        return Ok(to_hyper(too_large(), true));
    }
    let body = match read_body(body).await {
        BodyRead::Ok(b) => b,
        BodyRead::TooLarge => return Ok(to_hyper(too_large(), true)),
        BodyRead::Broken => {
            let e = ApiError::bad_request("could not read request body");
            return Ok(to_hyper(Response::error(&e), true));
        }
    };
    let header = |name: hyper::header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let r = Request {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        authorization: header(hyper::header::AUTHORIZATION),
        if_none_match: header(hyper::header::IF_NONE_MATCH),
        body,
        peer_fingerprint: fp,
    };
    let resp = tokio::task::spawn_blocking(move || app.handle(&r))
        .await
        .unwrap_or_else(|_| Response::error(&ApiError::internal("request handler failed")));
    Ok(to_hyper(resp, false))
}
