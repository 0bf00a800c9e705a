//! Evaluation: a [`Request`] in, a [`Decision`] out, first match in order
//! number order, no allocation, no locks, no I/O.

use std::fmt;

use crate::action::{Action, ActionSet};
use crate::compile::{
    CompiledPolicy, MAX_SECURITY_RULES, ProcessC, ResourceC, Rule, SetRef, UserC,
};
use crate::path::{glob_match, is_normalized_absolute, is_within, split_parent};
use crate::time::TimeOfWeek;

/// One access to decide.
///
/// Paths are bytes (Linux paths need not be UTF-8).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The resource, relative to the GuardPoint root and written absolute:
    /// `/` is the GuardPoint itself, `/db/t1.dat` a file below it. Must be
    /// normalized (no `.`, `..`, `//`, trailing `/`); anything else is
    /// denied as a bad request, so a crafted path cannot slip past a
    /// resource set.
    pub path: &'a [u8],
    /// The fine action.
    pub action: Action,
    /// The caller's uid (from the FUSE request).
    pub uid: u32,
    /// The caller's primary gid.
    pub gid: u32,
    /// Supplementary gids.
    pub groups: &'a [u32],
    /// The user name, if known.
    pub user_name: Option<&'a str>,
    /// Names of the primary and supplementary groups, as far as known
    /// (matched by `gname`; printed in audit lines).
    pub group_names: &'a [&'a str],
    /// The process's executable (absolute, normalized, as
    /// `/proc/PID/exe` gives it); `None` if unknown, in which case no
    /// process set with a directory or file contains the process. A path
    /// that is not normalized is denied as a bad request. The caller must
    /// pass only a path it verified names the file the process runs (the
    /// path text of `/proc/PID/exe` can be faked by a bind mount in
    /// another mount namespace): secfs passes `None` otherwise.
    pub exe: Option<&'a [u8]>,
    /// SHA-256 of the executable, if the caller computed it; process-set
    /// entries with a `signature` only match when this is present and equal.
    pub exe_sha256: Option<&'a [u8; 32]>,
    /// Whether host settings make the process authenticated (see
    /// [`HostSettings::classify`](crate::HostSettings::classify)).
    pub authenticated: bool,
    /// The current wall-clock time, for `when`.
    pub now: TimeOfWeek,
}

impl<'a> Request<'a> {
    /// A request with no groups, names, executable or signature, not
    /// authenticated; set the other fields directly.
    pub fn new(path: &'a [u8], action: Action, uid: u32, gid: u32, now: TimeOfWeek) -> Self {
        Request {
            path,
            action,
            uid,
            gid,
            groups: &[],
            user_name: None,
            group_names: &[],
            exe: None,
            exe_sha256: None,
            authenticated: false,
            now,
        }
    }
}

/// Which key the key rules choose for a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyChoice {
    /// The policy has no key rules: the GuardPoint's key named `default`.
    Default,
    /// `clear_key`: no encryption, access control only.
    Clear,
    /// A named key; [`CompiledPolicy::key_label`] gives its name.
    Named(KeyId),
    /// The policy has key rules but none covers this resource: no key is
    /// available, so nothing can be read or written through one.
    Unmatched,
}

/// Index of a key name in a compiled policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub(crate) u16);

impl KeyId {
    /// Position in [`CompiledPolicy::key_names`].
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Permit or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Access granted.
    Permit,
    /// Access refused.
    Deny,
}

/// How the decision was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The security rule with this order number matched.
    Rule(u32),
    /// No rule matched: CTE's default, deny.
    NoMatch,
    /// The request's path or executable path is not normalized: denied
    /// without trying rules (not softened by learn mode).
    BadRequest,
}

/// One letter of CTE's match code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CodeLetter {
    /// `U`: the user set did not match.
    User = 1,
    /// `P`: the process set did not match.
    Process = 2,
    /// `R`: the resource set did not match.
    Resource = 3,
    /// `A`: the action did not match.
    Action = 4,
    /// `T`: the `when` time window did not match.
    Time = 5,
    /// `M`: every component matched; the rule's effect applies.
    Match = 6,
}

