//! The policy document: what an administrator writes, in CipherTrust
//! Manager's field names, and its JSON reading and writing.
//!
//! Reading checks JSON shape, types, unknown and duplicate fields, and the
//! vocabularies (actions, effects, days, times, `policy_type`, `key_type`).
//! Everything that relates fields to each other (set references, order
//! numbers, effect combinations, paths, patterns, signatures) is checked by
//! [`CompiledPolicy::compile`](crate::CompiledPolicy::compile), so a
//! document built in code gets the same checks.

use serde_json::{Map, Value, json};

use crate::action::ActionName;
use crate::error::PolicyError;
use crate::json::{Json, Obj};
use crate::time::{ClockTime, TimeWindow, Weekday};

/// A whole policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDocument {
    /// `name`: the policy name printed in audit lines.
    pub name: String,
    /// `description`: free text, kept but unused.
    pub description: Option<String>,
    /// `policy_type`: only `Standard` (the default when absent).
    pub policy_type: PolicyType,
    /// `learn_mode` (CipherTrust Manager's API also calls it `never_deny`):
    /// denials are permitted and logged as would-deny.
    pub learn_mode: bool,
    /// `authenticated_users_only` (GuardFS extension, default `true`): user
    /// sets only match processes that host settings call authenticated.
    /// Each rule may override it.
    pub authenticated_users_only: bool,
    /// `security_rules`, in any order; evaluated by `order_number`.
    pub security_rules: Vec<SecurityRule>,
    /// `key_rules`: which key encrypts which resources.
    pub key_rules: Vec<KeyRule>,
    /// `data_transform_rules`: the key each key rule's resources are being
    /// transformed to (CTE's data transformation policy; see `dataxform`).
    pub data_transform_rules: Vec<TransformRule>,
    /// `resource_sets`.
    pub resource_sets: Vec<ResourceSet>,
    /// `user_sets`.
    pub user_sets: Vec<UserSet>,
    /// `process_sets`.
    pub process_sets: Vec<ProcessSet>,
}

/// `policy_type`. Only standard policies are supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyType {
    /// `Standard`.
    #[default]
    Standard,
}

/// One security rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityRule {
    /// `order_number`: 1-based position; rules are tried in this order.
    pub order_number: u32,
    /// `description`: free text.
    pub description: Option<String>,
    /// `resource_set_id`: a resource set's `id` or `name`; absent matches
    /// every resource.
    pub resource_set_id: Option<String>,
    /// `exclude_resource_set`: match resources *not* in the set.
    pub exclude_resource_set: bool,
    /// `user_set_id`: absent matches every user.
    pub user_set_id: Option<String>,
    /// `exclude_user_set`: match users *not* in the set.
    pub exclude_user_set: bool,
    /// `process_set_id`: absent matches every process.
    pub process_set_id: Option<String>,
    /// `exclude_process_set`: match processes *not* in the set.
    pub exclude_process_set: bool,
    /// `action`: a comma-separated string (CipherTrust Manager's shape) or
    /// a JSON array of names.
    pub action: Vec<ActionName>,
    /// `effect`: comma-separated `permit`, `deny`, `applykey`, `audit`.
    pub effect: Effects,
    /// `when`: optional time window (see [`crate::time`]).
    pub when: Option<TimeWindow>,
    /// `browsing` (default `true`, as in CipherTrust Manager): when this is
    /// a deny rule, listing directories and reading attributes are still
    /// permitted (without the key).
    pub browsing: bool,
    /// `authenticated_users_only`: overrides the policy-wide switch for
    /// this rule's user set.
    pub authenticated_users_only: Option<bool>,
}

/// The effect flags of a security rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Effects {
    /// `permit`.
    pub permit: bool,
    /// `deny`.
    pub deny: bool,
    /// `applykey` (also accepted as `apply_key`): permitted access sees
    /// plaintext through the key the key rules choose.
    pub apply_key: bool,
    /// `audit`: the decision is logged.
    pub audit: bool,
}

