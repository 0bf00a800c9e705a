//! The REST API as plain synchronous logic: a [`Request`] in, a [`Response`]
//! out. The HTTPS layer ([`crate::server`]) only moves bytes and tells which
//! client certificate (if any) the peer presented.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use guardfs_policy::CompiledPolicy;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::ca::Ca;
use crate::error::ApiError;
use crate::seal::MasterKey;
use crate::store::{
    Client, ClientRule, DEFAULT_PROFILE, GuardPoint, Key, Policy, PolicySet, Profile, RegToken,
    Store, StoreError, TeRule,
};
use crate::unlock::{Challenge, ESCROW_LEN, RespondError, encode_text};
use crate::util::{
    new_id, now, random_hex, rfc3339, sha256_hex, valid_guard_path, valid_name, valid_ref,
};

/// Seconds an admin bearer token lives.
pub const ADMIN_TOKEN_TTL: i64 = 300;
/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

/// One HTTP request, as the application sees it.
#[derive(Debug, Default)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path without query.
    pub path: String,
    /// `Authorization` header.
    pub authorization: Option<String>,
    /// `If-None-Match` header.
    pub if_none_match: Option<String>,
    /// Body bytes (already limited to [`MAX_BODY`]).
    pub body: Vec<u8>,
    /// SHA-256 (hex) of the verified client certificate, if one was presented.
    pub peer_fingerprint: Option<String>,
}

/// One HTTP response.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// JSON body, if any.
    pub body: Option<Vec<u8>>,
    /// `ETag` header value (already quoted).
    pub etag: Option<String>,
}

impl Response {
    fn json(status: u16, v: &Value) -> Response {
        Response {
            status,
            body: Some(serde_json::to_vec(v).unwrap_or_default()),
            etag: None,
        }
    }
    fn empty(status: u16) -> Response {
        Response {
            status,
            body: None,
            etag: None,
        }
    }
    /// The response for an error.
    pub fn error(e: &ApiError) -> Response {
        Response::json(e.status, &e.to_json())
    }
}

type ApiResult = Result<Response, ApiError>;

/// The application: store, master key and CA.
pub struct App {
    store: Arc<dyn Store>,
    master: MasterKey,
    ca: Ca,
}

fn internal(what: &str) -> impl Fn(String) -> ApiError + '_ {
    move |e| {
        log::error!("{what}: {e}");
        ApiError::internal(format!("{what} failed"))
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("request body required"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// `POST /clients/{id}/rules`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientRuleReq {
    rule: String,
    key: Option<String>,
    operation: Option<String>,
    shallow: Option<bool>,
}

/// A rule's parameters from a request body, checked: its name (`None`:
/// to be generated) and the parameters as stored.
fn rule_params(body: &[u8]) -> Result<(String, Value), ApiError> {
    let v: Value = parse(body)?;
    let Value::Object(o) = &v else {
        return Err(ApiError::bad_request("a rule is a JSON object"));
    };
    const FIELDS: &[&str] = &[
        "name",
        "path",
        "include_extensions",
        "is_directory",
        "is_recursive",
        "ignore_directory",
        "encrypt_data",
    ];
    if let Some(k) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("unknown field {k:?}")));
    }
    let path = o
            .get("path")
            .and_then(Value::as_str)
            .filter(|p| valid_guard_path(p))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "path is required: absolute, normalised (no '.', '..', '//', trailing '/') and not '/'",
                )
            })?;
    // `a;b` or ["a", "b"].
    let names = |k: &str| -> Result<Vec<String>, ApiError> {
        let items: Vec<String> = match o.get(k) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s
                .split(';')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| ApiError::bad_request(format!("{k}: a list of names")))?,
            Some(_) => return Err(ApiError::bad_request(format!("{k}: `a;b` or a list"))),
        };
        if items
            .iter()
            .any(|x| x.len() > 255 || x.contains(['/', '\0']) || x == "." || x == "..")
        {
            return Err(ApiError::bad_request(format!("{k}: names without '/'")));
        }
        Ok(items)
    };
    let flag = |k: &str| -> Result<bool, ApiError> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(true),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ApiError::bad_request(format!("{k}: true or false"))),
        }
    };
    let name = match o.get("name").and_then(Value::as_str) {
        Some(n) if valid_ref(n) && n.len() <= 64 => n.to_owned(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "name: letters, digits, '.', '_', '-'",
            ));
        }
        None => {
            let id = new_id().map_err(internal("id generation"))?;
            let tail: String = id.chars().filter(char::is_ascii_alphanumeric).collect();
            format!("Rule-{}", &tail[..27.min(tail.len())])
        }
    };
    let extensions = names("include_extensions")?;
    if extensions
        .iter()
        .any(|e| e.contains(['*', '?']) || e.trim_start_matches('.').is_empty())
    {
        return Err(ApiError::bad_request(
            "include_extensions: plain extensions such as txt (no wildcards)",
        ));
    }
    let params = json!({
        "path": path,
        "include_extensions": extensions
            .iter()
            .map(|e| e.trim_start_matches('.').to_owned())
            .collect::<Vec<_>>(),
        "is_directory": flag("is_directory")?,
        "is_recursive": flag("is_recursive")?,
        "ignore_directory": names("ignore_directory")?,
        "encrypt_data": flag("encrypt_data")?,
    });
    Ok((name, params))
}

fn rule_json(r: &TeRule) -> Value {
    let mut v: Value = serde_json::from_str(&r.json).unwrap_or_else(|_| json!({}));
    v["id"] = json!(r.id);
    v["name"] = json!(r.name);
    v["created"] = json!(r.created);
    v
}

/// A client's rule as the client gets it in its configuration: the rule's
/// parameters, the key, the operation and its generation.
fn client_rule_json(cr: &ClientRule) -> Value {
    let mut v: Value = serde_json::from_str(&cr.rule_json).unwrap_or_else(|_| json!({}));
    v["rule_id"] = json!(cr.rule_id);
    v["name"] = json!(cr.rule_name);
    v["key"] = json!(cr.key);
    v["operation"] = json!(cr.operation);
    v["shallow"] = json!(cr.shallow);
    v["generation"] = json!(cr.generation);
    v
}

fn list(items: Vec<Value>) -> Value {
    json!({"skip": 0, "limit": items.len(), "total": items.len(), "resources": items})
}

fn check_ref(s: &str) -> Result<(), ApiError> {
    if valid_ref(s) {
        Ok(())
    } else {
        Err(ApiError::bad_request("invalid identifier in path"))
    }
}

fn check_text(field: &str, s: &str, max: usize) -> Result<(), ApiError> {
    if s.len() > max || s.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{field} must be at most {max} bytes of printable text"
        )));
    }
    Ok(())
}

// ----- request bodies

