//! The silent-registration parameter file (`register_host -s FILE`,
//! `KEY=VALUE` lines plus `KEY=VALUE` overrides from the command line):
//! any text gives parameters or an error, never a panic; parameters
//! written back as a file parse to the same values.
//!
//! Input: the file text, then optionally a 0 byte and overrides separated
//! by 0 bytes. Inputs naming CA_FILE or EXTERNAL_CERT_DIR are skipped:
//! those read files (a fuzzer must not read /dev/zero or the host's
//! files); their values are plain strings to the parser.
#![no_main]

use guardfs_control::km::register::silent_params;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.contains("CA_FILE") || text.contains("EXTERNAL_CERT_DIR") {
        return;
    }
    let mut parts = text.split('\0');
    let file = parts.next().unwrap_or_default();
    let overrides: Vec<String> = parts.map(str::to_owned).collect();
    let Ok(p) = silent_params(file, &overrides) else {
        return;
    };
    // An override is one argv word, taken whole as a line: its value may
    // hold a line break, which a file cannot; no round trip for those.
    if overrides.iter().any(|o| o.contains(['\n', '\r'])) {
        return;
    }
    let mut out = format!(
        "SERVER_HOSTNAME={}\nAGENT_HOST_NAME={}\nREG_TOKEN={}\nHOST_PROFILE={}\n\
         HOST_GROUP={}\nHOST_DESC={}\nUSEHWSIG={}\n",
        p.server,
        p.host_name,
        p.token,
        p.profile,
        p.host_group,
        p.description,
        if p.hardware_association { "yes" } else { "no" },
    );
    if p.ca_pem.is_some() {
        // CA_CERT's `\n` escapes are expanded; the expansion is not
        // reversible, so only its presence is compared.
        out.push_str("CA_CERT=x\n");
    }
    let q = silent_params(&out, &[])
        .unwrap_or_else(|e| panic!("re-encoded parameters do not parse: {e}\n{out}"));
    assert_eq!(
        (&p.server, &p.host_name, &p.token, &p.profile),
        (&q.server, &q.host_name, &q.token, &q.profile),
        "{out}"
    );
    assert_eq!(
        (&p.host_group, &p.description, p.hardware_association),
        (&q.host_group, &q.description, q.hardware_association),
        "{out}"
    );
    assert_eq!(p.ca_pem.is_some(), q.ca_pem.is_some());
});