impl Effects {
    /// Parse CipherTrust Manager's comma-separated effect string.
    pub fn parse(text: &str, at: &str) -> Result<Effects, PolicyError> {
        let mut e = Effects::default();
        for token in text.split(',').map(str::trim) {
            match token {
                "permit" => e.permit = true,
                "deny" => e.deny = true,
                "applykey" | "apply_key" => e.apply_key = true,
                "audit" => e.audit = true,
                "" if text.trim().is_empty() => {
                    return Err(PolicyError::EmptyValue {
                        at: at.to_owned(),
                        field: "effect",
                    });
                }
                other => {
                    return Err(PolicyError::UnknownEffect {
                        at: at.to_owned(),
                        value: other.to_owned(),
                    });
                }
            }
        }
        Ok(e)
    }

    /// The comma-separated form.
    pub fn to_effect_string(self) -> String {
        let parts = [
            (self.permit, "permit"),
            (self.deny, "deny"),
            (self.apply_key, "applykey"),
            (self.audit, "audit"),
        ];
        parts
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| *name)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One key rule: resources in the set use this key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRule {
    /// `order_number`: optional; when given on every key rule, rules are
    /// tried in this order, else in document order.
    pub order_number: Option<u32>,
    /// `resource_set_id`: absent matches every resource.
    pub resource_set_id: Option<String>,
    /// `key_id`: a key name, or `clear_key` for no encryption.
    pub key_id: String,
}

/// One data transformation rule: the resources of the key rule with the
/// same resource set are being transformed from that rule's (current) key
/// to this rule's (transformation) key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformRule {
    /// `order_number`: optional, kept for the manager's ordering; pairs
    /// are made by resource set, not by order.
    pub order_number: Option<u32>,
    /// `resource_set_id`: the key rule this rule belongs to has the same
    /// one (both absent: the catch-all key rule).
    pub resource_set_id: Option<String>,
    /// `key_id`: the transformation key, or `clear_key` to decrypt.
    pub key_id: String,
}

/// The `key_id` meaning "no encryption, access control only".
pub const CLEAR_KEY: &str = "clear_key";

/// A resource set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceSet {
    /// `id`: what rules refer to (a rule may also use the `name`).
    pub id: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `resources`: at least one.
    pub resources: Vec<Resource>,
}

/// One entry of a resource set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// `directory`: relative to the GuardPoint, written absolute (`/` is
    /// the GuardPoint itself, `/db` its subdirectory `db`).
    pub directory: String,
    /// `file`: a file-name pattern (`*`, `?`); absent or empty means `*`.
    pub file: Option<String>,
    /// `include_subfolders`: also match files in subdirectories.
    pub include_subfolders: bool,
    /// `within_directory_named` (GuardFS; CTE UserSpace's "ignore
    /// directory"): match only paths inside a directory of exactly this
    /// name (case-sensitive, no wildcards) at any depth below `directory`.
    /// Needs `include_subfolders`.
    pub within_directory_named: Option<String>,
}

/// A user set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSet {
    /// `id`.
    pub id: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `users`: at least one.
    pub users: Vec<UserEntry>,
}

/// One entry of a user set; every field given must match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserEntry {
    /// `uname`: the user name.
    pub uname: Option<String>,
    /// `uid`.
    pub uid: Option<u32>,
    /// `gname`: a group name, primary or supplementary.
    pub gname: Option<String>,
    /// `gid`: a group id, primary or supplementary.
    pub gid: Option<u32>,
}

/// A process set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSet {
    /// `id`.
    pub id: Option<String>,
    /// `name`.
    pub name: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `processes`: at least one.
    pub processes: Vec<ProcessEntry>,
}

