//! nkey users and operator mode: every rule of the chain of trust, with
//! keys and JWTs made here (nothing borrowed from another project).

use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use nkeys::KeyPair;
use serde_json::{json, Value};

const NOW: i64 = 1_800_000_000;

/// A v2 JWT of `claims`, signed by `signer` (which becomes `iss`).
fn sign(signer: &KeyPair, mut claims: Value) -> String {
    claims["iss"] = json!(signer.public_key());
    claims
        .as_object_mut()
        .unwrap()
        .entry("iat")
        .or_insert(json!(NOW - 100));
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let signed = format!("{header}.{body}");
    let sig = URL_SAFE_NO_PAD.encode(signer.sign(signed.as_bytes()).unwrap());
    format!("{signed}.{sig}")
}

fn operator_jwt(op: &KeyPair, nats: Value) -> String {
    let mut n = json!({"type": "operator", "version": 2});
    merge(&mut n, nats);
    sign(op, json!({"sub": op.public_key(), "name": "O", "nats": n}))
}

fn account_jwt(signer: &KeyPair, acc: &KeyPair, nats: Value) -> String {
    let mut n = json!({"type": "account", "version": 2});
    merge(&mut n, nats);
    sign(
        signer,
        json!({"sub": acc.public_key(), "name": "A", "nats": n}),
    )
}

fn user_jwt(signer: &KeyPair, user: &KeyPair, nats: Value) -> String {
    let mut n = json!({"type": "user", "version": 2});
    merge(&mut n, nats);
    sign(
        signer,
        json!({"sub": user.public_key(), "name": "U", "nats": n}),
    )
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}

struct World {
    op: KeyPair,
    acc: KeyPair,
}

impl World {
    fn new() -> Self {
        World {
            op: KeyPair::new_operator(),
            acc: KeyPair::new_account(),
        }
    }

