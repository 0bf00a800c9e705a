//! Policy JSON (from the key manager, `voradmin policy apply`, the state
//! directory): any text gives a document or a typed error, never a panic;
//! a document written back as JSON reads as the same document; compiling
//! never panics and `CompiledPolicy::from_json` agrees with
//! read-then-compile.
#![no_main]

use guardfs_policy::{CompiledPolicy, PolicyDocument};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let doc = PolicyDocument::from_json(text);
    let compiled = CompiledPolicy::from_json(text);
    let Ok(doc) = doc else {
        assert!(compiled.is_err(), "compiled a document that does not read");
        return;
    };
    let again = doc.to_json().to_string();
    let doc2 = PolicyDocument::from_json(&again)
        .unwrap_or_else(|e| panic!("re-encoded document does not read: {e}\n{again}"));
    assert_eq!(doc, doc2, "re-encoded document reads differently");
    let direct = CompiledPolicy::compile(&doc);
    assert_eq!(direct.is_ok(), compiled.is_ok());
    if let (Ok(a), Ok(b)) = (&direct, &compiled) {
        assert_eq!(a.name(), b.name());
        assert_eq!(a.security_rule_count(), b.security_rule_count());
        assert!(a.key_names().eq(b.key_names()));
        // The re-encoded document compiles the same way.
        let c = CompiledPolicy::from_json(&again).expect("re-encoded document compiles");
        assert_eq!(c.security_rule_count(), a.security_rule_count());
    }
});