/// One entry of a process set; every field given must match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessEntry {
    /// `directory`: the directory holding the executable (exact, absolute).
    pub directory: Option<String>,
    /// `file`: the executable's file-name pattern.
    pub file: Option<String>,
    /// `signature`: hex SHA-256 of the executable. An entry with only a
    /// signature follows the binary wherever it is copied.
    pub signature: Option<String>,
}

const POLICY_FIELDS: &[&str] = &[
    "name",
    "description",
    "policy_type",
    "learn_mode",
    "never_deny",
    "authenticated_users_only",
    "security_rules",
    "key_rules",
    "data_transform_rules",
    "resource_sets",
    "user_sets",
    "process_sets",
];
const RULE_FIELDS: &[&str] = &[
    "order_number",
    "description",
    "resource_set_id",
    "exclude_resource_set",
    "user_set_id",
    "exclude_user_set",
    "process_set_id",
    "exclude_process_set",
    "action",
    "effect",
    "when",
    "browsing",
    "authenticated_users_only",
];
const KEY_RULE_FIELDS: &[&str] = &["order_number", "resource_set_id", "key_id", "key_type"];
const WHEN_FIELDS: &[&str] = &["days", "start", "end"];
const RESOURCE_SET_FIELDS: &[&str] = &["id", "name", "description", "resources"];
const RESOURCE_FIELDS: &[&str] = &[
    "directory",
    "file",
    "include_subfolders",
    "within_directory_named",
];
const USER_SET_FIELDS: &[&str] = &["id", "name", "description", "users"];
const USER_FIELDS: &[&str] = &["uname", "uid", "gname", "gid"];
const PROCESS_SET_FIELDS: &[&str] = &["id", "name", "description", "processes"];
const PROCESS_FIELDS: &[&str] = &["directory", "file", "signature"];

/// Location of a security rule in messages.
pub(crate) fn rule_at(index: usize, order: Option<u32>) -> String {
    match order {
        Some(n) => format!("security rule {n} (security_rules[{index}])"),
        None => format!("security_rules[{index}]"),
    }
}

/// Location of a key rule in messages.
pub(crate) fn key_rule_at(index: usize) -> String {
    format!("key_rules[{index}]")
}

pub(crate) fn transform_rule_at(index: usize) -> String {
    format!("data_transform_rules[{index}]")
}

/// Location of a set in messages.
pub(crate) fn set_at(list: &str, index: usize, label: Option<&str>) -> String {
    match label {
        Some(l) => format!("{list}[{index}] ({l:?})"),
        None => format!("{list}[{index}]"),
    }
}

