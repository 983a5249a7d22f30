use super::*;

#[test]
fn defaults_are_nats_servers() {
    let c = ServerConfig::default();
    assert_eq!(c.port, 4222);
    assert_eq!(c.max_payload, 1 << 20);
    assert_eq!(c.max_pending, 64 << 20);
    assert_eq!(c.write_deadline, Duration::from_secs(10));
    assert_eq!(c.ping_interval, Duration::from_secs(120));
    assert_eq!(c.ping_max, 2);
}

#[test]
fn full_file() {
    let c = ServerConfig::from_conf(
        r#"
listen: 127.0.0.1:4333
server_name: "edge-1"
max_payload: 512KB
max_connections: 100
max_subscriptions: 10
max_pending: 1MB
write_deadline: "2s"
ping_interval: "30s"
ping_max: 3
lame_duck_duration: "1m30s"
authorization {
  timeout: 1
  users: [
    {user: alice, password: secret}
    {user: bob, password: pw, permissions: {
        publish: {allow: ["orders.>"], deny: "orders.secret"}
        subscribe: "replies.*"
        allow_responses: {max: 2, expires: "5s"}
    }}
  ]
}
cluster {
  name: c1
  listen: 0.0.0.0:6222
  routes: [nats://127.0.0.1:6223]
  authorization { user: r, password: p, timeout: 2 }
}
"#,
    )
    .unwrap();
    assert_eq!(c.host, "127.0.0.1");
    assert_eq!(c.port, 4333);
    assert_eq!(c.server_name.as_deref(), Some("edge-1"));
    assert_eq!(c.max_payload, 512 * 1024);
    assert_eq!(c.max_connections, 100);
    assert_eq!(c.max_subscriptions, 10);
    assert_eq!(c.max_pending, 1 << 20);
    assert_eq!(c.write_deadline, Duration::from_secs(2));
    assert_eq!(c.ping_interval, Duration::from_secs(30));
    assert_eq!(c.ping_max, 3);
    assert_eq!(c.lame_duck_duration, Duration::from_secs(90));
    assert_eq!(c.auth_timeout, Duration::from_secs(1));
    assert_eq!(c.auth.users.len(), 2);
    let bob = &c.auth.users[1];
    let p = bob.permissions.as_ref().unwrap();
    assert_eq!(p.publish.allow, Some(vec!["orders.>".to_string()]));
    assert_eq!(p.publish.deny, vec!["orders.secret".to_string()]);
    assert_eq!(p.subscribe.allow, Some(vec!["replies.*".to_string()]));
    assert_eq!(
        p.allow_responses,
        Some(ResponsePermission {
            max_msgs: 2,
            expires: Some(Duration::from_secs(5))
        })
    );
    assert_eq!(c.cluster.name.as_deref(), Some("c1"));
    assert_eq!(c.cluster.routes, vec!["nats://127.0.0.1:6223".to_string()]);
    assert_eq!(c.cluster.user.as_deref(), Some("r"));
}

#[test]
fn single_user_and_token() {
    let c = ServerConfig::from_conf("authorization { user: a, password: b }").unwrap();
    assert_eq!(c.auth.users.len(), 1);
    assert!(c.auth.users[0].password.verify("b"));
    let c = ServerConfig::from_conf("authorization { token: s3cr3t }").unwrap();
    assert!(c.auth.token.unwrap().verify("s3cr3t"));
}

#[test]
fn unknown_keys_are_errors_naming_key_and_line() {
    let e = ServerConfig::from_conf("port: 4222\nmax_paylod: 1MB\n").unwrap_err();
    assert_eq!(
        e,
        ConfigError::UnknownKey {
            key: "max_paylod".into(),
            line: 2
        }
    );
    assert_eq!(
        e.to_string(),
        "line 2: unknown configuration key \"max_paylod\""
    );
    let e = ServerConfig::from_conf("authorization {\n  usr: x\n}").unwrap_err();
    assert_eq!(
        e,
        ConfigError::UnknownKey {
            key: "usr".into(),
            line: 2
        }
    );
}

#[test]
fn invalid_values_are_errors_naming_key_and_line() {
    let e = ServerConfig::from_conf("\n\nmax_payload: lots\n").unwrap_err();
    assert!(
        matches!(e, ConfigError::Invalid { ref key, line: 3, .. } if key == "max_payload"),
        "{e}"
    );
    let e = ServerConfig::from_conf("write_deadline: \"soon\"").unwrap_err();
    assert!(matches!(e, ConfigError::Invalid { ref key, .. } if key == "write_deadline"));
    let e = ServerConfig::from_conf("port: 70000").unwrap_err();
    assert!(matches!(e, ConfigError::Invalid { ref key, .. } if key == "port"));
    let e = ServerConfig::from_conf("debug: 3").unwrap_err();
    assert!(matches!(e, ConfigError::Invalid { ref key, .. } if key == "debug"));
}

#[test]
fn max_payload_is_at_most_64mb_as_in_nats_server() {
    let c = ServerConfig::from_conf("max_payload: 64MB").unwrap();
    assert_eq!(c.max_payload, crate::proto::MAX_PAYLOAD_LIMIT);
    let e = ServerConfig::from_conf("max_payload: 65MB").unwrap_err();
    assert!(matches!(e, ConfigError::Invalid { ref key, line: 1, .. } if key == "max_payload"));
}

#[test]
fn cluster_host_and_port_keys() {
    let c = ServerConfig::from_conf("cluster { port: 7000 }").unwrap();
    assert_eq!(c.cluster.listen.as_deref(), Some("0.0.0.0:7000"));
    let c = ServerConfig::from_conf("cluster { host: 127.0.0.1, port: 7000 }").unwrap();
    assert_eq!(c.cluster.listen.as_deref(), Some("127.0.0.1:7000"));
    let c = ServerConfig::from_conf("cluster { host: 10.0.0.1 }").unwrap();
    assert_eq!(c.cluster.listen.as_deref(), Some("10.0.0.1:6222"));
}

/// `http: host:port` binds monitoring where it says (issue 11, item 2);
/// a bare port keeps the client host.
#[test]
fn http_takes_its_own_host() {
    let c = ServerConfig::from_conf("listen: 0.0.0.0:4222\nhttp: 127.0.0.1:8222\n").unwrap();
    assert_eq!(c.http_port, Some(8222));
    assert_eq!(c.http_host.as_deref(), Some("127.0.0.1"));
    let c = ServerConfig::from_conf("http_port: 8222\n").unwrap();
    assert_eq!((c.http_port, c.http_host), (Some(8222), None));
}

/// Durations that would overflow a deadline or make every connection stale
/// are refused with the key and line (issue 11, item 17).
#[test]
fn absurd_durations_are_refused_with_key_and_line() {
    for (conf, key) in [
        ("ping_interval: 1.9e19\n", "ping_interval"),
        ("\nwrite_deadline: 99999999999999\n", "write_deadline"),
        ("ping_interval: 0\n", "ping_interval"),
        ("write_deadline: \"0s\"\n", "write_deadline"),
    ] {
        let e = ServerConfig::from_conf(conf).unwrap_err().to_string();
        assert!(e.contains(key), "{conf:?}: {e}");
        assert!(e.contains("line"), "{conf:?}: {e}");
    }
    assert!(ServerConfig::from_conf("ping_interval: 0.5\n").is_ok());
}

#[test]
fn debug_output_never_shows_a_cluster_secret() {
    let cfg = ClusterConfig {
        routes: vec![
            "nats://ruser:s3cr3t-route@10.0.0.2:6222".into(),
            "h:1".into(),
        ],
        user: Some("ruser".into()),
        password: Some("s3cr3t-pass".into()),
        ..ClusterConfig::default()
    };
    let shown = format!("{cfg:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(
        shown.contains("nats://ruser:xxxxx@10.0.0.2:6222"),
        "{shown}"
    );
    assert_eq!(redact_url("u@h:1"), "u@h:1");
    assert_eq!(redact_url("u:p@h:1"), "u:xxxxx@h:1");
}

#[test]
fn keys_of_newer_nats_servers_are_taken_or_noted() {
    let c = ServerConfig::from_conf(
        r#"
logtime: false
ports_file_dir: "/tmp/p"
server_metadata { region: eu, tier: "gold" }
max_traced_msg_len: 64
no_fast_producer_stall: true
write_timeout: retry
cluster {
  listen: "127.0.0.1:6222"
  write_deadline: "3s"
  pool_size: 3
  connect_backoff: true
}
"#,
    )
    .unwrap();
    assert!(!c.logtime);
    assert_eq!(c.ports_file_dir.as_deref(), Some("/tmp/p"));
    assert_eq!(c.metadata.get("tier").map(String::as_str), Some("gold"));
    assert_eq!(c.max_traced_msg_len, 64);
    assert_eq!(c.cluster.write_deadline, Some(Duration::from_secs(3)));
    assert_eq!(c.notices.len(), 2, "{:?}", c.notices);
    assert!(
        c.notices[0].starts_with("line 7: write_timeout"),
        "{:?}",
        c.notices
    );
    assert!(c.notices[1].contains("pool_size 3"), "{:?}", c.notices);
}

#[test]
fn jetstream_is_refused_with_one_clear_line() {
    let e =
        ServerConfig::from_conf("port: 4222\njetstream {\n  store_dir: /tmp/js\n}\n").unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("line 2") && text.contains("JetStream is not supported"),
        "{text}"
    );
}

