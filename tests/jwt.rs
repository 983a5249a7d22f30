//! Public-key authentication against a running server: nkey users, and
//! operator mode (user JWTs checked along the chain operator → account →
//! user, accounts from `resolver_preload`), with an unmodified client
//! (async-nats' `with_nkey` and `with_credentials`) and the raw protocol
//! for the exact errors. Keys and JWTs are made here.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use nkeys::KeyPair;
use serde_json::{json, Value};
use std::time::Duration;

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A v2 JWT of `claims` signed by `signer` (its `iss`).
fn sign(signer: &KeyPair, mut claims: Value) -> String {
    claims["iss"] = json!(signer.public_key());
    claims["iat"] = json!(unix_now() - 10);
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let signed = format!("{header}.{body}");
    let sig = URL_SAFE_NO_PAD.encode(signer.sign(signed.as_bytes()).unwrap());
    format!("{signed}.{sig}")
}

fn user_jwt(account: &KeyPair, user: &KeyPair, extra: Value) -> String {
    let mut claims = json!({"sub": user.public_key(), "name": "u",
        "nats": {"type": "user", "version": 2}});
    if let (Some(c), Value::Object(e)) = (claims.as_object_mut(), extra) {
        c.extend(e);
    }
    sign(account, claims)
}

/// What `nsc generate creds` writes.
fn creds(jwt: &str, user: &KeyPair) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
        user.seed().unwrap()
    )
}

/// An operator with two accounts: SVC exports the service `help` and the
/// stream `events.>`, APP imports them (the service as `svc.help`).
struct Operator {
    svc: KeyPair,
    app: KeyPair,
    conf: String,
}

fn operator() -> Operator {
    let op = KeyPair::new_operator();
    let svc = KeyPair::new_account();
    let app = KeyPair::new_account();
    let operator_jwt = sign(
        &op,
        json!({"sub": op.public_key(), "name": "O", "nats": {"type": "operator", "version": 2}}),
    );
    let svc_jwt = sign(
        &op,
        json!({"sub": svc.public_key(), "name": "SVC", "nats": {"type": "account", "version": 2,
            "exports": [{"subject": "help", "type": "service"}, {"subject": "events.>", "type": "stream"}]}}),
    );
    let app_jwt = sign(
        &op,
        json!({"sub": app.public_key(), "name": "APP", "nats": {"type": "account", "version": 2,
        "imports": [
            {"subject": "help", "account": svc.public_key(), "type": "service", "local_subject": "svc.help"},
            {"subject": "events.>", "account": svc.public_key(), "type": "stream"}
        ]}}),
    );
    let conf = format!(
        "// Operator \"O\"\noperator: {operator_jwt}\n\nresolver: MEMORY\n\nresolver_preload: {{\n  // Account \"SVC\"\n  {}: {svc_jwt}\n\n  {}: {app_jwt}\n}}\n",
        svc.public_key(),
        app.public_key()
    );
    Operator { svc, app, conf }
}

async fn connect_creds(url: &str, creds: String) -> Result<async_nats::Client, String> {
    async_nats::ConnectOptions::with_credentials(&creds)
        .map_err(|e| e.to_string())?
        .connect(url)
        .await
        .map_err(|e| e.to_string())
}

/// A raw connection and the nonce its INFO carried.
async fn raw_with_nonce(s: &Shoal) -> (Raw, Option<String>) {
    let stream = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    let mut raw = Raw::from_stream(stream);
    let nonce = nonce_of(&mut raw).await;
    (raw, nonce)
}

/// Sends CONNECT with `fields` and `signer`'s signature of `signed` (the
/// nonce, or other bytes for a forgery), then PING.
async fn connect_signed(raw: &mut Raw, mut fields: Value, signer: &KeyPair, signed: &[u8]) {
    fields["sig"] = json!(URL_SAFE_NO_PAD.encode(signer.sign(signed).unwrap()));
    fields["verbose"] = json!(false);
    raw.send(format!("CONNECT {fields}\r\nPING\r\n").as_bytes())
        .await;
}