impl PolicyDocument {
    /// Read a policy from JSON text. Checks shape and vocabulary; call
    /// [`CompiledPolicy::compile`](crate::CompiledPolicy::compile) for the
    /// rest (or use
    /// [`CompiledPolicy::from_json`](crate::CompiledPolicy::from_json)).
    ///
    /// # Errors
    /// The first problem found, located by rule/set and field.
    pub fn from_json(text: &str) -> Result<PolicyDocument, PolicyError> {
        let root = Json::parse(text)?;
        let top = Obj::new(&root, "policy".into(), "(document)", POLICY_FIELDS)?;

        let name = top.req_str("name")?.to_owned();
        let description = top.opt_str("description")?.map(str::to_owned);
        let policy_type = match top.opt_str("policy_type")? {
            None | Some("Standard") => PolicyType::Standard,
            Some(other) => {
                return Err(PolicyError::UnsupportedPolicyType {
                    value: other.to_owned(),
                });
            }
        };
        let learn_mode = match (top.opt_bool("learn_mode")?, top.opt_bool("never_deny")?) {
            (Some(a), Some(b)) if a != b => {
                return Err(PolicyError::DuplicateField {
                    at: top.at.clone(),
                    field: "learn_mode (and never_deny, which disagrees)".into(),
                });
            }
            (a, b) => a.or(b).unwrap_or(false),
        };
        let authenticated_users_only = top.opt_bool("authenticated_users_only")?.unwrap_or(true);

        let list = |field: &str| -> Result<&[Json], PolicyError> {
            Ok(top.opt_array(field)?.unwrap_or(&[]))
        };
        let security_rules = list("security_rules")?
            .iter()
            .enumerate()
            .map(|(i, v)| parse_rule(v, i))
            .collect::<Result<_, _>>()?;
        let key_rules = list("key_rules")?
            .iter()
            .enumerate()
            .map(|(i, v)| parse_key_rule(v, i))
            .collect::<Result<_, _>>()?;
        let data_transform_rules = list("data_transform_rules")?
            .iter()
            .enumerate()
            .map(|(i, v)| parse_transform_rule(v, i))
            .collect::<Result<_, _>>()?;
        let resource_sets = list("resource_sets")?
            .iter()
            .enumerate()
            .map(|(i, v)| parse_resource_set(v, i))
            .collect::<Result<_, _>>()?;
        let user_sets = list("user_sets")?
            .iter()
            .enumerate()
            .map(|(i, v)| parse_user_set(v, i))
            .collect::<Result<_, _>>()?;
        let process_sets = list("process_sets")?
            .iter()
            .enumerate()
            .map(|(i, v)| parse_process_set(v, i))
            .collect::<Result<_, _>>()?;

        Ok(PolicyDocument {
            name,
            description,
            policy_type,
            learn_mode,
            authenticated_users_only,
            security_rules,
            key_rules,
            data_transform_rules,
            resource_sets,
            user_sets,
            process_sets,
        })
    }

    /// The document as JSON (the same shape [`PolicyDocument::from_json`]
    /// reads; defaults written out).
    pub fn to_json(&self) -> Value {
        let mut top = Map::new();
        top.insert("name".into(), json!(self.name));
        put_opt(&mut top, "description", self.description.as_deref());
        top.insert("policy_type".into(), json!("Standard"));
        top.insert("learn_mode".into(), json!(self.learn_mode));
        top.insert(
            "authenticated_users_only".into(),
            json!(self.authenticated_users_only),
        );
        let rules: Vec<Value> = self.security_rules.iter().map(rule_to_json).collect();
        top.insert("security_rules".into(), Value::Array(rules));
        let key_rules: Vec<Value> = self
            .key_rules
            .iter()
            .map(|k| key_rule_json(k.order_number, k.resource_set_id.as_deref(), &k.key_id))
            .collect();
        top.insert("key_rules".into(), Value::Array(key_rules));
        if !self.data_transform_rules.is_empty() {
            let rules = self
                .data_transform_rules
                .iter()
                .map(|k| key_rule_json(k.order_number, k.resource_set_id.as_deref(), &k.key_id))
                .collect();
            top.insert("data_transform_rules".into(), Value::Array(rules));
        }
        let resource_sets = self
            .resource_sets
            .iter()
            .map(|s| {
                let items = s
                    .resources
                    .iter()
                    .map(|r| {
                        let mut m = Map::new();
                        m.insert("directory".into(), json!(r.directory));
                        put_opt(&mut m, "file", r.file.as_deref());
                        m.insert("include_subfolders".into(), json!(r.include_subfolders));
                        put_opt(
                            &mut m,
                            "within_directory_named",
                            r.within_directory_named.as_deref(),
                        );
                        Value::Object(m)
                    })
                    .collect();
                set_to_json(&s.id, &s.name, &s.description, "resources", items)
            })
            .collect();
        top.insert("resource_sets".into(), Value::Array(resource_sets));
        let user_sets = self
            .user_sets
            .iter()
            .map(|s| {
                let items = s
                    .users
                    .iter()
                    .map(|u| {
                        let mut m = Map::new();
                        put_opt(&mut m, "uname", u.uname.as_deref());
                        if let Some(uid) = u.uid {
                            m.insert("uid".into(), json!(uid));
                        }
                        put_opt(&mut m, "gname", u.gname.as_deref());
                        if let Some(gid) = u.gid {
                            m.insert("gid".into(), json!(gid));
                        }
                        Value::Object(m)
                    })
                    .collect();
                set_to_json(&s.id, &s.name, &s.description, "users", items)
            })
            .collect();
        top.insert("user_sets".into(), Value::Array(user_sets));
        let process_sets = self
            .process_sets
            .iter()
            .map(|s| {
                let items = s
                    .processes
                    .iter()
                    .map(|p| {
                        let mut m = Map::new();
                        put_opt(&mut m, "directory", p.directory.as_deref());
                        put_opt(&mut m, "file", p.file.as_deref());
                        put_opt(&mut m, "signature", p.signature.as_deref());
                        Value::Object(m)
                    })
                    .collect();
                set_to_json(&s.id, &s.name, &s.description, "processes", items)
            })
            .collect();
        top.insert("process_sets".into(), Value::Array(process_sets));
        Value::Object(top)
    }
}

