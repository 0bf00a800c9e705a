//! End-to-end tests of the REST API: a real `keymgr serve` on loopback,
//! real TLS (server auth and mTLS), a real SQLite file.

mod common;

use common::*;
use serde_json::{Value, json};

fn names(v: &Value, field: &str) -> Vec<String> {
    v[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            x["name"]
                .as_str()
                .or(x["path"].as_str())
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn registration_config_and_key_delivery() {
    let root = init_dir();
    let s = Server::start(root.path());
    let mut admin = s.http(None);
    admin.login();

    create_key(&admin, "key-a", "XTS");
    create_key(&admin, "key-b", "GCM");
    create_policy(&admin, "pol-a", "key-a");
    create_policy(&admin, "pol-b", "key-b");
    let token = create_regtoken(
        &admin,
        json!({"lifetime": "3600", "max_clients": 2, "cert_duration": 30}),
    );

    let (ra, id_a) = register(&s, &token, "host-a");
    assert_eq!(ra.status, 201, "{}", ra.body);
    assert!(
        ra.body["certificate"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE")
    );
    assert_eq!(ra.body["ca"].as_str().unwrap(), s.ca_pem());
    let a_id = ra.body["client_id"].as_str().unwrap().to_owned();
    let (rb, id_b) = register(&s, &token, "host-b");
    assert_eq!(rb.status, 201, "{}", rb.body);

    add_gp(&admin, &a_id, "/data/a", "pol-a");
    add_gp(&admin, "host-b", "/data/b", "pol-b");

    // Agent A sees only its GuardPoint, policy and key.
    let agent_a = s.http(Some(&id_a));
    let agent_b = s.http(Some(&id_b));
    let cfg = agent_a.req("GET", "/api/v1/agent/config", None);
    assert_eq!(cfg.status, 200, "{}", cfg.body);
    assert_eq!(names(&cfg.body, "guardpoints"), vec!["/data/a"]);
    assert_eq!(cfg.body["guardpoints"][0]["type"], "auto");
    assert_eq!(cfg.body["guardpoints"][0]["policy"], "pol-a");
    assert_eq!(cfg.body["guardpoints"][0]["enabled"], true);
    assert_eq!(names(&cfg.body, "policies"), vec!["pol-a"]);
    assert!(
        cfg.body["policies"][0]["json"]
            .as_str()
            .unwrap()
            .contains("key-a")
    );
    assert_eq!(names(&cfg.body, "keys"), vec!["key-a"]);
    assert_eq!(cfg.body["keys"][0]["mode"], "xts");
    assert_eq!(cfg.body["keys"][0]["versions"], json!([1]));
    assert_eq!(cfg.body["keys"][0]["state"], "active");
    assert!(!cfg.body.to_string().contains("material"));
    let etag = cfg.etag.clone().unwrap();
    assert_eq!(etag, format!("\"{}\"", cfg.body["etag"].as_str().unwrap()));

    let cfg_b = agent_b.req("GET", "/api/v1/agent/config", None);
    assert_eq!(names(&cfg_b.body, "keys"), vec!["key-b"]);
    assert_eq!(cfg_b.body["keys"][0]["mode"], "gcm");

    // ETag / If-None-Match.
    let nm = agent_a.raw(
        "GET",
        "/api/v1/agent/config",
        None,
        &[("If-None-Match", &etag)],
    );
    assert_eq!(nm.status, 304);
    let nm = agent_a.raw(
        "GET",
        "/api/v1/agent/config",
        None,
        &[("If-None-Match", "\"x\"")],
    );
    assert_eq!(nm.status, 200);

    // Key material: own key yes, other client's key no, no cert no.
    let m = agent_a.req("GET", "/api/v1/agent/keys/key-a/versions/1", None);
    assert_eq!(m.status, 200, "{}", m.body);
    assert_eq!(m.body["mode"], "xts");
    let mat1 = m.body["material"].as_str().unwrap().to_owned();
    assert_eq!(mat1.len(), 64);
    assert!(hex::decode(&mat1).is_ok());
    agent_a
        .req("GET", "/api/v1/agent/keys/key-b/versions/1", None)
        .assert_error(403);
    agent_a
        .req("GET", "/api/v1/agent/keys/nope/versions/1", None)
        .assert_error(403);
    agent_a
        .req("GET", "/api/v1/agent/keys/key-a/versions/2", None)
        .assert_error(404);
    agent_a
        .req("GET", "/api/v1/agent/keys/key-a/versions/0", None)
        .assert_error(400);
    s.http(None)
        .req("GET", "/api/v1/agent/keys/key-a/versions/1", None)
        .assert_error(401);
    admin
        .req("GET", "/api/v1/agent/keys/key-a/versions/1", None)
        .assert_error(401);
    s.http(None)
        .req("GET", "/api/v1/agent/config", None)
        .assert_error(401);
    // Admin endpoints want a bearer token, not a client certificate.
    agent_a.req("GET", KEYS, None).assert_error(401);
    // Admin views never carry material.
    let keys = admin.req("GET", KEYS, None);
    assert!(!keys.body.to_string().contains(&mat1));
    assert!(!keys.body.to_string().contains("material"));

    // Rotation adds a version visible in the config; the ETag changes.
    let r = admin.req("POST", &format!("{KEYS}/key-a/versions"), None);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["versions"], json!([1, 2]));
    let nm = agent_a.raw(
        "GET",
        "/api/v1/agent/config",
        None,
        &[("If-None-Match", &etag)],
    );
    assert_eq!(nm.status, 200);
    assert_eq!(nm.body["keys"][0]["versions"], json!([1, 2]));
    let m2 = agent_a.req("GET", "/api/v1/agent/keys/key-a/versions/2", None);
    assert_eq!(m2.status, 200);
    assert_ne!(m2.body["material"], mat1);
    let again = agent_a.req("GET", "/api/v1/agent/keys/key-a/versions/1", None);
    assert_eq!(again.body["material"].as_str().unwrap(), mat1);

    // Revocation: material refused, state visible in the config.
    let r = admin.req("POST", &format!("{KEYS}/key-a/revoke"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["state"], "revoked");
    agent_a
        .req("GET", "/api/v1/agent/keys/key-a/versions/1", None)
        .assert_error(403);
    let cfg = agent_a.req("GET", "/api/v1/agent/config", None);
    assert_eq!(cfg.body["keys"][0]["state"], "revoked");
    admin
        .req("POST", &format!("{KEYS}/key-a/versions"), None)
        .assert_error(409);

    // Destroy: material erased, still refused.
    let r = admin.req("DELETE", &format!("{KEYS}/key-b"), None);
    assert_eq!(r.status, 204);
    agent_b
        .req("GET", "/api/v1/agent/keys/key-b/versions/1", None)
        .assert_error(403);
    let k = admin.req("GET", &format!("{KEYS}/key-b"), None);
    assert_eq!(k.body["state"], "destroyed");
    {
        let db = rusqlite::Connection::open(s.data.join("keymgr.db")).unwrap();
        let kid = k.body["id"].as_str().unwrap();
        let (total, sealed): (i64, i64) = db
            .query_row(
                "SELECT COUNT(*), COUNT(sealed) FROM key_versions WHERE key_id = ?1",
                [kid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((total, sealed), (1, 0));
    }

    // Status and audit.
    let st = agent_a.req(
        "POST",
        "/api/v1/agent/status",
        Some(json!({"health": "healthy", "version": "0.1.0", "guardpoints": [{"path": "/data/a", "status": "guarded"}]})),
    );
    assert_eq!(st.status, 200, "{}", st.body);
    let au = agent_a.req(
        "POST",
        "/api/v1/agent/audit",
        Some(json!(["CGP2601I: line one", "CGP2601I: line two"])),
    );
    assert_eq!(au.status, 200, "{}", au.body);
    assert_eq!(au.body["accepted"], 2);
    agent_a
        .req(
            "POST",
            "/api/v1/agent/audit",
            Some(json!({"not": "an array"})),
        )
        .assert_error(400);
    let c = admin.req("GET", &format!("{TE}/clients/{a_id}"), None);
    assert_eq!(c.body["reported_health"], "healthy");
    assert_eq!(c.body["audit_lines"], 2);
    assert_eq!(c.body["reported_version"], "0.1.0");
    assert_eq!(
        c.body["reported_status"]["guardpoints"][0]["status"],
        "guarded"
    );

    // Renewal: the new certificate works, the old one no longer does.
    let (csr_pem, key_pem) = csr("host-a");
    let rn = agent_a.req("POST", "/api/v1/agent/renew", Some(json!({"csr": csr_pem})));
    assert_eq!(rn.status, 200, "{}", rn.body);
    let new_id = Identity {
        cert_pem: rn.body["certificate"].as_str().unwrap().to_owned(),
        key_pem,
    };
    assert_eq!(
        s.http(Some(&new_id))
            .req("GET", "/api/v1/agent/config", None)
            .status,
        200
    );
    s.http(Some(&id_a))
        .req("GET", "/api/v1/agent/config", None)
        .assert_error(403);

    // Communication disabled -> refused; re-enabled -> works.
    let p = admin.req(
        "PATCH",
        &format!("{TE}/clients/host-a"),
        Some(json!({"communication_enabled": false})),
    );
    assert_eq!(p.status, 200, "{}", p.body);
    s.http(Some(&new_id))
        .req("GET", "/api/v1/agent/config", None)
        .assert_error(403);
    admin.req(
        "PATCH",
        &format!("{TE}/clients/host-a"),
        Some(json!({"communication_enabled": true})),
    );
    assert_eq!(
        s.http(Some(&new_id))
            .req("GET", "/api/v1/agent/config", None)
            .status,
        200
    );

    // GuardPoint removal shows in the config.
    let gps = admin.req("GET", &format!("{TE}/clients/host-b/guardpoints"), None);
    let gpid = gps.body["resources"][0]["id"].as_str().unwrap().to_owned();
    admin
        .req("DELETE", &format!("{TE}/policies/pol-b"), None)
        .assert_error(409);
    let d = admin.req(
        "DELETE",
        &format!("{TE}/clients/host-b/guardpoints/{gpid}"),
        None,
    );
    assert_eq!(d.status, 204);
    let cfg_b = agent_b.req("GET", "/api/v1/agent/config", None);
    assert_eq!(cfg_b.body["guardpoints"], json!([]));
    assert_eq!(cfg_b.body["keys"], json!([]));
    assert_eq!(
        admin
            .req("DELETE", &format!("{TE}/policies/pol-b"), None)
            .status,
        204
    );

    // Deleted client: its certificate is refused.
    assert_eq!(
        admin
            .req("DELETE", &format!("{TE}/clients/host-b"), None)
            .status,
        204
    );
    agent_b
        .req("GET", "/api/v1/agent/config", None)
        .assert_error(403);

    // Key material never reached the server's log.
    let log = std::fs::read_to_string(root.path().join("server.log")).unwrap();
    assert!(log.contains("fetched key key-a version 1"));
    assert!(!log.contains(&mat1));
    assert!(!log.contains(m2.body["material"].as_str().unwrap()));
}

#[test]
fn registration_refusals() {
    let root = init_dir();
    let s = Server::start(root.path());
    let mut admin = s.http(None);
    admin.login();
    let clients_path = format!("{TE}/clients");
    let expiring = create_regtoken(&admin, json!({"lifetime": 1, "max_clients": 5}));
    let single = create_regtoken(&admin, json!({"max_clients": 1}));
    let prefixed = create_regtoken(&admin, json!({"max_clients": 5, "name_prefix": "web-"}));
    let before = admin.req("GET", &clients_path, None).body;

    let (r, _) = register(&s, "0000deadbeef", "host-x");
    r.assert_error(401);
    let (r, _) = register(&s, "", "host-x");
    r.assert_error(401);
    let (r, _) = register(&s, &prefixed, "db-1");
    r.assert_error(403);
    let h = s.http(None);
    let bad_csr = h.req(
        "POST",
        &format!("{TE}/register"),
        Some(json!({"token": single, "csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "name": "host-y"})),
    );
    bad_csr.assert_error(400);
    h.raw(
        "POST",
        &format!("{TE}/register"),
        Some(b"{\"token\": 5}".to_vec()),
        &[],
    )
    .assert_error(400);
    assert_eq!(admin.req("GET", &clients_path, None).body, before);

    // Exhausted.
    let (r, _) = register(&s, &single, "host-1");
    assert_eq!(r.status, 201, "{}", r.body);
    let (r, _) = register(&s, &single, "host-2");
    r.assert_error(403);
    assert!(r.body["message"].as_str().unwrap().contains("exhausted"));
    // Duplicate name.
    let (r, _) = register(&s, &prefixed, "web-1");
    assert_eq!(r.status, 201, "{}", r.body);
    let (r, _) = register(&s, &prefixed, "web-1");
    r.assert_error(409);
    // Name generated from the prefix when none is given.
    let (csr_pem, _) = csr("anon");
    let r = h.req(
        "POST",
        &format!("{TE}/register"),
        Some(json!({"token": prefixed, "csr": csr_pem})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body["name"].as_str().unwrap().starts_with("web-"));
    // Expired.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (r, _) = register(&s, &expiring, "host-3");
    r.assert_error(403);
    assert!(r.body["message"].as_str().unwrap().contains("expired"));

    let list = admin.req("GET", REGTOKENS, None).body;
    let used: Vec<i64> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["clients_registered"].as_i64().unwrap())
        .collect();
    assert_eq!(used, vec![0, 1, 2]);
    assert_eq!(admin.req("GET", &clients_path, None).body["total"], 3);
}

#[test]
fn hostile_requests_change_nothing() {
    let root = init_dir();
    let s = Server::start(root.path());
    let mut admin = s.http(None);
    admin.login();
    create_key(&admin, "k1", "CBC_CS1");
    create_policy(&admin, "p1", "k1");
    let token = create_regtoken(&admin, json!({"max_clients": 3}));
    let (r, _) = register(&s, &token, "h1");
    assert_eq!(r.status, 201);
    add_gp(&admin, "h1", "/srv/data", "p1");
    let before = snapshot(&admin);

    let json_posts: Vec<(&str, String, Vec<u8>, u16)> = vec![
        ("POST", KEYS.into(), b"{not json".to_vec(), 400),
        ("POST", KEYS.into(), b"".to_vec(), 400),
        ("POST", KEYS.into(), b"[1,2,3]".to_vec(), 400),
        ("POST", KEYS.into(), br#"{"name": 5}"#.to_vec(), 400),
        ("POST", KEYS.into(), br#"{"name": "k2", "size": "256"}"#.to_vec(), 400),
        ("POST", KEYS.into(), br#"{"name": "k2", "size": 128}"#.to_vec(), 400),
        ("POST", KEYS.into(), br#"{"name": "k2", "algorithm": "DES"}"#.to_vec(), 400),
        ("POST", KEYS.into(), br#"{"name": "k2", "meta": {"cte": {"encryption_mode": "ECB"}}}"#.to_vec(), 400),
        ("POST", KEYS.into(), br#"{"name": "k2", "material": "00"}"#.to_vec(), 400),
        ("POST", KEYS.into(), br#"{"name": "x'; DROP TABLE keys;--"}"#.to_vec(), 400),
        ("POST", KEYS.into(), br#"{"name": "k1\" OR 1=1 --"}"#.to_vec(), 400),
        ("POST", KEYS.into(), br#"{"name": "../../etc/passwd"}"#.to_vec(), 400),
        ("POST", KEYS.into(), br#"{"name": "k1"}"#.to_vec(), 409),
        ("POST", KEYS.into(), br#"{"name": "clear_key"}"#.to_vec(), 400),
        ("POST", REGTOKENS.into(), br#"{"lifetime": -1}"#.to_vec(), 400),
        ("POST", REGTOKENS.into(), br#"{"lifetime": "forever"}"#.to_vec(), 400),
        ("POST", REGTOKENS.into(), br#"{"max_clients": 0}"#.to_vec(), 400),
        ("POST", REGTOKENS.into(), br#"{"max_clients": "1"}"#.to_vec(), 400),
        ("POST", REGTOKENS.into(), br#"{"cert_duration": 99999}"#.to_vec(), 400),
        ("POST", REGTOKENS.into(), br#"{"name_prefix": "a b"}"#.to_vec(), 400),
        ("POST", format!("{TE}/policies"), b"{\"name\": ".to_vec(), 400),
        ("POST", format!("{TE}/policies"), br#"{"name": "p2", "security_rules": [{"order_number": 1, "action": "fly", "effect": "permit"}]}"#.to_vec(), 422),
        ("POST", format!("{TE}/policies"), br#"{"name": "p2", "unknown_field": 1}"#.to_vec(), 422),
        ("POST", format!("{TE}/policies"), serde_json::to_vec(&policy_doc("p2", "missing-key")).unwrap(), 422),
        ("POST", format!("{TE}/policies"), serde_json::to_vec(&policy_doc("p1", "k1")).unwrap(), 409),
        ("POST", format!("{TE}/policies"), serde_json::to_vec(&policy_doc("p1'--", "k1")).unwrap(), 400),
        ("PUT", format!("{TE}/policies/p1"), serde_json::to_vec(&policy_doc("other", "k1")).unwrap(), 422),
        ("PUT", format!("{TE}/policies/p1"), b"{}".to_vec(), 422),
        ("PATCH", format!("{TE}/clients/h1"), br#"{"communication_enabled": "no"}"#.to_vec(), 400),
        ("PATCH", format!("{TE}/clients/h1"), br#"{"name": "renamed"}"#.to_vec(), 400),
        ("PATCH", format!("{TE}/clients/h1"), b"null".to_vec(), 400),
        ("POST", format!("{TE}/clients/h1/guardpoints"), br#"{"guard_paths": ["/srv/../etc"], "guard_point_params": {"policy_id": "p1"}}"#.to_vec(), 400),
        ("POST", format!("{TE}/clients/h1/guardpoints"), br#"{"guard_paths": ["relative"], "guard_point_params": {"policy_id": "p1"}}"#.to_vec(), 400),
        ("POST", format!("{TE}/clients/h1/guardpoints"), br#"{"guard_paths": ["/"], "guard_point_params": {"policy_id": "p1"}}"#.to_vec(), 400),
        ("POST", format!("{TE}/clients/h1/guardpoints"), br#"{"guard_paths": [], "guard_point_params": {"policy_id": "p1"}}"#.to_vec(), 400),
        ("POST", format!("{TE}/clients/h1/guardpoints"), br#"{"guard_paths": ["/ok", "/srv/x/../y"], "guard_point_params": {"policy_id": "p1"}}"#.to_vec(), 400),
        ("POST", format!("{TE}/clients/h1/guardpoints"), br#"{"guard_paths": ["/ok"], "guard_point_params": {"policy_id": "nope"}}"#.to_vec(), 422),
        ("POST", format!("{TE}/clients/h1/guardpoints"), br#"{"guard_paths": ["/ok"], "guard_point_params": {"policy_id": "p1' OR '1'='1"}}"#.to_vec(), 400),
        ("POST", format!("{TE}/clients/h1/guardpoints"), br#"{"guard_paths": ["/ok"], "guard_point_params": {"policy_id": "p1", "guard_point_type": "bogus"}}"#.to_vec(), 400),
        ("POST", format!("{TE}/clients/h1/guardpoints"), br#"{"guard_paths": ["/ok", "/srv/data/sub"], "guard_point_params": {"policy_id": "p1"}}"#.to_vec(), 409),
        ("POST", format!("{TE}/clients/h1/guardpoints"), br#"{"guard_paths": ["/srv/data"], "guard_point_params": {"policy_id": "p1"}}"#.to_vec(), 409),
        ("POST", format!("{TE}/clients/h1/guardpoints"), br#"{"guard_paths": "/ok", "guard_point_params": {"policy_id": "p1"}}"#.to_vec(), 400),
    ];
    for (m, p, body, status) in &json_posts {
        let r = admin.raw(m, p, Some(body.clone()), &[]);
        assert_eq!(
            r.status,
            *status,
            "{m} {p} {:?}: {}",
            String::from_utf8_lossy(body),
            r.body
        );
        r.assert_error(*status);
        // No echo of what looked like material.
        assert!(!r.body.to_string().contains("material\":"));
    }

    // Unknown ids, traversal and SQL in paths.
    let gets: Vec<(&str, String, u16)> = vec![
        ("GET", format!("{KEYS}/no-such-key"), 404),
        (
            "GET",
            format!("{KEYS}/00000000-0000-4000-8000-000000000000"),
            404,
        ),
        ("DELETE", format!("{KEYS}/no-such-key"), 404),
        ("POST", format!("{KEYS}/no-such-key/versions"), 404),
        ("POST", format!("{KEYS}/no-such-key/revoke"), 404),
        ("GET", format!("{KEYS}/..%2F..%2Fetc%2Fpasswd"), 400),
        ("GET", format!("{KEYS}/k1%27%20OR%20%271%27=%271"), 400),
        ("DELETE", format!("{KEYS}/%2e%2e"), 400),
        ("GET", format!("{KEYS}/../../auth/tokens"), 400),
        ("DELETE", format!("{REGTOKENS}/no-such"), 404),
        ("GET", format!("{TE}/clients/nobody"), 404),
        ("DELETE", format!("{TE}/clients/nobody"), 404),
        ("DELETE", format!("{TE}/clients/h1/guardpoints/nope"), 404),
        ("GET", format!("{TE}/clients/h1/guardpoints/nope"), 404),
        ("DELETE", format!("{TE}/policies/nope"), 404),
        ("DELETE", format!("{TE}/policies/p1"), 409),
        ("GET", format!("{TE}/policies/..."), 400),
        ("GET", "/api/v1/nothing".into(), 404),
        ("GET", "/".into(), 404),
        ("PUT", KEYS.into(), 405),
        ("DELETE", format!("{TE}/clients"), 405),
        ("GET", "/api/v1/auth/tokens".into(), 405),
    ];
    for (m, p, status) in &gets {
        admin.raw(m, p, None, &[]).assert_error(*status);
    }

    // Authentication failures.
    let mut anon = s.http(None);
    anon.req("GET", KEYS, None).assert_error(401);
    anon.req("POST", KEYS, Some(json!({"name": "sneaky"})))
        .assert_error(401);
    anon.token = Some("not-a-token".into());
    anon.req("GET", KEYS, None).assert_error(401);
    anon.raw(
        "GET",
        KEYS,
        None,
        &[("Authorization", "Basic YWRtaW46eA==")],
    )
    .assert_error(401);
    anon.token = None;
    for body in [
        json!({"grant_type": "password", "username": "admin", "password": "wrong"}),
        json!({"grant_type": "password", "username": "root", "password": PASSWORD}),
        json!({"grant_type": "refresh_token", "username": "admin", "password": PASSWORD}),
        json!({"grant_type": "password", "username": "admin", "password": 12345}),
    ] {
        let r = anon.req("POST", "/api/v1/auth/tokens", Some(body));
        assert!(r.status == 400 || r.status == 401, "{}", r.body);
        r.assert_error(r.status);
        assert!(!r.body.to_string().contains("12345"));
    }

    // Huge bodies are refused with a JSON 413.
    let huge = vec![b'a'; 2 * 1024 * 1024];
    match admin.try_raw("POST", KEYS, huge.clone()) {
        Ok(r) => r.assert_error(413),
        Err(e) => panic!("huge body: {e}"),
    }
    let mut huge_json = br#"{"name": "k9", "pad": ""#.to_vec();
    huge_json.extend(std::iter::repeat_n(b'x', 1024 * 1024 + 10));
    huge_json.extend(b"\"}");
    admin
        .raw("POST", KEYS, Some(huge_json), &[])
        .assert_error(413);
    let r = s
        .http(None)
        .try_raw("POST", &format!("{TE}/register"), huge)
        .unwrap();
    r.assert_error(413);

    // The server is still healthy and nothing changed.
    let after = snapshot(&admin);
    assert_eq!(before, after);
}

#[test]
fn kill9_after_post_keeps_committed_changes() {
    let root = init_dir();
    let mut s = Server::start(root.path());
    let mut admin = s.http(None);
    admin.login();
    create_key(&admin, "durable", "XTS");
    s.kill9();

    let mut s = Server::start(root.path());
    let mut admin = s.http(None);
    admin.login();
    let k = admin.req("GET", &format!("{KEYS}/durable"), None);
    assert_eq!(k.status, 200, "{}", k.body);
    assert_eq!(k.body["versions"], json!([1]));
    let r = admin.req("POST", &format!("{KEYS}/durable/versions"), None);
    assert_eq!(r.status, 201);
    create_policy(&admin, "durable-pol", "durable");
    let token = create_regtoken(&admin, json!({"max_clients": 1}));
    let (reg, id) = register(&s, &token, "durable-host");
    assert_eq!(reg.status, 201);
    add_gp(&admin, "durable-host", "/d", "durable-pol");
    s.kill9();

    let s = Server::start(root.path());
    let mut admin = s.http(None);
    admin.login();
    let k = admin.req("GET", &format!("{KEYS}/durable"), None);
    assert_eq!(k.body["versions"], json!([1, 2]));
    // The client's certificate and its config survived; material unseals.
    let agent = s.http(Some(&id));
    let cfg = agent.req("GET", "/api/v1/agent/config", None);
    assert_eq!(cfg.status, 200, "{}", cfg.body);
    assert_eq!(cfg.body["keys"][0]["versions"], json!([1, 2]));
    let m = agent.req("GET", "/api/v1/agent/keys/durable/versions/2", None);
    assert_eq!(m.status, 200, "{}", m.body);
}

#[test]
fn cli_smoke() {
    let root = init_dir();
    let s = Server::start(root.path());
    let out = s.cli(&["key", "create", "cli-key", "--mode", "GCM"]);
    assert!(out.status.success(), "{out:?}");
    let out = s.cli(&["--json", "key", "create", "cli-key"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["codeDesc"], "NCERRConflict");
    assert_eq!(err["code"], 6);

    let out = s.cli(&[
        "--json",
        "token",
        "create",
        "--lifetime",
        "600",
        "--max-clients",
        "2",
    ]);
    assert!(out.status.success(), "{out:?}");
    let tok: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tok["max_clients"], 2);
    assert_eq!(tok["lifetime"], 600);

    let pol = root.path().join("pol.json");
    std::fs::write(
        &pol,
        serde_json::to_vec(&policy_doc("cli-pol", "cli-key")).unwrap(),
    )
    .unwrap();
    let out = s.cli(&["--json", "policy", "apply", pol.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    // Applying again replaces it.
    let out = s.cli(&["--json", "policy", "apply", pol.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");

    let (r, _) = register(&s, tok["token"].as_str().unwrap(), "cli-host");
    assert_eq!(r.status, 201);
    let out = s.cli(&[
        "--json",
        "guardpoint",
        "add",
        "cli-host",
        "/cli",
        "--policy",
        "cli-pol",
        "--type",
        "manual",
    ]);
    assert!(out.status.success(), "{out:?}");
    let gp: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(gp["guardpoints"][0]["guard_point_type"], "directory_manual");
    let gpid = gp["guardpoints"][0]["id"].as_str().unwrap().to_owned();

    let out = s.cli(&["--json", "client", "list"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["total"], 1);
    let out = s.cli(&["client", "show", "cli-host"]);
    assert!(out.status.success());
    let out = s.cli(&["key", "rotate", "cli-key"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("version 2"));
    let out = s.cli(&["guardpoint", "remove", "cli-host", &gpid]);
    assert!(out.status.success(), "{out:?}");
    let out = s.cli(&["key", "revoke", "cli-key"]);
    assert!(out.status.success(), "{out:?}");
    let out = s.cli(&["client", "delete", "cli-host"]);
    assert!(out.status.success(), "{out:?}");
    // Bad input handled locally, no request sent.
    let out = s.cli(&["key", "rotate", "../auth"]);
    assert_eq!(out.status.code(), Some(2));
    // Wrong password.
    let out = std::process::Command::new(bin())
        .args(["--json", "key", "list", "--password", "wrong"])
        .env("KEYMGR_URL", s.url(""))
        .env("KEYMGR_DATA_DIR", &s.data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], 2);
    // No key material anywhere in the CLI's output or the server log.
    let log = std::fs::read_to_string(root.path().join("server.log")).unwrap();
    assert!(!log.contains("material\""));
}

#[test]
fn init_refuses_existing_data_dir() {
    let root = init_dir();
    let out = std::process::Command::new(bin())
        .args(["init", "--data-dir"])
        .arg(root.path().join("data"))
        .args(["--admin-password", PASSWORD])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    use std::os::unix::fs::PermissionsExt;
    for f in ["master.key", "ca.key", "server.key"] {
        let mode = std::fs::metadata(root.path().join("data").join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
}

#[test]
fn concurrent_registrations_respect_max_clients() {
    let root = init_dir();
    let s = Server::start(root.path());
    let mut admin = s.http(None);
    admin.login();
    let token = create_regtoken(&admin, json!({"max_clients": 3}));
    let statuses: Vec<u16> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let s = &s;
                let token = &token;
                sc.spawn(move || register(s, token, &format!("race-{i}")).0.status)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|&&st| st == 201).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&st| st == 403).count(),
        5,
        "{statuses:?}"
    );
    let list = admin.req("GET", &format!("{TE}/clients"), None);
    assert_eq!(list.body["total"], 3);
    assert_eq!(
        admin.req("GET", REGTOKENS, None).body["resources"][0]["clients_registered"],
        3
    );
}

#[test]
fn sigterm_stops_cleanly() {
    let root = init_dir();
    let mut s = Server::start(root.path());
    let st = std::process::Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let start = std::time::Instant::now();
    loop {
        if let Some(code) = s.child.try_wait().unwrap() {
            assert!(code.success(), "{code:?}");
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "still running"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

// ----- offline unlock (challenge-response)

mod unlock {
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    use aws_lc_rs::agreement::{EphemeralPrivateKey, UnparsedPublicKey, X25519, agree_ephemeral};
    use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
    use aws_lc_rs::rand::SystemRandom;
    use data_encoding::BASE32_NOPAD;

    /// Base32, no padding, groups of 8 separated by single spaces.
    pub fn encode(bytes: &[u8]) -> String {
        let plain = BASE32_NOPAD.encode(bytes);
        plain
            .as_bytes()
            .chunks(8)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn now_minutes() -> i64 {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        i64::try_from(secs / 60).unwrap()
    }

    /// An agent's challenge: its private key, the bytes, the text.
    pub fn challenge(minutes: i64, version: u8) -> (EphemeralPrivateKey, Vec<u8>, String) {
        let sk = EphemeralPrivateKey::generate(&X25519, &SystemRandom::new()).unwrap();
        let pk = sk.compute_public_key().unwrap();
        let mut c = vec![version];
        c.extend_from_slice(&u32::try_from(minutes).unwrap().to_be_bytes());
        c.extend_from_slice(pk.as_ref());
        assert_eq!(c.len(), 37);
        let text = encode(&c);
        (sk, c, text)
    }

    /// Check the response text's shape and decrypt it as the agent would.
    pub fn open(sk: EphemeralPrivateKey, challenge: &[u8], text: &str) -> Vec<u8> {
        let groups: Vec<&str> = text.split(' ').collect();
        assert_eq!(groups.len(), 16, "{text}");
        assert!(groups.iter().all(|g| g.len() == 8), "{text}");
        assert!(
            text.bytes()
                .all(|b| b == b' ' || b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)),
            "{text}"
        );
        let resp = BASE32_NOPAD
            .decode(text.replace(' ', "").as_bytes())
            .unwrap();
        assert_eq!(resp.len(), 80);
        let peer = UnparsedPublicKey::new(&X25519, &resp[..32]);
        let k = agree_ephemeral(sk, peer, (), |shared| {
            let prk = Salt::new(HKDF_SHA256, challenge).extract(shared);
            let info: [&[u8]; 1] = [b"guardfs offline unlock v1"];
            let okm = prk.expand(&info, HKDF_SHA256).map_err(|_| ())?;
            let mut k = [0u8; 32];
            okm.fill(&mut k).map_err(|_| ())?;
            Ok(k)
        })
        .unwrap();
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &k).unwrap());
        let mut buf = resp[32..].to_vec();
        let n = key
            .open_in_place(
                Nonce::assume_unique_for_key([0u8; 12]),
                Aad::empty(),
                &mut buf,
            )
            .expect("response does not authenticate")
            .len();
        buf.truncate(n);
        buf
    }
}

#[test]
fn offline_unlock_challenge_response() {
    let root = init_dir();
    let s = Server::start(root.path());
    let mut admin = s.http(None);
    admin.login();
    let token = create_regtoken(&admin, json!({"max_clients": 2}));
    let (ra, id_a) = register(&s, &token, "vault-a");
    assert_eq!(ra.status, 201, "{}", ra.body);
    let a_id = ra.body["client_id"].as_str().unwrap().to_owned();
    let (rb, _) = register(&s, &token, "vault-b");
    assert_eq!(rb.status, 201, "{}", rb.body);
    let agent = s.http(Some(&id_a));
    let escrow_path = "/api/v1/agent/escrow";
    let cr = |c: &str| format!("{TE}/clients/{c}/challenge-response");

    let mut first = [0u8; 32];
    aws_lc_rs::rand::fill(&mut first).unwrap();
    let mut escrow = [0u8; 32];
    aws_lc_rs::rand::fill(&mut escrow).unwrap();
    let first_hex = hex::encode(first);
    let escrow_hex = hex::encode(escrow);

    // Malformed escrow keys: 400, never echoed.
    let bad_values = [
        escrow_hex[..63].to_owned(),
        format!("{}0", escrow_hex),
        format!("{}0g", &escrow_hex[..62]),
        "zz".repeat(32),
        format!(" {}", &escrow_hex[..63]),
        String::new(),
    ];
    for v in &bad_values {
        let r = agent.req("POST", escrow_path, Some(json!({"escrow_key": v})));
        r.assert_error(400);
        if !v.is_empty() {
            assert!(!r.body.to_string().contains(v.as_str()), "{}", r.body);
        }
    }
    for body in [
        b"".to_vec(),
        b"{not json".to_vec(),
        br#"{"escrow_key": 5}"#.to_vec(),
        br#"{}"#.to_vec(),
        format!(r#"{{"escrow_key": "{escrow_hex}", "extra": 1}}"#).into_bytes(),
        format!(r#""{escrow_hex}""#).into_bytes(),
        format!(r#"["{escrow_hex}"]"#).into_bytes(),
    ] {
        let r = agent.raw("POST", escrow_path, Some(body.clone()), &[]);
        r.assert_error(400);
        assert!(!r.body.to_string().contains(&escrow_hex), "{}", r.body);
    }
    // mTLS required: no certificate, or only an admin token -> 401.
    s.http(None)
        .req("POST", escrow_path, Some(json!({"escrow_key": escrow_hex})))
        .assert_error(401);
    admin
        .req("POST", escrow_path, Some(json!({"escrow_key": escrow_hex})))
        .assert_error(401);
    agent.req("GET", escrow_path, None).assert_error(405);

    // No escrow yet -> 404 with the explanation.
    let (_, _, text) = unlock::challenge(unlock::now_minutes(), 1);
    let r = admin.req("POST", &cr("vault-a"), Some(json!({"challenge": text})));
    r.assert_error(404);
    assert_eq!(
        r.body["message"],
        "client has no escrow key; the agent stores one when it is registered and reachable"
    );

    // Store one, then replace it (upper-case hex accepted).
    let r = agent.req(
        "POST",
        escrow_path,
        Some(json!({"escrow_key": first_hex.to_uppercase()})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({"stored": true}));
    let r = agent.req("POST", escrow_path, Some(json!({"escrow_key": escrow_hex})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({"stored": true}));
    {
        // Sealed at rest: the stored blob is not the key.
        let db = rusqlite::Connection::open(s.data.join("keymgr.db")).unwrap();
        let sealed: Vec<u8> = db
            .query_row(
                "SELECT sealed FROM client_escrow WHERE client_id = ?1",
                [&a_id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(sealed.len(), 12 + 32 + 16);
        assert!(!sealed.windows(32).any(|w| w == escrow));
    }

    // The response decrypts to the (latest) escrow key; by id and by name.
    for who in [a_id.as_str(), "vault-a"] {
        let (sk, bytes, text) = unlock::challenge(unlock::now_minutes(), 1);
        let r = admin.req("POST", &cr(who), Some(json!({"challenge": text})));
        assert_eq!(r.status, 200, "{}", r.body);
        let obj = r.body.as_object().unwrap();
        assert_eq!(obj.len(), 1, "{}", r.body);
        let got = unlock::open(sk, &bytes, r.body["response"].as_str().unwrap());
        assert_eq!(got, escrow);
    }
    // Lenient parsing: lower case, dashes, tabs, newlines; one minute ahead.
    let (sk, bytes, text) = unlock::challenge(unlock::now_minutes() + 1, 1);
    let messy = format!("\n{}\t\n", text.to_lowercase().replace(' ', "-"));
    let r = admin.req("POST", &cr("vault-a"), Some(json!({"challenge": messy})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        unlock::open(sk, &bytes, r.body["response"].as_str().unwrap()),
        escrow
    );

    // Refusals.
    let now_m = unlock::now_minutes();
    for minutes in [now_m - 20, now_m - 17, now_m + 5] {
        let (_, _, text) = unlock::challenge(minutes, 1);
        let r = admin.req("POST", &cr("vault-a"), Some(json!({"challenge": text})));
        r.assert_error(403);
        assert!(
            r.body["message"].as_str().unwrap().contains("expired"),
            "{}",
            r.body
        );
    }
    let (_, good_bytes, good_text) = unlock::challenge(now_m, 1);
    let (_, _, v2) = unlock::challenge(now_m, 2);
    let mut long = good_bytes.clone();
    long.push(0);
    let bad_texts = [
        "not a challenge!".to_owned(),
        "".to_owned(),
        format!("1{}", &good_text[1..]),
        format!("{good_text}="),
        unlock::encode(&good_bytes[..36]),
        unlock::encode(&long),
        v2,
        "A".repeat(5000),
    ];
    for t in &bad_texts {
        admin
            .req("POST", &cr("vault-a"), Some(json!({"challenge": t})))
            .assert_error(422);
    }
    admin
        .req("POST", &cr("vault-a"), Some(json!({"nope": good_text})))
        .assert_error(400);
    admin
        .req("POST", &cr("vault-a"), Some(json!([good_text])))
        .assert_error(400);
    admin
        .req(
            "POST",
            &cr("vault-b"),
            Some(json!({"challenge": good_text})),
        )
        .assert_error(404);
    admin
        .req("POST", &cr("nobody"), Some(json!({"challenge": good_text})))
        .assert_error(404);
    s.http(None)
        .req(
            "POST",
            &cr("vault-a"),
            Some(json!({"challenge": good_text})),
        )
        .assert_error(401);
    agent
        .req(
            "POST",
            &cr("vault-a"),
            Some(json!({"challenge": good_text})),
        )
        .assert_error(401);
    admin.req("GET", &cr("vault-a"), None).assert_error(405);

    // CLI: the grouped challenge pasted as separate arguments.
    let (sk, bytes, text) = unlock::challenge(unlock::now_minutes(), 1);
    let mut args = vec!["challenge", "respond", "vault-a"];
    args.extend(text.split(' '));
    let out = s.cli(&args);
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(unlock::open(sk, &bytes, printed.trim_end()), escrow);
    let (sk, bytes, text) = unlock::challenge(unlock::now_minutes(), 1);
    let out = s.cli(&["--json", "challenge", "respond", &a_id, &text]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        unlock::open(sk, &bytes, v["response"].as_str().unwrap()),
        escrow
    );
    let (_, _, old) = unlock::challenge(unlock::now_minutes() - 20, 1);
    let out = s.cli(&["--json", "challenge", "respond", "vault-a", &old]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], 3);
    let out = s.cli(&["challenge", "respond", "vault-b", &text]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = s.cli(&["challenge", "respond", "../x", &text]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = s.cli(&["challenge", "respond", "vault-a"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // Deleting the client deletes its escrow.
    let r = admin.req("DELETE", &format!("{TE}/clients/vault-a"), None);
    assert_eq!(r.status, 204);
    {
        let db = rusqlite::Connection::open(s.data.join("keymgr.db")).unwrap();
        let n: i64 = db
            .query_row("SELECT COUNT(*) FROM client_escrow", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }

    // The log names the client for each response and never shows the key.
    let log = std::fs::read_to_string(root.path().join("server.log")).unwrap();
    assert_eq!(
        log.matches("offline unlock response given for client vault-a")
            .count(),
        5,
        "{log}"
    );
    assert!(log.contains("client vault-a stored its escrow key"));
    for secret in [&escrow_hex, &first_hex] {
        assert!(!log.contains(secret.as_str()));
        assert!(!log.to_lowercase().contains(secret.as_str()));
    }
    assert!(!log.contains(&escrow_hex[..20]));
}

fn register_profile(s: &Server, token: &str, name: &str, profile: &str) -> (Reply, Identity) {
    let (csr_pem, key_pem) = csr(name);
    let r = s.http(None).req(
        "POST",
        &format!("{TE}/register"),
        Some(json!({"token": token, "csr": csr_pem, "name": name, "profile": profile})),
    );
    let cert_pem = r.body["certificate"].as_str().unwrap_or("").to_owned();
    (r, Identity { cert_pem, key_pem })
}

#[test]
fn client_profiles() {
    let root = init_dir();
    let s = Server::start(root.path());
    let mut admin = s.http(None);
    admin.login();
    let profiles = format!("{TE}/profiles");

    // The default profile exists from the start.
    let l = admin.req("GET", &profiles, None);
    assert_eq!(l.status, 200, "{}", l.body);
    assert_eq!(names(&l.body, "resources"), vec!["DefaultClientProfile"]);
    let def = admin.req("GET", &format!("{profiles}/DefaultClientProfile"), None);
    assert_eq!(def.status, 200);
    assert_eq!(def.body["poll_interval"], 10);
    let def_id = def.body["id"].as_str().unwrap().to_owned();

    // Create with defaults and with values; validation.
    let r = admin.req("POST", &profiles, Some(json!({"name": "fast"})));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["poll_interval"], 10);
    assert_eq!(r.body["concise_logging"], false);
    assert!(r.body["createdAt"].is_string());
    let r = admin.req(
        "POST",
        &profiles,
        Some(
            json!({"name": "db-hosts", "description": "databases", "concise_logging": true,
                    "learn_mode_allowed": false, "poll_interval": 30}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let db_id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["learn_mode_allowed"], false);
    admin
        .req("POST", &profiles, Some(json!({"name": "db-hosts"})))
        .assert_error(409);
    for bad in [
        json!({"name": "x", "poll_interval": 0}),
        json!({"name": "x", "poll_interval": 3601}),
        json!({"name": "../x"}),
        json!({"name": "x", "colour": "red"}),
        json!({"name": "x", "concise_logging": "yes"}),
        json!({"description": "no name"}),
    ] {
        admin.req("POST", &profiles, Some(bad)).assert_error(400);
    }
    let r = admin.req("GET", &format!("{profiles}/{db_id}"), None);
    assert_eq!(r.body["name"], "db-hosts");

    // PATCH.
    let r = admin.req(
        "PATCH",
        &format!("{profiles}/db-hosts"),
        Some(json!({"poll_interval": 60, "concise_logging": false})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["poll_interval"], 60);
    assert_eq!(r.body["description"], "databases");
    admin
        .req(
            "PATCH",
            &format!("{profiles}/db-hosts"),
            Some(json!({"poll_interval": 99999})),
        )
        .assert_error(400);
    admin
        .req("PATCH", &format!("{profiles}/nope"), Some(json!({})))
        .assert_error(404);

    // Registration resolves the profile by name.
    let token = create_regtoken(&admin, json!({"max_clients": 5}));
    let (r, _) = register_profile(&s, &token, "ghost-host", "no-such-profile");
    r.assert_error(422);
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("no-such-profile"),
        "{}",
        r.body
    );
    let (r, id_db) = register_profile(&s, &token, "db-1", "db-hosts");
    assert_eq!(r.status, 201, "{}", r.body);
    let (r, id_plain) = register(&s, &token, "plain-1");
    assert_eq!(r.status, 201, "{}", r.body);
    let c = admin.req("GET", &format!("{TE}/clients/db-1"), None);
    assert_eq!(c.body["profile_id"], db_id.as_str());
    let c = admin.req("GET", &format!("{TE}/clients/plain-1"), None);
    assert_eq!(c.body["profile_id"], def_id.as_str());

    // The agent config carries the profile.
    let cfg = s
        .http(Some(&id_db))
        .req("GET", "/api/v1/agent/config", None);
    assert_eq!(cfg.status, 200, "{}", cfg.body);
    assert_eq!(
        cfg.body["profile"],
        json!({"name": "db-hosts", "concise_logging": false, "poll_interval": 60})
    );
    let cfg = s
        .http(Some(&id_plain))
        .req("GET", "/api/v1/agent/config", None);
    assert_eq!(cfg.body["profile"]["name"], "DefaultClientProfile");
    assert_eq!(cfg.body["profile"]["poll_interval"], 10);

    // Delete: refused while used, and always for the default profile.
    admin
        .req("DELETE", &format!("{profiles}/db-hosts"), None)
        .assert_error(409);
    admin
        .req("DELETE", &format!("{profiles}/DefaultClientProfile"), None)
        .assert_error(409);
    assert_eq!(
        admin
            .req("DELETE", &format!("{TE}/clients/db-1"), None)
            .status,
        204
    );
    assert_eq!(
        admin
            .req("DELETE", &format!("{profiles}/db-hosts"), None)
            .status,
        204
    );
    admin
        .req("GET", &format!("{profiles}/db-hosts"), None)
        .assert_error(404);

    // CLI.
    let out = s.cli(&[
        "--json",
        "profile",
        "create",
        "cli-prof",
        "--description",
        "from the CLI",
        "--poll-interval",
        "5",
        "--concise-logging",
    ]);
    assert!(out.status.success(), "{out:?}");
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["poll_interval"], 5);
    assert_eq!(p["concise_logging"], true);
    let out = s.cli(&["--json", "profile", "create", "bad", "--poll-interval", "0"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = s.cli(&["--json", "profile", "list"]);
    let l: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(l["total"], 3);
    let out = s.cli(&["profile", "show", "cli-prof"]);
    assert!(out.status.success(), "{out:?}");
    let out = s.cli(&["profile", "delete", "cli-prof"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn policy_sets() {
    let root = init_dir();
    let s = Server::start(root.path());
    let mut admin = s.http(None);
    admin.login();
    create_key(&admin, "set-key", "XTS");
    let usersets = format!("{TE}/usersets");
    let processsets = format!("{TE}/processsets");
    let resourcesets = format!("{TE}/resourcesets");

    // CRUD and validation.
    let r = admin.req(
        "POST",
        &usersets,
        Some(json!({"name": "dbas", "description": "database admins",
                    "users": [{"uname": "postgres"}, {"gid": 1001}]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["users"][0]["uname"], "postgres");
    assert!(r.body["createdAt"].is_string());
    admin
        .req(
            "POST",
            &usersets,
            Some(json!({"name": "dbas", "users": [{"uid": 1}]})),
        )
        .assert_error(409);
    let r = admin.req(
        "POST",
        &usersets,
        Some(json!({"name": "bad", "users": [{"uname": "x", "shell": "/bin/sh"}]})),
    );
    r.assert_error(422);
    assert!(
        r.body["message"].as_str().unwrap().contains("shell"),
        "{}",
        r.body
    );
    let r = admin.req(
        "POST",
        &usersets,
        Some(json!({"name": "bad", "users": [{}]})),
    );
    r.assert_error(422);
    admin
        .req("POST", &usersets, Some(json!({"name": "bad", "users": []})))
        .assert_error(400);
    admin
        .req(
            "POST",
            &usersets,
            Some(json!({"name": "bad", "processes": [{"file": "x"}]})),
        )
        .assert_error(400);
    let r = admin.req(
        "POST",
        &processsets,
        Some(json!({"name": "bad", "processes": [{"signature": "not-hex"}]})),
    );
    r.assert_error(422);
    assert!(
        r.body["message"].as_str().unwrap().contains("not-hex"),
        "{}",
        r.body
    );
    let r = admin.req(
        "POST",
        &processsets,
        Some(json!({"name": "pg", "processes": [{"directory": "/usr/bin", "file": "postgres"}]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = admin.req(
        "POST",
        &resourcesets,
        Some(json!({"name": "dbfiles", "resources": [{"directory": "/db", "file": "*.dat", "include_subfolders": true}]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = admin.req(
        "POST",
        &resourcesets,
        Some(json!({"name": "bad", "resources": [{"directory": "relative"}]})),
    );
    r.assert_error(422);
    let l = admin.req("GET", &usersets, None);
    assert_eq!(names(&l.body, "resources"), vec!["dbas"]);
    let l = admin.req("GET", &processsets, None);
    assert_eq!(names(&l.body, "resources"), vec!["pg"]);
    let one = admin.req("GET", &format!("{resourcesets}/dbfiles"), None);
    assert_eq!(one.status, 200);
    let dbfiles_id = one.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        admin
            .req("GET", &format!("{resourcesets}/{dbfiles_id}"), None)
            .body["name"],
        "dbfiles"
    );
    admin
        .req("GET", &format!("{usersets}/dbfiles"), None)
        .assert_error(404);

    // A policy referencing stored sets by name: they are inlined.
    let doc = json!({
        "name": "db-pol",
        "policy_type": "Standard",
        "security_rules": [
            {"order_number": 1, "user_set_id": "dbas", "process_set_id": "pg",
             "action": "all_ops", "effect": "permit,applykey"},
            {"order_number": 2, "action": "all_ops", "effect": "deny"}
        ],
        "key_rules": [{"resource_set_id": "dbfiles", "key_id": "set-key"}]
    });
    let r = admin.req("POST", &format!("{TE}/policies"), Some(doc.clone()));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["policy"]["user_sets"][0]["id"], "dbas");
    assert_eq!(
        r.body["policy"]["user_sets"][0]["users"],
        json!([{"uname": "postgres"}, {"gid": 1001}])
    );
    assert_eq!(r.body["policy"]["process_sets"][0]["name"], "pg");
    assert_eq!(r.body["policy"]["resource_sets"][0]["name"], "dbfiles");
    assert_eq!(r.body["keys"], json!(["set-key"]));
    {
        let db = rusqlite::Connection::open(s.data.join("keymgr.db")).unwrap();
        let text: String = db
            .query_row("SELECT json FROM policies WHERE name = 'db-pol'", [], |r| {
                r.get(0)
            })
            .unwrap();
        let stored: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(stored["user_sets"][0]["users"][0]["uname"], "postgres");
        assert!(guardfs_policy::CompiledPolicy::from_json(&text).is_ok());
    }
    // An unknown set name.
    let mut bad = doc.clone();
    bad["name"] = json!("other-pol");
    bad["security_rules"][0]["user_set_id"] = json!("nobody");
    let r = admin.req("POST", &format!("{TE}/policies"), Some(bad));
    r.assert_error(422);
    assert!(r.body["message"].as_str().unwrap().contains("nobody"));
    // A set the policy defines inline wins over a stored one of that name.
    let mut own = doc.clone();
    own["name"] = json!("own-pol");
    own["user_sets"] = json!([{"id": "dbas", "users": [{"uname": "root"}]}]);
    let r = admin.req("POST", &format!("{TE}/policies"), Some(own));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.body["policy"]["user_sets"],
        json!([{"id": "dbas", "users": [{"uname": "root"}]}])
    );

    // Deleting a used set: 409; a GET-then-PUT round trip keeps the reference.
    admin
        .req("DELETE", &format!("{usersets}/dbas"), None)
        .assert_error(409);
    let stored = admin.req("GET", &format!("{TE}/policies/db-pol"), None);
    let r = admin.req(
        "PUT",
        &format!("{TE}/policies/db-pol"),
        Some(stored.body["policy"].clone()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    admin
        .req("DELETE", &format!("{usersets}/dbas"), None)
        .assert_error(409);
    admin
        .req("DELETE", &format!("{resourcesets}/dbfiles"), None)
        .assert_error(409);

    // PUT of a set rewrites the policies that inline it.
    let r = admin.req(
        "PUT",
        &format!("{usersets}/dbas"),
        Some(json!({"users": [{"uname": "postgres"}, {"uname": "backup"}]})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["description"], "database admins");
    let p = admin.req("GET", &format!("{TE}/policies/db-pol"), None);
    assert_eq!(
        p.body["policy"]["user_sets"][0]["users"][1]["uname"],
        "backup"
    );
    admin
        .req(
            "PUT",
            &format!("{usersets}/dbas"),
            Some(json!({"users": [{"uid": "zero"}]})),
        )
        .assert_error(422);
    admin
        .req(
            "PUT",
            &format!("{usersets}/dbas"),
            Some(json!({"name": "renamed", "users": [{"uid": 0}]})),
        )
        .assert_error(422);

    // Once no policy uses it, it can go.
    let mut plain = policy_doc("db-pol", "set-key");
    plain["description"] = json!("no sets");
    let r = admin.req("PUT", &format!("{TE}/policies/db-pol"), Some(plain));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        admin
            .req("DELETE", &format!("{usersets}/dbas"), None)
            .status,
        204
    );
    // own-pol still inlines the stored resource set (its user set was its own).
    admin
        .req("DELETE", &format!("{resourcesets}/dbfiles"), None)
        .assert_error(409);
    assert_eq!(
        admin
            .req("DELETE", &format!("{TE}/policies/own-pol"), None)
            .status,
        204
    );
    assert_eq!(
        admin
            .req("DELETE", &format!("{resourcesets}/dbfiles"), None)
            .status,
        204
    );
    admin
        .req("GET", &format!("{usersets}/dbas"), None)
        .assert_error(404);

    // CLI.
    let f = root.path().join("users.json");
    std::fs::write(&f, br#"[{"uname": "alice"}, {"gname": "staff"}]"#).unwrap();
    let out = s.cli(&[
        "--json",
        "set",
        "create",
        "user",
        "cli-users",
        "--file",
        f.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["users"][1]["gname"], "staff");
    std::fs::write(&f, br#"[{"uname": ""}]"#).unwrap();
    let out = s.cli(&[
        "--json",
        "set",
        "create",
        "user",
        "cli-bad",
        "--file",
        f.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = s.cli(&["--json", "set", "list", "user"]);
    let l: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(l["total"], 1);
    let out = s.cli(&["set", "list", "process"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("pg"));
    let out = s.cli(&["set", "delete", "user", "cli-users"]);
    assert!(out.status.success(), "{out:?}");
    let out = s.cli(&["--json", "set", "list", "user"]);
    let l: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(l["total"], 0);
}

#[test]
fn agent_self_delete() {
    let root = init_dir();
    let s = Server::start(root.path());
    let mut admin = s.http(None);
    admin.login();
    create_key(&admin, "del-key", "XTS");
    create_policy(&admin, "del-pol", "del-key");
    let token = create_regtoken(&admin, json!({"max_clients": 2}));
    let (r, id) = register(&s, &token, "doomed");
    assert_eq!(r.status, 201, "{}", r.body);
    let (r, other) = register(&s, &token, "survivor");
    assert_eq!(r.status, 201, "{}", r.body);
    add_gp(&admin, "doomed", "/data", "del-pol");
    let agent = s.http(Some(&id));
    let r = agent.req(
        "POST",
        "/api/v1/agent/escrow",
        Some(json!({"escrow_key": "ab".repeat(32)})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    agent
        .req("GET", "/api/v1/agent/delete", None)
        .assert_error(405);
    // Without a certificate: refused.
    s.http(None)
        .req("POST", "/api/v1/agent/delete", None)
        .assert_error(401);

    let r = agent.req("POST", "/api/v1/agent/delete", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({"deleted": true}));
    admin
        .req("GET", &format!("{TE}/clients/doomed"), None)
        .assert_error(404);
    {
        let db = rusqlite::Connection::open(s.data.join("keymgr.db")).unwrap();
        let n: i64 = db
            .query_row(
                "SELECT (SELECT COUNT(*) FROM guardpoints) + (SELECT COUNT(*) FROM client_escrow)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 0);
    }
    // The certificate no longer works anywhere.
    let r = agent.req("GET", "/api/v1/agent/config", None);
    assert!(r.status == 403 || r.status == 401, "{}", r.body);
    r.assert_error(r.status);
    agent
        .req("POST", "/api/v1/agent/delete", None)
        .assert_error(403);
    // The other client is untouched; the policy is free again.
    let cfg = s
        .http(Some(&other))
        .req("GET", "/api/v1/agent/config", None);
    assert_eq!(cfg.status, 200, "{}", cfg.body);
    assert_eq!(
        admin
            .req("DELETE", &format!("{TE}/policies/del-pol"), None)
            .status,
        204
    );
}

/// Passwords are never needed in argv: `-` reads them from standard
/// input (no warning), a value in argv still works but is warned about,
/// and without any the CLI asks (here stdin is not a terminal and is
/// empty: a clear error).
#[test]
fn passwords_come_from_stdin_not_argv() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let run = |args: &[&str], env: &[(&str, &str)], stdin: &[u8]| {
        let mut c = Command::new(bin());
        c.args(args)
            .env_remove("KEYMGR_PASSWORD")
            .env_remove("KEYMGR_ADMIN_PASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin);
        child.wait_with_output().unwrap()
    };
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let d = data.to_str().unwrap();
    let o = run(
        &[
            "init",
            "--data-dir",
            d,
            "--admin-password",
            "-",
            "--san",
            "127.0.0.1",
        ],
        &[],
        format!("{PASSWORD}\n").as_bytes(),
    );
    assert!(o.status.success(), "{o:?}");
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("warning"),
        "{o:?}"
    );
    let other = root.path().join("other");
    let o = run(
        &[
            "init",
            "--data-dir",
            other.to_str().unwrap(),
            "--admin-password",
            PASSWORD,
        ],
        &[],
        b"",
    );
    assert!(o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("warning: --admin-password on the command line"),
        "{o:?}"
    );
    let s = Server::start(root.path());
    let url = s.url("");
    let env = [("KEYMGR_URL", url.as_str()), ("KEYMGR_DATA_DIR", d)];
    let o = run(
        &["key", "list", "--password", "-"],
        &env,
        format!("{PASSWORD}\n").as_bytes(),
    );
    assert!(o.status.success(), "{o:?}");
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("warning"),
        "{o:?}"
    );
    let o = run(
        &["key", "list", "--password", "-"],
        &env,
        b"wrong password\n",
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    // From the environment: no warning.
    let with_env = [env[0], env[1], ("KEYMGR_PASSWORD", PASSWORD)];
    let o = run(&["key", "list"], &with_env, b"");
    assert!(o.status.success(), "{o:?}");
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("warning"),
        "{o:?}"
    );
    // Nothing at all and nothing to read: refused, saying how to give it.
    let o = run(&["key", "list"], &env, b"");
    assert!(!o.status.success(), "{o:?}");
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(text.contains("--password -"), "{o:?}");
}