#[derive(Deserialize)]
struct LoginReq {
    grant_type: String,
    username: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Lifetime {
    Secs(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegTokenReq {
    lifetime: Option<Lifetime>,
    max_clients: Option<i64>,
    cert_duration: Option<i64>,
    name_prefix: Option<String>,
}

#[derive(Deserialize)]
struct RegisterReq {
    token: String,
    csr: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    profile: String,
    #[serde(default)]
    host_group: String,
    #[serde(default)]
    hw_signature: String,
}

#[derive(Deserialize)]
struct RenewReq {
    csr: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EscrowReq {
    escrow_key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChallengeReq {
    challenge: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientPatch {
    description: Option<String>,
    registration_allowed: Option<bool>,
    communication_enabled: Option<bool>,
    client_locked: Option<bool>,
    system_locked: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GpReq {
    guard_paths: Vec<String>,
    guard_point_params: GpParams,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GpParams {
    guard_point_type: Option<String>,
    policy_id: String,
    guard_enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyReq {
    name: String,
    algorithm: Option<String>,
    size: Option<i64>,
    meta: Option<KeyMeta>,
}

#[derive(Deserialize)]
struct KeyMeta {
    cte: Option<CteMeta>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CteMeta {
    persistent_on_client: Option<bool>,
    encryption_mode: Option<String>,
    cte_versioned: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileReq {
    name: String,
    description: Option<String>,
    concise_logging: Option<bool>,
    learn_mode_allowed: Option<bool>,
    poll_interval: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfilePatch {
    description: Option<String>,
    concise_logging: Option<bool>,
    learn_mode_allowed: Option<bool>,
    poll_interval: Option<i64>,
}

/// Fuzzing entry point (not an API): decode `body` as every request body
/// the API accepts, and run the field checks the handlers apply to what
/// decodes, as the handlers do before touching the store. Returns how many
/// body types accepted it.
#[doc(hidden)]
pub fn fuzz_request_body(body: &[u8]) -> usize {
    fn ok<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
        parse::<T>(body).ok()
    }
    let mut n = 0;
    if ok::<LoginReq>(body).is_some() {
        n += 1;
    }
    if let Some(r) = ok::<RegTokenReq>(body) {
        if let Some(l) = &r.lifetime
            && let Some(secs) = parse_lifetime(l)
        {
            assert!((1..=10 * 366 * 86400).contains(&secs));
        }
        let _ = (r.max_clients, r.cert_duration);
        if let Some(p) = &r.name_prefix {
            let _ = check_text("name_prefix", p, 64);
        }
        n += 1;
    }
    if let Some(r) = ok::<RegisterReq>(body) {
        for (f, v) in [
            ("token", &r.token),
            ("csr", &r.csr),
            ("name", &r.name),
            ("description", &r.description),
            ("profile", &r.profile),
            ("host_group", &r.host_group),
            ("hw_signature", &r.hw_signature),
        ] {
            let _ = check_text(f, v, 1024);
        }
        n += 1;
    }
    if let Ok((name, params)) = rule_params(body) {
        assert!(valid_ref(&name) && name.len() <= 64, "rule name {name:?}");
        assert!(
            params["path"].as_str().is_some_and(valid_guard_path),
            "rule path"
        );
        n += 1;
    }
    if let Some(r) = ok::<ClientRuleReq>(body) {
        let _ = (check_ref(&r.rule), r.key, r.operation, r.shallow);
        n += 1;
    }
    if let Some(r) = ok::<RenewReq>(body) {
        let _ = check_text("csr", &r.csr, 16384);
        n += 1;
    }
    if let Some(r) = ok::<EscrowReq>(body) {
        let _ = check_text("escrow_key", &r.escrow_key, 1024);
        n += 1;
    }
    if let Some(r) = ok::<ChallengeReq>(body) {
        let _ = check_ref(&r.challenge);
        n += 1;
    }
    if let Some(r) = ok::<ClientPatch>(body) {
        if let Some(d) = &r.description {
            let _ = check_text("description", d, 1024);
        }
        n += 1;
    }
    if let Some(r) = ok::<GpReq>(body) {
        for p in &r.guard_paths {
            let _ = valid_guard_path(p);
        }
        let _ = check_ref(&r.guard_point_params.policy_id);
        n += 1;
    }
    if let Some(r) = ok::<KeyReq>(body) {
        let _ = check_ref(&r.name);
        if let Some(m) = r.meta.and_then(|m| m.cte).and_then(|c| c.encryption_mode)
            && let Some(mode) = parse_mode(&m)
        {
            assert_eq!(parse_mode(mode), Some(mode));
            let _ = agent_mode(mode);
        }
        n += 1;
    }
    if let Some(r) = ok::<ProfileReq>(body) {
        let _ = r.poll_interval.map(check_poll_interval);
        n += 1;
    }
    if let Some(r) = ok::<ProfilePatch>(body) {
        let _ = r.poll_interval.map(check_poll_interval);
        n += 1;
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = etag_matches(text, "\"etag\"");
        let _ = parse_lifetime(&Lifetime::Text(text.to_owned()));
        let _ = set_kind(text);
    }
    n
}

/// One kind of stored policy set: kind, the policy document's list field,
/// the entries field, the rule field referencing it.
#[derive(Clone, Copy)]
struct SetKind {
    kind: &'static str,
    list: &'static str,
    entries: &'static str,
    rule_ref: &'static str,
}

const SET_KINDS: [SetKind; 3] = [
    SetKind {
        kind: "user",
        list: "user_sets",
        entries: "users",
        rule_ref: "user_set_id",
    },
    SetKind {
        kind: "process",
        list: "process_sets",
        entries: "processes",
        rule_ref: "process_set_id",
    },
    SetKind {
        kind: "resource",
        list: "resource_sets",
        entries: "resources",
        rule_ref: "resource_set_id",
    },
];

fn set_kind(path_seg: &str) -> Option<SetKind> {
    let kind = match path_seg {
        "usersets" => "user",
        "processsets" => "process",
        "resourcesets" => "resource",
        _ => return None,
    };
    SET_KINDS.into_iter().find(|k| k.kind == kind)
}

fn check_poll_interval(v: i64) -> Result<i64, ApiError> {
    if (1..=3600).contains(&v) {
        Ok(v)
    } else {
        Err(ApiError::bad_request(
            "poll_interval must be 1 to 3600 seconds",
        ))
    }
}

// ----- renderings

fn profile_json(p: &Profile) -> Value {
    json!({
        "id": p.id,
        "name": p.name,
        "description": p.description,
        "concise_logging": p.concise_logging,
        "learn_mode_allowed": p.learn_mode_allowed,
        "poll_interval": p.poll_interval,
        "createdAt": rfc3339(p.created),
        "updatedAt": rfc3339(p.updated),
    })
}

fn set_json(k: SetKind, s: &PolicySet) -> Value {
    let entries: Value = serde_json::from_str(&s.entries).unwrap_or_else(|_| json!([]));
    let mut v = json!({
        "id": s.id,
        "name": s.name,
        "description": s.description,
        "createdAt": rfc3339(s.created),
        "updatedAt": rfc3339(s.updated),
    });
    v[k.entries] = entries;
    v
}

/// The set as the policy document carries it inline: `id` and `name` are
/// the stored set's name.
fn inline_set(k: SetKind, s: &PolicySet) -> Value {
    let entries: Value = serde_json::from_str(&s.entries).unwrap_or_else(|_| json!([]));
    let mut v = json!({"id": s.name, "name": s.name, "description": s.description});
    v[k.entries] = entries;
    v
}

fn regtoken_json(t: &RegToken) -> Value {
    json!({
        "id": t.id,
        "token": t.token,
        "lifetime": t.lifetime,
        "max_clients": t.max_clients,
        "clients_registered": t.used,
        "cert_duration": t.cert_duration,
        "name_prefix": t.name_prefix,
        "createdAt": rfc3339(t.created),
        "expiresAt": rfc3339(t.expires()),
    })
}

fn client_json(c: &Client) -> Value {
    let status: Value = c
        .reported_status
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    json!({
        "id": c.id,
        "name": c.name,
        "description": c.description,
        "profile_id": c.profile_id,
        "host_group": c.host_group,
        "registration_allowed": c.registration_allowed,
        "communication_enabled": c.communication_enabled,
        "client_locked": c.client_locked,
        "system_locked": c.system_locked,
        "hw_signature": c.hw_signature,
        "cert_serial": c.cert_serial,
        "cert_fingerprint": c.cert_fingerprint,
        "cert_expiresAt": rfc3339(c.cert_not_after),
        "reported_health": c.reported_health,
        "reported_version": c.reported_version,
        "reported_status": status,
        "createdAt": rfc3339(c.created),
        "updatedAt": rfc3339(c.updated),
    })
}

fn gp_json(g: &GuardPoint) -> Value {
    json!({
        "id": g.id,
        "client_id": g.client_id,
        "guard_path": g.guard_path,
        "guard_point_type": g.guard_point_type,
        "policy_id": g.policy_id,
        "policy_name": g.policy_name,
        "guard_enabled": g.guard_enabled,
        "createdAt": rfc3339(g.created),
    })
}

fn policy_json(p: &Policy) -> Value {
    let doc: Value = serde_json::from_str(&p.json).unwrap_or(Value::Null);
    let keys: Vec<String> = CompiledPolicy::from_json(&p.json)
        .map(|c| c.key_names().map(str::to_owned).collect())
        .unwrap_or_default();
    json!({
        "id": p.id,
        "name": p.name,
        "keys": keys,
        "policy": doc,
        "createdAt": rfc3339(p.created),
        "updatedAt": rfc3339(p.updated),
    })
}

fn key_json(k: &Key) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "algorithm": k.algorithm,
        "size": k.size,
        "state": k.state,
        "version": k.versions.last().copied().unwrap_or(0),
        "versions": k.versions,
        "meta": {"cte": {
            "persistent_on_client": k.persistent_on_client,
            "encryption_mode": k.encryption_mode,
            "cte_versioned": k.cte_versioned,
        }},
        "createdAt": rfc3339(k.created),
        "updatedAt": rfc3339(k.updated),
    })
}

fn agent_mode(m: &str) -> &'static str {
    match m {
        "CBC_CS1" => "cbc-cs1",
        "GCM" => "gcm",
        _ => "xts",
    }
}

fn parse_mode(m: &str) -> Option<&'static str> {
    match m.to_ascii_uppercase().replace('-', "_").as_str() {
        "XTS" => Some("XTS"),
        "CBC_CS1" => Some("CBC_CS1"),
        "GCM" => Some("GCM"),
        _ => None,
    }
}

fn parse_lifetime(l: &Lifetime) -> Option<i64> {
    let secs = match l {
        Lifetime::Secs(s) => *s,
        Lifetime::Text(t) => {
            let t = t.trim();
            let (num, mult) = match t.char_indices().last() {
                Some((i, 's')) => (&t[..i], 1),
                Some((i, 'm')) => (&t[..i], 60),
                Some((i, 'h')) => (&t[..i], 3600),
                Some((i, 'd')) => (&t[..i], 86400),
                _ => (t, 1),
            };
            if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) || num.len() > 12 {
                return None;
            }
            num.parse::<i64>().ok()?.checked_mul(mult)?
        }
    };
    (1..=10 * 366 * 86400).contains(&secs).then_some(secs)
}

/// A password hash no password matches, for unknown user names.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let pw = random_hex(32).unwrap_or_else(|_| "x".repeat(64));
        crate::seal::hash_password(&pw).unwrap_or_default()
    })
}

/// Whether `If-None-Match` matches `etag` (quoted), allowing a list and `*`.
fn etag_matches(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|t| {
        let t = t.strip_prefix("W/").unwrap_or(t);
        t == "*" || t == etag || format!("\"{t}\"") == etag
    })
}

impl App {
    /// Build the application.
    pub fn new(store: Arc<dyn Store>, master: MasterKey, ca: Ca) -> App {
        App { store, master, ca }
    }

