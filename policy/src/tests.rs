//! Parsing, compilation and evaluation tests across the crate.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::*;

const EXAMPLES: [(&str, &str); 3] = [
    ("database", include_str!("../examples/database.json")),
    ("learn-mode", include_str!("../examples/learn-mode.json")),
    ("shared-tree", include_str!("../examples/shared-tree.json")),
];

const MONDAY_NOON: TimeOfWeek = match TimeOfWeek::new(Weekday::Mon, 12, 0) {
    Some(t) => t,
    None => panic!(),
};

fn at(day: Weekday, hour: u8, minute: u8) -> TimeOfWeek {
    TimeOfWeek::new(day, hour, minute).unwrap()
}

/// An authenticated `cat` run by uid/gid 1000 on Monday noon.
fn req(path: &'static str, action: Action) -> Request<'static> {
    let mut r = Request::new(path.as_bytes(), action, 1000, 1000, MONDAY_NOON);
    r.exe = Some(b"/usr/bin/cat");
    r.authenticated = true;
    r
}

fn compile(v: &Value) -> CompiledPolicy {
    match CompiledPolicy::from_json(&v.to_string()) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

// ---------------------------------------------------------------------------
// Parsing and validation: every malformed-input class has its own error.

fn base() -> Value {
    json!({
        "name": "base",
        "security_rules": [
            { "order_number": 1, "resource_set_id": "rs", "user_set_id": "us",
              "process_set_id": "ps", "action": "read", "effect": "permit,applykey" },
            { "order_number": 2, "action": "all_ops", "effect": "deny" }
        ],
        "key_rules": [ { "resource_set_id": "rs", "key_id": "k1" } ],
        "resource_sets": [ { "id": "rs", "resources": [
            { "directory": "/d", "file": "*", "include_subfolders": true } ] } ],
        "user_sets": [ { "id": "us", "users": [ { "uid": 0 } ] } ],
        "process_sets": [ { "id": "ps", "processes": [ { "directory": "/usr/bin", "file": "cat" } ] } ]
    })
}

/// An edit of the base policy.
type Edit = fn(&mut Value);

fn reject(f: impl FnOnce(&mut Value)) -> PolicyError {
    let mut v = base();
    f(&mut v);
    match CompiledPolicy::from_json(&v.to_string()) {
        Ok(_) => panic!("accepted: {v}"),
        Err(e) => e,
    }
}

fn reject_text(text: &str) -> PolicyError {
    match CompiledPolicy::from_json(text) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e,
    }
}

#[test]
fn base_policy_is_valid() {
    let p = compile(&base());
    assert_eq!(p.name(), "base");
    assert_eq!(p.security_rule_count(), 2);
    assert!(!p.learn_mode());
    assert_eq!(p.key_names().collect::<Vec<_>>(), ["k1"]);
}

#[test]
fn syntax_error() {
    let e = reject_text("{ \"name\": \"x\", ");
    assert!(matches!(e, PolicyError::Syntax { line: 1, .. }), "{e:?}");
    let e = reject_text("[]");
    assert!(
        matches!(e, PolicyError::WrongType { ref at, .. } if at == "policy"),
        "{e:?}"
    );
}

#[test]
fn wrong_type() {
    let e = reject(|v| v["learn_mode"] = json!("yes"));
    assert!(
        matches!(&e, PolicyError::WrongType { field, expected: "a boolean", found: "a string", .. } if field == "learn_mode"),
        "{e:?}"
    );
    let e = reject(|v| v["security_rules"][1]["effect"] = json!(["deny"]));
    assert!(
        matches!(&e, PolicyError::WrongType { at, field, .. }
        if at == "security rule 2 (security_rules[1])" && field == "effect"),
        "{e:?}"
    );
    let e = reject(|v| v["security_rules"] = json!({}));
    assert!(matches!(e, PolicyError::WrongType { .. }), "{e:?}");
    let e = reject(|v| v["security_rules"][0]["action"] = json!(["read", 7]));
    assert!(matches!(e, PolicyError::WrongType { .. }), "{e:?}");
    let e = reject(|v| v["user_sets"][0]["users"][0]["uid"] = json!("0"));
    assert!(matches!(e, PolicyError::WrongType { .. }), "{e:?}");
}

#[test]
fn unknown_fields_are_rejected_everywhere() {
    let places: [Edit; 6] = [
        |v| v["nmae"] = json!("typo"),
        |v| v["security_rules"][1]["partial_match"] = json!(true),
        |v| v["key_rules"][0]["current_key"] = json!("x"),
        |v| v["resource_sets"][0]["resources"][0]["hdfs"] = json!(false),
        |v| v["user_sets"][0]["users"][0]["os_domain"] = json!(""),
        |v| v["process_sets"][0]["processes"][0]["resource_set_id"] = json!("rs"),
    ];
    for f in places {
        let e = reject(f);
        assert!(matches!(e, PolicyError::UnknownField { .. }), "{e:?}");
    }
    let e = reject(|v| v["security_rules"][1]["partial_match"] = json!(true));
    assert_eq!(
        e.to_string(),
        "security rule 2 (security_rules[1]): unknown field `partial_match`"
    );
    let e = reject(|v| v["security_rules"][0]["when"] = json!({"days": ["mon"], "hours": 3}));
    assert!(matches!(e, PolicyError::UnknownField { field, .. } if field == "hours"));
}

#[test]
fn duplicate_field() {
    let text = r#"{"name": "p", "security_rules": [
        {"order_number": 1, "action": "read", "effect": "deny", "effect": "permit"}]}"#;
    let e = reject_text(text);
    assert!(
        matches!(&e, PolicyError::DuplicateField { field, .. } if field == "effect"),
        "{e:?}"
    );
    // learn_mode and its CipherTrust Manager alias must agree.
    let e = reject(|v| {
        v["learn_mode"] = json!(true);
        v["never_deny"] = json!(false);
    });
    assert!(matches!(e, PolicyError::DuplicateField { .. }), "{e:?}");
}

#[test]
fn missing_field() {
    let cases: [(Edit, &str); 7] = [
        (|v| drop(v.as_object_mut().unwrap().remove("name")), "name"),
        (
            |v| {
                drop(
                    v["security_rules"][0]
                        .as_object_mut()
                        .unwrap()
                        .remove("order_number"),
                )
            },
            "order_number",
        ),
        (
            |v| {
                drop(
                    v["security_rules"][1]
                        .as_object_mut()
                        .unwrap()
                        .remove("action"),
                )
            },
            "action",
        ),
        (
            |v| {
                drop(
                    v["security_rules"][1]
                        .as_object_mut()
                        .unwrap()
                        .remove("effect"),
                )
            },
            "effect",
        ),
        (
            |v| drop(v["key_rules"][0].as_object_mut().unwrap().remove("key_id")),
            "key_id",
        ),
        (
            |v| {
                drop(
                    v["resource_sets"][0]["resources"][0]
                        .as_object_mut()
                        .unwrap()
                        .remove("directory"),
                )
            },
            "directory",
        ),
        (
            |v| drop(v["user_sets"][0].as_object_mut().unwrap().remove("id")),
            "id",
        ),
    ];
    for (f, want) in cases {
        let e = reject(f);
        assert!(
            matches!(e, PolicyError::MissingField { field, .. } if field == want),
            "{want}: {e:?}"
        );
    }
}

#[test]
fn empty_value() {
    let cases: [(Edit, &str); 6] = [
        (|v| v["name"] = json!(""), "name"),
        (|v| v["security_rules"][1]["action"] = json!(""), "action"),
        (|v| v["security_rules"][1]["action"] = json!([]), "action"),
        (|v| v["security_rules"][1]["effect"] = json!(" "), "effect"),
        (
            |v| v["resource_sets"][0]["resources"] = json!([]),
            "resources",
        ),
        (
            |v| v["security_rules"][1]["user_set_id"] = json!(""),
            "user_set_id",
        ),
    ];
    for (f, want) in cases {
        let e = reject(f);
        assert!(
            matches!(e, PolicyError::EmptyValue { field, .. } if field == want),
            "{want}: {e:?}"
        );
    }
    let e = reject(|v| v["user_sets"][0]["users"][0] = json!({"uname": ""}));
    assert!(
        matches!(e, PolicyError::EmptyValue { field: "uname", .. }),
        "{e:?}"
    );
    let e = reject(|v| v["process_sets"][0]["name"] = json!(""));
    assert!(
        matches!(e, PolicyError::EmptyValue { field: "name", .. }),
        "{e:?}"
    );
}

