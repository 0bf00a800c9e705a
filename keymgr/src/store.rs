//! The storage interface of the key manager. [`crate::sqlite::SqliteStore`]
//! implements it; a PostgreSQL store for replicated deployments can follow
//! behind the same trait.
//!
//! Every method that changes something is atomic (one transaction). Key
//! material crosses this interface only sealed (see [`crate::seal`]).

use thiserror::Error;

/// Why a storage operation failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The thing named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A uniqueness or state conflict (duplicate name, in use, wrong state).
    #[error("{0}")]
    Conflict(String),
    /// The operation is refused (expired or exhausted registration token).
    #[error("{0}")]
    Refused(String),
    /// A reference to something that does not exist.
    #[error("{0}")]
    Invalid(String),
    /// The backend failed; the detail is for the log only.
    #[error("backend: {0}")]
    Backend(String),
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// An administrator account.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Login name.
    pub name: String,
    /// `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>`.
    pub password_hash: String,
}

/// A registration token.
#[derive(Debug, Clone)]
pub struct RegToken {
    /// Id (UUID).
    pub id: String,
    /// The secret token value agents present.
    pub token: String,
    /// Seconds of validity from `created`.
    pub lifetime: i64,
    /// How many clients may register with it.
    pub max_clients: i64,
    /// How many have.
    pub used: i64,
    /// Validity of the client certificates it yields, in days.
    pub cert_duration: i64,
    /// Required prefix of client names (may be empty).
    pub name_prefix: String,
    /// Unix time of creation.
    pub created: i64,
}

impl RegToken {
    /// Unix time after which it is refused.
    pub fn expires(&self) -> i64 {
        self.created.saturating_add(self.lifetime)
    }
}

/// A registered client (agent host).
#[derive(Debug, Clone)]
pub struct Client {
    /// Id (UUID).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Client profile.
    pub profile_id: String,
    /// Host group.
    pub host_group: String,
    /// May (re-)register and renew its certificate.
    pub registration_allowed: bool,
    /// May use the agent endpoints.
    pub communication_enabled: bool,
    /// CTE client lock.
    pub client_locked: bool,
    /// CTE system lock.
    pub system_locked: bool,
    /// Hardware signature reported at registration.
    pub hw_signature: String,
    /// Serial of its current certificate (hex).
    pub cert_serial: String,
    /// SHA-256 of its current certificate's DER (hex); identifies it on mTLS.
    pub cert_fingerprint: String,
    /// Unix time its certificate expires.
    pub cert_not_after: i64,
    /// Validity of its certificates in days (from the registration token).
    pub cert_duration: i64,
    /// Last reported health.
    pub reported_health: Option<String>,
    /// Last reported agent version.
    pub reported_version: Option<String>,
    /// Last status report (JSON text).
    pub reported_status: Option<String>,
    /// Unix time of registration.
    pub created: i64,
    /// Unix time of the last change.
    pub updated: i64,
}

/// A GuardPoint assigned to a client.
#[derive(Debug, Clone)]
pub struct GuardPoint {
    /// Id (UUID).
    pub id: String,
    /// Owning client.
    pub client_id: String,
    /// Absolute path.
    pub guard_path: String,
    /// `directory_auto` or `directory_manual`.
    pub guard_point_type: String,
    /// Policy id.
    pub policy_id: String,
    /// Policy name (joined for convenience; ignored on insert).
    pub policy_name: String,
    /// Enabled.
    pub guard_enabled: bool,
    /// Unix time of creation.
    pub created: i64,
}

/// A rule (CTE UserSpace): a path to protect and which files count; its
/// parameters as a JSON object (`path`, `include_extensions`,
/// `is_directory`, `is_recursive`, `ignore_directory`, `encrypt_data`).
#[derive(Debug, Clone)]
pub struct TeRule {
    /// Id (UUID).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The parameters (JSON object).
    pub json: String,
    /// Unix time of creation.
    pub created: i64,
}

/// A rule applied to a client (CTE's client-rule association): the key and
/// the operation the client is to carry out; `generation` grows with every
/// request, so the client knows a new one from one it already ran.
#[derive(Debug, Clone)]
pub struct ClientRule {
    pub client_id: String,
    pub rule_id: String,
    /// The rule's name (joined; ignored on write).
    pub rule_name: String,
    /// The rule's parameters (joined; ignored on write).
    pub rule_json: String,
    pub key: String,
    /// `encrypt`, `rotate` or `decrypt`.
    pub operation: String,
    /// A rotation that rewraps headers only.
    pub shallow: bool,
    pub generation: i64,
    pub updated: i64,
}

/// A policy document.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Id (UUID).
    pub id: String,
    /// Unique name (the document's own `name`).
    pub name: String,
    /// The JSON text as applied.
    pub json: String,
    /// Unix time of creation.
    pub created: i64,
    /// Unix time of the last change.
    pub updated: i64,
}