    /// Answer one request. Never panics on bad input.
    pub fn handle(&self, req: &Request) -> Response {
        match self.route(req) {
            Ok(r) => r,
            Err(e) => {
                if e.status >= 500 {
                    log::error!("{} {} -> {}", req.method, req.path, e.status);
                } else {
                    log::info!("{} {} -> {} {}", req.method, req.path, e.status, e.message);
                }
                Response::error(&e)
            }
        }
    }

    fn route(&self, req: &Request) -> ApiResult {
        let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
        let m = req.method.as_str();
        if !segs.iter().all(|s| valid_ref(s)) {
            return Err(ApiError::bad_request(
                "invalid path: segments are letters, digits, '.', '_' or '-' (no '..')",
            ));
        }
        let Some(rest) = segs.strip_prefix(&["api", "v1"]) else {
            return Err(ApiError::not_found("no such endpoint"));
        };
        let method_na = || {
            Err(ApiError::method_not_allowed(format!(
                "{m} not allowed here"
            )))
        };
        match rest {
            ["auth", "tokens"] => match m {
                "POST" => self.login(req),
                _ => method_na(),
            },
            ["client-management", "regtokens"] => {
                self.admin(req)?;
                match m {
                    "GET" => self.regtoken_list(),
                    "POST" => self.regtoken_create(req),
                    _ => method_na(),
                }
            }
            ["client-management", "regtokens", id] => {
                self.admin(req)?;
                check_ref(id)?;
                match m {
                    "GET" => self.regtoken_get(id),
                    "DELETE" => {
                        self.store.regtoken_delete(id)?;
                        Ok(Response::empty(204))
                    }
                    _ => method_na(),
                }
            }
            ["transparent-encryption", "register"] => match m {
                "POST" => self.register(req),
                _ => method_na(),
            },
            ["transparent-encryption", "rules"] => {
                self.admin(req)?;
                match m {
                    "GET" => {
                        let items = self.store.rule_list()?.iter().map(rule_json).collect();
                        Ok(Response::json(200, &list(items)))
                    }
                    "POST" => self.rule_create(req),
                    _ => method_na(),
                }
            }
            ["transparent-encryption", "rules", id] => {
                self.admin(req)?;
                check_ref(id)?;
                let r = self
                    .store
                    .rule_get(id)?
                    .ok_or_else(|| ApiError::not_found("no such rule"))?;
                match m {
                    "GET" => Ok(Response::json(200, &rule_json(&r))),
                    "DELETE" => {
                        self.store.rule_delete(&r.id)?;
                        Ok(Response::empty(204))
                    }
                    _ => method_na(),
                }
            }
            ["transparent-encryption", "clients", id, "rules"] => {
                self.admin(req)?;
                check_ref(id)?;
                let c = self.client(id)?;
                match m {
                    "GET" => self.client_rules(&c),
                    "POST" => self.client_rule_apply(&c, req),
                    _ => method_na(),
                }
            }
            ["transparent-encryption", "clients", id, "rules", rule] => {
                self.admin(req)?;
                check_ref(id)?;
                check_ref(rule)?;
                let c = self.client(id)?;
                let r = self
                    .store
                    .rule_get(rule)?
                    .ok_or_else(|| ApiError::not_found("no such rule"))?;
                match m {
                    "DELETE" => {
                        self.store.client_rule_delete(&c.id, &r.id)?;
                        Ok(Response::empty(204))
                    }
                    _ => method_na(),
                }
            }
            ["transparent-encryption", "clients"] => {
                self.admin(req)?;
                match m {
                    "GET" => {
                        let items = self.store.client_list()?.iter().map(client_json).collect();
                        Ok(Response::json(200, &list(items)))
                    }
                    _ => method_na(),
                }
            }
            ["transparent-encryption", "clients", id] => {
                self.admin(req)?;
                check_ref(id)?;
                let c = self.client(id)?;
                match m {
                    "GET" => {
                        let mut v = client_json(&c);
                        v["audit_lines"] = json!(self.store.audit_count(&c.id)?);
                        Ok(Response::json(200, &v))
                    }
                    "PATCH" => self.client_patch(c, req),
                    "DELETE" => {
                        self.store.client_delete(&c.id)?;
                        log::info!("client {} deleted", c.name);
                        Ok(Response::empty(204))
                    }
                    _ => method_na(),
                }
            }
            ["transparent-encryption", "clients", id, "guardpoints"] => {
                self.admin(req)?;
                check_ref(id)?;
                let c = self.client(id)?;
                match m {
                    "GET" => {
                        let items = self
                            .store
                            .guardpoints_of(&c.id)?
                            .iter()
                            .map(gp_json)
                            .collect();
                        Ok(Response::json(200, &list(items)))
                    }
                    "POST" => self.guardpoints_add(&c, req),
                    _ => method_na(),
                }
            }
            [
                "transparent-encryption",
                "clients",
                id,
                "challenge-response",
            ] => {
                self.admin(req)?;
                check_ref(id)?;
                let c = self.client(id)?;
                match m {
                    "POST" => self.challenge_response(&c, req),
                    _ => method_na(),
                }
            }
            ["transparent-encryption", "clients", id, "guardpoints", gp] => {
                self.admin(req)?;
                check_ref(id)?;
                check_ref(gp)?;
                let c = self.client(id)?;
                match m {
                    "GET" => self
                        .store
                        .guardpoints_of(&c.id)?
                        .iter()
                        .find(|g| g.id == *gp)
                        .map(|g| Response::json(200, &gp_json(g)))
                        .ok_or_else(|| ApiError::not_found("GuardPoint not found")),
                    "DELETE" => {
                        self.store.guardpoint_delete(&c.id, gp)?;
                        Ok(Response::empty(204))
                    }
                    _ => method_na(),
                }
            }
            ["transparent-encryption", "policies"] => {
                self.admin(req)?;
                match m {
                    "GET" => {
                        let items = self.store.policy_list()?.iter().map(policy_json).collect();
                        Ok(Response::json(200, &list(items)))
                    }
                    "POST" => self.policy_create(req),
                    _ => method_na(),
                }
            }
            ["transparent-encryption", "policies", id] => {
                self.admin(req)?;
                check_ref(id)?;
                let p = self
                    .store
                    .policy_get(id)?
                    .ok_or_else(|| ApiError::not_found("policy not found"))?;
                match m {
                    "GET" => Ok(Response::json(200, &policy_json(&p))),
                    "PUT" => self.policy_update(&p, req),
                    "DELETE" => {
                        self.store.policy_delete(&p.id)?;
                        Ok(Response::empty(204))
                    }
                    _ => method_na(),
                }
            }
            ["transparent-encryption", "profiles"] => {
                self.admin(req)?;
                match m {
                    "GET" => {
                        let items = self
                            .store
                            .profile_list()?
                            .iter()
                            .map(profile_json)
                            .collect();
                        Ok(Response::json(200, &list(items)))
                    }
                    "POST" => self.profile_create(req),
                    _ => method_na(),
                }
            }
            ["transparent-encryption", "profiles", id] => {
                self.admin(req)?;
                check_ref(id)?;
                let p = self
                    .store
                    .profile_get(id)?
                    .ok_or_else(|| ApiError::not_found("profile not found"))?;
                match m {
                    "GET" => Ok(Response::json(200, &profile_json(&p))),
                    "PATCH" => self.profile_patch(p, req),
                    "DELETE" => {
                        self.store.profile_delete(&p.id)?;
                        log::info!("profile {} deleted", p.name);
                        Ok(Response::empty(204))
                    }
                    _ => method_na(),
                }
            }
            ["transparent-encryption", kind] if set_kind(kind).is_some() => {
                self.admin(req)?;
                let k = set_kind(kind).ok_or_else(|| ApiError::not_found("no such endpoint"))?;
                match m {
                    "GET" => {
                        let items = self
                            .store
                            .set_list(k.kind)?
                            .iter()
                            .map(|s| set_json(k, s))
                            .collect();
                        Ok(Response::json(200, &list(items)))
                    }
                    "POST" => self.set_create(k, req),
                    _ => method_na(),
                }
            }
            ["transparent-encryption", kind, id] if set_kind(kind).is_some() => {
                self.admin(req)?;
                check_ref(id)?;
                let k = set_kind(kind).ok_or_else(|| ApiError::not_found("no such endpoint"))?;
                let set = self
                    .store
                    .set_get(k.kind, id)?
                    .ok_or_else(|| ApiError::not_found(format!("{} set not found", k.kind)))?;
                match m {
                    "GET" => Ok(Response::json(200, &set_json(k, &set))),
                    "PUT" => self.set_update(k, set, req),
                    "DELETE" => {
                        self.store.set_delete(&set.id)?;
                        log::info!("{} set {} deleted", k.kind, set.name);
                        Ok(Response::empty(204))
                    }
                    _ => method_na(),
                }
            }
            ["vault", "keys2"] => {
                self.admin(req)?;
                match m {
                    "GET" => {
                        let items = self.store.key_list()?.iter().map(key_json).collect();
                        Ok(Response::json(200, &list(items)))
                    }
                    "POST" => self.key_create(req),
                    _ => method_na(),
                }
            }
            ["vault", "keys2", id] => {
                self.admin(req)?;
                check_ref(id)?;
                let k = self.key(id)?;
                match m {
                    "GET" => Ok(Response::json(200, &key_json(&k))),
                    "DELETE" => {
                        self.store.key_destroy(&k.id, now())?;
                        log::info!("key {} destroyed", k.name);
                        Ok(Response::empty(204))
                    }
                    _ => method_na(),
                }
            }
            ["vault", "keys2", id, "versions"] => {
                self.admin(req)?;
                check_ref(id)?;
                let k = self.key(id)?;
                match m {
                    "POST" => {
                        let kid = k.id.clone();
                        let v = self.store.key_add_version(&k.id, now(), &mut |v| {
                            self.master.seal_new(&kid, v).map_err(StoreError::Backend)
                        })?;
                        log::info!("key {} rotated to version {v}", k.name);
                        let k = self.key(&k.id)?;
                        Ok(Response::json(201, &key_json(&k)))
                    }
                    _ => method_na(),
                }
            }
            ["vault", "keys2", id, "revoke"] => {
                self.admin(req)?;
                check_ref(id)?;
                let k = self.key(id)?;
                match m {
                    "POST" => {
                        self.store.key_revoke(&k.id, now())?;
                        log::info!("key {} revoked", k.name);
                        let k = self.key(&k.id)?;
                        Ok(Response::json(200, &key_json(&k)))
                    }
                    _ => method_na(),
                }
            }
            ["agent", "config"] => {
                let c = self.agent(req)?;
                match m {
                    "GET" => self.agent_config(&c, req),
                    _ => method_na(),
                }
            }
            ["agent", "keys", name, "versions", v] => {
                let c = self.agent(req)?;
                check_ref(name)?;
                match m {
                    "GET" => self.agent_key(&c, name, v),
                    _ => method_na(),
                }
            }
            ["agent", "status"] => {
                let c = self.agent(req)?;
                match m {
                    "POST" => self.agent_status(&c, req),
                    _ => method_na(),
                }
            }
            ["agent", "audit"] => {
                let c = self.agent(req)?;
                match m {
                    "POST" => self.agent_audit(&c, req),
                    _ => method_na(),
                }
            }
            ["agent", "escrow"] => {
                let c = self.agent(req)?;
                match m {
                    "POST" => self.agent_escrow(&c, req),
                    _ => method_na(),
                }
            }
            ["agent", "delete"] => {
                let c = self.agent(req)?;
                match m {
                    "POST" => {
                        self.store.client_delete(&c.id)?;
                        log::info!("client {} deleted itself", c.name);
                        Ok(Response::json(200, &json!({"deleted": true})))
                    }
                    _ => method_na(),
                }
            }
            ["agent", "renew"] => {
                let c = self.agent(req)?;
                match m {
                    "POST" => self.agent_renew(&c, req),
                    _ => method_na(),
                }
            }
            _ => Err(ApiError::not_found("no such endpoint")),
        }
    }