/// Reads the INFO line; its nonce.
async fn nonce_of(raw: &mut Raw) -> Option<String> {
    let info = raw.line().await.expect("INFO");
    let v: Value = serde_json::from_str(info.strip_prefix("INFO ").unwrap()).unwrap();
    v["nonce"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn operator_mode_users_connect_with_credentials_and_accounts_share_by_jwt() {
    let o = operator();
    for shards in SHARDS {
        let s = Shoal::start(shards, &["-m", "-1"], Some(&o.conf));
        let (svc_user, app_user) = (KeyPair::new_user(), KeyPair::new_user());
        let svc = connect_creds(
            &s.url(),
            creds(&user_jwt(&o.svc, &svc_user, json!({})), &svc_user),
        )
        .await
        .unwrap();
        let app = connect_creds(
            &s.url(),
            creds(&user_jwt(&o.app, &app_user, json!({})), &app_user),
        )
        .await
        .unwrap();

        // The service, called from the importing account under its local
        // name; the reply comes back across the accounts.
        let mut help = svc.subscribe("help").await.unwrap();
        let mut app_all = app.subscribe(">").await.unwrap();
        sync_interest(&svc, &svc).await;
        sync_interest(&app, &app).await;
        let responder = tokio::spawn({
            let svc = svc.clone();
            async move {
                let m = next_msg(&mut help).await;
                svc.publish(m.reply.unwrap(), "helped".into())
                    .await
                    .unwrap();
                svc.flush().await.unwrap();
            }
        });
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            app.request("svc.help", "please".into()),
        )
        .await
        .expect("request timed out")
        .expect("request failed");
        assert_eq!(&reply.payload[..], b"helped");
        responder.await.unwrap();

        // Monitoring names the user by its key and shows no JWT.
        let (_, connz) = s.http_get("/connz");
        let users: Vec<&str> = connz["connections"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["authorized_user"].as_str())
            .collect();
        assert!(users.contains(&app_user.public_key().as_str()), "{connz}");
        assert!(!connz.to_string().contains("eyJ"), "a JWT in /connz");

        // The stream export reaches the importer; SVC's other subjects do
        // not (APP's `>` sees only the imported stream, its own request
        // inbox traffic aside).
        svc.publish("private.x", "secret".into()).await.unwrap();
        svc.publish("events.1", "e1".into()).await.unwrap();
        svc.flush().await.unwrap();
        loop {
            let m = next_msg(&mut app_all).await;
            assert_ne!(m.subject.as_str(), "private.x", "isolation broken");
            if m.subject.as_str() == "events.1" {
                assert_eq!(&m.payload[..], b"e1");
                break;
            }
        }
    }
}

#[tokio::test]
async fn operator_mode_refuses_what_the_chain_does_not_vouch_for() {
    let o = operator();
    let s = Shoal::start(2, &[], Some(&o.conf));

    // INFO carries a nonce of nats-server's length, and auth_required.
    let (mut raw, nonce) = raw_with_nonce(&s).await;
    let nonce = nonce.expect("a nonce in INFO");
    assert_eq!(nonce.len(), 15, "{nonce}");
    // A valid JWT whose signature is of another nonce: refused, closed.
    let user = KeyPair::new_user();
    let jwt = user_jwt(&o.app, &user, json!({}));
    connect_signed(&mut raw, json!({"jwt": jwt}), &user, b"another nonce").await;
    raw.expect_closed_after("-ERR 'Authorization Violation'")
        .await;
    // The same with the right nonce: in.
    let (mut raw, nonce) = raw_with_nonce(&s).await;
    let nonce = nonce.unwrap();
    connect_signed(&mut raw, json!({"jwt": jwt}), &user, nonce.as_bytes()).await;
    assert_eq!(raw.line().await.as_deref(), Some("PONG"));

    // A user of an account the server does not have.
    let stranger = KeyPair::new_account();
    let err = connect_creds(
        &s.url(),
        creds(&user_jwt(&stranger, &user, json!({})), &user),
    )
    .await
    .map(|_| ())
    .unwrap_err();
    assert!(err.to_lowercase().contains("authorization"), "{err}");
    // Password login is no way in.
    let (mut raw, _) = raw_with_nonce(&s).await;
    raw.send(b"CONNECT {\"user\":\"a\",\"pass\":\"a\",\"verbose\":false}\r\nPING\r\n")
        .await;
    raw.expect_closed_after("-ERR 'Authorization Violation'")
        .await;
    eventually(Duration::from_secs(5), "the failure in the log", || {
        s.log_contains("authentication error")
    });
}

#[tokio::test]
async fn a_user_jwt_that_expires_closes_its_connection() {
    let o = operator();
    let s = Shoal::start(1, &[], Some(&o.conf));
    let user = KeyPair::new_user();
    let jwt = user_jwt(&o.app, &user, json!({"exp": unix_now() + 2}));
    let (mut raw, nonce) = raw_with_nonce(&s).await;
    let nonce = nonce.unwrap();
    connect_signed(&mut raw, json!({"jwt": jwt}), &user, nonce.as_bytes()).await;
    assert_eq!(raw.line().await.as_deref(), Some("PONG"));
    // Server PINGs may come first; the expiry error within 10 s, then close.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = raw.line_within(left).await.expect("expiry error");
        if line == "PING" {
            raw.send(b"PONG\r\n").await;
            continue;
        }
        assert_eq!(line, "-ERR 'User Authentication Expired'");
        break;
    }
    assert!(raw.closed_within(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn nkey_users_connect_by_signing_the_nonce() {
    let alice = KeyPair::new_user();
    let limited = KeyPair::new_user();
    let conf = format!(
        "authorization: {{\n  users: [\n    {{ nkey: {} }}\n    {{ nkey: {}, permissions: {{ publish: \"allowed.>\" }} }}\n  ]\n}}\n",
        alice.public_key(),
        limited.public_key()
    );
    for shards in SHARDS {
        let s = Shoal::start(shards, &[], Some(&conf));
        let a = async_nats::ConnectOptions::with_nkey(alice.seed().unwrap())
            .connect(s.url())
            .await
            .unwrap();
        let l = async_nats::ConnectOptions::with_nkey(limited.seed().unwrap())
            .connect(s.url())
            .await
            .unwrap();
        let mut sub = a.subscribe(">").await.unwrap();
        sync_interest(&a, &a).await;
        l.publish("denied.x", "no".into()).await.unwrap();
        l.publish("allowed.x", "yes".into()).await.unwrap();
        l.flush().await.unwrap();
        let m = loop {
            let m = next_msg(&mut sub).await;
            if !m.subject.starts_with("_SYNC.") {
                break m;
            }
        };
        assert_eq!(
            m.subject.as_str(),
            "allowed.x",
            "the nkey user's permissions apply"
        );

        // A key the server does not list, and a listed key whose seed the
        // client does not hold (signature by another key): refused.
        let stranger = KeyPair::new_user();
        assert!(
            async_nats::ConnectOptions::with_nkey(stranger.seed().unwrap())
                .connect(s.url())
                .await
                .is_err()
        );
        let (mut raw, nonce) = raw_with_nonce(&s).await;
        let nonce = nonce.unwrap();
        connect_signed(
            &mut raw,
            json!({"nkey": alice.public_key()}),
            &stranger,
            nonce.as_bytes(),
        )
        .await;
        raw.expect_closed_after("-ERR 'Authorization Violation'")
            .await;
        // The log is read by another thread: give it a moment.
        let logged = format!("authentication error - Nkey {:?}", alice.public_key());
        eventually(Duration::from_secs(5), "the nkey in the log", || {
            s.log_contains(&logged)
        });
    }
}

#[tokio::test]
async fn no_nonce_without_public_key_users() {
    let s = Shoal::start(1, &[], Some("authorization { user: a, password: b }"));
    let (_raw, nonce) = raw_with_nonce(&s).await;
    assert_eq!(nonce, None);
}