impl CodeLetter {
    /// The letter.
    pub const fn as_char(self) -> char {
        match self {
            CodeLetter::User => 'U',
            CodeLetter::Process => 'P',
            CodeLetter::Resource => 'R',
            CodeLetter::Action => 'A',
            CodeLetter::Time => 'T',
            CodeLetter::Match => 'M',
        }
    }

    const fn from_nibble(n: u8) -> Option<CodeLetter> {
        match n {
            1 => Some(CodeLetter::User),
            2 => Some(CodeLetter::Process),
            3 => Some(CodeLetter::Resource),
            4 => Some(CodeLetter::Action),
            5 => Some(CodeLetter::Time),
            6 => Some(CodeLetter::Match),
            _ => None,
        }
    }
}

/// CTE's match code: for each rule tried, in order, its order number and
/// the first component that failed (checked in the order resource, user,
/// process, action, time) or `M` for the rule that matched. Displays as
/// `1U,2U,3R,4M`.
///
/// Stored inline (one nibble per rule, [`MAX_SECURITY_RULES`] rules) so a
/// [`Decision`] is `Copy` and building it allocates nothing; formatting
/// happens only when a line is written.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MatchCode {
    len: u16,
    packed: [u8; MAX_SECURITY_RULES / 2],
}

impl MatchCode {
    const fn new() -> MatchCode {
        MatchCode {
            len: 0,
            packed: [0; MAX_SECURITY_RULES / 2],
        }
    }

    fn push(&mut self, letter: CodeLetter) {
        let i = usize::from(self.len);
        if i < MAX_SECURITY_RULES {
            self.packed[i / 2] |= (letter as u8) << ((i % 2) * 4);
            self.len += 1;
        }
    }

    /// How many rules were tried.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether no rule was tried.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The letter for the `i`-th rule tried (0-based; its order number is
    /// `i + 1`).
    pub fn get(&self, i: usize) -> Option<CodeLetter> {
        if i >= self.len() {
            return None;
        }
        CodeLetter::from_nibble((self.packed[i / 2] >> ((i % 2) * 4)) & 0x0f)
    }

    /// `(order number, letter)` for each rule tried.
    pub fn iter(&self) -> impl Iterator<Item = (u32, CodeLetter)> + '_ {
        (0..self.len()).filter_map(|i| self.get(i).map(|l| (i as u32 + 1, l)))
    }
}

impl fmt::Display for MatchCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, (order, letter)) in self.iter().enumerate() {
            if k > 0 {
                f.write_str(",")?;
            }
            write!(f, "{order}{}", letter.as_char())?;
        }
        Ok(())
    }
}

impl fmt::Debug for MatchCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MatchCode({self})")
    }
}

/// The result of evaluating one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decision {
    permit: bool,
    apply_key: bool,
    audit: bool,
    would_deny: bool,
    browsing: bool,
    outcome: Outcome,
    key: KeyChoice,
    code: MatchCode,
    policy_serial: u64,
}

impl Decision {
    /// Permit or deny (after learn mode).
    pub fn verdict(&self) -> Verdict {
        if self.permit {
            Verdict::Permit
        } else {
            Verdict::Deny
        }
    }

    /// Whether access is granted.
    pub fn is_permit(&self) -> bool {
        self.permit
    }

    /// Whether the access goes through the key (plaintext). Only ever true
    /// for permitted access.
    pub fn apply_key(&self) -> bool {
        self.apply_key
    }

    /// Whether the decision must be logged: the rule has `audit`, or learn
    /// mode turned a deny into a permit, or no rule matched, or the request
    /// was malformed.
    pub fn audit(&self) -> bool {
        self.audit
    }

    /// Learn mode: the policy would have denied this, but permitted it.
    pub fn would_deny(&self) -> bool {
        self.would_deny
    }

    /// Permitted only because the matching deny rule has `browsing` and the
    /// action is a browse action (directory listing, attributes).
    pub fn browsing(&self) -> bool {
        self.browsing
    }

    /// How the decision was reached.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The order number of the matching rule, if one matched.
    pub fn matched_rule(&self) -> Option<u32> {
        match self.outcome {
            Outcome::Rule(n) => Some(n),
            _ => None,
        }
    }