    // ----- authentication

    fn admin(&self, req: &Request) -> Result<String, ApiError> {
        let h = req
            .authorization
            .as_deref()
            .ok_or_else(|| ApiError::unauthorized("bearer token required"))?;
        let tok = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or_else(|| ApiError::unauthorized("malformed Authorization header"))?;
        self.store
            .admin_token_check(&sha256_hex(tok.as_bytes()), now())?
            .ok_or_else(|| ApiError::unauthorized("invalid or expired bearer token"))
    }

    fn agent(&self, req: &Request) -> Result<Client, ApiError> {
        let fp = req
            .peer_fingerprint
            .as_deref()
            .ok_or_else(|| ApiError::unauthorized("client certificate required"))?;
        let c = self.store.client_by_fingerprint(fp)?.ok_or_else(|| {
            ApiError::forbidden("certificate does not belong to a registered client")
        })?;
        if !c.communication_enabled {
            return Err(ApiError::forbidden(
                "communication is disabled for this client",
            ));
        }
        Ok(c)
    }

    fn login(&self, req: &Request) -> ApiResult {
        let r: LoginReq = serde_json::from_slice(&req.body)
            .map_err(|_| ApiError::bad_request("expected {grant_type, username, password}"))?;
        if r.grant_type != "password" {
            return Err(ApiError::bad_request("unsupported grant_type"));
        }
        let bad = || ApiError::unauthorized("invalid username or password");
        if r.username.len() > 128 || r.password.len() > 1024 {
            return Err(bad());
        }
        let admin = self.store.admin_get(&r.username)?;
        // Unknown users cost the same PBKDF2 work, so timing does not tell
        // which names exist; every failure costs the caller a second more.
        let hash = match &admin {
            Some(a) => a.password_hash.as_str(),
            None => dummy_hash(),
        };
        let ok = crate::seal::verify_password(&r.password, hash);
        let Some(admin) = admin.filter(|_| ok) else {
            log::warn!("failed login for {:?}", r.username);
            std::thread::sleep(std::time::Duration::from_secs(1));
            return Err(bad());
        };
        let token = random_hex(32).map_err(internal("token generation"))?;
        let t = now();
        self.store.admin_token_insert(
            &sha256_hex(token.as_bytes()),
            &admin.name,
            t + ADMIN_TOKEN_TTL,
            t,
        )?;
        Ok(Response::json(
            200,
            &json!({"jwt": token, "duration": ADMIN_TOKEN_TTL, "token_type": "Bearer"}),
        ))
    }

    // ----- registration tokens

    fn regtoken_list(&self) -> ApiResult {
        let items = self
            .store
            .regtoken_list()?
            .iter()
            .map(regtoken_json)
            .collect();
        Ok(Response::json(200, &list(items)))
    }

    fn regtoken_get(&self, id: &str) -> ApiResult {
        self.store
            .regtoken_list()?
            .iter()
            .find(|t| t.id == id)
            .map(|t| Response::json(200, &regtoken_json(t)))
            .ok_or_else(|| ApiError::not_found("registration token not found"))
    }

    fn regtoken_create(&self, req: &Request) -> ApiResult {
        let r: RegTokenReq = parse(&req.body)?;
        let lifetime = match &r.lifetime {
            None => 3600,
            Some(l) => parse_lifetime(l).ok_or_else(|| {
                ApiError::bad_request("lifetime must be seconds (or Ns/Nm/Nh/Nd), 1s to 10 years")
            })?,
        };
        let max_clients = r.max_clients.unwrap_or(1);
        if !(1..=1_000_000).contains(&max_clients) {
            return Err(ApiError::bad_request("max_clients must be 1 to 1000000"));
        }
        let cert_duration = r.cert_duration.unwrap_or(730);
        if !(1..=3650).contains(&cert_duration) {
            return Err(ApiError::bad_request(
                "cert_duration must be 1 to 3650 days",
            ));
        }
        let name_prefix = r.name_prefix.unwrap_or_default();
        if !name_prefix.is_empty() && !valid_name(&name_prefix, 64) {
            return Err(ApiError::bad_request(
                "name_prefix must be letters, digits, '.', '_' or '-'",
            ));
        }
        let t = RegToken {
            id: new_id().map_err(internal("id generation"))?,
            token: random_hex(32).map_err(internal("token generation"))?,
            lifetime,
            max_clients,
            used: 0,
            cert_duration,
            name_prefix,
            created: now(),
        };
        self.store.regtoken_insert(&t)?;
        Ok(Response::json(201, &regtoken_json(&t)))
    }