    fn config(&self, account_nats: Value) -> AuthConfig {
        AuthConfig {
            operator: OperatorConfig {
                operators: vec![operator_jwt(&self.op, json!({}))],
                resolver: Some("MEMORY".into()),
                preload: vec![(
                    self.acc.public_key(),
                    account_jwt(&self.op, &self.acc, account_nats),
                )],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn auth(&self, account_nats: Value) -> Authenticator {
        Authenticator::new(&self.config(account_nats)).unwrap()
    }
}

/// A CONNECT with `jwt`, signing `nonce` with `user` (when given).
fn jwt_connect(jwt: &str, user: Option<&KeyPair>, nonce: &str) -> ConnectOptions {
    ConnectOptions {
        jwt: Some(jwt.to_owned()),
        sig: user.map(|u| URL_SAFE_NO_PAD.encode(u.sign(nonce.as_bytes()).unwrap())),
        ..Default::default()
    }
}

fn ctx_at(nonce: &str, now: i64) -> ConnectContext {
    ConnectContext {
        nonce: Some(nonce.to_owned()),
        ip: Some("10.1.2.3".parse().unwrap()),
        now,
    }
}

#[test]
fn a_user_jwt_signed_by_its_account_and_the_nonce_signature_authenticate() {
    let w = World::new();
    let a = w.auth(json!({}));
    assert!(a.required());
    assert!(a.nonce_required());
    let user = KeyPair::new_user();
    let jwt = user_jwt(&w.acc, &user, json!({}));
    let opts = jwt_connect(&jwt, Some(&user), "nonce-1");
    // Signatures are never checked on a shard.
    assert!(matches!(
        a.check_fast(&opts, &ctx_at("nonce-1", NOW)),
        FastCheck::NeedsSlowCheck
    ));
    let s = a.authenticate(&opts, &ctx_at("nonce-1", NOW)).unwrap();
    assert_eq!(s.user.as_deref(), Some(user.public_key().as_str()));
    assert_eq!(s.account.as_deref(), Some(w.acc.public_key().as_str()));
    assert!(s.permissions.is_none());
    assert!(a.accounts().get(s.account.as_deref()).is_some());
    assert!(a.accounts().enabled());

    // Another nonce (a replayed CONNECT), no signature, a signature by
    // another key, no JWT: refused.
    assert!(a.authenticate(&opts, &ctx_at("nonce-2", NOW)).is_err());
    let unsigned = jwt_connect(&jwt, None, "nonce-1");
    assert!(a.authenticate(&unsigned, &ctx_at("nonce-1", NOW)).is_err());
    let other = KeyPair::new_user();
    let forged = jwt_connect(&jwt, Some(&other), "nonce-1");
    assert!(a.authenticate(&forged, &ctx_at("nonce-1", NOW)).is_err());
    assert!(a
        .authenticate(&ConnectOptions::default(), &ctx_at("nonce-1", NOW))
        .is_err());
    // Standard base64 signatures are accepted too (nats-server does).
    let mut std_sig = opts.clone();
    std_sig.sig =
        Some(base64::engine::general_purpose::STANDARD.encode(user.sign(b"nonce-1").unwrap()));
    assert!(a.authenticate(&std_sig, &ctx_at("nonce-1", NOW)).is_ok());
}

#[test]
fn a_chain_that_does_not_reach_a_trusted_operator_is_refused() {
    let w = World::new();
    let a = w.auth(json!({}));
    let user = KeyPair::new_user();
    // Signed by an account the server does not know.
    let stranger = KeyPair::new_account();
    let jwt = user_jwt(&stranger, &user, json!({}));
    assert!(a
        .authenticate(&jwt_connect(&jwt, Some(&user), "n"), &ctx_at("n", NOW))
        .is_err());
    // Claiming a known account through `issuer_account` without being one
    // of its signing keys.
    let jwt = user_jwt(
        &stranger,
        &user,
        json!({"issuer_account": w.acc.public_key()}),
    );
    assert!(a
        .authenticate(&jwt_connect(&jwt, Some(&user), "n"), &ctx_at("n", NOW))
        .is_err());
    // A tampered payload no longer verifies.
    let good = user_jwt(&w.acc, &user, json!({}));
    let parts: Vec<&str> = good.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["nats"]["bearer_token"] = json!(true);
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    );
    assert!(a
        .authenticate(&jwt_connect(&tampered, None, "n"), &ctx_at("n", NOW))
        .is_err());

    // An account JWT signed by another operator stops the server.
    let mut cfg = w.config(json!({}));
    let rogue = KeyPair::new_operator();
    cfg.operator.preload[0].1 = account_jwt(&rogue, &w.acc, json!({}));
    let err = Authenticator::new(&cfg).unwrap_err().to_string();
    assert!(err.contains("not signed by a trusted operator"), "{err}");
    // ... as does a JWT preloaded under another account's key.
    let mut cfg = w.config(json!({}));
    cfg.operator.preload[0].0 = KeyPair::new_account().public_key();
    assert!(Authenticator::new(&cfg).is_err());
}

#[test]
fn operator_and_account_signing_keys_sign_for_them() {
    let w = World::new();
    let op_signer = KeyPair::new_operator();
    let acc_signer = KeyPair::new_account();
    let mut cfg = w.config(json!({}));
    cfg.operator.operators = vec![operator_jwt(
        &w.op,
        json!({"signing_keys": [op_signer.public_key()], "strict_signing_key_usage": true}),
    )];
    cfg.operator.preload[0].1 = account_jwt(
        &op_signer,
        &w.acc,
        json!({"signing_keys": [acc_signer.public_key()]}),
    );
    let a = Authenticator::new(&cfg).unwrap();
    let user = KeyPair::new_user();
    let jwt = user_jwt(
        &acc_signer,
        &user,
        json!({"issuer_account": w.acc.public_key()}),
    );
    let s = a
        .authenticate(&jwt_connect(&jwt, Some(&user), "n"), &ctx_at("n", NOW))
        .unwrap();
    assert_eq!(s.account.as_deref(), Some(w.acc.public_key().as_str()));

    // Strict signing key usage: the operator's own key no longer signs.
    cfg.operator.preload[0].1 = account_jwt(&w.op, &w.acc, json!({}));
    assert!(Authenticator::new(&cfg).is_err());
}

#[test]
fn a_scoped_signing_key_imposes_its_template() {
    let w = World::new();
    let scoped = KeyPair::new_account();
    let a = w.auth(json!({"signing_keys": [{
        "kind": "user_scope",
        "key": scoped.public_key(),
        "role": "limited",
        "template": {"pub": {"allow": ["orders.>"]}, "sub": {"allow": ["_INBOX.>"]}}
    }]}));
    let user = KeyPair::new_user();
    // The user claims no limits; the scope's apply anyway.
    let jwt = user_jwt(
        &scoped,
        &user,
        json!({"issuer_account": w.acc.public_key()}),
    );
    let s = a
        .authenticate(&jwt_connect(&jwt, Some(&user), "n"), &ctx_at("n", NOW))
        .unwrap();
    let p = s.permissions.unwrap();
    assert!(p.may_publish(b"orders.new"));
    assert!(!p.may_publish(b"payments.new"));
    assert!(p.may_subscribe(b"_INBOX.x"));
    assert!(!p.may_subscribe(b"orders.>"));
}

#[test]
fn user_permissions_and_account_defaults() {
    let w = World::new();
    let a = w.auth(json!({"default_permissions": {"pub": {"deny": ["admin.>"]}}}));
    let user = KeyPair::new_user();
    // No permissions of its own: the account's defaults.
    let jwt = user_jwt(&w.acc, &user, json!({}));
    let s = a
        .authenticate(&jwt_connect(&jwt, Some(&user), "n"), &ctx_at("n", NOW))
        .unwrap();
    let p = s.permissions.unwrap();
    assert!(!p.may_publish(b"admin.x"));
    assert!(p.may_publish(b"orders.x"));
    // Its own: those, not the defaults.
    let jwt = user_jwt(
        &w.acc,
        &user,
        json!({"pub": {"allow": ["orders.*"], "deny": []}, "sub": {}, "resp": {"max": 2, "ttl": 1_000_000_000}}),
    );
    let s = a
        .authenticate(&jwt_connect(&jwt, Some(&user), "n"), &ctx_at("n", NOW))
        .unwrap();
    let p = s.permissions.unwrap();
    assert!(p.may_publish(b"orders.x"));
    assert!(!p.may_publish(b"admin.x"));
    assert!(!p.may_publish(b"payments.x"));
}

#[test]
fn expiry_revocation_bearer_sources_times_and_connection_types() {
    let w = World::new();
    let user = KeyPair::new_user();
    let revoked = KeyPair::new_user();
    let a = w.auth(json!({"revocations": {revoked.public_key(): NOW - 50}}));
    let ok = |jwt: &str, signer: Option<&KeyPair>, now: i64| {
        a.authenticate(&jwt_connect(jwt, signer, "n"), &ctx_at("n", now))
            .is_ok()
    };

    let expiring = sign(
        &w.acc,
        json!({"sub": user.public_key(), "exp": NOW + 60, "nats": {"type": "user", "version": 2}}),
    );
    assert!(ok(&expiring, Some(&user), NOW));
    assert!(!ok(&expiring, Some(&user), NOW + 60));
    let s = a
        .authenticate(&jwt_connect(&expiring, Some(&user), "n"), &ctx_at("n", NOW))
        .unwrap();
    assert_eq!(s.expires, Some(NOW + 60), "the connection must close then");
    let not_yet = sign(
        &w.acc,
        json!({"sub": user.public_key(), "nbf": NOW + 60, "nats": {"type": "user", "version": 2}}),
    );
    assert!(!ok(&not_yet, Some(&user), NOW));

    // Revoked: issued (iat NOW-100) before the revocation (NOW-50).
    let jwt = user_jwt(&w.acc, &revoked, json!({}));
    assert!(!ok(&jwt, Some(&revoked), NOW));
    let reissued = sign(
        &w.acc,
        json!({"sub": revoked.public_key(), "iat": NOW, "nats": {"type": "user", "version": 2}}),
    );
    assert!(ok(&reissued, Some(&revoked), NOW));

    // A bearer token needs no signature; a plain JWT does.
    let bearer = user_jwt(&w.acc, &user, json!({"bearer_token": true}));
    assert!(ok(&bearer, None, NOW));
    let plain = user_jwt(&w.acc, &user, json!({}));
    assert!(!ok(&plain, None, NOW));

    // Source networks (the context's client is 10.1.2.3).
    let inside = user_jwt(&w.acc, &user, json!({"src": ["10.1.0.0/16"]}));
    assert!(ok(&inside, Some(&user), NOW));
    let outside = user_jwt(
        &w.acc,
        &user,
        json!({"src": ["192.168.0.0/16", "10.2.0.0/16"]}),
    );
    assert!(!ok(&outside, Some(&user), NOW));
    let joined = user_jwt(&w.acc, &user, json!({"src": "192.168.0.1,10.1.2.3"}));
    assert!(ok(&joined, Some(&user), NOW));

    // Connect times (UTC): NOW is 08:00:00 UTC.
    assert_eq!(NOW % 86_400, 8 * 3600);
    let day = user_jwt(
        &w.acc,
        &user,
        json!({"times": [{"start": "07:00:00", "end": "09:00:00"}]}),
    );
    assert!(ok(&day, Some(&user), NOW));
    let night = user_jwt(
        &w.acc,
        &user,
        json!({"times": [{"start": "22:00:00", "end": "06:00:00"}]}),
    );
    assert!(!ok(&night, Some(&user), NOW));
    let zoned = user_jwt(
        &w.acc,
        &user,
        json!({"times": [{"start": "00:00:00", "end": "23:59:59"}], "times_location": "Europe/Paris"}),
    );
    assert!(
        !ok(&zoned, Some(&user), NOW),
        "a zone Shoal cannot read refuses"
    );

    // Connection types: a user limited to websockets is not a TCP client.
    let ws = user_jwt(
        &w.acc,
        &user,
        json!({"allowed_connection_types": ["WEBSOCKET"]}),
    );
    assert!(!ok(&ws, Some(&user), NOW));
    let std = user_jwt(
        &w.acc,
        &user,
        json!({"allowed_connection_types": ["STANDARD", "WEBSOCKET"]}),
    );
    assert!(ok(&std, Some(&user), NOW));
}

#[test]
fn an_expired_account_lets_no_user_in() {
    let w = World::new();
    let mut cfg = w.config(json!({}));
    cfg.operator.preload[0].1 = sign(
        &w.op,
        json!({"sub": w.acc.public_key(), "exp": NOW + 10, "nats": {"type": "account", "version": 2}}),
    );
    let a = Authenticator::new(&cfg).unwrap();
    let user = KeyPair::new_user();
    let jwt = user_jwt(&w.acc, &user, json!({}));
    assert!(a
        .authenticate(&jwt_connect(&jwt, Some(&user), "n"), &ctx_at("n", NOW))
        .is_ok());
    assert!(a
        .authenticate(&jwt_connect(&jwt, Some(&user), "n"), &ctx_at("n", NOW + 10))
        .is_err());
}

#[test]
fn jwt_exports_and_imports_become_account_sharing() {
    let op = KeyPair::new_operator();
    let svc = KeyPair::new_account();
    let app = KeyPair::new_account();
    let other = KeyPair::new_account();
    let activation = sign(
        &svc,
        json!({"sub": app.public_key(), "nats": {"subject": "private.>", "kind": "stream", "type": "activation", "version": 2}}),
    );
    let cfg = AuthConfig {
        operator: OperatorConfig {
            operators: vec![operator_jwt(&op, json!({}))],
            resolver: Some("MEMORY".into()),
            preload: vec![
                (
                    svc.public_key(),
                    account_jwt(
                        &op,
                        &svc,
                        json!({"exports": [
                            {"subject": "help", "type": "service"},
                            {"subject": "events.>", "type": "stream"},
                            {"subject": "private.>", "type": "stream", "token_req": true},
                        ]}),
                    ),
                ),
                (
                    app.public_key(),
                    account_jwt(
                        &op,
                        &app,
                        json!({"imports": [
                            {"subject": "help", "account": svc.public_key(), "type": "service", "local_subject": "svc.help"},
                            {"subject": "events.>", "account": svc.public_key(), "type": "stream"},
                            {"subject": "private.>", "account": svc.public_key(), "type": "stream", "token": activation},
                        ]}),
                    ),
                ),
                (
                    other.public_key(),
                    account_jwt(
                        &op,
                        &other,
                        json!({"imports": [
                            // No token: left out with a notice, the server starts.
                            {"subject": "private.>", "account": svc.public_key(), "type": "stream"},
                            {"subject": "events.>", "account": svc.public_key(), "type": "stream"},
                        ]}),
                    ),
                ),
            ],
            ..Default::default()
        },
        ..Default::default()
    };
    let a = Authenticator::new(&cfg).unwrap();
    assert_eq!(a.notices().len(), 1, "{:?}", a.notices());
    assert!(
        a.notices()[0].contains("not authorized"),
        "{:?}",
        a.notices()
    );
    let accs = a.accounts();
    let get = |k: &KeyPair| accs.get(Some(&k.public_key())).unwrap();
    let subjects = |d: Vec<Delivery>| -> Vec<String> {
        d.into_iter()
            .map(|d| String::from_utf8(d.subject).unwrap())
            .collect()
    };
    let (s, ap, o) = (svc.public_key(), app.public_key(), other.public_key());
    let mut got = subjects(accs.deliveries(&get(&svc), b"events.1", None));
    got.sort();
    let mut want = vec![
        format!("$ACC:{s}.events.1"),
        format!("$ACC:{ap}.events.1"),
        format!("$ACC:{o}.events.1"),
    ];
    want.sort();
    assert_eq!(got, want);
    let got = subjects(accs.deliveries(&get(&svc), b"private.1", None));
    assert_eq!(
        got,
        vec![
            format!("$ACC:{s}.private.1"),
            format!("$ACC:{ap}.private.1")
        ],
        "only the account holding an activation token gets a token-required stream"
    );
    let got = subjects(accs.deliveries(&get(&app), b"svc.help", Some(b"_INBOX.1")));
    assert!(got.contains(&format!("$ACC:{s}.help")), "{got:?}");
}

#[test]
fn operator_configuration_rules() {
    let w = World::new();
    let mut cfg = w.config(json!({}));
    cfg.operator.resolver = None;
    assert_eq!(
        Authenticator::new(&cfg).unwrap_err().to_string(),
        "operators require an account resolver to be configured"
    );
    let mut cfg = w.config(json!({}));
    cfg.operator.resolver = Some("URL(http://x)".into());
    assert!(Authenticator::new(&cfg)
        .unwrap_err()
        .to_string()
        .contains("MEMORY"));
    let mut cfg = w.config(json!({}));
    cfg.users.push(User {
        name: "a".into(),
        account: None,
        password: Secret::new("b"),
        permissions: None,
    });
    assert_eq!(
        Authenticator::new(&cfg).unwrap_err().to_string(),
        "operators do not allow users to be configured directly"
    );
    let mut cfg = w.config(json!({}));
    cfg.accounts.push(AccountConfig {
        name: "X".into(),
        ..Default::default()
    });
    assert_eq!(
        Authenticator::new(&cfg).unwrap_err().to_string(),
        "operators do not allow Accounts to be configured directly"
    );
    let mut cfg = w.config(json!({}));
    cfg.operator.system_account = Some(KeyPair::new_account().public_key());
    cfg.operator.operators = vec![operator_jwt(
        &w.op,
        json!({"system_account": w.acc.public_key()}),
    )];
    assert_eq!(
        Authenticator::new(&cfg).unwrap_err().to_string(),
        "system_account in config and operator JWT must be identical"
    );
    // Trusted keys instead of an operator JWT.
    let mut cfg = w.config(json!({}));
    cfg.operator.operators.clear();
    cfg.operator.trusted_keys = vec![w.op.public_key()];
    assert!(Authenticator::new(&cfg).is_ok());
    cfg.operator.trusted_keys = vec![w.acc.public_key()];
    assert!(
        Authenticator::new(&cfg).is_err(),
        "an account key is no operator"
    );
}

#[test]
fn nkey_users_sign_the_nonce() {
    let alice = KeyPair::new_user();
    let bob = KeyPair::new_user();
    let cfg = AuthConfig {
        nkeys: vec![
            NkeyUser {
                key: alice.public_key(),
                account: None,
                permissions: None,
            },
            NkeyUser {
                key: bob.public_key(),
                account: None,
                permissions: Some(Permissions {
                    publish: SubjectPermission {
                        allow: Some(vec!["bob.>".into()]),
                        deny: vec![],
                    },
                    ..Default::default()
                }),
            },
        ],
        ..Default::default()
    };
    let a = Authenticator::new(&cfg).unwrap();
    assert!(a.required() && a.nonce_required());
    let connect = |key: &KeyPair, signer: &KeyPair, nonce: &str| ConnectOptions {
        nkey: Some(key.public_key()),
        sig: Some(URL_SAFE_NO_PAD.encode(signer.sign(nonce.as_bytes()).unwrap())),
        ..Default::default()
    };
    let opts = connect(&alice, &alice, "abc");
    assert!(matches!(
        a.check_fast(&opts, &ctx_at("abc", NOW)),
        FastCheck::NeedsSlowCheck
    ));
    let s = a.authenticate(&opts, &ctx_at("abc", NOW)).unwrap();
    assert_eq!(s.user.as_deref(), Some(alice.public_key().as_str()));
    assert!(s.permissions.is_none());
    let s = a
        .authenticate(&connect(&bob, &bob, "abc"), &ctx_at("abc", NOW))
        .unwrap();
    assert!(s.permissions.is_some());
    // Bob's key signed by Alice, a replay under another nonce, no nonce,
    // an unknown key, no credentials at all: refused.
    assert!(a
        .authenticate(&connect(&bob, &alice, "abc"), &ctx_at("abc", NOW))
        .is_err());
    assert!(a.authenticate(&opts, &ctx_at("xyz", NOW)).is_err());
    assert!(a.authenticate(&opts, &ConnectContext::default()).is_err());
    let carol = KeyPair::new_user();
    assert!(a
        .authenticate(&connect(&carol, &carol, "abc"), &ctx_at("abc", NOW))
        .is_err());
    assert!(a
        .authenticate(&ConnectOptions::default(), &ctx_at("abc", NOW))
        .is_err());

    // Not a user key: refused at start.
    let bad = AuthConfig {
        nkeys: vec![NkeyUser {
            key: KeyPair::new_account().public_key(),
            account: None,
            permissions: None,
        }],
        ..Default::default()
    };
    assert!(matches!(
        Authenticator::new(&bad),
        Err(AuthConfigError::BadNkey(_))
    ));

    // `no_auth_user` may name an nkey user: no signature then.
    let mut cfg = cfg.clone();
    cfg.no_auth_user = Some(alice.public_key());
    let a = Authenticator::new(&cfg).unwrap();
    let s = a
        .authenticate(&ConnectOptions::default(), &ctx_at("abc", NOW))
        .unwrap();
    assert_eq!(s.user.as_deref(), Some(alice.public_key().as_str()));
}

#[test]
fn nkey_and_password_users_live_side_by_side() {
    let alice = KeyPair::new_user();
    let cfg = AuthConfig {
        users: vec![User {
            name: "bob".into(),
            account: None,
            password: Secret::new("pw"),
            permissions: None,
        }],
        nkeys: vec![NkeyUser {
            key: alice.public_key(),
            account: None,
            permissions: None,
        }],
        ..Default::default()
    };
    let a = Authenticator::new(&cfg).unwrap();
    let bob = ConnectOptions {
        user: Some("bob".into()),
        pass: Some("pw".into()),
        ..Default::default()
    };
    assert!(matches!(
        a.check_fast(&bob, &ctx_at("n", NOW)),
        FastCheck::Done(Ok(_))
    ));
}

#[test]
fn jwts_are_not_printed() {
    let opts = ConnectOptions {
        jwt: Some("eyJhbGciOi.secret-bearer.sig".into()),
        sig: Some("signature".into()),
        ..Default::default()
    };
    let shown = format!("{opts:?}");
    assert!(
        !shown.contains("secret-bearer") && !shown.contains("signature"),
        "{shown}"
    );
}

/// A v1 JWT (header `ed25519`, the claim type at the top level).
fn sign_v1(signer: &KeyPair, mut claims: Value) -> String {
    claims["iss"] = json!(signer.public_key());
    claims["iat"] = json!(NOW - 100);
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"jwt","alg":"ed25519"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    // v1 signed the payload alone.
    let sig = URL_SAFE_NO_PAD.encode(signer.sign(body.as_bytes()).unwrap());
    format!("{header}.{body}.{sig}")
}

#[test]
fn version_1_jwts_are_read_as_nats_server_2_9_reads_them() {
    let op = KeyPair::new_operator();
    let acc = KeyPair::new_account();
    let user = KeyPair::new_user();
    let cfg = AuthConfig {
        operator: OperatorConfig {
            operators: vec![sign_v1(
                &op,
                json!({"sub": op.public_key(), "type": "operator"}),
            )],
            resolver: Some("MEMORY".into()),
            preload: vec![(
                acc.public_key(),
                sign_v1(
                    &op,
                    json!({"sub": acc.public_key(), "type": "account", "nats": {"limits": {"subs": -1}}}),
                ),
            )],
            ..Default::default()
        },
        ..Default::default()
    };
    let a = Authenticator::new(&cfg).unwrap();
    let jwt = sign_v1(
        &acc,
        json!({"sub": user.public_key(), "type": "user", "nats": {"pub": {}, "sub": {}}}),
    );
    let s = a
        .authenticate(&jwt_connect(&jwt, Some(&user), "n"), &ctx_at("n", NOW))
        .unwrap();
    assert_eq!(s.account.as_deref(), Some(acc.public_key().as_str()));
    // A v1 user JWT claiming to be an account is no user.
    let wrong = sign_v1(&acc, json!({"sub": user.public_key(), "type": "account"}));
    assert!(a
        .authenticate(&jwt_connect(&wrong, Some(&user), "n"), &ctx_at("n", NOW))
        .is_err());
}

#[test]
fn scoped_users_set_nothing_and_revocations_count_by_name_or_all() {
    let w = World::new();
    let scoped = KeyPair::new_account();
    let a = w.auth(json!({
        "signing_keys": [{"kind": "user_scope", "key": scoped.public_key(), "template": {}}],
        // Named at NOW-50, everyone at NOW+50 (after the re-issue).
        "revocations": {"*": NOW + 50}
    }));
    let user = KeyPair::new_user();
    let ok = |jwt: &str, signer: Option<&KeyPair>| {
        a.authenticate(&jwt_connect(jwt, signer, "n"), &ctx_at("n", NOW))
            .is_ok()
    };
    let issued_by_scope = |nats: Value| {
        let mut n = json!({"issuer_account": w.acc.public_key()});
        merge(&mut n, nats);
        user_jwt(&scoped, &user, n)
    };
    // Revoked by `*` (issued at NOW-100, all revoked up to NOW+50).
    assert!(!ok(&issued_by_scope(json!({})), Some(&user)));
    let fresh = sign(
        &scoped,
        json!({"sub": user.public_key(), "iat": NOW + 60,
            "nats": {"type": "user", "version": 2, "issuer_account": w.acc.public_key()}}),
    );
    assert!(ok(&fresh, Some(&user)));
    // A scoped user may not carry its own settings: not permissions, not
    // a bearer flag (which would let it in without the seed).
    let own = |nats: Value| {
        let mut n = json!({"type": "user", "version": 2, "issuer_account": w.acc.public_key()});
        merge(&mut n, nats);
        sign(
            &scoped,
            json!({"sub": user.public_key(), "iat": NOW + 60, "nats": n}),
        )
    };
    assert!(!ok(&own(json!({"bearer_token": true})), None));
    assert!(!ok(&own(json!({"pub": {"allow": [">"]}})), Some(&user)));
    assert!(ok(
        &own(json!({"subs": -1, "data": -1, "payload": -1})),
        Some(&user)
    ));

    // Revoked by name though `*` is older.
    let named = KeyPair::new_user();
    let a = w.auth(json!({"revocations": {named.public_key(): NOW, "*": NOW - 1000}}));
    let jwt = user_jwt(&w.acc, &named, json!({}));
    assert!(a
        .authenticate(&jwt_connect(&jwt, Some(&named), "n"), &ctx_at("n", NOW))
        .is_err());
}

#[test]
fn what_shoal_cannot_enforce_or_check_is_refused() {
    let w = World::new();
    let a = w.auth(json!({}));
    let user = KeyPair::new_user();
    let ok = |jwt: &str, signer: Option<&KeyPair>| {
        a.authenticate(&jwt_connect(jwt, signer, "n"), &ctx_at("n", NOW))
            .is_ok()
    };
    // Limits per user are not enforced: a user with any is refused, not
    // let in unlimited (a publish-only user has `subs: 0`).
    assert!(!ok(
        &user_jwt(&w.acc, &user, json!({"subs": 0})),
        Some(&user)
    ));
    assert!(!ok(
        &user_jwt(&w.acc, &user, json!({"payload": 1024})),
        Some(&user)
    ));
    assert!(ok(
        &user_jwt(&w.acc, &user, json!({"subs": -1})),
        Some(&user)
    ));
    // The subject must be a user key.
    let account_as_user = KeyPair::new_account();
    let jwt = sign(
        &w.acc,
        json!({"sub": account_as_user.public_key(), "nats": {"type": "user", "version": 2}}),
    );
    assert!(!ok(&jwt, Some(&account_as_user)));
    // An account signing key must be an account key.
    let mut cfg = w.config(json!({"signing_keys": [KeyPair::new_user().public_key()]}));
    assert!(Authenticator::new(&cfg).is_err());
    // A session ends with its account when the account expires first.
    cfg.operator.preload[0].1 = sign(
        &w.op,
        json!({"sub": w.acc.public_key(), "exp": NOW + 10, "nats": {"type": "account", "version": 2}}),
    );
    let a = Authenticator::new(&cfg).unwrap();
    let jwt = sign(
        &w.acc,
        json!({"sub": user.public_key(), "exp": NOW + 100, "nats": {"type": "user", "version": 2}}),
    );
    let s = a
        .authenticate(&jwt_connect(&jwt, Some(&user), "n"), &ctx_at("n", NOW))
        .unwrap();
    assert_eq!(s.expires, Some(NOW + 10));
}

#[test]
fn the_reply_key_and_its_secret_are_never_printed() {
    let cfg = AuthConfig {
        users: vec![User {
            name: "a".into(),
            account: Some("A".into()),
            password: Secret::new("pw-not-shown"),
            permissions: None,
        }],
        accounts: vec![AccountConfig {
            name: "A".into(),
            ..Default::default()
        }],
        reply_secret: ReplySecret(b"route-password".to_vec()),
        ..Default::default()
    };
    let shown = format!("{cfg:?}");
    assert!(
        !shown.contains("route-password") && !shown.contains("pw-not-shown"),
        "{shown}"
    );
    assert!(
        !shown.contains(&format!("{:?}", b"route-password".to_vec())),
        "{shown}"
    );
    let a = Authenticator::new(&cfg).unwrap();
    let shown = format!("{:?}", a.accounts());
    assert!(!shown.contains("key"), "the MAC key in Debug: {shown}");
}
