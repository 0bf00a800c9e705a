//! `km_load`: a bounded load test of the reference key manager (`keymgr`).
//!
//! N simulated agents poll one keymgr the way vmd does: each has its own
//! client certificate and its own HTTP connection pool (so TLS sessions are
//! reused, like a long-running vmd), polls `GET /api/v1/agent/config` every
//! `--interval-ms` with `If-None-Match` set to the ETag it last saw, and
//! fetches its key material once. T worker threads share the agents.
//!
//! Setup (not measured): admin login, one registration token for N clients,
//! N registrations (own key pair and CSR each, in parallel), one key, one
//! policy and one GuardPoint per agent (`/data/agentN`).
//!
//! Phase 1 (measured, `--duration` seconds): steady polling; prints request
//! rate, 200/304/error counts and latency percentiles.
//!
//! Phase 2 (propagation): polling continues, the key is rotated through the
//! admin API, and the phase ends when every agent has seen a new ETag (or at
//! `--propagation-timeout`); prints how long that took (max over agents).
//!
//! Nothing here asserts a time; `bench/km-load.sh` runs it against a fresh
//! server. Not part of CI.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde_json::{Value, json};
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};

const TE: &str = "/api/v1/transparent-encryption";
const KEYS: &str = "/api/v1/vault/keys2";
const REGTOKENS: &str = "/api/v1/client-management/regtokens";
const CONFIG: &str = "/api/v1/agent/config";

#[derive(Parser)]
#[command(
    name = "km_load",
    about = "Load test of keymgr: N simulated agents polling their configuration"
)]
struct Args {
    /// keymgr base URL, e.g. https://127.0.0.1:8443.
    #[arg(long, env = "KEYMGR_URL")]
    url: String,
    /// CA certificate of the server (keymgr's <data-dir>/ca.pem).
    #[arg(long)]
    ca: PathBuf,
    /// Admin user.
    #[arg(long, env = "KEYMGR_USER", default_value = "admin")]
    admin_user: String,
    /// Admin password.
    #[arg(long, env = "KEYMGR_PASSWORD", hide_env_values = true)]
    admin_password: String,
    /// Simulated agents.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Seconds of the measured phase.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Worker threads sharing the agents (also used for setup).
    #[arg(long, default_value_t = 64)]
    threads: usize,
    /// Poll interval of each agent, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Longest wait, in seconds, for every agent to see the rotated key.
    #[arg(long, default_value_t = 60)]
    propagation_timeout: u64,
    /// Per-request timeout, in seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Agents keep no idle connection: every poll opens a new TCP and TLS
    /// connection (for comparison with the default, a kept connection).
    #[arg(long)]
    no_keepalive: bool,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("km_load: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    if args.agents == 0 || args.threads == 0 || args.interval_ms == 0 {
        return Err("--agents, --threads and --interval-ms must be positive".into());
    }
    let ca_pem = std::fs::read(&args.ca).map_err(|e| format!("{}: {e}", args.ca.display()))?;
    let ca = Certificate::from_pem(&ca_pem).map_err(|e| format!("CA certificate: {e}"))?;
    let base = args.url.trim_end_matches('/').to_owned();
    let interval = Duration::from_millis(args.interval_ms);
    let threads = args.threads.min(args.agents);
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let names = Names {
        key: format!("kmload-{run_id}-key"),
        policy: format!("kmload-{run_id}-policy"),
        client_prefix: format!("kmload-{run_id}-"),
    };