/// A client profile (CTE client settings shared by clients).
#[derive(Debug, Clone)]
pub struct Profile {
    /// Id (UUID).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Agents log tersely.
    pub concise_logging: bool,
    /// Policies in learn mode may be applied to its clients.
    pub learn_mode_allowed: bool,
    /// Seconds between agent configuration polls (1..=3600).
    pub poll_interval: i64,
    /// Unix time of creation.
    pub created: i64,
    /// Unix time of the last change.
    pub updated: i64,
}

/// The name of the profile that always exists.
pub const DEFAULT_PROFILE: &str = "DefaultClientProfile";

/// A stored policy set (user, process or resource set) that policies may
/// reference by name.
#[derive(Debug, Clone)]
pub struct PolicySet {
    /// Id (UUID).
    pub id: String,
    /// `user`, `process` or `resource`.
    pub kind: String,
    /// Name, unique per kind.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The entries: a JSON array in the policy document's shape.
    pub entries: String,
    /// Unix time of creation.
    pub created: i64,
    /// Unix time of the last change.
    pub updated: i64,
}

/// A key (no material).
#[derive(Debug, Clone)]
pub struct Key {
    /// Id (UUID).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// `AES`.
    pub algorithm: String,
    /// Bits: 256.
    pub size: i64,
    /// Agents may keep it sealed on disk.
    pub persistent_on_client: bool,
    /// `XTS`, `CBC_CS1` or `GCM`.
    pub encryption_mode: String,
    /// CTE versioned key.
    pub cte_versioned: bool,
    /// `active`, `revoked` or `destroyed`.
    pub state: String,
    /// Unix time of creation.
    pub created: i64,
    /// Unix time of the last change.
    pub updated: i64,
    /// Version numbers, ascending.
    pub versions: Vec<u32>,
}

/// Seals the material of a new key version, given its version number.
pub type Sealer<'a> = dyn FnMut(u32) -> StoreResult<Vec<u8>> + 'a;

/// The storage interface.
pub trait Store: Send + Sync {
    // --- administrators and their bearer tokens
    /// Create or replace an administrator.
    fn admin_put(&self, admin: &Admin, now: i64) -> StoreResult<()>;
    /// Look an administrator up.
    fn admin_get(&self, name: &str) -> StoreResult<Option<Admin>>;
    /// Record a bearer token (by its hash), dropping expired ones.
    fn admin_token_insert(
        &self,
        token_hash: &str,
        admin: &str,
        expires: i64,
        now: i64,
    ) -> StoreResult<()>;
    /// The administrator a live token belongs to.
    fn admin_token_check(&self, token_hash: &str, now: i64) -> StoreResult<Option<String>>;

    // --- registration tokens
    /// Insert a registration token.
    fn regtoken_insert(&self, t: &RegToken) -> StoreResult<()>;
    /// All registration tokens, oldest first.
    fn regtoken_list(&self) -> StoreResult<Vec<RegToken>>;
    /// One token by its secret value.
    fn regtoken_by_value(&self, token: &str) -> StoreResult<Option<RegToken>>;
    /// Delete one; `NotFound` if absent.
    fn regtoken_delete(&self, id: &str) -> StoreResult<()>;