/// A key rule or data transformation rule (the same three fields).
fn key_rule_json(order: Option<u32>, resource_set: Option<&str>, key_id: &str) -> Value {
    let mut m = Map::new();
    if let Some(n) = order {
        m.insert("order_number".into(), json!(n));
    }
    put_opt(&mut m, "resource_set_id", resource_set);
    m.insert("key_id".into(), json!(key_id));
    Value::Object(m)
}

fn put_opt(m: &mut Map<String, Value>, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        m.insert(key.into(), json!(v));
    }
}

fn set_to_json(
    id: &Option<String>,
    name: &Option<String>,
    description: &Option<String>,
    list: &str,
    items: Vec<Value>,
) -> Value {
    let mut m = Map::new();
    put_opt(&mut m, "id", id.as_deref());
    put_opt(&mut m, "name", name.as_deref());
    put_opt(&mut m, "description", description.as_deref());
    m.insert(list.into(), Value::Array(items));
    Value::Object(m)
}

fn rule_to_json(r: &SecurityRule) -> Value {
    let mut m = Map::new();
    m.insert("order_number".into(), json!(r.order_number));
    put_opt(&mut m, "description", r.description.as_deref());
    put_opt(&mut m, "resource_set_id", r.resource_set_id.as_deref());
    m.insert("exclude_resource_set".into(), json!(r.exclude_resource_set));
    put_opt(&mut m, "user_set_id", r.user_set_id.as_deref());
    m.insert("exclude_user_set".into(), json!(r.exclude_user_set));
    put_opt(&mut m, "process_set_id", r.process_set_id.as_deref());
    m.insert("exclude_process_set".into(), json!(r.exclude_process_set));
    let actions: Vec<&str> = r.action.iter().map(|a| a.name()).collect();
    m.insert("action".into(), json!(actions.join(",")));
    m.insert("effect".into(), json!(r.effect.to_effect_string()));
    if let Some(w) = &r.when {
        let mut wm = Map::new();
        if let Some(days) = &w.days {
            let names: Vec<&str> = days.iter().map(|d| d.name()).collect();
            wm.insert("days".into(), json!(names));
        }
        if let Some(s) = w.start {
            wm.insert("start".into(), json!(s.to_string()));
        }
        if let Some(e) = w.end {
            wm.insert("end".into(), json!(e.to_string()));
        }
        m.insert("when".into(), Value::Object(wm));
    }
    m.insert("browsing".into(), json!(r.browsing));
    if let Some(a) = r.authenticated_users_only {
        m.insert("authenticated_users_only".into(), json!(a));
    }
    Value::Object(m)
}