    // ---- setup (not measured) ----
    let t = Instant::now();
    let admin = Admin::new(args, &base, &ca, threads)?;
    admin.login()?;
    let (st, body) = admin.call(
        "POST",
        REGTOKENS,
        Some(json!({"max_clients": args.agents, "lifetime": "1d"})),
    )?;
    expect(st, 201, "create registration token", &body)?;
    let token = str_field(&body, "token")?;
    let (st, body) = admin.call(
        "POST",
        KEYS,
        Some(json!({"name": names.key, "algorithm": "AES", "size": 256,
            "meta": {"cte": {"persistent_on_client": true, "encryption_mode": "XTS",
                "cte_versioned": true}}})),
    )?;
    expect(st, 201, "create key", &body)?;
    let (st, body) = admin.call(
        "POST",
        &format!("{TE}/policies"),
        Some(json!({
            "name": names.policy,
            "policy_type": "Standard",
            "security_rules": [
                {"order_number": 1, "action": "key_op", "effect": "permit,applykey"},
                {"order_number": 2, "action": "all_ops", "effect": "permit,applykey,audit"}
            ],
            "key_rules": [{"key_id": names.key}]
        })),
    )?;
    expect(st, 201, "create policy", &body)?;
    eprintln!(
        "setup: registering {} agents with {threads} threads...",
        args.agents
    );
    let t_reg = Instant::now();
    let agents = register_all(args, &admin, &ca, &token, &names, threads)?;
    let reg_s = t_reg.elapsed().as_secs_f64();
    eprintln!("setup: adding {} GuardPoints...", args.agents);
    let t_gp = Instant::now();
    add_guardpoints(&admin, &agents, &names, threads)?;
    let gp_s = t_gp.elapsed().as_secs_f64();
    println!(
        "setup: {} agents registered in {reg_s:.1} s ({:.0}/s), {} GuardPoints in {gp_s:.1} s, \
         total {:.1} s (not measured below)",
        agents.len(),
        agents.len() as f64 / reg_s,
        agents.len(),
        t.elapsed().as_secs_f64()
    );

    // Deal the agents to the worker threads round-robin.
    let mut buckets: Vec<Vec<SimAgent>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, a) in agents.into_iter().enumerate() {
        buckets[i % threads].push(a);
    }

    // ---- phase 1: steady polling ----
    let p1 = Phase {
        base: &base,
        key: &names.key,
        interval,
        n: args.agents,
        rotation: None,
    };
    let t1 = Instant::now();
    let stats = p1.run(&mut buckets, t1, t1 + Duration::from_secs(args.duration));
    let elapsed = t1.elapsed();
    println!();
    println!(
        "== steady polling: {} agents, {threads} threads, interval {} ms, {} ==",
        args.agents,
        args.interval_ms,
        if args.no_keepalive {
            "a new connection per poll"
        } else {
            "one kept connection per agent"
        }
    );
    stats.print(elapsed);
    let served = buckets
        .iter()
        .flatten()
        .filter(|a| a.etag.is_some())
        .count();
    println!(
        "agents served: {served}/{} got their configuration at least once",
        args.agents
    );

    // ---- phase 2: propagation of a change ----
    let rotation = Rotation::default();
    let p2 = Phase {
        base: &base,
        key: &names.key,
        interval,
        n: args.agents,
        rotation: Some(&rotation),
    };
    let warmup = (interval * 2).max(Duration::from_secs(2));
    let t2 = Instant::now();
    let deadline = t2 + warmup + Duration::from_secs(args.propagation_timeout);
    let mut admin_ms = 0.0;
    let (stats2, rotated) = std::thread::scope(|s| {
        let workers = s.spawn(|| p2.run(&mut buckets, t2, deadline));
        std::thread::sleep(warmup);
        let rotated = admin.login().and_then(|()| {
            let started = Instant::now();
            let _ = rotation.at.set(started);
            let (st, body) = admin.call("POST", &format!("{KEYS}/{}/versions", names.key), None)?;
            admin_ms = ms(started.elapsed());
            expect(st, 201, "rotate key", &body)
        });
        if rotated.is_err() {
            rotation.stop.store(true, Ordering::Relaxed);
        }
        let stats = workers.join().unwrap_or_else(|_| {
            let mut s = Stats::default();
            s.error("worker thread panicked".into());
            s
        });
        (stats, rotated)
    });
    println!();
    println!(
        "== propagation: key rotated through the admin API after {:.1} s of polling ==",
        warmup.as_secs_f64()
    );
    stats2.print(t2.elapsed());
    if let Err(e) = rotated {
        println!("propagation: not measured, the admin could not rotate the key: {e}");
        return Err("the rotation failed".into());
    }
    let mut seen: Vec<Duration> = buckets
        .iter()
        .flatten()
        .filter_map(|a| a.saw_change)
        .collect();
    seen.sort_unstable();
    println!("rotate call (admin): {admin_ms:.1} ms");
    if let Some(max) = seen.last() {
        println!(
            "propagation: {}/{} agents saw the new ETag; max {:.0} ms (p50 {:.0} ms, p90 {:.0} ms, \
             p99 {:.0} ms) after the rotate request was sent; poll interval {} ms",
            seen.len(),
            args.agents,
            ms(*max),
            ms(pct(&seen, 0.50)),
            ms(pct(&seen, 0.90)),
            ms(pct(&seen, 0.99)),
            args.interval_ms
        );
    } else {
        println!(
            "propagation: no agent saw the new ETag within {} s",
            args.propagation_timeout
        );
    }
    if seen.len() < args.agents {
        println!(
            "propagation: {} agents did NOT see it within {} s",
            args.agents - seen.len(),
            args.propagation_timeout
        );
    }
    Ok(())
}