#[test]
fn operator_mode_and_nkey_users_parse() {
    use nkeys::KeyPair;
    let user = KeyPair::new_user();
    let c = ServerConfig::from_conf(&format!(
        "authorization: {{\n  users: [\n    {{ nkey: {} }}\n    {{ user: bob, password: pw }}\n  ]\n}}\n",
        user.public_key()
    ))
    .unwrap();
    assert_eq!(c.auth.nkeys.len(), 1);
    assert_eq!(c.auth.nkeys[0].key, user.public_key());
    assert_eq!(c.auth.users.len(), 1);

    let acc = KeyPair::new_account();
    let c = ServerConfig::from_conf(&format!(
        "// Operator\noperator: eyJhbGciOi.x.y\n\nsystem_account: {a}\nresolver: MEMORY\nresolver_preload: {{\n  // Account \"A\"\n  {a}: eyJhbGciOi.a.b\n}}\n",
        a = acc.public_key()
    ))
    .unwrap();
    assert_eq!(c.auth.operator.operators, ["eyJhbGciOi.x.y"]);
    assert_eq!(c.auth.operator.resolver.as_deref(), Some("MEMORY"));
    assert_eq!(
        c.auth.operator.preload,
        [(acc.public_key(), "eyJhbGciOi.a.b".to_owned())]
    );
    assert_eq!(c.auth.operator.system_account, Some(acc.public_key()));

    // An operator file as nsc writes it.
    let dir = std::env::temp_dir().join(format!("shoal-op-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("op.jwt");
    std::fs::write(
        &path,
        "-----BEGIN NATS OPERATOR JWT-----\neyJhbGciOi.f.g\n------END NATS OPERATOR JWT------\n",
    )
    .unwrap();
    let c = ServerConfig::from_conf(&format!(
        "operator: {:?}\nresolver: MEMORY",
        path.display().to_string()
    ))
    .unwrap();
    assert_eq!(c.auth.operator.operators, ["eyJhbGciOi.f.g"]);
    let e = ServerConfig::from_conf("operator: /nonexistent/op.jwt").unwrap_err();
    assert!(
        e.to_string().contains("cannot read operator JWT file"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    // Resolvers Shoal does not have are refused by name.
    let e = ServerConfig::from_conf("resolver: {type: full, dir: ./jwt}").unwrap_err();
    assert!(e.to_string().contains("MEMORY"), "{e}");
}