    // ----- clients

    fn client(&self, id: &str) -> Result<Client, ApiError> {
        self.store
            .client_get(id)?
            .ok_or_else(|| ApiError::not_found("client not found"))
    }

    fn register(&self, req: &Request) -> ApiResult {
        let r: RegisterReq = parse(&req.body)?;
        if r.token.is_empty() || r.token.len() > 256 {
            return Err(ApiError::unauthorized("unknown registration token"));
        }
        let t = self
            .store
            .regtoken_by_value(&r.token)?
            .ok_or_else(|| ApiError::unauthorized("unknown registration token"))?;
        let now = now();
        if now >= t.expires() {
            return Err(ApiError::forbidden("registration token expired"));
        }
        if t.used >= t.max_clients {
            return Err(ApiError::forbidden("registration token exhausted"));
        }
        let name = if r.name.is_empty() && !t.name_prefix.is_empty() {
            format!(
                "{}{}",
                t.name_prefix,
                random_hex(4).map_err(internal("name"))?
            )
        } else {
            r.name
        };
        if !valid_name(&name, 253) {
            return Err(ApiError::bad_request(
                "name must be 1-253 letters, digits, '.', '_' or '-', starting alphanumeric",
            ));
        }
        if !name.starts_with(&t.name_prefix) {
            return Err(ApiError::forbidden(
                "client name does not carry the registration token's name_prefix",
            ));
        }
        check_text("description", &r.description, 1024)?;
        check_text("profile", &r.profile, 128)?;
        check_text("host_group", &r.host_group, 128)?;
        check_text("hw_signature", &r.hw_signature, 1024)?;
        let profile_name = if r.profile.is_empty() {
            DEFAULT_PROFILE
        } else {
            r.profile.as_str()
        };
        let profile = self.store.profile_get(profile_name)?.ok_or_else(|| {
            ApiError::unprocessable(format!(
                "client profile {profile_name:?} does not exist; create it first or leave profile empty for {DEFAULT_PROFILE}"
            ))
        })?;
        if self.store.client_get(&name)?.is_some() {
            return Err(ApiError::conflict(format!(
                "a client named {name:?} is already registered"
            )));
        }
        let id = new_id().map_err(internal("id generation"))?;
        let issued = self
            .ca
            .sign_client(&r.csr, &name, &id, t.cert_duration)
            .map_err(ApiError::bad_request)?;
        let c = Client {
            id,
            name,
            description: r.description,
            profile_id: profile.id,
            host_group: r.host_group,
            registration_allowed: true,
            communication_enabled: true,
            client_locked: false,
            system_locked: false,
            hw_signature: r.hw_signature,
            cert_serial: issued.serial,
            cert_fingerprint: issued.fingerprint,
            cert_not_after: issued.not_after,
            cert_duration: t.cert_duration,
            reported_health: None,
            reported_version: None,
            reported_status: None,
            created: now,
            updated: now,
        };
        self.store
            .register_client(&r.token, now, &c)
            .map_err(|e| match e {
                StoreError::Refused(m) => ApiError::forbidden(m),
                other => other.into(),
            })?;
        log::info!("client {} registered as {}", c.name, c.id);
        Ok(Response::json(
            201,
            &json!({
                "client_id": c.id,
                "name": c.name,
                "certificate": issued.pem,
                "ca": self.ca.cert_pem,
            }),
        ))
    }

    fn client_patch(&self, mut c: Client, req: &Request) -> ApiResult {
        let p: ClientPatch = parse(&req.body)?;
        if let Some(d) = p.description {
            check_text("description", &d, 1024)?;
            c.description = d;
        }
        if let Some(v) = p.registration_allowed {
            c.registration_allowed = v;
        }
        if let Some(v) = p.communication_enabled {
            c.communication_enabled = v;
        }
        if let Some(v) = p.client_locked {
            c.client_locked = v;
        }
        if let Some(v) = p.system_locked {
            c.system_locked = v;
        }
        c.updated = now();
        self.store.client_update(&c)?;
        Ok(Response::json(200, &client_json(&c)))
    }

    /// Offline unlock: the response to an agent's challenge, carrying the
    /// client's escrow key (see [`crate::unlock`]).
    fn challenge_response(&self, c: &Client, req: &Request) -> ApiResult {
        let r: ChallengeReq = parse(&req.body)?;
        if !req.body.trim_ascii_start().starts_with(b"{") {
            return Err(ApiError::bad_request(
                "expected {\"challenge\": \"<text>\"}",
            ));
        }
        let ch = Challenge::parse(&r.challenge).map_err(ApiError::unprocessable)?;
        ch.check_fresh(now()).map_err(ApiError::forbidden)?;
        let sealed = self.store.escrow_get(&c.id)?.ok_or_else(|| {
            ApiError::not_found(
                "client has no escrow key; the agent stores one when it is registered and reachable",
            )
        })?;
        let escrow = self
            .master
            .open_escrow(&c.id, &sealed)
            .map_err(internal("unsealing escrow key"))?;
        let resp = ch.respond(&escrow).map_err(|e| match e {
            RespondError::BadPublicKey => {
                ApiError::unprocessable("challenge carries an unusable X25519 public key")
            }
            RespondError::Internal(m) => internal("challenge response")(m.to_owned()),
        })?;
        log::info!(
            "offline unlock response given for client {} (challenge made at minute {})",
            c.name,
            ch.minutes()
        );
        Ok(Response::json(
            200,
            &json!({"response": encode_text(&resp)}),
        ))
    }

    fn guardpoints_add(&self, c: &Client, req: &Request) -> ApiResult {
        let r: GpReq = parse(&req.body)?;
        if r.guard_paths.is_empty() || r.guard_paths.len() > 100 {
            return Err(ApiError::bad_request(
                "guard_paths must list 1 to 100 paths",
            ));
        }
        let gp_type = match r.guard_point_params.guard_point_type.as_deref() {
            None | Some("directory_auto") | Some("auto") => "directory_auto",
            Some("directory_manual") | Some("manual") => "directory_manual",
            Some(_) => {
                return Err(ApiError::bad_request(
                    "guard_point_type must be directory_auto or directory_manual",
                ));
            }
        };
        let pid = &r.guard_point_params.policy_id;
        if !valid_ref(pid) {
            return Err(ApiError::bad_request("policy_id is not a valid id or name"));
        }
        let policy = self
            .store
            .policy_get(pid)?
            .ok_or_else(|| ApiError::unprocessable("policy_id names no policy"))?;
        let existing = self.store.guardpoints_of(&c.id)?;
        let mut seen: Vec<&str> = existing.iter().map(|g| g.guard_path.as_str()).collect();
        let nested = |a: &str, b: &str| {
            a == b
                || a.strip_prefix(b).is_some_and(|r| r.starts_with('/'))
                || b.strip_prefix(a).is_some_and(|r| r.starts_with('/'))
        };
        let t = now();
        let mut gps = Vec::new();
        for p in &r.guard_paths {
            if !valid_guard_path(p) {
                return Err(ApiError::bad_request(
                    "guard paths must be absolute, normalised (no '.', '..', '//', trailing '/') and not '/'",
                ));
            }
            if let Some(o) = seen.iter().find(|o| nested(p, o)) {
                return Err(ApiError::conflict(format!(
                    "GuardPoint {p:?} overlaps existing or requested GuardPoint {o:?}"
                )));
            }
            seen.push(p);
            gps.push(GuardPoint {
                id: new_id().map_err(internal("id generation"))?,
                client_id: c.id.clone(),
                guard_path: p.clone(),
                guard_point_type: gp_type.into(),
                policy_id: policy.id.clone(),
                policy_name: policy.name.clone(),
                guard_enabled: r.guard_point_params.guard_enabled.unwrap_or(true),
                created: t,
            });
        }
        self.store.guardpoints_insert(&gps)?;
        let items: Vec<Value> = gps.iter().map(gp_json).collect();
        Ok(Response::json(201, &json!({ "guardpoints": items })))
    }

    // ----- policies