struct Names {
    key: String,
    policy: String,
    client_prefix: String,
}

fn expect(got: u16, want: u16, what: &str, body: &Value) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: HTTP {got}: {body}"))
    }
}

fn str_field(v: &Value, name: &str) -> Result<String, String> {
    v[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no {name:?} in {v}"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p` quantile (0..=1) of sorted samples (nearest rank).
fn pct<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static P: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// A ureq agent trusting `ca`, optionally presenting a client certificate,
/// keeping up to `pool` idle connections to the server.
fn http_agent(
    ca: &Certificate<'static>,
    identity: Option<(&str, &str)>,
    pool: usize,
    timeout: Duration,
    idle: Duration,
) -> Result<ureq::Agent, String> {
    let mut tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .root_certs(RootCerts::new_with_certs(std::slice::from_ref(ca)))
        .unversioned_rustls_crypto_provider(provider());
    if let Some((cert, key)) = identity {
        let cert = Certificate::from_pem(cert.as_bytes()).map_err(|e| format!("cert: {e}"))?;
        let key = PrivateKey::from_pem(key.as_bytes()).map_err(|e| format!("key: {e}"))?;
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
    }
    Ok(ureq::Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_idle_connections(pool)
        .max_idle_connections_per_host(pool)
        .max_idle_age(idle)
        .build()
        .new_agent())
}

/// Status and body of an answer (body `Null` when empty or not JSON).
fn answer(
    r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<(u16, Value), String> {
    let mut r = r.map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// The admin side: a bearer token, renewed on 401.
struct Admin {
    http: ureq::Agent,
    base: String,
    user: String,
    password: String,
    jwt: Mutex<String>,
}

impl Admin {
    fn new(
        args: &Args,
        base: &str,
        ca: &Certificate<'static>,
        threads: usize,
    ) -> Result<Admin, String> {
        Ok(Admin {
            http: http_agent(
                ca,
                None,
                threads + 1,
                Duration::from_secs(args.timeout.max(30)),
                Duration::from_secs(60),
            )?,
            base: base.to_owned(),
            user: args.admin_user.clone(),
            password: args.admin_password.clone(),
            jwt: Mutex::new(String::new()),
        })
    }

    fn login(&self) -> Result<(), String> {
        let body = json!({"grant_type": "password", "username": self.user,
            "password": self.password});
        let (st, v) = self.send_retry("POST", "/api/v1/auth/tokens", Some(&body), None)?;
        expect(st, 200, "admin login", &v)?;
        *self.jwt.lock().unwrap_or_else(|e| e.into_inner()) = str_field(&v, "jwt")?;
        Ok(())
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        jwt: Option<&str>,
    ) -> Result<(u16, Value), String> {
        let mut b = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(t) = jwt {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        let r = match body {
            Some(v) => self.http.run(
                b.header("Content-Type", "application/json")
                    .body(serde_json::to_vec(v).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?,
            ),
            None => self.http.run(b.body(()).map_err(|e| e.to_string())?),
        };
        answer(r).map_err(|e| format!("{method} {path}: {e}"))
    }

    /// [`Admin::send`], retried on transport errors (the server may be
    /// refusing connections while the agents hold its connection slots).
    fn send_retry(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        jwt: Option<&str>,
    ) -> Result<(u16, Value), String> {
        let mut tries = 0;
        loop {
            match self.send(method, path, body, jwt) {
                Err(e) if tries < 10 => {
                    tries += 1;
                    eprintln!("km_load: admin: {e} (retry {tries}/10)");
                    std::thread::sleep(Duration::from_millis(500));
                }
                r => return r,
            }
        }
    }

    /// An authenticated call; logs in again once if the token expired.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<(u16, Value), String> {
        let jwt = self.jwt.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let r = self.send_retry(method, path, body.as_ref(), Some(&jwt))?;
        if r.0 != 401 {
            return Ok(r);
        }
        self.login()?;
        let jwt = self.jwt.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.send_retry(method, path, body.as_ref(), Some(&jwt))
    }
}

/// One simulated agent.
struct SimAgent {
    /// Position in 0..N (spreads the agents' poll times over the interval).
    index: usize,
    client_id: String,
    http: ureq::Agent,
    etag: Option<String>,
    key_fetched: bool,
    /// In the propagation phase: when it first saw a new ETag, counted from
    /// the rotate request.
    saw_change: Option<Duration>,
}

/// A CSR (CN = `name`) and its private key, both PEM.
fn csr(name: &str) -> Result<(String, String), String> {
    let kp = rcgen::KeyPair::generate().map_err(|e| format!("key pair: {e}"))?;
    let mut p =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| format!("CSR: {e}"))?;
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    let req = p.serialize_request(&kp).map_err(|e| format!("CSR: {e}"))?;
    Ok((
        req.pem().map_err(|e| format!("CSR: {e}"))?,
        kp.serialize_pem(),
    ))
}

fn register_all(
    args: &Args,
    admin: &Admin,
    ca: &Certificate<'static>,
    token: &str,
    names: &Names,
    threads: usize,
) -> Result<Vec<SimAgent>, String> {
    let next = AtomicUsize::new(0);
    let timeout = Duration::from_secs(args.timeout);
    // Keep idle connections well past the poll interval.
    let idle =
        Duration::from_millis(args.interval_ms.saturating_mul(4)).max(Duration::from_secs(60));
    let pool = usize::from(!args.no_keepalive);
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<Vec<SimAgent>, String> {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= args.agents {
                            return Ok(out);
                        }
                        let name = format!("{}{i}", names.client_prefix);
                        let (csr_pem, key_pem) = csr(&name)?;
                        let body = json!({"token": token, "csr": csr_pem, "name": name,
                            "description": "km_load simulated agent", "profile": "",
                            "host_group": "", "hw_signature": format!("kmload-hw-{i}")});
                        let (st, v) =
                            admin.send("POST", &format!("{TE}/register"), Some(&body), None)?;
                        expect(st, 201, &format!("register {name}"), &v)?;
                        let cert = str_field(&v, "certificate")?;
                        out.push(SimAgent {
                            index: i,
                            client_id: str_field(&v, "client_id")?,
                            http: http_agent(ca, Some((&cert, &key_pem)), pool, timeout, idle)?,
                            etag: None,
                            key_fetched: false,
                            saw_change: None,
                        });
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect::<Vec<_>>()
    });
    let mut all = Vec::with_capacity(args.agents);
    for r in results {
        all.extend(r?);
    }
    all.sort_by_key(|a| a.index);
    Ok(all)
}

fn add_guardpoints(
    admin: &Admin,
    agents: &[SimAgent],
    names: &Names,
    threads: usize,
) -> Result<(), String> {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<(), String> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(a) = agents.get(i) else {
                            return Ok(());
                        };
                        let (st, v) = admin.call(
                            "POST",
                            &format!("{TE}/clients/{}/guardpoints", a.client_id),
                            Some(json!({"guard_paths": [format!("/data/agent{}", a.index)],
                                "guard_point_params": {"guard_point_type": "directory_auto",
                                "policy_id": names.policy, "guard_enabled": true}})),
                        )?;
                        expect(st, 201, "add GuardPoint", &v)?;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap_or_else(|_| Err("thread panicked".into()))?;
        }
        Ok(())
    })
}