    /// The key the key rules choose for the resource (whatever the
    /// verdict).
    pub fn key(&self) -> KeyChoice {
        self.key
    }

    /// CTE's match code.
    pub fn code(&self) -> &MatchCode {
        &self.code
    }

    /// The [`CompiledPolicy::serial`] of the policy that decided.
    pub fn policy_serial(&self) -> u64 {
        self.policy_serial
    }
}

impl CompiledPolicy {
    /// Decide one request: rules are tried in order number order and the
    /// first whose every component matches decides; if none matches, the
    /// request is denied (CTE's default). Learn mode turns denials into
    /// permits marked [`Decision::would_deny`].
    ///
    /// Allocation-free, lock-free and panic-free for every input.
    pub fn evaluate(&self, req: &Request<'_>) -> Decision {
        let mut code = MatchCode::new();
        if !is_normalized_absolute(req.path) || req.exe.is_some_and(|e| !is_normalized_absolute(e))
        {
            return Decision {
                permit: false,
                apply_key: false,
                audit: true,
                would_deny: false,
                browsing: false,
                outcome: Outcome::BadRequest,
                key: KeyChoice::Unmatched,
                code,
                policy_serial: self.serial,
            };
        }
        let key = self.select_key(req.path);
        for (i, rule) in self.rules.iter().enumerate() {
            match self.first_mismatch(rule, req) {
                Some(letter) => code.push(letter),
                None => {
                    code.push(CodeLetter::Match);
                    return self.apply_rule(i as u32 + 1, rule, req.action, key, code);
                }
            }
        }
        Decision {
            permit: self.learn_mode,
            apply_key: self.learn_mode,
            audit: true,
            would_deny: self.learn_mode,
            browsing: false,
            outcome: Outcome::NoMatch,
            key,
            code,
            policy_serial: self.serial,
        }
    }

    fn apply_rule(
        &self,
        order: u32,
        rule: &Rule,
        action: Action,
        key: KeyChoice,
        code: MatchCode,
    ) -> Decision {
        let mut d = Decision {
            permit: rule.permit,
            apply_key: rule.permit && rule.apply_key,
            audit: rule.audit,
            would_deny: false,
            browsing: false,
            outcome: Outcome::Rule(order),
            key,
            code,
            policy_serial: self.serial,
        };
        if !rule.permit {
            if rule.browsing && ActionSet::BROWSE.contains(action) {
                d.permit = true;
                d.browsing = true;
            } else if self.learn_mode {
                d.permit = true;
                d.apply_key = rule.apply_key;
                d.would_deny = true;
                d.audit = true;
            }
        }
        d
    }

    /// The first component of `rule` that does not match, in the order
    /// resource, user, process, action, time.
    fn first_mismatch(&self, rule: &Rule, req: &Request<'_>) -> Option<CodeLetter> {
        if let Some(r) = rule.resource
            && !component(self.resource_in_set(r.index, req.path), r)
        {
            return Some(CodeLetter::Resource);
        }
        if let Some(u) = rule.user {
            let in_set = || {
                self.user_sets
                    .get(u.index)
                    .is_some_and(|set| set.iter().any(|e| user_matches(e, req)))
            };
            let matches = if req.authenticated || !rule.authenticated_only {
                component(in_set(), u)
            } else if rule.permit {
                // An unauthenticated process never gains access through a
                // user-set component, included or excluded.
                false
            } else if u.exclude {
                // ...nor escapes a deny through one: "deny everyone but
                // the set" denies it (it is not known to be in the set).
                true
            } else {
                // "deny the set": its claimed uid/groups suffice.
                in_set()
            };
            if !matches {
                return Some(CodeLetter::User);
            }
        }
        if let Some(p) = rule.process {
            let in_set = self
                .process_sets
                .get(p.index)
                .is_some_and(|set| set.iter().any(|e| process_matches(e, req)));
            if !component(in_set, p) {
                return Some(CodeLetter::Process);
            }
        }
        if !rule.actions.contains(req.action) {
            return Some(CodeLetter::Action);
        }
        if let Some(w) = rule.when
            && !w.contains(req.now)
        {
            return Some(CodeLetter::Time);
        }
        None
    }

