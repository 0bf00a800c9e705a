//! Validation and compilation of a [`PolicyDocument`] into the immutable
//! [`CompiledPolicy`] that evaluation runs on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::action::ActionSet;
use crate::document::{
    CLEAR_KEY, Effects, PolicyDocument, ProcessEntry, Resource, SecurityRule, UserEntry,
    key_rule_at, rule_at, set_at,
};
use crate::error::{PolicyError, SetKind};
use crate::eval::KeyChoice;
use crate::path::{matches_everything, path_problem, pattern_problem};
use crate::time::{CompiledWindow, window_problem};

/// The most security rules a policy may have (the match code of a decision
/// has one letter per rule and lives in a fixed-size buffer).
pub const MAX_SECURITY_RULES: usize = 256;

/// The most key rules a policy may have.
pub const MAX_KEY_RULES: usize = 256;

static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// A validated, compiled policy: immutable, `Send + Sync`, meant to be
/// shared as `Arc<CompiledPolicy>` and swapped whole (e.g. with an
/// `ArcSwap` or a `RwLock<Arc<_>>` held only for the clone) when a new
/// policy arrives. Evaluation ([`CompiledPolicy::evaluate`]) neither
/// allocates nor locks.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub(crate) serial: u64,
    pub(crate) name: Box<str>,
    pub(crate) learn_mode: bool,
    /// Sorted by order number; rule `i` has order number `i + 1`.
    pub(crate) rules: Box<[Rule]>,
    pub(crate) key_rules: Box<[KeyRuleC]>,
    pub(crate) key_names: Box<[Box<str>]>,
    pub(crate) resource_sets: Box<[Box<[ResourceC]>]>,
    pub(crate) user_sets: Box<[Box<[UserC]>]>,
    pub(crate) process_sets: Box<[Box<[ProcessC]>]>,
}

/// A reference from a rule to a set, with the rule's exclude flag.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SetRef {
    pub(crate) index: usize,
    pub(crate) exclude: bool,
}

#[derive(Debug)]
pub(crate) struct Rule {
    pub(crate) resource: Option<SetRef>,
    pub(crate) user: Option<SetRef>,
    pub(crate) process: Option<SetRef>,
    pub(crate) actions: ActionSet,
    pub(crate) when: Option<CompiledWindow>,
    pub(crate) permit: bool,
    pub(crate) apply_key: bool,
    pub(crate) audit: bool,
    pub(crate) browsing: bool,
    pub(crate) authenticated_only: bool,
}

#[derive(Debug)]
pub(crate) struct KeyRuleC {
    pub(crate) resource: Option<usize>,
    pub(crate) key: KeyChoice,
    /// The transformation key of a data transformation rule for the same
    /// resource set: files in `key` or in this key are read, new contents
    /// use this one.
    pub(crate) transform: Option<KeyChoice>,
}

#[derive(Debug)]
pub(crate) struct ResourceC {
    pub(crate) directory: Box<[u8]>,
    pub(crate) pattern: Box<[u8]>,
    pub(crate) match_all: bool,
    pub(crate) recursive: bool,
    /// Only paths inside a directory of this name (below `directory`).
    pub(crate) within_named: Option<Box<[u8]>>,
}

#[derive(Debug)]
pub(crate) struct UserC {
    pub(crate) uname: Option<Box<str>>,
    pub(crate) uid: Option<u32>,
    pub(crate) gname: Option<Box<str>>,
    pub(crate) gid: Option<u32>,
}

#[derive(Debug)]
pub(crate) struct ProcessC {
    pub(crate) directory: Option<Box<[u8]>>,
    pub(crate) pattern: Option<Box<[u8]>>,
    pub(crate) signature: Option<[u8; 32]>,
}

/// Ids and names of one kind of set, to resolve rule references.
struct SetIndex<'d> {
    kind: SetKind,
    by_id: HashMap<&'d str, (usize, String)>,
}

impl<'d> SetIndex<'d> {
    fn new(kind: SetKind) -> Self {
        SetIndex {
            kind,
            by_id: HashMap::new(),
        }
    }