/// The key rotation of the propagation phase.
#[derive(Default)]
struct Rotation {
    /// When the rotate request was sent.
    at: OnceLock<Instant>,
    /// Agents that have seen the new ETag.
    seen: AtomicUsize,
    /// Set to end the phase early (all seen, or the rotation failed).
    stop: AtomicBool,
}

/// What the workers of one phase measure.
#[derive(Default)]
struct Stats {
    /// Latency of every completed request, microseconds.
    latency_us: Vec<u32>,
    /// How late each poll was sent relative to its schedule, microseconds.
    lag_us: Vec<u32>,
    config_200: u64,
    config_304: u64,
    key_200: u64,
    /// Other statuses and transport errors, by kind.
    errors: BTreeMap<String, u64>,
    /// ETag changes seen before the rotation (should be none).
    unexpected_changes: u64,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.latency_us.extend(o.latency_us);
        self.lag_us.extend(o.lag_us);
        self.config_200 += o.config_200;
        self.config_304 += o.config_304;
        self.key_200 += o.key_200;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.unexpected_changes += o.unexpected_changes;
    }

    fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }

    fn print(mut self, elapsed: Duration) {
        self.latency_us.sort_unstable();
        self.lag_us.sort_unstable();
        let errors: u64 = self.errors.values().sum();
        let total = self.config_200 + self.config_304 + self.key_200 + errors;
        let secs = elapsed.as_secs_f64();
        let l = |p: f64| f64::from(pct(&self.latency_us, p)) / 1000.0;
        let g = |p: f64| f64::from(pct(&self.lag_us, p)) / 1000.0;
        println!("duration: {secs:.1} s");
        println!(
            "requests: {total} ({:.1}/s): config 200 = {}, config 304 = {}, key 200 = {}, \
             errors = {errors}",
            total as f64 / secs,
            self.config_200,
            self.config_304,
            self.key_200
        );
        println!(
            "status: 200 = {}, 304 = {}, error = {errors}",
            self.config_200 + self.key_200,
            self.config_304
        );
        for (k, v) in &self.errors {
            println!("  error x{v}: {k}");
        }
        println!(
            "latency ms: p50 {:.2}, p90 {:.2}, p99 {:.2}, max {:.2} ({} samples)",
            l(0.5),
            l(0.9),
            l(0.99),
            l(1.0),
            self.latency_us.len()
        );
        println!(
            "client schedule lag ms (poll sent late by): p50 {:.2}, p99 {:.2}, max {:.2}",
            g(0.5),
            g(0.99),
            g(1.0)
        );
        if self.unexpected_changes > 0 {
            println!(
                "unexpected ETag changes before the rotation: {}",
                self.unexpected_changes
            );
        }
    }
}

