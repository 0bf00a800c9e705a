//! Typed errors: one variant per class of malformed input.
//!
//! Every policy error names where it is (`at`: the policy, a security rule
//! by order number and index, a key rule, a set by id and index, an entry of
//! a set), which field, and why. Host-settings errors carry the line number.

use std::fmt;

/// The three kinds of sets a policy defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetKind {
    /// `resource_sets`.
    Resource,
    /// `user_sets`.
    User,
    /// `process_sets`.
    Process,
}

impl fmt::Display for SetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SetKind::Resource => "resource set",
            SetKind::User => "user set",
            SetKind::Process => "process set",
        })
    }
}

/// Why a policy document was rejected. Nothing of a rejected policy is
/// used: parsing and compilation are all-or-nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is not JSON (or nests too deeply).
    #[error("policy is not valid JSON: {message}")]
    Syntax {
        /// 1-based line of the fault.
        line: usize,
        /// 1-based column of the fault.
        column: usize,
        /// What the JSON parser said.
        message: String,
    },
    /// A field holds the wrong JSON type.
    #[error("{at}: field `{field}` must be {expected}, found {found}")]
    WrongType {
        /// Where.
        at: String,
        /// The field (`(document)` for the top level).
        field: String,
        /// The type wanted.
        expected: &'static str,
        /// The type found.
        found: &'static str,
    },
    /// A field this format does not know (typos are not silently ignored).
    #[error("{at}: unknown field `{field}`")]
    UnknownField {
        /// Where.
        at: String,
        /// The field.
        field: String,
    },
    /// The same field twice in one object.
    #[error("{at}: field `{field}` appears more than once")]
    DuplicateField {
        /// Where.
        at: String,
        /// The field.
        field: String,
    },
    /// A required field is absent.
    #[error("{at}: missing required field `{field}`")]
    MissingField {
        /// Where.
        at: String,
        /// The field.
        field: &'static str,
    },
    /// A string or list that must not be empty is empty.
    #[error("{at}: field `{field}` must not be empty")]
    EmptyValue {
        /// Where.
        at: String,
        /// The field.
        field: &'static str,
    },
    /// A name that ends up in audit lines contains characters that would
    /// break or forge them.
    #[error("{at}: `{field}` value {value:?} is not allowed: {reason}")]
    InvalidName {
        /// Where.
        at: String,
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// A number outside its range (order numbers from 1, ids as `u32`).
    #[error("{at}: field `{field}` value {value} is out of range ({range})")]
    OutOfRange {
        /// Where.
        at: String,
        /// The field.
        field: &'static str,
        /// The value as written.
        value: String,
        /// The accepted range.
        range: &'static str,
    },
    /// A `policy_type` other than `Standard`.
    #[error("policy_type {value:?} is not supported (only \"Standard\")")]
    UnsupportedPolicyType {
        /// The value.
        value: String,
    },
    /// A key rule's `key_type` other than `name`.
    #[error("{at}: key_type {value:?} is not supported (only \"name\")")]
    UnsupportedKeyType {
        /// Where.
        at: String,
        /// The value.
        value: String,
    },
    /// An action name that is neither coarse nor fine.
    #[error("{at}: unknown action {value:?}")]
    UnknownAction {
        /// Where.
        at: String,
        /// The value.
        value: String,
    },
    /// An effect other than `permit`, `deny`, `applykey`, `audit`.
    #[error("{at}: unknown effect {value:?} (expected permit, deny, applykey, audit)")]
    UnknownEffect {
        /// Where.
        at: String,
        /// The value.
        value: String,
    },
    /// A day name other than `mon` ... `sun`.
    #[error("{at}: unknown day {value:?} in `when.days` (expected mon ... sun)")]
    UnknownDay {
        /// Where.
        at: String,
        /// The value.
        value: String,
    },
    /// A `when.start`/`when.end` that is not `HH:MM`.
    #[error("{at}: `when.{field}` value {value:?} is not a time HH:MM (00:00 to 24:00)")]
    InvalidTime {
        /// Where.
        at: String,
        /// `start` or `end`.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// A `when` window that is inconsistent.
    #[error("{at}: invalid `when`: {reason}")]
    InvalidTimeWindow {
        /// Where.
        at: String,
        /// Why.
        reason: &'static str,
    },
    /// An effect with neither `permit` nor `deny`.
    #[error("{at}: effect must contain `permit` or `deny`")]
    MissingVerdict {
        /// Where.
        at: String,
    },
    /// An effect with both `permit` and `deny`.
    #[error("{at}: effect has both `permit` and `deny`")]
    ConflictingEffects {
        /// Where.
        at: String,
    },
    /// `applykey` with neither `permit` nor `deny`.
    #[error("{at}: `applykey` needs `permit` (or `deny`, where it only matters in learn mode)")]
    ApplyKeyWithoutPermit {
        /// Where.
        at: String,
    },
    /// In learn mode every deny rule must also carry `applykey`, so that
    /// what learn mode lets through is never written in mixed states.
    #[error("{at}: the policy is in learn mode, so a `deny` rule must also have `applykey`")]
    LearnModeDenyWithoutApplyKey {
        /// Where.
        at: String,
    },
    /// Two rules with the same order number.
    #[error("{at}: order_number {order_number} is already used by {first}")]
    DuplicateOrderNumber {
        /// Where (the second rule).
        at: String,
        /// The number.
        order_number: u32,
        /// The first rule with it.
        first: String,
    },
    /// Order numbers that do not run 1, 2, ..., n.
    #[error("{what} order numbers must run from 1 to {count} without gaps; {missing} is missing")]
    OrderNumberGap {
        /// `security rule` or `key rule`.
        what: &'static str,
        /// How many rules there are.
        count: usize,
        /// The first missing number.
        missing: u32,
    },
    /// Some key rules have an `order_number` and some do not.
    #[error("{at}: either every key rule has an order_number or none does")]
    MixedKeyRuleOrder {
        /// Where.
        at: String,
    },
    /// More rules than the evaluator's fixed capacity.
    #[error("the policy has {count} {what}s; at most {max} are supported")]
    TooManyRules {
        /// `security rule` or `key rule`.
        what: &'static str,
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A rule names a set the document does not define.
    #[error("{at}: {kind} {id:?} is not defined in this policy")]
    UnknownSetId {
        /// Where.
        at: String,
        /// Which kind of set.
        kind: SetKind,
        /// The id.
        id: String,
    },
    /// Two sets of one kind share an id or name.
    #[error("{at}: {kind} id or name {id:?} is already used by {first}")]
    DuplicateSetId {
        /// Where (the second set).
        at: String,
        /// Which kind of set.
        kind: SetKind,
        /// The id or name.
        id: String,
        /// The first set with it.
        first: String,
    },
    /// An `exclude_*_set` flag on a rule that names no such set.
    #[error("{at}: `{field}` is set but the rule names no set to exclude")]
    ExcludeWithoutSet {
        /// Where.
        at: String,
        /// The flag.
        field: &'static str,
    },
    /// A set entry with none of its identifying fields.
    #[error("{at}: entry has none of {fields}")]
    EmptyEntry {
        /// Where.
        at: String,
        /// The fields, one of which is needed.
        fields: &'static str,
    },
    /// A path that must be absolute is not.
    #[error("{at}: `{field}` {path:?} is not an absolute path")]
    RelativePath {
        /// Where.
        at: String,
        /// The field.
        field: &'static str,
        /// The value.
        path: String,
    },
    /// An absolute path that is not normalized.
    #[error("{at}: `{field}` {path:?} is not a normalized path: {reason}")]
    InvalidPath {
        /// Where.
        at: String,
        /// The field.
        field: &'static str,
        /// The value.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// A `file` pattern that cannot match file names.
    #[error("{at}: `{field}` pattern {pattern:?} is invalid: {reason}")]
    InvalidPattern {
        /// Where.
        at: String,
        /// The field.
        field: &'static str,
        /// The value.
        pattern: String,
        /// Why.
        reason: &'static str,
    },
    /// A `signature` that is not 64 hex digits.
    #[error("{at}: signature {value:?} is not a SHA-256 digest (64 hex digits)")]
    InvalidSignature {
        /// Where.
        at: String,
        /// The value.
        value: String,
    },
    /// A data transformation rule whose resource set no key rule has, so
    /// it has no current key to transform from.
    #[error(
        "{at}: no key rule has resource set {resource_set}: a transformation key needs a key rule with the same resource set, whose key_id is the current key"
    )]
    TransformWithoutKeyRule {
        /// Where.
        at: String,
        /// The resource set id (`(none)`: the catch-all).
        resource_set: String,
    },
    /// A data transformation rule naming the key rule's own current key.
    #[error(
        "{at}: the transformation key {key} is the current key of its key rule; a transformation needs another key (or clear_key to decrypt)"
    )]
    TransformToSameKey {
        /// Where.
        at: String,
        /// The key.
        key: String,
    },
    /// Two data transformation rules for the same resource set.
    #[error("{at}: a second data transformation rule for the resource set of {first}")]
    DuplicateTransformRule {
        /// Where.
        at: String,
        /// The first rule for that resource set.
        first: String,
    },
    /// A key rule after one that matches every resource.
    #[error("{at}: unreachable, {catch_all} has no resource set and matches every resource")]
    UnreachableKeyRule {
        /// Where.
        at: String,
        /// The catch-all rule before it.
        catch_all: String,
    },
}