    fn compile_policy(
        &self,
        body: &[u8],
    ) -> Result<(String, CompiledPolicy, Vec<String>), ApiError> {
        if body.is_empty() {
            return Err(ApiError::bad_request("request body required"));
        }
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("policy must be UTF-8 JSON"))?;
        let mut doc = serde_json::from_str::<Value>(text)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
        let (inlined, set_ids) = self.inline_sets(&mut doc)?;
        let text = if inlined {
            serde_json::to_string(&doc).map_err(|e| internal("policy")(e.to_string()))?
        } else {
            text.to_owned()
        };
        let compiled =
            CompiledPolicy::from_json(&text).map_err(|e| ApiError::unprocessable(e.to_string()))?;
        if !valid_name(compiled.name(), 64) {
            return Err(ApiError::bad_request(
                "policy name must be 1-64 letters, digits, '.', '_' or '-', starting alphanumeric",
            ));
        }
        for k in compiled.key_names() {
            match self.store.key_get(k)? {
                Some(key) if key.state != "destroyed" => {}
                _ => {
                    return Err(ApiError::unprocessable(format!(
                        "policy uses key {k:?}, which does not exist"
                    )));
                }
            }
        }
        Ok((text, compiled, set_ids))
    }

    /// Inline into `doc` the stored sets its rules reference by name but it
    /// does not define. Returns whether `doc` changed and the ids of the
    /// stored sets it now carries (inlined here, or inlined earlier and
    /// unchanged since, so a GET-then-PUT round trip keeps the reference).
    fn inline_sets(&self, doc: &mut Value) -> Result<(bool, Vec<String>), ApiError> {
        let mut changed = false;
        let mut ids: Vec<String> = Vec::new();
        let Value::Object(top) = doc else {
            return Ok((false, ids));
        };
        for k in SET_KINDS {
            // Labels (id and name) of the sets the document defines.
            let mut defined: BTreeSet<String> = BTreeSet::new();
            if let Some(Value::Array(sets)) = top.get(k.list) {
                for set in sets {
                    for f in ["id", "name"] {
                        if let Some(l) = set.get(f).and_then(Value::as_str) {
                            defined.insert(l.to_owned());
                        }
                    }
                    // A set inlined earlier: same name, same entries.
                    let id = set.get("id").and_then(Value::as_str);
                    let name = set.get("name").and_then(Value::as_str);
                    if let Some(label) = id.or(name)
                        && name.is_none_or(|n| n == label)
                        && valid_ref(label)
                        && let Some(stored) = self.store.set_get(k.kind, label)?
                        && stored.name == label
                        && serde_json::from_str::<Value>(&stored.entries).ok().as_ref()
                            == set.get(k.entries)
                        && !ids.contains(&stored.id)
                    {
                        ids.push(stored.id);
                    }
                }
            }
            let mut wanted: Vec<String> = Vec::new();
            let mut refs = |rules: Option<&Value>| {
                if let Some(Value::Array(rules)) = rules {
                    for r in rules {
                        if let Some(l) = r.get(k.rule_ref).and_then(Value::as_str)
                            && !defined.contains(l)
                            && !wanted.iter().any(|w| w == l)
                        {
                            wanted.push(l.to_owned());
                        }
                    }
                }
            };
            refs(top.get("security_rules"));
            if k.kind == "resource" {
                refs(top.get("key_rules"));
            }
            if wanted.is_empty() {
                continue;
            }
            let mut add = Vec::new();
            for label in &wanted {
                let stored = if valid_ref(label) {
                    self.store.set_get(k.kind, label)?
                } else {
                    None
                };
                let Some(stored) = stored else {
                    return Err(ApiError::unprocessable(format!(
                        "{} {label:?} names no {} set: neither defined in the policy's {} nor stored",
                        k.rule_ref, k.kind, k.list
                    )));
                };
                add.push(inline_set(k, &stored));
                if !ids.contains(&stored.id) {
                    ids.push(stored.id);
                }
            }
            match top
                .entry(k.list)
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                Value::Array(list) => list.extend(add),
                // Not a list: leave it for the compiler to report.
                _ => continue,
            }
            changed = true;
        }
        Ok((changed, ids))
    }

    fn policy_create(&self, req: &Request) -> ApiResult {
        let (text, compiled, set_ids) = self.compile_policy(&req.body)?;
        let t = now();
        let p = Policy {
            id: new_id().map_err(internal("id generation"))?,
            name: compiled.name().to_owned(),
            json: text,
            created: t,
            updated: t,
        };
        self.store.policy_insert(&p, &set_ids)?;
        log::info!("policy {} created", p.name);
        Ok(Response::json(201, &policy_json(&p)))
    }

    fn policy_update(&self, p: &Policy, req: &Request) -> ApiResult {
        let (text, compiled, set_ids) = self.compile_policy(&req.body)?;
        if compiled.name() != p.name {
            return Err(ApiError::unprocessable(
                "the policy document's name differs from the policy being replaced",
            ));
        }
        let t = now();
        self.store.policy_update(&p.id, &text, t, &set_ids)?;
        log::info!("policy {} updated", p.name);
        let p = Policy {
            json: text,
            updated: t,
            ..p.clone()
        };
        Ok(Response::json(200, &policy_json(&p)))
    }

    // ----- client profiles

    fn profile_create(&self, req: &Request) -> ApiResult {
        let r: ProfileReq = parse(&req.body)?;
        if !valid_name(&r.name, 64) {
            return Err(ApiError::bad_request(
                "profile name must be 1-64 letters, digits, '.', '_' or '-', starting alphanumeric",
            ));
        }
        let description = r.description.unwrap_or_default();
        check_text("description", &description, 1024)?;
        let t = now();
        let p = Profile {
            id: new_id().map_err(internal("id generation"))?,
            name: r.name,
            description,
            concise_logging: r.concise_logging.unwrap_or(false),
            learn_mode_allowed: r.learn_mode_allowed.unwrap_or(true),
            poll_interval: check_poll_interval(r.poll_interval.unwrap_or(10))?,
            created: t,
            updated: t,
        };
        self.store.profile_insert(&p)?;
        log::info!("profile {} created", p.name);
        Ok(Response::json(201, &profile_json(&p)))
    }

    fn profile_patch(&self, mut p: Profile, req: &Request) -> ApiResult {
        let r: ProfilePatch = parse(&req.body)?;
        if let Some(d) = r.description {
            check_text("description", &d, 1024)?;
            p.description = d;
        }
        if let Some(v) = r.concise_logging {
            p.concise_logging = v;
        }
        if let Some(v) = r.learn_mode_allowed {
            p.learn_mode_allowed = v;
        }
        if let Some(v) = r.poll_interval {
            p.poll_interval = check_poll_interval(v)?;
        }
        p.updated = now();
        self.store.profile_update(&p)?;
        log::info!("profile {} updated", p.name);
        Ok(Response::json(200, &profile_json(&p)))
    }

    // ----- stored policy sets

    /// Check a set body: `{"name", "description", "<entries>": [...]}`.
    /// Returns (name if given, description if given, entries text).
    fn set_body(
        &self,
        k: SetKind,
        body: &[u8],
    ) -> Result<(Option<String>, Option<String>, String), ApiError> {
        let v: Value = parse(body)?;
        let Value::Object(o) = v else {
            return Err(ApiError::bad_request(format!(
                "expected {{\"name\", \"description\", \"{}\": [...]}}",
                k.entries
            )));
        };
        if let Some(f) = o
            .keys()
            .find(|f| !["name", "description", k.entries].contains(&f.as_str()))
        {
            return Err(ApiError::bad_request(format!(
                "unknown field {f:?}; expected name, description, {}",
                k.entries
            )));
        }
        let text_field = |f: &str| -> Result<Option<String>, ApiError> {
            match o.get(f) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(ApiError::bad_request(format!("{f} must be a string"))),
            }
        };
        let name = text_field("name")?;
        let description = text_field("description")?;
        if let Some(d) = &description {
            check_text("description", d, 1024)?;
        }
        let entries = match o.get(k.entries) {
            Some(Value::Array(a)) if !a.is_empty() && a.len() <= 10_000 => Value::Array(a.clone()),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "{} must be a list of 1 to 10000 entries",
                    k.entries
                )));
            }
        };
        // Validate with the policy compiler: a one-rule policy with the set inline.
        let label = name.as_deref().unwrap_or("set");
        let mut set = json!({"id": label, "name": label});
        set[k.entries] = entries.clone();
        let mut rule = json!({"order_number": 1, "action": "all_ops", "effect": "permit"});
        rule[k.rule_ref] = json!(label);
        let mut doc = json!({
            "name": "set-validation",
            "policy_type": "Standard",
            "security_rules": [rule],
        });
        doc[k.list] = json!([set]);
        CompiledPolicy::from_json(&doc.to_string())
            .map_err(|e| ApiError::unprocessable(format!("invalid {} set entries: {e}", k.kind)))?;
        let text = serde_json::to_string(&entries).map_err(|e| internal("set")(e.to_string()))?;
        Ok((name, description, text))
    }

    fn set_create(&self, k: SetKind, req: &Request) -> ApiResult {
        let (name, description, entries) = self.set_body(k, &req.body)?;
        let name = name.unwrap_or_default();
        if !valid_name(&name, 64) {
            return Err(ApiError::bad_request(
                "set name must be 1-64 letters, digits, '.', '_' or '-', starting alphanumeric",
            ));
        }
        let t = now();
        let s = PolicySet {
            id: new_id().map_err(internal("id generation"))?,
            kind: k.kind.into(),
            name,
            description: description.unwrap_or_default(),
            entries,
            created: t,
            updated: t,
        };
        self.store.set_insert(&s)?;
        log::info!("{} set {} created", k.kind, s.name);
        Ok(Response::json(201, &set_json(k, &s)))
    }

    /// Replace a set's entries (and description); the policies that inline
    /// it are rewritten in the same transaction, and must still compile.
    fn set_update(&self, k: SetKind, mut s: PolicySet, req: &Request) -> ApiResult {
        let (name, description, entries) = self.set_body(k, &req.body)?;
        if name.as_deref().is_some_and(|n| n != s.name) {
            return Err(ApiError::unprocessable(
                "the name differs from the set being replaced (sets cannot be renamed)",
            ));
        }
        if let Some(d) = description {
            s.description = d;
        }
        s.entries = entries;
        s.updated = now();
        let inline = inline_set(k, &s);
        let mut rewrites = Vec::new();
        for p in self.store.set_policies(&s.id)? {
            let mut doc: Value = serde_json::from_str(&p.json)
                .map_err(|e| internal("stored policy")(e.to_string()))?;
            if let Some(Value::Array(list)) = doc.get_mut(k.list) {
                for set in list.iter_mut() {
                    if set.get("id").and_then(Value::as_str) == Some(s.name.as_str()) {
                        *set = inline.clone();
                    }
                }
            }
            let text =
                serde_json::to_string(&doc).map_err(|e| internal("policy")(e.to_string()))?;
            CompiledPolicy::from_json(&text).map_err(|e| {
                ApiError::unprocessable(format!(
                    "policy {:?}, which uses this set, would not compile: {e}",
                    p.name
                ))
            })?;
            rewrites.push((p.id, text));
        }
        self.store.set_update(&s, &rewrites)?;
        log::info!(
            "{} set {} updated ({} policies rewritten)",
            k.kind,
            s.name,
            rewrites.len()
        );
        Ok(Response::json(200, &set_json(k, &s)))
    }

    // ----- keys

    fn key(&self, id: &str) -> Result<Key, ApiError> {
        self.store
            .key_get(id)?
            .ok_or_else(|| ApiError::not_found("key not found"))
    }

    fn key_create(&self, req: &Request) -> ApiResult {
        let r: KeyReq = parse(&req.body)?;
        if !valid_name(&r.name, 64) {
            return Err(ApiError::bad_request(
                "key name must be 1-64 letters, digits, '.', '_' or '-', starting alphanumeric",
            ));
        }
        if r.name == "clear_key" {
            return Err(ApiError::bad_request("clear_key is reserved"));
        }
        if !r
            .algorithm
            .as_deref()
            .unwrap_or("AES")
            .eq_ignore_ascii_case("AES")
        {
            return Err(ApiError::bad_request("algorithm must be AES"));
        }
        if r.size.unwrap_or(256) != 256 {
            return Err(ApiError::bad_request("size must be 256"));
        }
        let cte = r.meta.and_then(|m| m.cte);
        let (persistent, mode, versioned) = match cte {
            None => (true, "XTS", true),
            Some(c) => (
                c.persistent_on_client.unwrap_or(true),
                match c.encryption_mode.as_deref() {
                    None => "XTS",
                    Some(m) => parse_mode(m).ok_or_else(|| {
                        ApiError::bad_request("encryption_mode must be XTS, CBC_CS1 or GCM")
                    })?,
                },
                c.cte_versioned.unwrap_or(true),
            ),
        };
        let t = now();
        let mut k = Key {
            id: new_id().map_err(internal("id generation"))?,
            name: r.name,
            algorithm: "AES".into(),
            size: 256,
            persistent_on_client: persistent,
            encryption_mode: mode.into(),
            cte_versioned: versioned,
            state: "active".into(),
            created: t,
            updated: t,
            versions: vec![],
        };
        let kid = k.id.clone();
        self.store.key_insert(&k, &mut |v| {
            self.master.seal_new(&kid, v).map_err(StoreError::Backend)
        })?;
        k.versions = vec![1];
        log::info!("key {} created", k.name);
        Ok(Response::json(201, &key_json(&k)))
    }

    // ----- agent side

    /// The configuration of one client and the key names it may fetch.
    fn rule_create(&self, req: &Request) -> ApiResult {
        let (name, params) = rule_params(&req.body)?;
        let path = params["path"].as_str().unwrap_or("").to_owned();
        let r = TeRule {
            id: new_id().map_err(internal("id generation"))?,
            name,
            json: params.to_string(),
            created: now(),
        };
        self.store.rule_insert(&r)?;
        log::info!("rule {} created for {path}", r.name);
        Ok(Response::json(201, &rule_json(&r)))
    }

    /// A client's rules, each with what the client last reported of it.
    fn client_rules(&self, c: &Client) -> ApiResult {
        let reported: Value = c
            .reported_status
            .as_deref()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        let items = self
            .store
            .client_rules_of(&c.id)?
            .iter()
            .map(|cr| {
                let mut v = client_rule_json(cr);
                v["reported"] = reported["rules"]
                    .as_array()
                    .and_then(|a| a.iter().find(|r| r["name"] == cr.rule_name.as_str()))
                    .cloned()
                    .unwrap_or(Value::Null);
                v
            })
            .collect();
        Ok(Response::json(200, &list(items)))
    }

    /// Apply a rule to a client (CTE's client-rule association), or ask
    /// it for the next operation: `{"rule", "key", "operation", "shallow"}`.
    fn client_rule_apply(&self, c: &Client, req: &Request) -> ApiResult {
        let r: ClientRuleReq = parse(&req.body)?;
        check_ref(&r.rule)?;
        let rule = self
            .store
            .rule_get(&r.rule)?
            .ok_or_else(|| ApiError::unprocessable("rule names no rule"))?;
        let operation = r.operation.unwrap_or_else(|| "encrypt".into());
        if !["encrypt", "rotate", "decrypt"].contains(&operation.as_str()) {
            return Err(ApiError::bad_request(
                "operation must be encrypt, rotate or decrypt",
            ));
        }
        let before = self
            .store
            .client_rules_of(&c.id)?
            .into_iter()
            .find(|x| x.rule_id == rule.id);
        let key = match (r.key, &before) {
            (Some(k), _) => k,
            (None, Some(b)) => b.key.clone(),
            (None, None) => {
                let encrypting = serde_json::from_str::<Value>(&rule.json)
                    .ok()
                    .and_then(|v| v["encrypt_data"].as_bool())
                    .unwrap_or(true);
                if encrypting {
                    return Err(ApiError::bad_request("key is required"));
                }
                "clear_key".into()
            }
        };
        if key != "clear_key" {
            check_ref(&key)?;
            self.store
                .key_get(&key)?
                .ok_or_else(|| ApiError::unprocessable("key names no key"))?;
        }
        let cr = ClientRule {
            client_id: c.id.clone(),
            rule_id: rule.id.clone(),
            rule_name: rule.name.clone(),
            rule_json: rule.json.clone(),
            key,
            operation,
            shallow: r.shallow.unwrap_or(false),
            generation: 0,
            updated: now(),
        };
        let generation = self.store.client_rule_put(&cr)?;
        log::info!(
            "rule {} on client {}: {} with key {} (generation {generation})",
            rule.name,
            c.name,
            cr.operation,
            cr.key
        );
        let mut v = client_rule_json(&cr);
        v["generation"] = json!(generation);
        Ok(Response::json(201, &v))
    }

    fn config_of(&self, c: &Client) -> Result<(Value, HashSet<String>), ApiError> {
        let gps = self.store.guardpoints_of(&c.id)?;
        let rules = self.store.client_rules_of(&c.id)?;
        let mut policies: BTreeMap<String, String> = BTreeMap::new();
        let mut key_names: BTreeSet<String> = BTreeSet::new();
        for g in &gps {
            if policies.contains_key(&g.policy_name) {
                continue;
            }
            let p = self
                .store
                .policy_get(&g.policy_id)?
                .ok_or_else(|| ApiError::internal("GuardPoint names a missing policy"))?;
            let compiled = CompiledPolicy::from_json(&p.json).map_err(|e| {
                log::error!("stored policy {} no longer compiles: {e}", p.name);
                ApiError::internal("stored policy does not compile")
            })?;
            key_names.extend(compiled.key_names().map(str::to_owned));
            if !compiled.has_key_rules() {
                key_names.insert("default".into());
            }
            policies.insert(p.name, p.json);
        }
        // Keys of the client's rules (their policies are made on the client).
        key_names.extend(
            rules
                .iter()
                .filter(|r| r.key != "clear_key")
                .map(|r| r.key.clone()),
        );
        let mut keys = Vec::new();
        let mut allowed = HashSet::new();
        for n in &key_names {
            let Some(k) = self.store.key_get(n)? else {
                continue;
            };
            allowed.insert(k.name.clone());
            keys.push(json!({
                "name": k.name,
                "mode": agent_mode(&k.encryption_mode),
                "persistent_on_client": k.persistent_on_client,
                "versions": if k.state == "destroyed" { vec![] } else { k.versions.clone() },
                "state": k.state,
            }));
        }
        let gps: Vec<Value> = gps
            .iter()
            .map(|g| {
                json!({
                    "path": g.guard_path,
                    "type": if g.guard_point_type == "directory_manual" { "manual" } else { "auto" },
                    "policy": g.policy_name,
                    "enabled": g.guard_enabled,
                })
            })
            .collect();
        let policies: Vec<Value> = policies
            .into_iter()
            .map(|(name, json)| json!({"name": name, "json": json}))
            .collect();
        let profile = match self.store.profile_get(&c.profile_id)? {
            Some(p) => json!({
                "name": p.name,
                "concise_logging": p.concise_logging,
                "poll_interval": p.poll_interval,
            }),
            None => json!({"name": DEFAULT_PROFILE, "concise_logging": false, "poll_interval": 10}),
        };
        Ok((
            json!({
                "guardpoints": gps,
                "policies": policies,
                "keys": keys,
                "profile": profile,
                "rules": rules.iter().map(client_rule_json).collect::<Vec<_>>(),
            }),
            allowed,
        ))
    }

    fn agent_config(&self, c: &Client, req: &Request) -> ApiResult {
        let (mut cfg, _) = self.config_of(c)?;
        let etag_raw = sha256_hex(&serde_json::to_vec(&cfg).unwrap_or_default());
        let etag = format!("\"{etag_raw}\"");
        if req
            .if_none_match
            .as_deref()
            .is_some_and(|h| etag_matches(h, &etag))
        {
            return Ok(Response {
                status: 304,
                body: None,
                etag: Some(etag),
            });
        }
        if let Value::Object(o) = &mut cfg {
            o.insert("etag".into(), Value::String(etag_raw));
        }
        let mut r = Response::json(200, &cfg);
        r.etag = Some(etag);
        Ok(r)
    }

    fn agent_key(&self, c: &Client, name: &str, v: &str) -> ApiResult {
        let version: u32 = v
            .parse()
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| ApiError::bad_request("version must be a positive integer"))?;
        let (_, allowed) = self.config_of(c)?;
        if !allowed.contains(name) {
            return Err(ApiError::forbidden("key is not assigned to this client"));
        }
        let k = self.key(name)?;
        if k.state != "active" {
            return Err(ApiError::forbidden(format!("key is {}", k.state)));
        }
        let sealed = self
            .store
            .key_version_sealed(&k.id, version)?
            .ok_or_else(|| ApiError::forbidden("key material destroyed"))?;
        let material = self
            .master
            .open(&k.id, version, &sealed)
            .map_err(internal("unsealing key material"))?;
        log::info!("client {} fetched key {} version {version}", c.name, k.name);
        let hex = zeroize::Zeroizing::new(hex::encode(&material[..]));
        let body = json!({
            "name": k.name,
            "version": version,
            "mode": agent_mode(&k.encryption_mode),
            "material": hex.as_str(),
        });
        Ok(Response::json(200, &body))
    }

    fn agent_status(&self, c: &Client, req: &Request) -> ApiResult {
        let v: Value = parse(&req.body)?;
        let Value::Object(o) = &v else {
            return Err(ApiError::bad_request("status must be a JSON object"));
        };
        let short = |k: &str| {
            o.get(k)
                .and_then(Value::as_str)
                .filter(|s| s.len() <= 64 && !s.chars().any(char::is_control))
        };
        let text = serde_json::to_string(&v).map_err(|e| internal("status")(e.to_string()))?;
        self.store
            .client_set_status(&c.id, &text, short("health"), short("version"), now())?;
        Ok(Response::json(200, &json!({"stored": true})))
    }

    fn agent_audit(&self, c: &Client, req: &Request) -> ApiResult {
        let lines: Vec<String> = parse(&req.body)?;
        if lines.len() > 10_000 {
            return Err(ApiError::bad_request(
                "at most 10000 audit lines per request",
            ));
        }
        if lines.iter().any(|l| l.is_empty() || l.len() > 8192) {
            return Err(ApiError::bad_request("audit lines must be 1 to 8192 bytes"));
        }
        self.store.audit_append(&c.id, &lines, now())?;
        Ok(Response::json(200, &json!({"accepted": lines.len()})))
    }

    fn agent_escrow(&self, c: &Client, req: &Request) -> ApiResult {
        if req.body.is_empty() {
            return Err(ApiError::bad_request("request body required"));
        }
        // serde's messages may quote the input: never echo (or log) it.
        let shape = || ApiError::bad_request("expected {\"escrow_key\": \"<64 hex characters>\"}");
        let v: Value = serde_json::from_slice(&req.body).map_err(|_| shape())?;
        if !v.is_object() {
            return Err(shape());
        }
        let r: EscrowReq = serde_json::from_value(v).map_err(|_| shape())?;
        let text = Zeroizing::new(r.escrow_key);
        let mut key = Zeroizing::new([0u8; ESCROW_LEN]);
        if text.len() != 2 * ESCROW_LEN
            || !text.bytes().all(|b| b.is_ascii_hexdigit())
            || hex::decode_to_slice(text.as_bytes(), &mut key[..]).is_err()
        {
            return Err(ApiError::bad_request(
                "escrow_key must be 64 hex characters (32 bytes)",
            ));
        }
        let sealed = self
            .master
            .seal_escrow(&c.id, &key[..])
            .map_err(internal("sealing escrow key"))?;
        self.store.escrow_put(&c.id, &sealed, now())?;
        log::info!("client {} stored its escrow key", c.name);
        Ok(Response::json(200, &json!({"stored": true})))
    }

    fn agent_renew(&self, c: &Client, req: &Request) -> ApiResult {
        if !c.registration_allowed {
            return Err(ApiError::forbidden(
                "registration is not allowed for this client",
            ));
        }
        let r: RenewReq = parse(&req.body)?;
        let issued = self
            .ca
            .sign_client(&r.csr, &c.name, &c.id, c.cert_duration)
            .map_err(ApiError::bad_request)?;
        self.store.client_set_cert(
            &c.id,
            &issued.serial,
            &issued.fingerprint,
            issued.not_after,
            now(),
        )?;
        log::info!("client {} renewed its certificate", c.name);
        Ok(Response::json(
            200,
            &json!({"client_id": c.id, "certificate": issued.pem, "ca": self.ca.cert_pem}),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime(&Lifetime::Secs(60)), Some(60));
        assert_eq!(parse_lifetime(&Lifetime::Text("3600".into())), Some(3600));
        assert_eq!(parse_lifetime(&Lifetime::Text("2h".into())), Some(7200));
        assert_eq!(parse_lifetime(&Lifetime::Text("1d".into())), Some(86400));
        assert_eq!(parse_lifetime(&Lifetime::Secs(0)), None);
        assert_eq!(parse_lifetime(&Lifetime::Secs(-5)), None);
        assert_eq!(parse_lifetime(&Lifetime::Text("h".into())), None);
        assert_eq!(parse_lifetime(&Lifetime::Text("-1".into())), None);
        assert_eq!(
            parse_lifetime(&Lifetime::Text("99999999999999d".into())),
            None
        );
    }

    #[test]
    fn etags() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("abc", "\"abc\""));
        assert!(etag_matches("W/\"abc\", \"x\"", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("cbc-cs1"), Some("CBC_CS1"));
        assert_eq!(parse_mode("xts"), Some("XTS"));
        assert_eq!(parse_mode("ECB"), None);
        assert_eq!(agent_mode("GCM"), "gcm");
    }
}
