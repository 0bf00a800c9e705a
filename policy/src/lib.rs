//! The GuardFS policy engine: what a GuardPoint's policy lets a process do.
//!
//! # What this crate owns
//!
//! * The **policy model** ([`PolicyDocument`]): security rules, key rules,
//!   resource sets, user sets and process sets, in CipherTrust Manager's
//!   field names, read from JSON with precise errors ([`PolicyError`]: which
//!   rule by order number and index, which field, why).
//! * **Validation and compilation** into an immutable [`CompiledPolicy`]
//!   (`Send + Sync`, shared as `Arc`, swapped whole by the caller).
//! * **Evaluation** ([`CompiledPolicy::evaluate`]): a [`Request`] in, a
//!   [`Decision`] out — permit/deny, apply key, audit, the matching rule, the
//!   key chosen by the key rules, learn mode's would-deny, and CTE's match
//!   code (`1U,2U,3R,4M`).
//! * **Host settings** ([`HostSettings`]): `|authenticator|`, `|trust|`,
//!   `|path_no_trust|` (and `|protect|`, listed only), and the pure decision
//!   whether a process ancestry is authenticated
//!   ([`HostSettings::classify`]).
//! * The **audit line format** ([`AuditLine`]), in CTE's shape.
//!
//! # What it must not do
//!
//! * I/O of any kind: callers read files, `/proc`, clocks and hashes, and
//!   hand in the results. Nothing on the evaluation path allocates, locks or
//!   panics; its cost is a scan of the rules with byte comparisons.
//! * Know about FUSE, mounts, or key bytes: keys are names here; the caller
//!   maps a [`KeyChoice`] to key material.
//!
//! # The policy document
//!
//! ```json
//! {
//!   "name": "db-policy",
//!   "policy_type": "Standard",
//!   "learn_mode": false,
//!   "security_rules": [
//!     { "order_number": 1, "action": "key_op", "effect": "permit,applykey" },
//!     { "order_number": 2, "resource_set_id": "db-files", "user_set_id": "dba",
//!       "process_set_id": "db-engine", "action": "all_ops", "effect": "permit,applykey,audit" },
//!     { "order_number": 3, "process_set_id": "backup", "action": "read",
//!       "effect": "permit,audit" },
//!     { "order_number": 4, "action": "all_ops", "effect": "deny,audit", "browsing": true }
//!   ],
//!   "key_rules": [ { "resource_set_id": "db-files", "key_id": "db-key" },
//!                  { "key_id": "clear_key" } ],
//!   "resource_sets": [ { "id": "db-files", "resources": [
//!       { "directory": "/data", "file": "*.dbf", "include_subfolders": true } ] } ],
//!   "user_sets": [ { "id": "dba", "users": [ { "uname": "oracle" }, { "gid": 54322 } ] } ],
//!   "process_sets": [
//!     { "id": "db-engine", "processes": [ { "directory": "/opt/oracle/bin", "file": "oracle*" } ] },
//!     { "id": "backup", "processes": [ { "signature": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" } ] }
//!   ]
//! }
//! ```
//!
//! # Choices where CTE's documents are silent
//!
//! * **Unknown fields are errors**, as are duplicate fields in one object:
//!   a typo must not silently widen a policy. `description` is accepted
//!   everywhere CipherTrust Manager has it; `never_deny` (the manager's API
//!   name for learn mode) is accepted as an alias of `learn_mode`.
//! * **`action`** is CipherTrust Manager's string, which may hold several
//!   comma-separated names (`"f_rd,f_rd_att"`); a JSON array of names is
//!   accepted too. Coarse names expand at compile time: `read` = `f_rd`,
//!   `f_rd_att`, `f_rd_sec`, `d_rd`, `d_rd_att`; `write` = every other file
//!   and directory action; `all_ops` = both; `key_op` only where named.
//! * **`effect`** must hold exactly one of `permit`/`deny`. `applykey` with
//!   `deny` is accepted (CTE requires it on deny rules in learn mode and
//!   says it has no effect otherwise); in learn mode a deny rule without
//!   `applykey` is an error.
//! * **Order numbers** run 1..n without gaps or duplicates (as the manager
//!   numbers rules), so the match code's numbers are the rules' numbers.
//!   At most [`MAX_SECURITY_RULES`] rules.
//! * **Components are checked** in the order resource, user, process,
//!   action, time; the first failure gives the rule's letter (`R`, `U`, `P`,
//!   `A`, `T`), a full match gives `M`.
//! * **No rule matches: deny** (audited). In learn mode: permit with the
//!   key, marked would-deny, audited.
//! * **Learn mode** turns a matching deny rule into a permit (with the
//!   rule's `applykey`), marked would-deny and always audited.
//! * **`browsing`** (default `true`, as in the manager): a matching deny
//!   rule still permits `d_rd`, `d_rd_att` and `f_rd_att`, without the key.
//! * **User sets only match authenticated processes** unless
//!   `authenticated_users_only` is `false` for the policy or the rule. An
//!   unauthenticated process never *gains* access through a user-set
//!   component and never *escapes* a deny through one: on a permit rule
//!   the component does not match it, included or excluded (so
//!   `exclude_user_set` cannot permit "everyone but guests" to a process
//!   whose user is unknown); on a deny rule an excluded set does not
//!   exclude it ("deny everyone but admins" denies it) and an included set
//!   matches by the uid and groups it runs with ("deny these users").
//! * **Exclude flags** need a set to exclude (`exclude_user_set` without
//!   `user_set_id` is an error, not "match nothing").
//! * **Resources** are paths relative to the GuardPoint written absolute
//!   (`/` is the GuardPoint root, so one policy serves many GuardPoints, as
//!   in CTE). `directory` must be normalized; `file` is a pattern with `*`
//!   and `?` (absent or empty = `*`). An entry matches files in `directory`
//!   (and below with `include_subfolders`) whose name matches, plus the
//!   directory itself when `file` matches everything.
//! * **Process-set entries** match when every field given matches:
//!   `directory` (exact parent of the executable), `file` (pattern) and
//!   `signature` (SHA-256 hex, compared with the hash the caller computed).
//!   An entry with only a `signature` follows the binary wherever it is
//!   copied; an entry with path and signature rejects a modified binary.
//! * **User-set entries** match when every field given matches; `gid` and
//!   `gname` match the primary or any supplementary group.
//! * **Key rules** are tried in document order (or by `order_number` when
//!   every key rule has one); the first whose resource set contains the
//!   resource chooses its key; a key rule without a resource set matches
//!   everything (rules after it are an error). No key rules at all: the key
//!   named `default`. Key rules that cover nothing for a resource:
//!   [`KeyChoice::Unmatched`] (no key; the caller must not serve plaintext).
//! * **Data transformation rules** (`data_transform_rules`: resource set
//!   and `key_id`, CipherTrust Manager's "Transformation Key Name") pair
//!   with the key rule of the same resource set, whose `key_id` is then the
//!   *current* key. While such a rule is on a GuardPoint, files in either
//!   key are read and new contents get the transformation key
//!   ([`CompiledPolicy::key_rule_for`]); `dataxform --rekey` moves the rest.
//!   Errors: no key rule with that resource set, a second rule for one, the
//!   transformation key equal to the current key (so `clear_key` as both).
//!   Whether the keys exist is the control plane's check.
//! * **`when`**: see [`time`] for the format.
//! * **Requests with non-normalized paths** are denied without trying the
//!   rules ([`Outcome::BadRequest`]), so `..` or `//` cannot dodge a
//!   resource set.
//! * **Names printed in audit lines** (policy name, key names) may not
//!   contain control characters, `[`, `]` or `\`.
//!
//! # Not supported
//!
//! Everything below is refused at parse time (so a policy never means less
//! than its author wrote) unless it says otherwise.
//!
//! * **Policy types other than `Standard`** (Live Data Transformation, IDT,
//!   CSI, cloud object storage, HDFS): each needs its own data path
//!   (online rekeying, in-place transformation of existing data, object or
//!   HDFS semantics) that secfs does not implement. Standard policies do
//!   carry CTE's offline **data transformation**: see below.
//! * **`partial_match`** on resources: CTE's prefix matching of resource
//!   paths would let a rule for `/data` cover `/database`; resources here
//!   are whole path components plus `*`/`?` patterns.
//! * **`key_type` other than `name`** (key ids, UUIDs, aliases): secfs
//!   receives keys by name from `vmd`; resolving other identifiers is the
//!   control plane's job, and it delivers names.
//! * **Signature sets referenced by id** (`signature_set_id`): signatures
//!   are given inline per process entry (`signature`, SHA-256); the
//!   manager's separate signature-set objects and their other hash types
//!   are not modelled.
//! * **Windows-only actions** (those of the Windows agent, which act on
//!   NTFS semantics Linux has no equivalent for) and any action name not
//!   listed above: rejected as unknown. Effects other than
//!   `permit`, `deny`, `applykey`, `audit` are rejected too.
//! * **`os_domain`** on user entries and **HDFS fields** (`hdfs_*`): Windows
//!   domains and HDFS users have no meaning for a Linux file system;
//!   rejected as unknown fields.
//! * **`|authenticator_euid|`** host setting: rejected (see
//!   [`HostSettings`]); identity changes are observed by uid and login uid.
//! * **`|protect|`** host setting: parsed and listed by
//!   [`HostSettings::paths`], **not enforced** (protecting agent files
//!   from deletion is outside what a GuardPoint's file system can see).
//! * **`key_op`**: accepted and evaluated, but no FUSE operation maps to
//!   it (rekey and key-management operations go through `vmd`/`dataxform`,
//!   not the file system), so a rule for `key_op` only matters to callers
//!   that ask about it explicitly.
//!
//! # Example
//!
//! ```
//! use guardfs_policy::{Action, CompiledPolicy, Request, TimeOfWeek, Verdict};
//!
//! let policy = CompiledPolicy::from_json(r#"{
//!     "name": "p",
//!     "security_rules": [
//!         { "order_number": 1, "user_set_id": "admins", "action": "read", "effect": "permit,applykey" }
//!     ],
//!     "user_sets": [ { "id": "admins", "users": [ { "uid": 0 } ] } ]
//! }"#).unwrap();
//! let now = TimeOfWeek::from_unix(0, 0);
//! let mut req = Request::new(b"/file", Action::FRd, 0, 0, now);
//! req.authenticated = true;
//! let d = policy.evaluate(&req);
//! assert_eq!(d.verdict(), Verdict::Permit);
//! assert_eq!(d.code().to_string(), "1M");
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod action;
mod audit;
mod compile;
mod document;
mod error;
mod eval;
mod host;
mod json;
mod path;
pub mod time;

#[cfg(test)]
mod tests;

pub use action::{Action, ActionName, ActionSet};
pub use audit::{AuditLine, KeyMismatchLine};
pub use compile::{CompiledPolicy, MAX_KEY_RULES, MAX_SECURITY_RULES};
pub use document::{
    CLEAR_KEY, Effects, KeyRule, PolicyDocument, PolicyType, ProcessEntry, ProcessSet, Resource,
    ResourceSet, SecurityRule, TransformRule, UserEntry, UserSet,
};
pub use error::{HostSettingsError, PolicyError, SetKind};
pub use eval::{
    CodeLetter, Decision, KeyChoice, KeyId, MatchCode, Outcome, PossibleOutcomes, Request, Verdict,
};
pub use host::{Ancestor, HostKeyword, HostSettings, ProcessTrust, Taint};
pub use path::is_normalized_absolute;
pub use time::{ClockTime, TimeOfWeek, TimeWindow, Weekday};