/// One phase of polling.
struct Phase<'a> {
    base: &'a str,
    key: &'a str,
    interval: Duration,
    n: usize,
    rotation: Option<&'a Rotation>,
}

impl Phase<'_> {
    /// Run every bucket on its own thread from `start` until `deadline`
    /// (or, with a rotation, until every agent saw it).
    fn run(&self, buckets: &mut [Vec<SimAgent>], start: Instant, deadline: Instant) -> Stats {
        let mut total = Stats::default();
        std::thread::scope(|s| {
            let handles: Vec<_> = buckets
                .iter_mut()
                .map(|b| s.spawn(move || self.worker(b, start, deadline)))
                .collect();
            for h in handles {
                match h.join() {
                    Ok(st) => total.merge(st),
                    Err(_) => total.error("worker thread panicked".into()),
                }
            }
        });
        total
    }

    fn worker(&self, agents: &mut [SimAgent], start: Instant, deadline: Instant) -> Stats {
        let mut st = Stats::default();
        // Agent i first polls at start + i/N of the interval, then every
        // interval: the N agents are spread evenly over the interval.
        let mut queue: BinaryHeap<Reverse<(Instant, usize)>> = agents
            .iter()
            .enumerate()
            .map(|(j, a)| {
                let off = self.interval.mul_f64(a.index as f64 / self.n as f64);
                Reverse((start + off, j))
            })
            .collect();
        while let Some(Reverse((due, j))) = queue.pop() {
            if due >= deadline || self.stopped() {
                break;
            }
            // Sleep in short slices so an early stop is noticed promptly.
            loop {
                let now = Instant::now();
                if due <= now || self.stopped() {
                    break;
                }
                std::thread::sleep((due - now).min(Duration::from_millis(50)));
            }
            if self.stopped() {
                break;
            }
            let lag = Instant::now().saturating_duration_since(due);
            st.lag_us
                .push(lag.as_micros().min(u128::from(u32::MAX)) as u32);
            self.poll(&mut agents[j], &mut st);
            queue.push(Reverse((due + self.interval, j)));
        }
        st
    }

    fn stopped(&self) -> bool {
        self.rotation
            .is_some_and(|r| r.stop.load(Ordering::Relaxed))
    }

    fn timed(
        st: &mut Stats,
        f: impl FnOnce() -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, Option<String>), String> {
        let t = Instant::now();
        let r = f().map_err(|e| e.to_string()).and_then(|mut r| {
            let status = r.status().as_u16();
            let etag = r
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            // Read the body to the end so the connection goes back to the pool.
            r.body_mut()
                .read_to_vec()
                .map_err(|e| format!("body: {e}"))?;
            Ok((status, etag))
        });
        st.latency_us
            .push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        r
    }

    fn poll(&self, a: &mut SimAgent, st: &mut Stats) {
        let url = format!("{}{CONFIG}", self.base);
        let sent = Instant::now();
        let r = Self::timed(st, || {
            let mut req = a.http.get(&url);
            if let Some(e) = &a.etag {
                req = req.header("If-None-Match", e);
            }
            req.call()
        });
        match r {
            Ok((304, _)) => st.config_304 += 1,
            Ok((200, etag)) => {
                st.config_200 += 1;
                // A new ETag; or, for an agent that had none yet (its earlier
                // polls failed), a first answer to a poll sent after the rotation.
                let rotated_before = self
                    .rotation
                    .and_then(|r| r.at.get())
                    .is_some_and(|at| sent >= *at);
                let changed = etag != a.etag && (a.etag.is_some() || rotated_before);
                if changed {
                    match self.rotation.and_then(|r| r.at.get().map(|at| (r, at))) {
                        Some((rot, at)) if a.saw_change.is_none() => {
                            a.saw_change = Some(at.elapsed());
                            if rot.seen.fetch_add(1, Ordering::Relaxed) + 1 == self.n {
                                rot.stop.store(true, Ordering::Relaxed);
                            }
                        }
                        Some(_) => {}
                        None => st.unexpected_changes += 1,
                    }
                }
                a.etag = etag;
                if !a.key_fetched {
                    let url = format!("{}/api/v1/agent/keys/{}/versions/1", self.base, self.key);
                    match Self::timed(st, || a.http.get(&url).call()) {
                        Ok((200, _)) => {
                            st.key_200 += 1;
                            a.key_fetched = true;
                        }
                        Ok((s, _)) => st.error(format!("key: HTTP {s}")),
                        Err(e) => st.error(format!("key: {}", short(&e))),
                    }
                }
            }
            Ok((s, _)) => st.error(format!("config: HTTP {s}")),
            Err(e) => st.error(format!("config: {}", short(&e))),
        }
    }
}

/// An error message without addresses or ports, so errors aggregate.
fn short(e: &str) -> String {
    let cleaned: String = e
        .split_whitespace()
        .filter(|w| !w.contains("127.0.0.1") && !w.contains("https://"))
        .collect::<Vec<_>>()
        .join(" ");
    cleaned.chars().take(120).collect()
}