    /// Register a set under its id and name.
    fn add(
        &mut self,
        index: usize,
        at: &str,
        id: Option<&'d str>,
        name: Option<&'d str>,
    ) -> Result<(), PolicyError> {
        if id.is_none() && name.is_none() {
            return Err(PolicyError::MissingField {
                at: at.to_owned(),
                field: "id",
            });
        }
        for (field, label) in [("id", id), ("name", name)] {
            let Some(label) = label else { continue };
            if label.is_empty() {
                return Err(PolicyError::EmptyValue {
                    at: at.to_owned(),
                    field,
                });
            }
            if let Some((first, first_at)) = self.by_id.get(label) {
                if *first != index {
                    return Err(PolicyError::DuplicateSetId {
                        at: at.to_owned(),
                        kind: self.kind,
                        id: label.to_owned(),
                        first: first_at.clone(),
                    });
                }
                continue;
            }
            self.by_id.insert(label, (index, at.to_owned()));
        }
        Ok(())
    }

    /// Resolve a rule's reference.
    fn resolve(
        &self,
        at: &str,
        id: Option<&str>,
        exclude: bool,
        exclude_field: &'static str,
        id_field: &'static str,
    ) -> Result<Option<SetRef>, PolicyError> {
        match id {
            None if exclude => Err(PolicyError::ExcludeWithoutSet {
                at: at.to_owned(),
                field: exclude_field,
            }),
            None => Ok(None),
            Some("") => Err(PolicyError::EmptyValue {
                at: at.to_owned(),
                field: id_field,
            }),
            Some(id) => match self.by_id.get(id) {
                Some((index, _)) => Ok(Some(SetRef {
                    index: *index,
                    exclude,
                })),
                None => Err(PolicyError::UnknownSetId {
                    at: at.to_owned(),
                    kind: self.kind,
                    id: id.to_owned(),
                }),
            },
        }
    }
}