    fn resource_in_set(&self, index: usize, path: &[u8]) -> bool {
        self.resource_sets
            .get(index)
            .is_some_and(|set| set.iter().any(|e| resource_matches(e, path)))
    }

    /// The key for a resource: the first key rule whose resource set
    /// contains it.
    fn select_key(&self, path: &[u8]) -> KeyChoice {
        self.select_rule(path).0
    }

    /// The first key rule's current key and transformation key.
    fn select_rule(&self, path: &[u8]) -> (KeyChoice, Option<KeyChoice>) {
        if self.key_rules.is_empty() {
            return (KeyChoice::Default, None);
        }
        for k in self.key_rules.iter() {
            let covered = match k.resource {
                None => true,
                Some(i) => self.resource_in_set(i, path),
            };
            if covered {
                return (k.key, k.transform);
            }
        }
        (KeyChoice::Unmatched, None)
    }

    /// The key rule for a resource: its current key and, while a data
    /// transformation rule pairs with it, the transformation key. Files
    /// in either key are read; new contents use the transformation key.
    pub fn key_rule_for(&self, path: &[u8]) -> (KeyChoice, Option<KeyChoice>) {
        if !is_normalized_absolute(path) {
            return (KeyChoice::Unmatched, None);
        }
        self.select_rule(path)
    }

    /// Whether any key rule has a data transformation rule.
    pub fn transforms(&self) -> bool {
        self.key_rules.iter().any(|k| k.transform.is_some())
    }

    /// The key the key rules choose for the resource `path` (relative to
    /// the GuardPoint, written absolute): what its contents must be
    /// encrypted with, whoever asks. [`KeyChoice::Unmatched`] for a path
    /// that is not normalized.
    pub fn key_for(&self, path: &[u8]) -> KeyChoice {
        if !is_normalized_absolute(path) {
            return KeyChoice::Unmatched;
        }
        self.select_key(path)
    }

    /// Whether the key rules treat `to` exactly as they treat `from`, so
    /// that renaming or linking the object at `from` to `to` leaves its
    /// bytes under a key rule that describes them: the same key for the
    /// object itself and, for a directory (`dir`), for every path below it.
    ///
    /// Conservative for directories: a resource entry whose directory lies
    /// strictly below `from` or `to` singles out paths by their place in
    /// the tree, so such a move is refused unless `from == to`. The caller
    /// refuses a move this answers `false` for with `EXDEV`, so tools copy
    /// the data (re-encrypting it under the destination's key).
    pub fn same_key_rules(&self, from: &[u8], to: &[u8], dir: bool) -> bool {
        if self.key_rule_for(from) != self.key_rule_for(to) {
            return false;
        }
        if !dir || from == to {
            return true;
        }
        self.key_rules
            .iter()
            .filter_map(|k| k.resource)
            .filter_map(|i| self.resource_sets.get(i))
            .flat_map(|set| set.iter())
            .all(|e| below(e, from) == below(e, to))
    }

    /// The name to print for a key choice: the key name, `clear_key`,
    /// `default`, or empty when no key rule covers the resource.
    pub fn key_label(&self, key: KeyChoice) -> &str {
        match key {
            KeyChoice::Default => "default",
            KeyChoice::Clear => crate::document::CLEAR_KEY,
            KeyChoice::Named(id) => self.key_names.get(id.index()).map_or("?", |k| &**k),
            KeyChoice::Unmatched => "",
        }
    }

    /// What this policy can possibly decide for `action`, over every
    /// request: a conservative summary for choosing a GuardPoint's caching
    /// strategy (e.g. the kernel page cache may be shared only when no
    /// permitted reader can get ciphertext).
    pub fn possible_outcomes(&self, action: Action) -> PossibleOutcomes {
        let mut out = PossibleOutcomes::default();
        for rule in self.rules.iter() {
            if !rule.actions.contains(action) {
                continue;
            }
            if rule.permit {
                if rule.apply_key {
                    out.plaintext = true;
                } else {
                    out.raw = true;
                }
            } else if rule.browsing && ActionSet::BROWSE.contains(action) {
                out.raw = true;
            } else if self.learn_mode {
                out.plaintext |= rule.apply_key;
                out.raw |= !rule.apply_key;
            } else {
                out.deny = true;
            }
            let unconditional = rule.resource.is_none()
                && rule.user.is_none()
                && rule.process.is_none()
                && rule.when.is_none();
            if unconditional {
                return out;
            }
        }
        if self.learn_mode {
            out.plaintext = true;
        } else {
            out.deny = true;
        }
        out
    }
}