fn parse_rule(v: &Json, index: usize) -> Result<SecurityRule, PolicyError> {
    let mut o = Obj::unchecked(v, rule_at(index, None), "security_rules[]")?;
    let order_number = o
        .opt_u32("order_number")?
        .ok_or_else(|| o.missing("order_number"))?;
    o.relocate(rule_at(index, Some(order_number)));
    o.check_known(RULE_FIELDS)?;

    let mut action = Vec::new();
    let raw = o
        .opt_str_or_list("action")?
        .ok_or_else(|| o.missing("action"))?;
    for item in raw {
        for name in item.split(',').map(str::trim) {
            if name.is_empty() && raw_is_blank(item) {
                continue;
            }
            let parsed = ActionName::parse(name).ok_or_else(|| PolicyError::UnknownAction {
                at: o.at.clone(),
                value: name.to_owned(),
            })?;
            action.push(parsed);
        }
    }
    let effect = Effects::parse(o.req_str("effect")?, &o.at)?;
    let when = match o.get("when") {
        None => None,
        Some(w) => Some(parse_when(w, &o.at)?),
    };

    Ok(SecurityRule {
        order_number,
        description: o.opt_str("description")?.map(str::to_owned),
        resource_set_id: o.opt_str("resource_set_id")?.map(str::to_owned),
        exclude_resource_set: o.opt_bool("exclude_resource_set")?.unwrap_or(false),
        user_set_id: o.opt_str("user_set_id")?.map(str::to_owned),
        exclude_user_set: o.opt_bool("exclude_user_set")?.unwrap_or(false),
        process_set_id: o.opt_str("process_set_id")?.map(str::to_owned),
        exclude_process_set: o.opt_bool("exclude_process_set")?.unwrap_or(false),
        action,
        effect,
        when,
        browsing: o.opt_bool("browsing")?.unwrap_or(true),
        authenticated_users_only: o.opt_bool("authenticated_users_only")?,
    })
}

/// Whether an `action` string is blank (so it contributes nothing and the
/// rule is caught as having no action).
fn raw_is_blank(s: &str) -> bool {
    s.trim().is_empty()
}

fn parse_when(v: &Json, rule: &str) -> Result<TimeWindow, PolicyError> {
    let o = Obj::new(v, rule.to_owned(), "when", WHEN_FIELDS)?;
    let days = match o.opt_array("days")? {
        None => None,
        Some(items) => Some(
            items
                .iter()
                .map(|d| match d {
                    Json::String(s) => Weekday::parse(s).ok_or_else(|| PolicyError::UnknownDay {
                        at: rule.to_owned(),
                        value: s.clone(),
                    }),
                    other => Err(o.wrong_type("when.days", "an array of day names", other)),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let time = |field: &'static str| -> Result<Option<ClockTime>, PolicyError> {
        match o.opt_str(field)? {
            None => Ok(None),
            Some(s) => ClockTime::parse(s)
                .map(Some)
                .ok_or_else(|| PolicyError::InvalidTime {
                    at: rule.to_owned(),
                    field,
                    value: s.to_owned(),
                }),
        }
    };
    Ok(TimeWindow {
        days,
        start: time("start")?,
        end: time("end")?,
    })
}

fn parse_key_rule(v: &Json, index: usize) -> Result<KeyRule, PolicyError> {
    parse_rule_fields(v, key_rule_at(index), "key_rules[]")
}

/// A key rule's fields (`order_number`, `resource_set_id`, `key_id`,
/// `key_type`), at `at` in the list `list`.
fn parse_rule_fields(v: &Json, at: String, list: &str) -> Result<KeyRule, PolicyError> {
    let o = Obj::new(v, at, list, KEY_RULE_FIELDS)?;
    match o.opt_str("key_type")? {
        None | Some("name") => {}
        Some(other) => {
            return Err(PolicyError::UnsupportedKeyType {
                at: o.at.clone(),
                value: other.to_owned(),
            });
        }
    }
    Ok(KeyRule {
        order_number: o.opt_u32("order_number")?,
        resource_set_id: o.opt_str("resource_set_id")?.map(str::to_owned),
        key_id: o.req_str("key_id")?.to_owned(),
    })
}

fn parse_transform_rule(v: &Json, index: usize) -> Result<TransformRule, PolicyError> {
    // The same three fields as a key rule, located in their own list.
    let k = parse_rule_fields(v, transform_rule_at(index), "data_transform_rules[]")?;
    Ok(TransformRule {
        order_number: k.order_number,
        resource_set_id: k.resource_set_id,
        key_id: k.key_id,
    })
}

/// The common head of a set: id, name, description, and its entry list.
struct SetHead<'a> {
    at: String,
    id: Option<String>,
    name: Option<String>,
    description: Option<String>,
    items: &'a [Json],
}

fn parse_set_head<'a>(
    v: &'a Json,
    list: &str,
    index: usize,
    fields: &[&str],
    items_field: &'static str,
) -> Result<SetHead<'a>, PolicyError> {
    let mut o = Obj::unchecked(v, set_at(list, index, None), list)?;
    let id = o.opt_str("id")?.map(str::to_owned);
    let name = o.opt_str("name")?.map(str::to_owned);
    o.relocate(set_at(list, index, id.as_deref().or(name.as_deref())));
    o.check_known(fields)?;
    let items = o
        .opt_array(items_field)?
        .ok_or_else(|| o.missing(items_field))?;
    Ok(SetHead {
        description: o.opt_str("description")?.map(str::to_owned),
        at: o.at,
        id,
        name,
        items,
    })
}