/// Check a name that is printed in audit lines.
fn check_printable_name(at: &str, field: &'static str, value: &str) -> Result<(), PolicyError> {
    if value.is_empty() {
        return Err(PolicyError::EmptyValue {
            at: at.to_owned(),
            field,
        });
    }
    let reason = if value.chars().any(char::is_control) {
        Some("it contains control characters")
    } else if value.contains(['[', ']', '\\']) {
        Some("`[`, `]` and `\\` would break audit lines")
    } else if value.trim() != value {
        Some("it has leading or trailing spaces")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(PolicyError::InvalidName {
            at: at.to_owned(),
            field,
            value: value.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn check_path(at: &str, field: &'static str, path: &str) -> Result<Box<[u8]>, PolicyError> {
    if !path.starts_with('/') {
        return Err(PolicyError::RelativePath {
            at: at.to_owned(),
            field,
            path: path.to_owned(),
        });
    }
    match path_problem(path.as_bytes()) {
        Some(reason) => Err(PolicyError::InvalidPath {
            at: at.to_owned(),
            field,
            path: path.to_owned(),
            reason,
        }),
        None => Ok(path.as_bytes().into()),
    }
}

fn check_pattern(at: &str, field: &'static str, pattern: &str) -> Result<Box<[u8]>, PolicyError> {
    match pattern_problem(pattern) {
        Some(reason) => Err(PolicyError::InvalidPattern {
            at: at.to_owned(),
            field,
            pattern: pattern.to_owned(),
            reason,
        }),
        None => Ok(pattern.as_bytes().into()),
    }
}

/// Parse a hex SHA-256 digest (either case).
pub(crate) fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Check that order numbers run 1..=n; returns the permutation sorting
/// items by order number.
fn order_permutation(
    what: &'static str,
    numbers: &[(u32, String)],
) -> Result<Vec<usize>, PolicyError> {
    let count = numbers.len();
    let mut slot: Vec<Option<usize>> = vec![None; count];
    let mut first_at: HashMap<u32, &str> = HashMap::new();
    for (i, (n, at)) in numbers.iter().enumerate() {
        if let Some(first) = first_at.get(n) {
            return Err(PolicyError::DuplicateOrderNumber {
                at: at.clone(),
                order_number: *n,
                first: (*first).to_owned(),
            });
        }
        first_at.insert(*n, at);
        if *n == 0 {
            return Err(PolicyError::OutOfRange {
                at: at.clone(),
                field: "order_number",
                value: "0".into(),
                range: "order numbers start at 1",
            });
        }
        if let Some(s) = slot.get_mut(*n as usize - 1) {
            *s = Some(i);
        }
    }
    slot.iter()
        .enumerate()
        .map(|(pos, s)| {
            s.ok_or(PolicyError::OrderNumberGap {
                what,
                count,
                missing: pos as u32 + 1,
            })
        })
        .collect()
}

fn check_effects(at: &str, e: Effects, learn_mode: bool) -> Result<(), PolicyError> {
    match (e.permit, e.deny) {
        (true, true) => Err(PolicyError::ConflictingEffects { at: at.to_owned() }),
        (false, false) if e.apply_key => {
            Err(PolicyError::ApplyKeyWithoutPermit { at: at.to_owned() })
        }
        (false, false) => Err(PolicyError::MissingVerdict { at: at.to_owned() }),
        (false, true) if learn_mode && !e.apply_key => {
            Err(PolicyError::LearnModeDenyWithoutApplyKey { at: at.to_owned() })
        }
        _ => Ok(()),
    }
}

impl CompiledPolicy {
    /// Validate a document and compile it.
    ///
    /// # Errors
    /// The first problem found (see [`PolicyError`]); nothing of an invalid
    /// document is kept.
    pub fn compile(doc: &PolicyDocument) -> Result<CompiledPolicy, PolicyError> {
        check_printable_name("policy", "name", &doc.name)?;

        // Sets.
        let mut resource_index = SetIndex::new(SetKind::Resource);
        let mut resource_sets = Vec::with_capacity(doc.resource_sets.len());
        for (i, set) in doc.resource_sets.iter().enumerate() {
            let at = set_at(
                "resource_sets",
                i,
                set.id.as_deref().or(set.name.as_deref()),
            );
            resource_index.add(i, &at, set.id.as_deref(), set.name.as_deref())?;
            if set.resources.is_empty() {
                return Err(PolicyError::EmptyValue {
                    at,
                    field: "resources",
                });
            }
            let entries = set
                .resources
                .iter()
                .enumerate()
                .map(|(j, r)| compile_resource(&format!("{at}.resources[{j}]"), r))
                .collect::<Result<Box<[_]>, _>>()?;
            resource_sets.push(entries);
        }

        let mut user_index = SetIndex::new(SetKind::User);
        let mut user_sets = Vec::with_capacity(doc.user_sets.len());
        for (i, set) in doc.user_sets.iter().enumerate() {
            let at = set_at("user_sets", i, set.id.as_deref().or(set.name.as_deref()));
            user_index.add(i, &at, set.id.as_deref(), set.name.as_deref())?;
            if set.users.is_empty() {
                return Err(PolicyError::EmptyValue { at, field: "users" });
            }
            let entries = set
                .users
                .iter()
                .enumerate()
                .map(|(j, u)| compile_user(&format!("{at}.users[{j}]"), u))
                .collect::<Result<Box<[_]>, _>>()?;
            user_sets.push(entries);
        }

        let mut process_index = SetIndex::new(SetKind::Process);
        let mut process_sets = Vec::with_capacity(doc.process_sets.len());
        for (i, set) in doc.process_sets.iter().enumerate() {
            let at = set_at("process_sets", i, set.id.as_deref().or(set.name.as_deref()));
            process_index.add(i, &at, set.id.as_deref(), set.name.as_deref())?;
            if set.processes.is_empty() {
                return Err(PolicyError::EmptyValue {
                    at,
                    field: "processes",
                });
            }
            let entries = set
                .processes
                .iter()
                .enumerate()
                .map(|(j, p)| compile_process(&format!("{at}.processes[{j}]"), p))
                .collect::<Result<Box<[_]>, _>>()?;
            process_sets.push(entries);
        }

        // Security rules.
        if doc.security_rules.len() > MAX_SECURITY_RULES {
            return Err(PolicyError::TooManyRules {
                what: "security rule",
                count: doc.security_rules.len(),
                max: MAX_SECURITY_RULES,
            });
        }
        let numbers: Vec<(u32, String)> = doc
            .security_rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.order_number, rule_at(i, Some(r.order_number))))
            .collect();
        let order = order_permutation("security rule", &numbers)?;
        let mut compiled_rules = Vec::with_capacity(order.len());
        for &i in &order {
            let rule = &doc.security_rules[i];
            let at = &numbers[i].1;
            compiled_rules.push(compile_rule(
                at,
                rule,
                doc,
                [&resource_index, &user_index, &process_index],
            )?);
        }

        // Key rules.
        if doc.key_rules.len() > MAX_KEY_RULES {
            return Err(PolicyError::TooManyRules {
                what: "key rule",
                count: doc.key_rules.len(),
                max: MAX_KEY_RULES,
            });
        }
        let key_order: Vec<usize> = if doc.key_rules.iter().any(|k| k.order_number.is_some()) {
            let mut numbers = Vec::with_capacity(doc.key_rules.len());
            for (i, k) in doc.key_rules.iter().enumerate() {
                let at = key_rule_at(i);
                let n = k
                    .order_number
                    .ok_or_else(|| PolicyError::MixedKeyRuleOrder { at: at.clone() })?;
                numbers.push((n, at));
            }
            order_permutation("key rule", &numbers)?
        } else {
            (0..doc.key_rules.len()).collect()
        };
        let mut key_names: Vec<Box<str>> = Vec::new();
        let mut key_rules = Vec::with_capacity(key_order.len());
        let mut catch_all: Option<String> = None;
        for &i in &key_order {
            let k = &doc.key_rules[i];
            let at = key_rule_at(i);
            if let Some(first) = &catch_all {
                return Err(PolicyError::UnreachableKeyRule {
                    at,
                    catch_all: first.clone(),
                });
            }
            let resource = resource_index
                .resolve(
                    &at,
                    k.resource_set_id.as_deref(),
                    false,
                    "",
                    "resource_set_id",
                )?
                .map(|r| r.index);
            if resource.is_none() {
                catch_all = Some(at.clone());
            }
            check_printable_name(&at, "key_id", &k.key_id)?;
            let key = if k.key_id == CLEAR_KEY {
                KeyChoice::Clear
            } else {
                let pos = match key_names.iter().position(|n| **n == *k.key_id) {
                    Some(p) => p,
                    None => {
                        key_names.push(k.key_id.as_str().into());
                        key_names.len() - 1
                    }
                };
                KeyChoice::Named(crate::eval::KeyId(pos as u16))
            };
            key_rules.push(KeyRuleC {
                resource,
                key,
                transform: None,
            });
        }

        // Data transformation rules: each pairs with the key rule of the
        // same resource set (CipherTrust Manager's model).
        let mut paired: Vec<Option<String>> = vec![None; key_order.len()];
        for (i, t) in doc.data_transform_rules.iter().enumerate() {
            let at = crate::document::transform_rule_at(i);
            check_printable_name(&at, "key_id", &t.key_id)?;
            let resource = resource_index
                .resolve(
                    &at,
                    t.resource_set_id.as_deref(),
                    false,
                    "",
                    "resource_set_id",
                )?
                .map(|r| r.index);
            let Some(pos) = key_rules.iter().position(|k| k.resource == resource) else {
                return Err(PolicyError::TransformWithoutKeyRule {
                    at,
                    resource_set: t.resource_set_id.clone().unwrap_or_else(|| "(none)".into()),
                });
            };
            if let Some(first) = &paired[pos] {
                return Err(PolicyError::DuplicateTransformRule {
                    at,
                    first: first.clone(),
                });
            }
            let current = &doc.key_rules[key_order[pos]].key_id;
            if *current == t.key_id {
                return Err(PolicyError::TransformToSameKey {
                    at,
                    key: t.key_id.clone(),
                });
            }
            let key = if t.key_id == CLEAR_KEY {
                KeyChoice::Clear
            } else {
                let p = match key_names.iter().position(|n| **n == *t.key_id) {
                    Some(p) => p,
                    None => {
                        key_names.push(t.key_id.as_str().into());
                        key_names.len() - 1
                    }
                };
                KeyChoice::Named(crate::eval::KeyId(p as u16))
            };
            key_rules[pos].transform = Some(key);
            paired[pos] = Some(at);
        }

        Ok(CompiledPolicy {
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            name: doc.name.as_str().into(),
            learn_mode: doc.learn_mode,
            rules: compiled_rules.into(),
            key_rules: key_rules.into(),
            key_names: key_names.into(),
            resource_sets: resource_sets.into(),
            user_sets: user_sets.into(),
            process_sets: process_sets.into(),
        })
    }

    /// Parse, validate and compile JSON text in one step.
    ///
    /// # Errors
    /// See [`PolicyDocument::from_json`] and [`CompiledPolicy::compile`].
    pub fn from_json(text: &str) -> Result<CompiledPolicy, PolicyError> {
        CompiledPolicy::compile(&PolicyDocument::from_json(text)?)
    }

    /// The policy name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the policy is in learn mode.
    pub fn learn_mode(&self) -> bool {
        self.learn_mode
    }

    /// How many security rules it has.
    pub fn security_rule_count(&self) -> usize {
        self.rules.len()
    }

    /// A number unique to this compilation (within the process), recorded
    /// in every [`Decision`](crate::Decision) it makes, so a decision is
    /// never rendered against another policy by mistake.
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// Every distinct key name the key rules use (not `clear_key`), for
    /// the caller to check it holds them all before switching policies.
    pub fn key_names(&self) -> impl Iterator<Item = &str> {
        self.key_names.iter().map(|k| &**k)
    }

    /// Whether the policy has key rules at all (without any, resources use
    /// the key named `default`).
    pub fn has_key_rules(&self) -> bool {
        !self.key_rules.is_empty()
    }
}

fn compile_resource(at: &str, r: &Resource) -> Result<ResourceC, PolicyError> {
    let directory = check_path(at, "directory", &r.directory)?;
    let pattern: Box<[u8]> = match r.file.as_deref() {
        None | Some("") => b"*".as_slice().into(),
        Some(p) => check_pattern(at, "file", p)?,
    };
    let within_named = match r.within_directory_named.as_deref() {
        None => None,
        Some(n) => {
            // An exact name: `*` and `?` are name characters here.
            let name = check_pattern(at, "within_directory_named", n)?;
            if !r.include_subfolders {
                return Err(PolicyError::InvalidPattern {
                    at: at.to_owned(),
                    field: "within_directory_named",
                    pattern: n.to_owned(),
                    reason: "it needs `include_subfolders`: true (the directory is below `directory`)",
                });
            }
            Some(name)
        }
    };
    Ok(ResourceC {
        directory,
        match_all: matches_everything(&pattern) && within_named.is_none(),
        pattern,
        recursive: r.include_subfolders,
        within_named,
    })
}

fn compile_user(at: &str, u: &UserEntry) -> Result<UserC, PolicyError> {
    if u.uname.is_none() && u.uid.is_none() && u.gname.is_none() && u.gid.is_none() {
        return Err(PolicyError::EmptyEntry {
            at: at.to_owned(),
            fields: "uname, uid, gname, gid",
        });
    }
    for (field, value) in [("uname", &u.uname), ("gname", &u.gname)] {
        if value.as_deref() == Some("") {
            return Err(PolicyError::EmptyValue {
                at: at.to_owned(),
                field,
            });
        }
    }
    Ok(UserC {
        uname: u.uname.as_deref().map(Into::into),
        uid: u.uid,
        gname: u.gname.as_deref().map(Into::into),
        gid: u.gid,
    })
}

fn compile_process(at: &str, p: &ProcessEntry) -> Result<ProcessC, PolicyError> {
    if p.directory.is_none() && p.file.is_none() && p.signature.is_none() {
        return Err(PolicyError::EmptyEntry {
            at: at.to_owned(),
            fields: "directory, file, signature",
        });
    }
    let directory = match p.directory.as_deref() {
        None => None,
        Some(d) => Some(check_path(at, "directory", d)?),
    };
    let pattern = match p.file.as_deref() {
        None => None,
        Some(f) => Some(check_pattern(at, "file", f)?),
    };
    let signature = match p.signature.as_deref() {
        None => None,
        Some(s) => Some(
            parse_sha256(s).ok_or_else(|| PolicyError::InvalidSignature {
                at: at.to_owned(),
                value: s.to_owned(),
            })?,
        ),
    };
    Ok(ProcessC {
        directory,
        pattern,
        signature,
    })
}

fn compile_rule(
    at: &str,
    rule: &SecurityRule,
    doc: &PolicyDocument,
    [resources, users, processes]: [&SetIndex<'_>; 3],
) -> Result<Rule, PolicyError> {
    let resource = resources.resolve(
        at,
        rule.resource_set_id.as_deref(),
        rule.exclude_resource_set,
        "exclude_resource_set",
        "resource_set_id",
    )?;
    let user = users.resolve(
        at,
        rule.user_set_id.as_deref(),
        rule.exclude_user_set,
        "exclude_user_set",
        "user_set_id",
    )?;
    let process = processes.resolve(
        at,
        rule.process_set_id.as_deref(),
        rule.exclude_process_set,
        "exclude_process_set",
        "process_set_id",
    )?;
    let actions = rule
        .action
        .iter()
        .fold(ActionSet::EMPTY, |acc, a| acc.union(a.expand()));
    if actions.is_empty() {
        return Err(PolicyError::EmptyValue {
            at: at.to_owned(),
            field: "action",
        });
    }
    check_effects(at, rule.effect, doc.learn_mode)?;
    let when = match &rule.when {
        None => None,
        Some(w) => {
            if let Some(reason) = window_problem(w) {
                return Err(PolicyError::InvalidTimeWindow {
                    at: at.to_owned(),
                    reason,
                });
            }
            Some(CompiledWindow::new(w))
        }
    };
    Ok(Rule {
        resource,
        user,
        process,
        actions,
        when,
        permit: rule.effect.permit,
        apply_key: rule.effect.apply_key,
        audit: rule.effect.audit,
        browsing: rule.browsing,
        authenticated_only: rule
            .authenticated_users_only
            .unwrap_or(doc.authenticated_users_only),
    })
}