/// Why host settings were rejected. Lines are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostSettingsError {
    /// A line that is not `|keyword|PATH`.
    #[error("line {line}: expected `|keyword|PATH`, found {text:?}")]
    Malformed {
        /// The line.
        line: usize,
        /// Its text.
        text: String,
    },
    /// A keyword GuardFS does not know.
    #[error(
        "line {line}: unknown keyword `|{keyword}|` (expected authenticator, trust, path_no_trust, protect, no_applykey)"
    )]
    UnknownKeyword {
        /// The line.
        line: usize,
        /// The keyword.
        keyword: String,
    },
    /// A `|no_applykey|` line whose value is not a known condition.
    #[error("line {line}: `|no_applykey|{value}`: expected `traced` or `ld_env`")]
    UnknownCondition {
        /// The line.
        line: usize,
        /// The value.
        value: String,
    },
    /// A keyword with nothing after it.
    #[error("line {line}: `|{keyword}|` needs a path")]
    MissingPath {
        /// The line.
        line: usize,
        /// The keyword.
        keyword: &'static str,
    },
    /// A path that is not absolute.
    #[error("line {line}: {path:?} is not an absolute path")]
    RelativePath {
        /// The line.
        line: usize,
        /// The path.
        path: String,
    },
    /// An absolute path that is not normalized.
    #[error("line {line}: {path:?} is not a normalized path: {reason}")]
    InvalidPath {
        /// The line.
        line: usize,
        /// The path.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// `*` with a keyword other than `trust`.
    #[error("line {line}: `*` is only allowed with `|trust|`, not `|{keyword}|`")]
    WildcardNotAllowed {
        /// The line.
        line: usize,
        /// The keyword.
        keyword: &'static str,
    },
}