fn parse_resource_set(v: &Json, index: usize) -> Result<ResourceSet, PolicyError> {
    let h = parse_set_head(v, "resource_sets", index, RESOURCE_SET_FIELDS, "resources")?;
    let resources = h
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let o = Obj::new(
                item,
                format!("{}.resources[{i}]", h.at),
                "resources[]",
                RESOURCE_FIELDS,
            )?;
            Ok(Resource {
                directory: o.req_str("directory")?.to_owned(),
                file: o.opt_str("file")?.map(str::to_owned),
                include_subfolders: o.opt_bool("include_subfolders")?.unwrap_or(false),
                within_directory_named: o.opt_str("within_directory_named")?.map(str::to_owned),
            })
        })
        .collect::<Result<_, PolicyError>>()?;
    Ok(ResourceSet {
        id: h.id,
        name: h.name,
        description: h.description,
        resources,
    })
}

fn parse_user_set(v: &Json, index: usize) -> Result<UserSet, PolicyError> {
    let h = parse_set_head(v, "user_sets", index, USER_SET_FIELDS, "users")?;
    let users = h
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let o = Obj::new(item, format!("{}.users[{i}]", h.at), "users[]", USER_FIELDS)?;
            Ok(UserEntry {
                uname: o.opt_str("uname")?.map(str::to_owned),
                uid: o.opt_u32("uid")?,
                gname: o.opt_str("gname")?.map(str::to_owned),
                gid: o.opt_u32("gid")?,
            })
        })
        .collect::<Result<_, PolicyError>>()?;
    Ok(UserSet {
        id: h.id,
        name: h.name,
        description: h.description,
        users,
    })
}

fn parse_process_set(v: &Json, index: usize) -> Result<ProcessSet, PolicyError> {
    let h = parse_set_head(v, "process_sets", index, PROCESS_SET_FIELDS, "processes")?;
    let processes = h
        .items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let o = Obj::new(
                item,
                format!("{}.processes[{i}]", h.at),
                "processes[]",
                PROCESS_FIELDS,
            )?;
            Ok(ProcessEntry {
                directory: o.opt_str("directory")?.map(str::to_owned),
                file: o.opt_str("file")?.map(str::to_owned),
                signature: o.opt_str("signature")?.map(str::to_owned),
            })
        })
        .collect::<Result<_, PolicyError>>()?;
    Ok(ProcessSet {
        id: h.id,
        name: h.name,
        description: h.description,
        processes,
    })
}