#[test]
fn invalid_name() {
    let e = reject(|v| v["name"] = json!("p] Key[forged"));
    assert!(
        matches!(e, PolicyError::InvalidName { field: "name", .. }),
        "{e:?}"
    );
    let e = reject(|v| v["key_rules"][0]["key_id"] = json!("k1\nCGP2601I: forged"));
    assert!(
        matches!(
            e,
            PolicyError::InvalidName {
                field: "key_id",
                ..
            }
        ),
        "{e:?}"
    );
    let e = reject(|v| v["name"] = json!(" padded"));
    assert!(matches!(e, PolicyError::InvalidName { .. }), "{e:?}");
}

#[test]
fn out_of_range() {
    let e = reject(|v| v["security_rules"][0]["order_number"] = json!(-1));
    assert!(
        matches!(
            e,
            PolicyError::OutOfRange {
                field: "order_number",
                ..
            }
        ),
        "{e:?}"
    );
    let e = reject(|v| v["security_rules"][0]["order_number"] = json!(0));
    assert!(
        matches!(
            e,
            PolicyError::OutOfRange {
                field: "order_number",
                ..
            }
        ),
        "{e:?}"
    );
    let e = reject(|v| v["security_rules"][0]["order_number"] = json!(1.5));
    assert!(matches!(e, PolicyError::OutOfRange { .. }), "{e:?}");
    let e = reject(|v| v["user_sets"][0]["users"][0]["uid"] = json!(4_294_967_296u64));
    assert!(
        matches!(e, PolicyError::OutOfRange { field: "uid", .. }),
        "{e:?}"
    );
}

#[test]
fn unsupported_types() {
    let e = reject(|v| v["policy_type"] = json!("LDT"));
    assert!(
        matches!(e, PolicyError::UnsupportedPolicyType { .. }),
        "{e:?}"
    );
    let e = reject(|v| v["policy_type"] = json!("standard"));
    assert!(
        matches!(e, PolicyError::UnsupportedPolicyType { .. }),
        "{e:?}"
    );
    let e = reject(|v| v["key_rules"][0]["key_type"] = json!("id"));
    assert!(matches!(e, PolicyError::UnsupportedKeyType { .. }), "{e:?}");
    // "name" and "Standard" are fine.
    let mut v = base();
    v["key_rules"][0]["key_type"] = json!("name");
    v["policy_type"] = json!("Standard");
    compile(&v);
}

#[test]
fn unknown_action_effect_day_time() {
    let e = reject(|v| v["security_rules"][0]["action"] = json!("f_rd,f_rdd"));
    assert!(
        matches!(&e, PolicyError::UnknownAction { value, at }
        if value == "f_rdd" && at == "security rule 1 (security_rules[0])"),
        "{e:?}"
    );
    let e = reject(|v| v["security_rules"][0]["action"] = json!("d_rd_sec"));
    assert!(matches!(e, PolicyError::UnknownAction { .. }), "{e:?}");
    let e = reject(|v| v["security_rules"][0]["effect"] = json!("permit,encrypt"));
    assert!(
        matches!(&e, PolicyError::UnknownEffect { value, .. } if value == "encrypt"),
        "{e:?}"
    );
    let e = reject(|v| v["security_rules"][0]["effect"] = json!("Permit"));
    assert!(matches!(e, PolicyError::UnknownEffect { .. }), "{e:?}");
    let e = reject(|v| v["security_rules"][0]["when"] = json!({"days": ["monday"]}));
    assert!(matches!(e, PolicyError::UnknownDay { .. }), "{e:?}");
    let e = reject(|v| v["security_rules"][0]["when"] = json!({"start": "8:00", "end": "17:00"}));
    assert!(
        matches!(e, PolicyError::InvalidTime { field: "start", .. }),
        "{e:?}"
    );
}

#[test]
fn invalid_time_window() {
    for w in [
        json!({}),
        json!({"days": []}),
        json!({"start": "08:00"}),
        json!({"start": "08:00", "end": "08:00"}),
        json!({"start": "24:00", "end": "08:00"}),
    ] {
        let e = reject(|v| v["security_rules"][0]["when"] = w.clone());
        assert!(
            matches!(e, PolicyError::InvalidTimeWindow { .. }),
            "{w}: {e:?}"
        );
    }
}

#[test]
fn effect_combinations() {
    let e = reject(|v| v["security_rules"][1]["effect"] = json!("audit"));
    assert!(matches!(e, PolicyError::MissingVerdict { .. }), "{e:?}");
    let e = reject(|v| v["security_rules"][1]["effect"] = json!("permit,deny"));
    assert!(matches!(e, PolicyError::ConflictingEffects { .. }), "{e:?}");
    let e = reject(|v| v["security_rules"][1]["effect"] = json!("applykey,audit"));
    assert!(
        matches!(e, PolicyError::ApplyKeyWithoutPermit { .. }),
        "{e:?}"
    );
    let e = reject(|v| v["learn_mode"] = json!(true));
    assert!(
        matches!(&e, PolicyError::LearnModeDenyWithoutApplyKey { at } if at == "security rule 2 (security_rules[1])"),
        "{e:?}"
    );
    // The manager's alias for learn mode behaves the same.
    let e = reject(|v| v["never_deny"] = json!(true));
    assert!(
        matches!(e, PolicyError::LearnModeDenyWithoutApplyKey { .. }),
        "{e:?}"
    );
    // deny,applykey is accepted with or without learn mode (CTE: no effect
    // outside learn mode); apply_key spelled with an underscore too.
    let mut v = base();
    v["security_rules"][1]["effect"] = json!("deny, apply_key");
    compile(&v);
    v["learn_mode"] = json!(true);
    compile(&v);
}

#[test]
fn order_numbers() {
    let e = reject(|v| v["security_rules"][1]["order_number"] = json!(1));
    assert!(
        matches!(&e, PolicyError::DuplicateOrderNumber { order_number: 1, first, .. }
        if first == "security rule 1 (security_rules[0])"),
        "{e:?}"
    );
    let e = reject(|v| v["security_rules"][1]["order_number"] = json!(3));
    assert!(
        matches!(
            e,
            PolicyError::OrderNumberGap {
                missing: 2,
                count: 2,
                ..
            }
        ),
        "{e:?}"
    );
    let e = reject(|v| {
        v["key_rules"] = json!([
            { "order_number": 1, "resource_set_id": "rs", "key_id": "a" },
            { "key_id": "b" }
        ])
    });
    assert!(matches!(e, PolicyError::MixedKeyRuleOrder { .. }), "{e:?}");
    let e = reject(|v| {
        v["key_rules"] = json!([
            { "order_number": 1, "resource_set_id": "rs", "key_id": "a" },
            { "order_number": 1, "key_id": "b" }
        ])
    });
    assert!(
        matches!(e, PolicyError::DuplicateOrderNumber { .. }),
        "{e:?}"
    );
}

#[test]
fn too_many_rules() {
    let e = reject(|v| {
        let rules: Vec<Value> = (1..=MAX_SECURITY_RULES as u32 + 1)
            .map(|n| json!({"order_number": n, "action": "read", "effect": "permit"}))
            .collect();
        v["security_rules"] = Value::Array(rules);
    });
    assert!(
        matches!(
            e,
            PolicyError::TooManyRules {
                count: 257,
                max: 256,
                ..
            }
        ),
        "{e:?}"
    );
    // Exactly the maximum is fine.
    let mut v = base();
    let rules: Vec<Value> = (1..=MAX_SECURITY_RULES as u32)
        .map(|n| json!({"order_number": n, "action": "read", "effect": "permit"}))
        .collect();
    v["security_rules"] = Value::Array(rules);
    assert_eq!(compile(&v).security_rule_count(), MAX_SECURITY_RULES);
}