    // --- clients
    /// Atomically: check the token is live and not exhausted, count one use,
    /// and insert the client (`Conflict` on a duplicate name, `Invalid` when
    /// its profile does not exist).
    fn register_client(&self, token: &str, now: i64, client: &Client) -> StoreResult<()>;
    /// All clients, oldest first.
    fn client_list(&self) -> StoreResult<Vec<Client>>;
    /// One client by id or name.
    fn client_get(&self, id_or_name: &str) -> StoreResult<Option<Client>>;
    /// The client holding the certificate with this fingerprint.
    fn client_by_fingerprint(&self, fp: &str) -> StoreResult<Option<Client>>;
    /// Write back the admin-settable fields of a client.
    fn client_update(&self, c: &Client) -> StoreResult<()>;
    /// Record a new certificate for a client.
    fn client_set_cert(
        &self,
        id: &str,
        serial: &str,
        fp: &str,
        not_after: i64,
        now: i64,
    ) -> StoreResult<()>;
    /// Record a status report.
    fn client_set_status(
        &self,
        id: &str,
        status: &str,
        health: Option<&str>,
        version: Option<&str>,
        now: i64,
    ) -> StoreResult<()>;
    /// Delete a client, its GuardPoints and its escrow key.
    fn client_delete(&self, id: &str) -> StoreResult<()>;
    /// Store a client's sealed escrow key, replacing any previous one
    /// (`NotFound` if the client does not exist).
    fn escrow_put(&self, client_id: &str, sealed: &[u8], now: i64) -> StoreResult<()>;
    /// A client's sealed escrow key, if it has one.
    fn escrow_get(&self, client_id: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Append audit lines from a client.
    fn audit_append(&self, client_id: &str, lines: &[String], now: i64) -> StoreResult<()>;
    /// How many audit lines a client has sent.
    fn audit_count(&self, client_id: &str) -> StoreResult<i64>;

    // --- GuardPoints
    /// Insert several at once (all or none).
    fn guardpoints_insert(&self, gps: &[GuardPoint]) -> StoreResult<()>;
    /// A client's GuardPoints, oldest first.
    fn guardpoints_of(&self, client_id: &str) -> StoreResult<Vec<GuardPoint>>;
    /// Delete one of a client's GuardPoints.
    fn guardpoint_delete(&self, client_id: &str, gp_id: &str) -> StoreResult<()>;

    // Rules (CTE UserSpace) and their application to clients.
    /// Insert a rule (its name unique).
    fn rule_insert(&self, r: &TeRule) -> StoreResult<()>;
    /// Every rule, oldest first.
    fn rule_list(&self) -> StoreResult<Vec<TeRule>>;
    /// A rule by id or name.
    fn rule_get(&self, id_or_name: &str) -> StoreResult<Option<TeRule>>;
    /// Delete a rule no client has (`Conflict` otherwise).
    fn rule_delete(&self, id: &str) -> StoreResult<()>;
    /// Apply a rule to a client, or ask it for another operation: the
    /// association's generation grows. Returns the new generation.
    fn client_rule_put(&self, cr: &ClientRule) -> StoreResult<i64>;
    /// A client's rules.
    fn client_rules_of(&self, client_id: &str) -> StoreResult<Vec<ClientRule>>;
    /// Remove a rule from a client.
    fn client_rule_delete(&self, client_id: &str, rule_id: &str) -> StoreResult<()>;

    // --- client profiles
    /// Insert (`Conflict` on a duplicate name).
    fn profile_insert(&self, p: &Profile) -> StoreResult<()>;
    /// All profiles, oldest first.
    fn profile_list(&self) -> StoreResult<Vec<Profile>>;
    /// One profile by id or name.
    fn profile_get(&self, id_or_name: &str) -> StoreResult<Option<Profile>>;
    /// Write back the settable fields (description, flags, poll interval).
    fn profile_update(&self, p: &Profile) -> StoreResult<()>;
    /// Delete (`Conflict` while clients use it, or for the default profile).
    fn profile_delete(&self, id: &str) -> StoreResult<()>;

    // --- stored policy sets
    /// Insert (`Conflict` on a duplicate name of the same kind).
    fn set_insert(&self, s: &PolicySet) -> StoreResult<()>;
    /// All sets of one kind, oldest first.
    fn set_list(&self, kind: &str) -> StoreResult<Vec<PolicySet>>;
    /// One set of a kind by id or name.
    fn set_get(&self, kind: &str, id_or_name: &str) -> StoreResult<Option<PolicySet>>;
    /// The policies whose stored text inlines this set.
    fn set_policies(&self, set_id: &str) -> StoreResult<Vec<Policy>>;
    /// Atomically: replace a set's description and entries and rewrite the
    /// text of the policies that inline it (`(policy id, json)` pairs).
    fn set_update(&self, s: &PolicySet, rewrites: &[(String, String)]) -> StoreResult<()>;
    /// Delete (`Conflict` while a stored policy references it).
    fn set_delete(&self, id: &str) -> StoreResult<()>;

    // --- policies
    /// Insert (`Conflict` on a duplicate name), recording the stored sets
    /// (ids) its text inlines.
    fn policy_insert(&self, p: &Policy, set_ids: &[String]) -> StoreResult<()>;
    /// Replace the text of a policy and the stored sets it inlines.
    fn policy_update(&self, id: &str, json: &str, now: i64, set_ids: &[String]) -> StoreResult<()>;
    /// All policies, oldest first.
    fn policy_list(&self) -> StoreResult<Vec<Policy>>;
    /// One policy by id or name.
    fn policy_get(&self, id_or_name: &str) -> StoreResult<Option<Policy>>;
    /// Delete (`Conflict` while a GuardPoint uses it).
    fn policy_delete(&self, id: &str) -> StoreResult<()>;

    // --- keys
    /// Insert a key with version 1 sealed by `seal`.
    fn key_insert(&self, k: &Key, seal: &mut Sealer<'_>) -> StoreResult<()>;
    /// All keys, oldest first.
    fn key_list(&self) -> StoreResult<Vec<Key>>;
    /// One key by id or name.
    fn key_get(&self, id_or_name: &str) -> StoreResult<Option<Key>>;
    /// Add version latest+1 (only while active); returns its number.
    fn key_add_version(&self, id: &str, now: i64, seal: &mut Sealer<'_>) -> StoreResult<u32>;
    /// Mark revoked (only from active; idempotent).
    fn key_revoke(&self, id: &str, now: i64) -> StoreResult<()>;
    /// Mark destroyed and erase all sealed material.
    fn key_destroy(&self, id: &str, now: i64) -> StoreResult<()>;
    /// The sealed material of one version (`None` once destroyed).
    fn key_version_sealed(&self, id: &str, version: u32) -> StoreResult<Option<Vec<u8>>>;
}