/// The kinds of decision a policy can make for one action (see
/// [`CompiledPolicy::possible_outcomes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PossibleOutcomes {
    /// Some request may be permitted with the key (plaintext).
    pub plaintext: bool,
    /// Some request may be permitted without the key (raw lower bytes).
    pub raw: bool,
    /// Some request may be denied.
    pub deny: bool,
}

/// How a resource entry matches the paths strictly below a directory
/// `x`, in terms that do not depend on where `x` is (see
/// [`CompiledPolicy::same_key_rules`]).
#[derive(Debug, PartialEq, Eq)]
enum Below<'a> {
    /// Nothing below `x` matches.
    Nothing,
    /// `x` is the entry's directory (not recursive): its children match
    /// by name, deeper paths do not.
    Children,
    /// `x` is within the entry's recursive directory: every path below
    /// matches by name.
    All,
    /// The entry's directory lies strictly below `x`: which paths match
    /// depends on `x` itself.
    Placed(&'a [u8]),
    /// `x` is within the entry's recursive directory but not inside a
    /// directory of the entry's name: paths below match by their own
    /// names (location-independent).
    ByName,
}

/// Whether a component of `path` strictly below `dir` (the last one
/// included) is `name`.
fn inside_named(path: &[u8], dir: &[u8], name: &[u8]) -> bool {
    let rel = if dir == b"/" {
        path
    } else {
        &path[dir.len().min(path.len())..]
    };
    rel.split(|&b| b == b'/').any(|c| c == name)
}

fn below<'a>(e: &ResourceC, x: &'a [u8]) -> Below<'a> {
    if is_within(x, &e.directory) {
        if let Some(n) = &e.within_named {
            if inside_named(x, &e.directory, n) {
                Below::All
            } else {
                Below::ByName
            }
        } else if e.recursive {
            Below::All
        } else if x == &*e.directory {
            Below::Children
        } else {
            Below::Nothing
        }
    } else if is_within(&e.directory, x) {
        Below::Placed(x)
    } else {
        Below::Nothing
    }
}

/// Apply a rule's exclude flag to set membership.
fn component(in_set: bool, r: SetRef) -> bool {
    in_set != r.exclude
}

fn resource_matches(e: &ResourceC, path: &[u8]) -> bool {
    match split_parent(path) {
        // The resource directory itself (when the entry covers all its
        // files): directory-level operations on it.
        _ if e.match_all && path == &*e.directory => true,
        None => false,
        Some((parent, name)) => {
            let dir_ok = if e.recursive {
                is_within(parent, &e.directory)
            } else {
                parent == &*e.directory
            };
            dir_ok
                && (e.match_all || glob_match(&e.pattern, name))
                && e.within_named
                    .as_deref()
                    .is_none_or(|n| inside_named(parent, &e.directory, n))
        }
    }
}

fn user_matches(e: &UserC, req: &Request<'_>) -> bool {
    e.uid.is_none_or(|uid| uid == req.uid)
        && e.gid
            .is_none_or(|gid| gid == req.gid || req.groups.contains(&gid))
        && e.uname.as_deref().is_none_or(|n| req.user_name == Some(n))
        && e.gname
            .as_deref()
            .is_none_or(|g| req.group_names.contains(&g))
}

fn process_matches(e: &ProcessC, req: &Request<'_>) -> bool {
    let path_ok = if e.directory.is_none() && e.pattern.is_none() {
        true
    } else {
        match req.exe.and_then(split_parent) {
            None => false,
            Some((dir, name)) => {
                e.directory.as_deref().is_none_or(|d| d == dir)
                    && e.pattern.as_deref().is_none_or(|p| glob_match(p, name))
            }
        }
    };
    path_ok
        && e.signature
            .as_ref()
            .is_none_or(|sig| req.exe_sha256 == Some(sig))
}