#[test]
fn set_references() {
    let cases: [(Edit, SetKind); 4] = [
        (
            |v| v["security_rules"][0]["resource_set_id"] = json!("nope"),
            SetKind::Resource,
        ),
        (
            |v| v["security_rules"][0]["user_set_id"] = json!("nope"),
            SetKind::User,
        ),
        (
            |v| v["security_rules"][0]["process_set_id"] = json!("nope"),
            SetKind::Process,
        ),
        (
            |v| v["key_rules"][0]["resource_set_id"] = json!("nope"),
            SetKind::Resource,
        ),
    ];
    for (f, want) in cases {
        let e = reject(f);
        assert!(
            matches!(&e, PolicyError::UnknownSetId { kind, id, .. } if *kind == want && id == "nope"),
            "{e:?}"
        );
    }
    let e = reject(|v| v["security_rules"][0]["user_set_id"] = json!("nope"));
    assert_eq!(
        e.to_string(),
        "security rule 1 (security_rules[0]): user set \"nope\" is not defined in this policy"
    );
    // A set may be referred to by its name as well as its id.
    let mut v = base();
    v["user_sets"][0]["name"] = json!("Administrators");
    v["security_rules"][0]["user_set_id"] = json!("Administrators");
    compile(&v);
    // Duplicate ids, or a name equal to another set's id.
    let e = reject(|v| {
        v["user_sets"] = json!([
            { "id": "us", "users": [ { "uid": 0 } ] },
            { "id": "us", "users": [ { "uid": 1 } ] }
        ])
    });
    assert!(
        matches!(
            e,
            PolicyError::DuplicateSetId {
                kind: SetKind::User,
                ..
            }
        ),
        "{e:?}"
    );
    let e = reject(|v| {
        v["process_sets"] = json!([
            { "id": "ps", "processes": [ { "file": "a" } ] },
            { "id": "other", "name": "ps", "processes": [ { "file": "b" } ] }
        ])
    });
    assert!(
        matches!(
            e,
            PolicyError::DuplicateSetId {
                kind: SetKind::Process,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn exclude_without_set() {
    let e = reject(|v| v["security_rules"][1]["exclude_resource_set"] = json!(true));
    assert!(
        matches!(
            e,
            PolicyError::ExcludeWithoutSet {
                field: "exclude_resource_set",
                ..
            }
        ),
        "{e:?}"
    );
    let e = reject(|v| v["security_rules"][1]["exclude_user_set"] = json!(true));
    assert!(
        matches!(
            e,
            PolicyError::ExcludeWithoutSet {
                field: "exclude_user_set",
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn empty_entries() {
    let e = reject(|v| v["user_sets"][0]["users"] = json!([{}]));
    assert!(matches!(e, PolicyError::EmptyEntry { .. }), "{e:?}");
    let e = reject(|v| v["process_sets"][0]["processes"] = json!([{}]));
    assert!(matches!(e, PolicyError::EmptyEntry { .. }), "{e:?}");
}

#[test]
fn paths_and_patterns() {
    let e = reject(|v| v["resource_sets"][0]["resources"][0]["directory"] = json!("data"));
    assert!(
        matches!(&e, PolicyError::RelativePath { field: "directory", at, .. }
        if at == "resource_sets[0] (\"rs\").resources[0]"),
        "{e:?}"
    );
    let e = reject(|v| v["process_sets"][0]["processes"][0]["directory"] = json!("bin"));
    assert!(matches!(e, PolicyError::RelativePath { .. }), "{e:?}");
    for bad in ["/d/../etc", "/d/", "//d", "/d/./x"] {
        let e = reject(|v| v["resource_sets"][0]["resources"][0]["directory"] = json!(bad));
        assert!(matches!(e, PolicyError::InvalidPath { .. }), "{bad}: {e:?}");
    }
    for bad in ["a/b", "..", "."] {
        let e = reject(|v| v["resource_sets"][0]["resources"][0]["file"] = json!(bad));
        assert!(
            matches!(e, PolicyError::InvalidPattern { field: "file", .. }),
            "{bad}: {e:?}"
        );
    }
    let e = reject(|v| v["process_sets"][0]["processes"][0]["file"] = json!("bin/cat"));
    assert!(matches!(e, PolicyError::InvalidPattern { .. }), "{e:?}");
}

#[test]
fn invalid_signature() {
    for bad in [
        "abc",
        &"g".repeat(64),
        &"a".repeat(63),
        &"a".repeat(65),
        "sha256:00",
    ] {
        let e = reject(|v| v["process_sets"][0]["processes"][0]["signature"] = json!(bad));
        assert!(
            matches!(e, PolicyError::InvalidSignature { .. }),
            "{bad}: {e:?}"
        );
    }
    let mut v = base();
    v["process_sets"][0]["processes"][0]["signature"] = json!("AB".repeat(32));
    compile(&v);
}

#[test]
fn unreachable_key_rule() {
    let e = reject(|v| {
        v["key_rules"] = json!([ { "key_id": "all" }, { "resource_set_id": "rs", "key_id": "k1" } ])
    });
    assert!(
        matches!(&e, PolicyError::UnreachableKeyRule { at, catch_all }
        if at == "key_rules[1]" && catch_all == "key_rules[0]"),
        "{e:?}"
    );
}

#[test]
fn rule_locations_use_order_numbers() {
    // Rules listed out of order are reported by order number and index.
    let e = reject(|v| {
        v["security_rules"] = json!([
            { "order_number": 2, "action": "read", "effect": "permit" },
            { "order_number": 1, "action": "read", "effect": "permit,deny" }
        ])
    });
    assert_eq!(
        e.to_string(),
        "security rule 1 (security_rules[1]): effect has both `permit` and `deny`"
    );
}

#[test]
fn examples_parse_and_compile() {
    for (name, text) in EXAMPLES {
        let doc = PolicyDocument::from_json(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        CompiledPolicy::compile(&doc).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn documents_round_trip_through_json() {
    for (name, text) in EXAMPLES {
        let doc = PolicyDocument::from_json(text).unwrap();
        let again = PolicyDocument::from_json(&doc.to_json().to_string()).unwrap();
        assert_eq!(doc, again, "{name}");
    }
}

#[test]
fn compiled_policy_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CompiledPolicy>();
    assert_send_sync::<Decision>();
    let p = Arc::new(CompiledPolicy::from_json(EXAMPLES[0].1).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let p = Arc::clone(&p);
            std::thread::spawn(move || p.evaluate(&req("/oradata/x.dbf", Action::FRd)))
        })
        .collect();
    let first = p.evaluate(&req("/oradata/x.dbf", Action::FRd));
    for t in threads {
        assert_eq!(t.join().unwrap(), first);
    }
}

// ---------------------------------------------------------------------------
// Evaluation.

/// One rule per mismatch letter, in the order U, P, R, A, T, then a match.
fn ladder() -> CompiledPolicy {
    compile(&json!({
        "name": "ladder",
        "security_rules": [
            { "order_number": 1, "user_set_id": "root", "action": "all_ops", "effect": "permit,applykey" },
            { "order_number": 2, "process_set_id": "tar", "action": "all_ops", "effect": "permit" },
            { "order_number": 3, "resource_set_id": "secret", "action": "all_ops", "effect": "deny" },
            { "order_number": 4, "action": "write", "effect": "deny,audit" },
            { "order_number": 5, "action": "read", "effect": "deny",
              "when": { "days": ["sat", "sun"] } },
            { "order_number": 6, "action": "read", "effect": "permit,applykey,audit" }
        ],
        "resource_sets": [ { "id": "secret", "resources": [ { "directory": "/secret", "include_subfolders": true } ] } ],
        "user_sets": [ { "id": "root", "users": [ { "uid": 0 } ] } ],
        "process_sets": [ { "id": "tar", "processes": [ { "directory": "/usr/bin", "file": "tar" } ] } ]
    }))
}

#[test]
fn match_code_for_each_mismatch() {
    let p = ladder();
    let d = p.evaluate(&req("/data/x", Action::FRd));
    assert_eq!(d.code().to_string(), "1U,2P,3R,4A,5T,6M");
    assert_eq!(d.matched_rule(), Some(6));
    assert_eq!(d.outcome(), Outcome::Rule(6));
    assert!(d.is_permit() && d.apply_key() && d.audit());
    assert_eq!(d.key(), KeyChoice::Default);
    assert_eq!(d.policy_serial(), p.serial());
    let letters: Vec<_> = d.code().iter().collect();
    assert_eq!(letters[0], (1, CodeLetter::User));
    assert_eq!(letters[5], (6, CodeLetter::Match));
    assert_eq!(d.code().get(6), None);

    // On a weekend rule 5 matches instead (deny, not audited).
    let mut r = req("/data/x", Action::FRd);
    r.now = at(Weekday::Sun, 3, 0);
    let d = p.evaluate(&r);
    assert_eq!(d.code().to_string(), "1U,2P,3R,4A,5M");
    assert_eq!(d.verdict(), Verdict::Deny);
    assert!(!d.apply_key() && !d.audit());

    // A write stops at rule 4; a write into /secret at rule 3.
    assert_eq!(
        p.evaluate(&req("/data/x", Action::FWr)).code().to_string(),
        "1U,2P,3R,4M"
    );
    assert_eq!(
        p.evaluate(&req("/secret/x", Action::FWr))
            .code()
            .to_string(),
        "1U,2P,3M"
    );

    // root (authenticated) matches rule 1; tar matches rule 2.
    let mut r = req("/data/x", Action::FRd);
    r.uid = 0;
    assert_eq!(p.evaluate(&r).code().to_string(), "1M");
    let mut r = req("/data/x", Action::FRd);
    r.exe = Some(b"/usr/bin/tar");
    let d = p.evaluate(&r);
    assert_eq!(d.code().to_string(), "1U,2M");
    assert!(d.is_permit() && !d.apply_key());
}

#[test]
fn no_match_is_denied_and_audited() {
    let p = ladder();
    let d = p.evaluate(&req("/data/x", Action::KeyOp));
    assert_eq!(d.code().to_string(), "1U,2P,3R,4A,5A,6A");
    assert_eq!(d.outcome(), Outcome::NoMatch);
    assert_eq!(d.matched_rule(), None);
    assert_eq!(d.verdict(), Verdict::Deny);
    assert!(d.audit() && !d.apply_key() && !d.would_deny());

    let empty = compile(&json!({ "name": "empty" }));
    let d = empty.evaluate(&req("/x", Action::FRd));
    assert!(!d.is_permit() && d.code().is_empty());
    assert_eq!(d.code().to_string(), "");
}

#[test]
fn rules_are_tried_in_order_number_order() {
    let p = compile(&json!({
        "name": "shuffled",
        "security_rules": [
            { "order_number": 3, "action": "read", "effect": "permit" },
            { "order_number": 1, "action": "write", "effect": "deny" },
            { "order_number": 2, "action": "f_rd", "effect": "deny" }
        ]
    }));
    let d = p.evaluate(&req("/x", Action::FRd));
    assert_eq!(d.code().to_string(), "1A,2M");
    assert!(!d.is_permit());
    let d = p.evaluate(&req("/x", Action::DRd));
    assert_eq!(d.code().to_string(), "1A,2A,3M");
    assert!(d.is_permit());
}

#[test]
fn coarse_actions_expand() {
    let p = compile(&json!({
        "name": "coarse",
        "security_rules": [
            { "order_number": 1, "action": "read", "effect": "permit" },
            { "order_number": 2, "action": ["f_wr", "f_wr_app"], "effect": "permit" },
            { "order_number": 3, "action": "f_cre,d_mkdir", "effect": "permit" },
            { "order_number": 4, "action": "all_ops", "effect": "deny" }
        ]
    }));
    let rule = |a| p.evaluate(&req("/x", a)).matched_rule();
    for a in [
        Action::FRd,
        Action::FRdAtt,
        Action::FRdSec,
        Action::DRd,
        Action::DRdAtt,
    ] {
        assert_eq!(rule(a), Some(1), "{a}");
    }
    assert_eq!(rule(Action::FWr), Some(2));
    assert_eq!(rule(Action::FWrApp), Some(2));
    assert_eq!(rule(Action::FCre), Some(3));
    assert_eq!(rule(Action::DMkdir), Some(3));
    for a in [
        Action::FRm,
        Action::FRen,
        Action::FLink,
        Action::FWrAtt,
        Action::FChgSec,
    ] {
        assert_eq!(rule(a), Some(4), "{a}");
    }
    for a in [
        Action::DRmdir,
        Action::DRen,
        Action::DWrAtt,
        Action::DChgSec,
    ] {
        assert_eq!(rule(a), Some(4), "{a}");
    }
    // all_ops does not include key_op.
    assert_eq!(rule(Action::KeyOp), None);
}

#[test]
fn exclude_flags_invert_each_component() {
    let p = compile(&json!({
        "name": "exclude",
        "security_rules": [
            { "order_number": 1, "user_set_id": "admins", "exclude_user_set": true,
              "resource_set_id": "hr", "action": "all_ops", "effect": "deny" },
            { "order_number": 2, "process_set_id": "db", "exclude_process_set": true,
              "resource_set_id": "db", "action": "all_ops", "effect": "deny" },
            { "order_number": 3, "resource_set_id": "public", "exclude_resource_set": true,
              "action": "f_wr", "effect": "deny" },
            { "order_number": 4, "action": "all_ops", "effect": "permit" }
        ],
        "resource_sets": [
            { "id": "hr", "resources": [ { "directory": "/hr", "include_subfolders": true } ] },
            { "id": "db", "resources": [ { "directory": "/db" } ] },
            { "id": "public", "resources": [ { "directory": "/public" } ] }
        ],
        "user_sets": [ { "id": "admins", "users": [ { "uid": 0 } ] } ],
        "process_sets": [ { "id": "db", "processes": [ { "directory": "/opt/db/bin" } ] } ]
    }));
    // Non-admins are denied /hr; admins are not.
    let d = p.evaluate(&req("/hr/pay", Action::FRd));
    assert_eq!((d.code().to_string(), d.is_permit()), ("1M".into(), false));
    let mut admin = req("/hr/pay", Action::FRd);
    admin.uid = 0;
    assert_eq!(p.evaluate(&admin).code().to_string(), "1U,2R,3A,4M");
    // An unauthenticated process is in no user set, so "everyone but admins"
    // includes it, even with uid 0.
    admin.authenticated = false;
    assert_eq!(p.evaluate(&admin).code().to_string(), "1M");
    // Only the database engine may touch /db.
    let d = p.evaluate(&req("/db/t1", Action::FRd));
    assert_eq!(d.code().to_string(), "1R,2M");
    let mut engine = req("/db/t1", Action::FRd);
    engine.exe = Some(b"/opt/db/bin/postgres");
    assert_eq!(p.evaluate(&engine).code().to_string(), "1R,2P,3A,4M");
    // An unknown executable is in no process set either.
    engine.exe = None;
    assert_eq!(p.evaluate(&engine).code().to_string(), "1R,2M");
    // f_wr is denied everywhere except /public.
    assert_eq!(
        p.evaluate(&req("/other/f", Action::FWr)).code().to_string(),
        "1R,2R,3M"
    );
    let d = p.evaluate(&req("/public/f", Action::FWr));
    assert_eq!(d.code().to_string(), "1R,2R,3R,4M");
    assert!(d.is_permit());
}

#[test]
fn user_sets_need_authentication_unless_switched_off() {
    let rules = json!([
        { "order_number": 1, "user_set_id": "staff", "action": "read", "effect": "permit,applykey" }
    ]);
    let users = json!([ { "id": "staff", "users": [ { "uid": 1000 } ] } ]);
    let p = compile(&json!({ "name": "p", "security_rules": rules, "user_sets": users }));
    let mut r = req("/f", Action::FRd);
    assert_eq!(p.evaluate(&r).code().to_string(), "1M");
    r.authenticated = false;
    assert_eq!(p.evaluate(&r).code().to_string(), "1U");

    // Policy-wide switch.
    let p = compile(&json!({ "name": "p", "authenticated_users_only": false,
        "security_rules": rules, "user_sets": users }));
    assert_eq!(p.evaluate(&r).code().to_string(), "1M");

    // Per-rule override, both ways.
    let mut rules_off = rules.clone();
    rules_off[0]["authenticated_users_only"] = json!(false);
    let p = compile(&json!({ "name": "p", "security_rules": rules_off, "user_sets": users }));
    assert_eq!(p.evaluate(&r).code().to_string(), "1M");
    let mut rules_on = rules.clone();
    rules_on[0]["authenticated_users_only"] = json!(true);
    let p = compile(&json!({ "name": "p", "authenticated_users_only": false,
        "security_rules": rules_on, "user_sets": users }));
    assert_eq!(p.evaluate(&r).code().to_string(), "1U");
}

#[test]
fn unauthenticated_processes_neither_gain_nor_escape_through_user_sets() {
    let p = compile(&json!({
        "name": "p",
        "security_rules": [
            // Permit everyone but guests: an unauthenticated process must
            // not count as "not a guest".
            { "order_number": 1, "user_set_id": "guests", "exclude_user_set": true,
              "resource_set_id": "open", "action": "read", "effect": "permit,applykey" },
            // Deny the blocked users: their claimed uid suffices.
            { "order_number": 2, "user_set_id": "blocked", "action": "all_ops", "effect": "deny" },
            // Deny everyone but admins: unauthenticated admins are denied.
            { "order_number": 3, "user_set_id": "admins", "exclude_user_set": true,
              "resource_set_id": "adm", "action": "all_ops", "effect": "deny" },
            { "order_number": 4, "user_set_id": "staff", "action": "all_ops", "effect": "permit" },
            { "order_number": 5, "resource_set_id": "adm", "action": "all_ops", "effect": "permit" }
        ],
        "resource_sets": [
            { "id": "open", "resources": [ { "directory": "/open" } ] },
            { "id": "adm", "resources": [ { "directory": "/adm" } ] }
        ],
        "user_sets": [
            { "id": "guests", "users": [ { "uid": 2000 } ] },
            { "id": "blocked", "users": [ { "uid": 666 } ] },
            { "id": "admins", "users": [ { "uid": 0 } ] },
            { "id": "staff", "users": [ { "uid": 1000 } ] }
        ]
    }));
    // uid 1000, authenticated: not a guest, rule 1 permits.
    let mut r = req("/open/f", Action::FRd);
    assert_eq!(p.evaluate(&r).code().to_string(), "1M");
    // Unauthenticated: rule 1 does not match (U) and nothing else permits
    // except the staff rule, which needs authentication too.
    r.authenticated = false;
    let d = p.evaluate(&r);
    assert_eq!(d.code().to_string(), "1U,2U,3R,4U,5R");
    assert!(!d.is_permit());
    // A blocked uid is denied whether authenticated or not.
    let mut b = req("/open/f", Action::FRd);
    b.uid = 666;
    b.authenticated = false;
    assert_eq!(p.evaluate(&b).code().to_string(), "1U,2M");
    // An unauthenticated uid 0 is not known to be an admin: rule 3 denies.
    let mut a = req("/adm/x", Action::FRd);
    a.uid = 0;
    assert_eq!(p.evaluate(&a).code().to_string(), "1R,2U,3U,4U,5M");
    a.authenticated = false;
    let d = p.evaluate(&a);
    assert_eq!(d.code().to_string(), "1R,2U,3M");
    assert!(!d.is_permit());
}

#[test]
fn user_entries_match_names_and_supplementary_groups() {
    let p = compile(&json!({
        "name": "users",
        "security_rules": [
            { "order_number": 1, "user_set_id": "a", "action": "read", "effect": "permit" }
        ],
        "user_sets": [ { "id": "a", "users": [
            { "uname": "oracle", "uid": 54321 },
            { "gname": "dba" },
            { "gid": 4242 }
        ] } ]
    }));
    let mut r = req("/f", Action::FRd);
    assert_eq!(p.evaluate(&r).matched_rule(), None);
    // uname and uid must both match.
    r.user_name = Some("oracle");
    assert_eq!(p.evaluate(&r).matched_rule(), None);
    r.uid = 54321;
    assert_eq!(p.evaluate(&r).matched_rule(), Some(1));
    // A supplementary group name or gid is enough.
    let mut r = req("/f", Action::FRd);
    r.group_names = &["users", "dba"];
    assert_eq!(p.evaluate(&r).matched_rule(), Some(1));
    let mut r = req("/f", Action::FRd);
    r.groups = &[10, 4242];
    assert_eq!(p.evaluate(&r).matched_rule(), Some(1));
    let mut r = req("/f", Action::FRd);
    r.gid = 4242;
    assert_eq!(p.evaluate(&r).matched_rule(), Some(1));
}

#[test]
fn resource_matching() {
    let p = compile(&json!({
        "name": "res",
        "security_rules": [
            { "order_number": 1, "resource_set_id": "flat", "action": "all_ops", "effect": "permit" },
            { "order_number": 2, "resource_set_id": "deep", "action": "all_ops", "effect": "permit" },
            { "order_number": 3, "resource_set_id": "root-files", "action": "all_ops", "effect": "permit" },
            { "order_number": 4, "resource_set_id": "everything", "action": "all_ops", "effect": "permit" }
        ],
        "resource_sets": [
            { "id": "flat", "resources": [ { "directory": "/logs", "file": "*.log" } ] },
            { "id": "deep", "resources": [ { "directory": "/db", "file": "t?.dat", "include_subfolders": true } ] },
            { "id": "root-files", "resources": [ { "directory": "/", "file": "README" } ] },
            { "id": "everything", "resources": [ { "directory": "/", "include_subfolders": true } ] }
        ]
    }));
    let rule = |path: &'static str| p.evaluate(&req(path, Action::FRd)).matched_rule();
    assert_eq!(rule("/logs/a.log"), Some(1));
    assert_eq!(rule("/logs/sub/a.log"), Some(4));
    assert_eq!(rule("/logs/a.txt"), Some(4));
    assert_eq!(
        rule("/logs"),
        Some(4),
        "the directory itself needs a match-all file pattern"
    );
    assert_eq!(rule("/db/t1.dat"), Some(2));
    assert_eq!(rule("/db/x/y/t2.dat"), Some(2));
    assert_eq!(rule("/db/t10.dat"), Some(4));
    assert_eq!(rule("/dbx/t1.dat"), Some(4));
    assert_eq!(rule("/README"), Some(3));
    assert_eq!(rule("/sub/README"), Some(4));
    assert_eq!(rule("/"), Some(4), "the GuardPoint root");
    assert_eq!(rule("/a/b/c"), Some(4));

    // A non-recursive entry with a match-all pattern covers the directory
    // itself and its direct children only.
    let p = compile(&json!({
        "name": "dir",
        "security_rules": [
            { "order_number": 1, "resource_set_id": "d", "action": "all_ops", "effect": "permit" }
        ],
        "resource_sets": [ { "id": "d", "resources": [ { "directory": "/d", "file": "" } ] } ]
    }));
    let rule = |path: &'static str| p.evaluate(&req(path, Action::DRd)).matched_rule();
    assert_eq!(rule("/d"), Some(1));
    assert_eq!(rule("/d/x"), Some(1));
    assert_eq!(rule("/d/x/y"), None);
    assert_eq!(rule("/"), None);
}

#[test]
fn bad_requests_are_denied_before_rules() {
    let p = compile(&json!({
        "name": "allow-all", "learn_mode": true,
        "security_rules": [ { "order_number": 1, "action": "all_ops", "effect": "permit,applykey" } ]
    }));
    for path in ["", "relative", "/a/../b", "/a//b", "/a/", "/./a"] {
        let d = p.evaluate(&req(path, Action::FRd));
        assert_eq!(d.outcome(), Outcome::BadRequest, "{path:?}");
        assert!(!d.is_permit() && !d.would_deny() && d.audit());
        assert!(d.code().is_empty());
        assert_eq!(d.key(), KeyChoice::Unmatched);
    }
    let mut r = req("/ok", Action::FRd);
    r.exe = Some(b"/usr/bin/../bin/cat");
    assert_eq!(p.evaluate(&r).outcome(), Outcome::BadRequest);
    r.exe = Some(b"/usr/bin/cat");
    assert!(p.evaluate(&r).is_permit());
}

#[test]
fn learn_mode_permits_what_would_be_denied() {
    let p = CompiledPolicy::from_json(EXAMPLES[1].1).unwrap();
    assert!(p.learn_mode());
    let finance = |r: &mut Request<'_>| r.groups = &[2100];

    // Office hours, finance group: a plain permit.
    let mut r = req("/ledger.xls", Action::FWr);
    finance(&mut r);
    let d = p.evaluate(&r);
    assert_eq!(d.code().to_string(), "1A,2M");
    assert!(d.is_permit() && d.apply_key() && !d.would_deny());

    // At night rule 3 (deny,applykey) matches: permitted, would deny.
    r.now = at(Weekday::Tue, 23, 0);
    let d = p.evaluate(&r);
    assert_eq!(d.code().to_string(), "1A,2T,3M");
    assert_eq!(d.verdict(), Verdict::Permit);
    assert!(d.would_deny() && d.apply_key() && d.audit());
    assert_eq!(p.key_label(d.key()), "finance-key");

    // Not in the finance group: rule 2 fails on the user.
    let d = p.evaluate(&req("/ledger.xls", Action::FRd));
    assert_eq!(d.code().to_string(), "1A,2U,3M");
    assert!(d.is_permit() && d.would_deny());

    // No rule matching at all in learn mode: permitted with the key.
    let p = compile(&json!({
        "name": "learn-empty", "learn_mode": true,
        "security_rules": [ { "order_number": 1, "action": "write", "effect": "deny,applykey" } ]
    }));
    let d = p.evaluate(&req("/x", Action::FRd));
    assert_eq!(d.outcome(), Outcome::NoMatch);
    assert!(d.is_permit() && d.would_deny() && d.apply_key() && d.audit());
}

#[test]
fn browsing_lets_deny_rules_list_directories() {
    let policy = |browsing: bool| {
        compile(&json!({
            "name": "browse",
            "security_rules": [
                { "order_number": 1, "action": "all_ops", "effect": "deny,audit", "browsing": browsing }
            ]
        }))
    };
    let p = policy(true);
    for a in [Action::DRd, Action::DRdAtt, Action::FRdAtt] {
        let d = p.evaluate(&req("/dir", a));
        assert!(d.is_permit() && d.browsing() && !d.apply_key(), "{a}");
        assert_eq!(d.matched_rule(), Some(1));
    }
    for a in [Action::FRd, Action::FWr, Action::FRdSec, Action::DMkdir] {
        let d = p.evaluate(&req("/dir/f", a));
        assert!(!d.is_permit() && !d.browsing(), "{a}");
    }
    let p = policy(false);
    assert!(!p.evaluate(&req("/dir", Action::DRd)).is_permit());
    // Default is browsing on, as in CipherTrust Manager.
    let p = compile(&json!({ "name": "b", "security_rules": [
        { "order_number": 1, "action": "all_ops", "effect": "deny" } ] }));
    assert!(p.evaluate(&req("/dir", Action::DRd)).is_permit());
}

#[test]
fn key_rules_choose_keys_per_resource() {
    let p = CompiledPolicy::from_json(EXAMPLES[2].1).unwrap();
    let key = |path: &'static str| {
        let d = p.evaluate(&req(path, Action::FRd));
        (d.key(), p.key_label(d.key()).to_owned())
    };
    // order_number puts the public clear_key rule first.
    assert_eq!(
        key("/public/readme"),
        (KeyChoice::Clear, "clear_key".into())
    );
    assert_eq!(key("/projects/a/b.c").1, "projects-key");
    assert_eq!(key("/home/x").1, "shared-key");
    assert_eq!(key("/").1, "shared-key");
    assert_eq!(
        p.key_names().collect::<Vec<_>>(),
        ["projects-key", "shared-key"]
    );
    assert!(p.has_key_rules());

    // Key rules that do not cover a resource give no key.
    let p = compile(&base());
    let d = p.evaluate(&req("/elsewhere", Action::FRd));
    assert_eq!(d.key(), KeyChoice::Unmatched);
    assert_eq!(p.key_label(d.key()), "");
    let d = p.evaluate(&req("/d/x", Action::FRd));
    assert!(matches!(d.key(), KeyChoice::Named(id) if id.index() == 0));
    assert_eq!(p.key_label(d.key()), "k1");

    // No key rules: the default key.
    let p = ladder();
    assert!(!p.has_key_rules());
    assert_eq!(
        p.evaluate(&req("/x", Action::FRd)).key(),
        KeyChoice::Default
    );

    // The same key named twice is one key.
    let p = compile(&json!({
        "name": "twice",
        "key_rules": [
            { "resource_set_id": "a", "key_id": "k" },
            { "key_id": "k" }
        ],
        "resource_sets": [ { "id": "a", "resources": [ { "directory": "/a" } ] } ]
    }));
    assert_eq!(p.key_names().count(), 1);
}

#[test]
fn process_sets_by_path_and_signature() {
    let hash_cat = [0x11u8; 32];
    let hash_other = [0x22u8; 32];
    let p = compile(&json!({
        "name": "procs",
        "security_rules": [
            { "order_number": 1, "process_set_id": "pinned", "action": "read", "effect": "permit,applykey" },
            { "order_number": 2, "process_set_id": "follow", "action": "read", "effect": "permit" },
            { "order_number": 3, "process_set_id": "by-path", "action": "read", "effect": "permit" }
        ],
        "process_sets": [
            { "id": "pinned", "processes": [
                { "directory": "/usr/bin", "file": "cat", "signature": "11".repeat(32) } ] },
            { "id": "follow", "processes": [ { "signature": "22".repeat(32) } ] },
            { "id": "by-path", "processes": [ { "directory": "/opt/tools", "file": "rd*" } ] }
        ]
    }));
    let run = |exe: &'static [u8], sha: Option<&'static [u8; 32]>| {
        let mut r = req("/f", Action::FRd);
        r.exe = Some(exe);
        r.exe_sha256 = sha;
        p.evaluate(&r).code().to_string()
    };
    static CAT: [u8; 32] = [0x11; 32];
    static OTHER: [u8; 32] = [0x22; 32];
    assert_eq!(hash_cat, CAT);
    assert_eq!(hash_other, OTHER);
    // Path and signature both match.
    assert_eq!(run(b"/usr/bin/cat", Some(&CAT)), "1M");
    // The right path with a modified binary does not.
    assert_eq!(run(b"/usr/bin/cat", Some(&OTHER)), "1P,2M");
    // Without a computed hash, signature entries never match.
    assert_eq!(run(b"/usr/bin/cat", None), "1P,2P,3P");
    // A signature-only entry follows the binary wherever it is copied.
    assert_eq!(run(b"/tmp/copied", Some(&OTHER)), "1P,2M");
    assert_eq!(run(b"/home/u/bin/x", Some(&OTHER)), "1P,2M");
    // Path-only entries ignore the hash.
    assert_eq!(run(b"/opt/tools/rdump", None), "1P,2P,3M");
    assert_eq!(run(b"/opt/tools/sub/rdump", None), "1P,2P,3P");
}

#[test]
fn time_windows_in_rules() {
    let p = compile(&json!({
        "name": "hours",
        "security_rules": [
            { "order_number": 1, "action": "all_ops", "effect": "permit",
              "when": { "days": ["fri"], "start": "22:00", "end": "06:00" } }
        ]
    }));
    let d = |t| {
        let mut r = req("/x", Action::FRd);
        r.now = t;
        p.evaluate(&r).code().to_string()
    };
    assert_eq!(d(at(Weekday::Fri, 22, 0)), "1M");
    assert_eq!(d(at(Weekday::Sat, 5, 59)), "1M");
    assert_eq!(d(at(Weekday::Sat, 6, 0)), "1T");
    assert_eq!(d(at(Weekday::Fri, 5, 0)), "1T");
}

#[test]
fn possible_outcomes_summarise_the_policy() {
    let p = CompiledPolicy::from_json(EXAMPLES[0].1).unwrap();
    let o = p.possible_outcomes(Action::FRd);
    assert!(o.plaintext && o.raw && o.deny);
    // Rule 4 denies every other f_wr unconditionally: no default reached.
    let o = p.possible_outcomes(Action::FWr);
    assert!(o.plaintext && !o.raw && o.deny);
    // key_op is permitted with the key by an unconditional rule 1.
    let o = p.possible_outcomes(Action::KeyOp);
    assert_eq!(
        o,
        PossibleOutcomes {
            plaintext: true,
            raw: false,
            deny: false
        }
    );
    // Browsing makes a deny rule pass d_rd through without the key.
    assert!(p.possible_outcomes(Action::DRd).raw);
    // Learn mode never denies.
    let p = CompiledPolicy::from_json(EXAMPLES[1].1).unwrap();
    assert!(!p.possible_outcomes(Action::FRd).deny);
}

// ---------------------------------------------------------------------------
// Audit lines.

#[test]
fn audit_line_has_ctes_shape() {
    let p = compile(&json!({
        "name": "name",
        "security_rules": [
            { "order_number": 1, "user_set_id": "other", "action": "all_ops", "effect": "deny" },
            { "order_number": 2, "action": "read", "effect": "permit,applykey,audit" }
        ],
        "key_rules": [ { "key_id": "k1" } ],
        "user_sets": [ { "id": "other", "users": [ { "uid": 1234 } ] } ]
    }));
    let mut r = Request::new(b"/file", Action::FRd, 0, 0, MONDAY_NOON);
    r.user_name = Some("root");
    r.group_names = &["root"];
    r.exe = Some(b"/usr/bin/cat");
    r.authenticated = true;
    let d = p.evaluate(&r);
    assert_eq!(
        AuditLine::new(&p, &r, b"/gp", &d).to_string(),
        "CGP2601I: [SecFS, 0] [AUDIT] Policy[name] User[root,uid=0,gid=0\\root\\] \
         Process[/usr/bin/cat] Action[read_file] Res[/gp/file] Key[k1] Effect[PERMIT Code (1U,2M)]"
    );

    // A denial: ALARM, DENIED; unknown names print as numbers.
    let mut r = Request::new(b"/", Action::FWrApp, 1234, 100, MONDAY_NOON);
    r.groups = &[100, 7];
    r.authenticated = true;
    let d = p.evaluate(&r);
    assert_eq!(
        AuditLine::new(&p, &r, b"/gp/", &d).to_string(),
        "CGP2601I: [SecFS, 0] [ALARM] Policy[name] User[1234,uid=1234,gid=100\\100,7\\] \
         Process[] Action[write_app] Res[/gp] Key[k1] Effect[DENIED Code (1M)]"
    );
}

#[test]
fn audit_line_marks_learn_mode_browsing_and_bad_requests() {
    let p = CompiledPolicy::from_json(EXAMPLES[1].1).unwrap();
    let mut r = req("/q1.xls", Action::FRd);
    r.user_name = Some("bob");
    r.group_names = &["bob"];
    let d = p.evaluate(&r);
    assert!(d.would_deny());
    assert_eq!(
        AuditLine::new(&p, &r, b"/finance", &d).to_string(),
        "CGP2601I: [SecFS, 0] [AUDIT] Policy[finance-learn] User[bob,uid=1000,gid=1000\\bob\\] \
         Process[/usr/bin/cat] Action[read_file] Res[/finance/q1.xls] Key[finance-key] \
         Effect[PERMIT Code (1A,2U,3M)] [LEARN MODE: WOULD DENY]"
    );

    let p = CompiledPolicy::from_json(EXAMPLES[0].1).unwrap();
    let r = req("/oradata", Action::DRd);
    let d = p.evaluate(&r);
    let line = AuditLine::new(&p, &r, b"/u01", &d).to_string();
    assert!(
        line.ends_with("Effect[PERMIT Code (1A,2R,3P,4M)] [BROWSING]"),
        "{line}"
    );

    let r = req("/a/../b", Action::FRd);
    let d = p.evaluate(&r);
    let line = AuditLine::new(&p, &r, b"/u01", &d).to_string();
    assert!(
        line.ends_with("Key[] Effect[DENIED Code ()] [BAD REQUEST]"),
        "{line}"
    );
}

#[test]
fn audit_line_escapes_hostile_names() {
    let p = ladder();
    let mut r = Request::new(b"/x] Key[forged\n\xff", Action::FRd, 5, 5, MONDAY_NOON);
    r.user_name = Some("ev[il]");
    r.exe = Some(b"/tmp/a\\b");
    let d = p.evaluate(&r);
    let line = AuditLine::new(&p, &r, b"/gp", &d).to_string();
    assert!(!line.contains('\n'));
    assert!(
        line.contains("Res[/gp/x\\x5d Key\\x5bforged\\x0a\\xff]"),
        "{line}"
    );
    assert!(line.contains("User[ev\\x5bil\\x5d,uid=5"), "{line}");
    assert!(line.contains("Process[/tmp/a\\x5cb]"), "{line}");
    // Exactly one of each field opener survives.
    assert_eq!(line.matches("Key[").count(), 1, "{line}");
}

#[test]
fn audit_line_refuses_another_policys_key_names() {
    let a = compile(&base());
    let b = compile(&base());
    let r = req("/d/x", Action::FRd);
    let d = a.evaluate(&r);
    assert!(
        AuditLine::new(&a, &r, b"/g", &d)
            .to_string()
            .contains("Key[k1]")
    );
    assert!(
        AuditLine::new(&b, &r, b"/g", &d)
            .to_string()
            .contains("Key[?]")
    );
}

// ---------------------------------------------------------------------------
// Property tests: evaluation never panics and is deterministic.

#[derive(Debug, Clone)]
struct Input {
    path: Vec<u8>,
    action: usize,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    user_name: Option<String>,
    group_names: Vec<String>,
    exe: Option<Vec<u8>>,
    sha: Option<[u8; 32]>,
    authenticated: bool,
    day: usize,
    minute: u16,
}

fn arb_path() -> impl Strategy<Value = Vec<u8>> {
    let component = prop_oneof![
        Just("oradata".to_string()),
        Just("public".to_string()),
        Just("projects".to_string()),
        Just("secret".to_string()),
        Just("x.dbf".to_string()),
        Just("..".to_string()),
        Just(".".to_string()),
        Just(String::new()),
        "[a-z*?.]{1,6}",
    ];
    prop_oneof![
        4 => proptest::collection::vec(component, 0..5).prop_map(|parts| {
            let mut p = String::new();
            for c in parts {
                p.push('/');
                p.push_str(&c);
            }
            if p.is_empty() {
                p.push('/');
            }
            p.into_bytes()
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..24),
    ]
}

fn arb_input() -> impl Strategy<Value = Input> {
    (
        arb_path(),
        0..Action::ALL.len(),
        prop_oneof![Just(0u32), Just(1000), Just(54321), any::<u32>()],
        prop_oneof![Just(0u32), Just(50), Just(2100), any::<u32>()],
        proptest::collection::vec(prop_oneof![Just(2100u32), any::<u32>()], 0..4),
        proptest::option::of(prop_oneof![Just("oracle".to_string()), "[a-z]{1,6}"]),
        proptest::collection::vec(prop_oneof![Just("dba".to_string()), "[a-z]{1,6}"], 0..3),
        proptest::option::of(prop_oneof![
            Just(b"/usr/bin/bash".to_vec()),
            Just(b"/opt/oracle/product/bin/oracle".to_vec()),
            arb_path(),
        ]),
        proptest::option::of(any::<[u8; 32]>()),
        any::<bool>(),
        0..7usize,
        0..1440u16,
    )
        .prop_map(
            |(
                path,
                action,
                uid,
                gid,
                groups,
                user_name,
                group_names,
                exe,
                sha,
                authenticated,
                day,
                minute,
            )| {
                Input {
                    path,
                    action,
                    uid,
                    gid,
                    groups,
                    user_name,
                    group_names,
                    exe,
                    sha,
                    authenticated,
                    day,
                    minute,
                }
            },
        )
}

fn check_invariants(p: &CompiledPolicy, input: &Input) -> Result<(), TestCaseError> {
    let names: Vec<&str> = input.group_names.iter().map(String::as_str).collect();
    let now = TimeOfWeek::new(
        Weekday::ALL[input.day],
        (input.minute / 60) as u8,
        (input.minute % 60) as u8,
    )
    .unwrap();
    let r = Request {
        path: &input.path,
        action: Action::ALL[input.action],
        uid: input.uid,
        gid: input.gid,
        groups: &input.groups,
        user_name: input.user_name.as_deref(),
        group_names: &names,
        exe: input.exe.as_deref(),
        exe_sha256: input.sha.as_ref(),
        authenticated: input.authenticated,
        now,
    };
    let d = p.evaluate(&r);
    prop_assert_eq!(d, p.evaluate(&r), "evaluation is deterministic");
    prop_assert!(d.code().len() <= p.security_rule_count());
    prop_assert!(!d.apply_key() || d.is_permit());
    prop_assert!(!d.would_deny() || (p.learn_mode() && d.is_permit()));
    match d.outcome() {
        Outcome::Rule(n) => {
            prop_assert_eq!(d.code().len(), n as usize);
            prop_assert_eq!(d.code().get(n as usize - 1), Some(CodeLetter::Match));
        }
        Outcome::NoMatch => {
            prop_assert_eq!(d.code().len(), p.security_rule_count());
            prop_assert!(d.code().iter().all(|(_, l)| l != CodeLetter::Match));
            prop_assert!(d.audit());
        }
        Outcome::BadRequest => {
            prop_assert!(!d.is_permit() && d.code().is_empty());
        }
    }
    let line = AuditLine::new(p, &r, b"/gp", &d).to_string();
    prop_assert!(line.starts_with("CGP2601I: [SecFS, 0] ["));
    prop_assert!(!line.contains('\n'));
    Ok(())
}

proptest! {
    #[test]
    fn evaluation_never_panics_and_is_deterministic(input in arb_input()) {
        let policies: Vec<CompiledPolicy> = EXAMPLES
            .iter()
            .map(|(_, t)| CompiledPolicy::from_json(t).unwrap())
            .chain([ladder()])
            .collect();
        for p in &policies {
            check_invariants(p, &input)?;
        }
    }

    #[test]
    fn parsing_arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = CompiledPolicy::from_json(&text);
    }

    #[test]
    fn parsing_arbitrary_host_settings_never_panics(text in "(\\|[a-z_]{0,14}\\|[ -~]{0,20}\n?){0,6}") {
        let _ = HostSettings::parse(&text);
    }
}

// ---------------------------------------------------------------------------
// `within_directory_named` (CTE UserSpace's "ignore directory").

#[test]
fn directories_named_in_a_resource_match_at_any_depth_and_renames_to_or_from_them_differ() {
    let p = compile(&json!({
        "name": "ignore",
        "security_rules": [ { "order_number": 1, "action": "all_ops", "effect": "permit,applykey" } ],
        "key_rules": [
            { "resource_set_id": "skip", "key_id": "clear_key" },
            { "key_id": "k" }
        ],
        "resource_sets": [
            { "id": "skip", "resources": [
                { "directory": "/", "include_subfolders": true, "within_directory_named": "tmp" },
                { "directory": "/", "include_subfolders": true, "within_directory_named": "*" }
            ] }
        ]
    }));
    let key = |path: &str| p.key_label(p.key_for(path.as_bytes())).to_owned();
    assert_eq!(key("/a"), "k");
    assert_eq!(key("/tmp/a"), "clear_key");
    assert_eq!(
        key("/x/y/tmp/z/a"),
        "clear_key",
        "at any depth, everything below"
    );
    assert_eq!(
        key("/tmp"),
        "k",
        "the directory entry itself is not inside it"
    );
    assert_eq!(key("/Tmp/a"), "k", "case-sensitive");
    assert_eq!(key("/tmpx/a"), "k", "exact names only");
    assert_eq!(key("/x/tmp.d/a"), "k");
    assert_eq!(
        key("/*/a"),
        "clear_key",
        "a wildcard character is a name here"
    );
    assert_eq!(key("/ab/a"), "k");
    let same = |a: &str, b: &str, dir: bool| p.same_key_rules(a.as_bytes(), b.as_bytes(), dir);
    assert!(
        !same("/d", "/tmp", true),
        "a directory renamed to the ignored name"
    );
    assert!(
        !same("/x/tmp", "/x/d", true),
        "renamed from the ignored name"
    );
    assert!(same("/a/d", "/b/d", true), "neither ignored");
    assert!(
        same("/tmp/d", "/x/tmp/e", true),
        "both inside an ignored directory"
    );
    assert!(!same("/tmp/f", "/f", false), "a file moved out of it");
    // Only recursive entries may name a directory; the name is one name.
    for (dir, sub, name) in [("/", false, "tmp"), ("/", true, "a/b"), ("/", true, "")] {
        let r = CompiledPolicy::from_json(&json!({
            "name": "bad",
            "security_rules": [ { "order_number": 1, "action": "all_ops", "effect": "permit" } ],
            "key_rules": [ { "resource_set_id": "s", "key_id": "clear_key" } ],
            "resource_sets": [ { "id": "s", "resources": [
                { "directory": dir, "include_subfolders": sub, "within_directory_named": name }
            ] } ]
        }).to_string());
        assert!(r.is_err(), "{dir} {sub} {name:?} accepted");
    }
}

// ---------------------------------------------------------------------------
// Key rules across renames: the key rule, not the file, decides.

#[test]
fn moves_between_key_rules_are_told_apart() {
    let p = compile(&json!({
        "name": "keys",
        "security_rules": [ { "order_number": 1, "action": "all_ops", "effect": "permit,applykey" } ],
        "key_rules": [
            { "resource_set_id": "db", "key_id": "kdb" },
            { "resource_set_id": "hr", "key_id": "khr" },
            { "resource_set_id": "flat", "key_id": "kflat" },
            { "resource_set_id": "deep", "key_id": "kdeep" },
            { "key_id": "clear_key" }
        ],
        "resource_sets": [
            { "id": "db", "resources": [ { "directory": "/", "file": "*.dbf", "include_subfolders": true } ] },
            { "id": "hr", "resources": [ { "directory": "/hr", "include_subfolders": true } ] },
            { "id": "flat", "resources": [ { "directory": "/flat", "file": "*" } ] },
            { "id": "deep", "resources": [ { "directory": "/x/y/secret", "include_subfolders": true } ] }
        ]
    }));
    let same = |a: &str, b: &str, dir: bool| p.same_key_rules(a.as_bytes(), b.as_bytes(), dir);
    assert_eq!(p.key_label(p.key_for(b"/a.dbf")), "kdb");
    assert_eq!(p.key_label(p.key_for(b"/hr/a.txt")), "khr");
    assert_eq!(p.key_label(p.key_for(b"/a.txt")), "clear_key");
    assert_eq!(p.key_for(b"/a/../hr/x"), KeyChoice::Unmatched);
    // Files: an included extension, another resource set, clear to keyed.
    assert!(!same("/a.txt", "/a.dbf", false));
    assert!(!same("/hr/a", "/a", false));
    assert!(!same("/a", "/hr/a", false));
    assert!(same("/a.dbf", "/sub/b.dbf", false));
    assert!(same("/a.txt", "/b.txt", false));
    // Directories: the rules' view of everything below must not change.
    assert!(!same("/hr/d", "/d", true), "subtree leaves a key rule");
    assert!(!same("/d", "/hr/d", true), "subtree enters a key rule");
    assert!(same("/hr/d", "/hr/e/f", true), "within one recursive set");
    assert!(same("/a", "/b", true), "only patterns apply below both");
    assert!(!same("/flat", "/flat2", true), "children of a flat set");
    assert!(
        same("/flat/sub", "/flat/sub2", true),
        "nothing below either"
    );
    assert!(!same("/x", "/z", true), "a set lies below the source");
    assert!(!same("/z", "/x", true), "a set lies below the destination");
    assert!(same("/x", "/x", true));
    // Without key rules everything uses the default key.
    let plain = compile(&json!({
        "name": "nokeys",
        "security_rules": [ { "order_number": 1, "action": "all_ops", "effect": "permit,applykey" } ]
    }));
    assert!(plain.same_key_rules(b"/a", b"/b/c", true));
    assert_eq!(plain.key_for(b"/a"), KeyChoice::Default);
}

// ---------------------------------------------------------------------------
// Data transformation rules.

#[test]
fn transformation_rules_pair_with_the_key_rule_of_their_resource_set() {
    let mut v = base();
    v["key_rules"] = json!([
        { "resource_set_id": "rs", "key_id": "clear_key" },
        { "key_id": "k0" }
    ]);
    v["data_transform_rules"] = json!([ { "resource_set_id": "rs", "key_id": "k2" } ]);
    let p = compile(&v);
    assert!(p.transforms());
    let (cur, to) = p.key_rule_for(b"/d/f");
    assert_eq!(cur, KeyChoice::Clear);
    assert_eq!(p.key_label(to.unwrap()), "k2");
    // The catch-all rule has no transformation rule.
    let (cur, to) = p.key_rule_for(b"/e/f");
    assert_eq!(p.key_label(cur), "k0");
    assert_eq!(to, None);
    // A move between the transforming rule and the other is told apart,
    // as is one between the same current key with and without a
    // transformation rule.
    assert!(!p.same_key_rules(b"/d/f", b"/e/f", false));
    assert!(p.same_key_rules(b"/d/f", b"/d/g", false));
    // The document reads back equal.
    let doc = PolicyDocument::from_json(&v.to_string()).unwrap();
    let again = PolicyDocument::from_json(&doc.to_json().to_string()).unwrap();
    assert_eq!(doc, again);
    assert_eq!(again.data_transform_rules.len(), 1);
}

#[test]
fn malformed_transformation_rules_are_rejected() {
    let e = reject(|v| {
        v["data_transform_rules"] = json!([ { "resource_set_id": "rs", "key_id": "k1" } ])
    });
    assert!(matches!(e, PolicyError::TransformToSameKey { .. }), "{e}");
    assert!(e.to_string().contains("data_transform_rules[0]"), "{e}");
    let e = reject(|v| {
        v["key_rules"] = json!([ { "resource_set_id": "rs", "key_id": "clear_key" } ]);
        v["data_transform_rules"] = json!([ { "resource_set_id": "rs", "key_id": "clear_key" } ])
    });
    assert!(matches!(e, PolicyError::TransformToSameKey { .. }), "{e}");
    // No key rule for the catch-all.
    let e = reject(|v| v["data_transform_rules"] = json!([ { "key_id": "k2" } ]));
    assert!(
        matches!(e, PolicyError::TransformWithoutKeyRule { .. }),
        "{e}"
    );
    let e = reject(|v| {
        v["data_transform_rules"] = json!([
            { "resource_set_id": "rs", "key_id": "k2" },
            { "resource_set_id": "rs", "key_id": "k3" }
        ])
    });
    assert!(
        matches!(e, PolicyError::DuplicateTransformRule { .. }),
        "{e}"
    );
    let e = reject(|v| {
        v["data_transform_rules"] = json!([ { "resource_set_id": "nope", "key_id": "k2" } ])
    });
    assert!(e.to_string().contains("nope"), "{e}");
    let e = reject(|v| {
        v["data_transform_rules"] = json!([ { "resource_set_id": "rs", "key_id": "k2", "x": 1 } ])
    });
    assert!(e.to_string().contains("x"), "{e}");
    let e = reject(|v| v["data_transform_rules"] = json!([ { "resource_set_id": "rs" } ]));
    assert!(e.to_string().contains("key_id"), "{e}");
}
