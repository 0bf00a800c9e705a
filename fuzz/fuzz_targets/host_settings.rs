//! Host settings text (`|trust|/usr/bin/foo` lines, from the key manager
//! or `voradmin hostsettings set`): any text gives settings or a typed
//! error, never a panic; settings written back as lines parse the same.
#![no_main]

use guardfs_policy::{HostKeyword, HostSettings};
use libfuzzer_sys::fuzz_target;

const KEYWORDS: [HostKeyword; 4] = [
    HostKeyword::Authenticator,
    HostKeyword::Trust,
    HostKeyword::PathNoTrust,
    HostKeyword::Protect,
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(hs) = HostSettings::parse(text) else {
        return;
    };
    let mut out = String::new();
    if hs.trusts_everything() {
        out.push_str("|trust|*\n");
    }
    for k in KEYWORDS {
        for p in hs.paths(k) {
            let p = std::str::from_utf8(p).expect("paths come from text");
            assert!(p.starts_with('/'), "relative path accepted: {p:?}");
            out.push_str(&format!("|{}|{p}\n", k.name()));
        }
    }
    let again = HostSettings::parse(&out)
        .unwrap_or_else(|e| panic!("re-encoded settings do not parse: {e}\n{out}"));
    assert_eq!(hs, again, "re-encoded settings parse differently");
});
