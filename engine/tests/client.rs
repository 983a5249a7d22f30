//! The client protocol's rules, checked on `ClientState` alone: what the
//! process-level tests (tests/protocol.rs, tests/auth.rs, tests/reload.rs)
//! check through a socket for each rule, here without one, so a rule's
//! every branch is covered in milliseconds. The process tests stay for
//! conformance (real clients, the wire, the log).

use bytes::Bytes;
use shoal_core::auth::{
    AccountConfig, Accounts, AuthError, CompiledPermissions, Permissions, ResponsePermission,
    Session, SubjectPermission,
};
use shoal_core::proto::{ClientOp, ConnectOptions, ProtoError};
use shoal_engine::client::{
    Answer, ClientState, CloseReason, Level, PingTick, PubCheck, Recheck, SubCheck, Unsub, Verdict,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn perms(pub_allow: Option<&[&str]>, sub_allow: Option<&[&str]>, sub_deny: &[&str]) -> Permissions {
    let list = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    Permissions {
        publish: SubjectPermission {
            allow: pub_allow.map(list),
            deny: vec![],
        },
        subscribe: SubjectPermission {
            allow: sub_allow.map(list),
            deny: list(sub_deny),
        },
        allow_responses: None,
    }
}

fn session(user: &str, p: Option<Permissions>, account: Option<&str>) -> Session {
    Session {
        user: Some(user.into()),
        account: account.map(Into::into),
        permissions: p.map(|p| Arc::new(CompiledPermissions::compile(&p).unwrap())),
        expires: None,
    }
}

/// A client that sent CONNECT `{"verbose":false}` and authenticated with
/// `p`.
fn logged_in(p: Option<Permissions>) -> ClientState {
    let accounts = Accounts::disabled();
    let mut c = ClientState::new(None, None);
    let opts =
        ConnectOptions::from_json(br#"{"verbose":false,"user":"bob","pass":"s3cret"}"#).unwrap();
    assert!(matches!(
        c.authenticate(&opts, Ok(session("bob", p, None)), &accounts),
        Verdict::Accepted { expires: None }
    ));
    assert_eq!(c.accept_connect(opts), Answer::Nothing);
    c
}

/// The virtual clock's start: the engine only ever gets time as a
/// parameter; the tests read the real clock once for a base.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

/// Accounts enabled, with one account "A".
fn accounts_with_a() -> Accounts {
    Accounts::new(
        &[AccountConfig {
            name: "A".into(),
            exports: vec![],
            imports: vec![],
        }],
        b"k",
    )
    .unwrap()
}

fn new_sub(c: &ClientState, subject: &str, queue: Option<&str>) -> SubCheck {
    c.check_subscribe(
        subject.as_bytes(),
        queue.map(str::as_bytes),
        b"1",
        false,
        0,
        0,
    )
}

#[test]
fn before_connect_the_defaults_are_nats_servers() {
    let c = ClientState::new(None, None);
    let f = c.flags();
    assert!(f.verbose && f.pedantic && f.echo && !f.headers && !f.no_responders);
    assert_eq!(c.ok(), Answer::Ok);
}

#[test]
fn only_connect_passes_the_gate_before_authentication() {
    let c = ClientState::new(None, None);
    let r = c.admit(&ClientOp::Ping, || true).unwrap_err();
    assert_eq!(r.err, "Authorization Violation");
    assert_eq!(r.close, Some(CloseReason::AuthenticationViolation));
    assert!(c
        .admit(&ClientOp::Connect(Bytes::from_static(b"{}")), || true)
        .is_ok());
    // No authentication configured: anything goes.
    assert!(c.admit(&ClientOp::Ping, || false).is_ok());
    assert!(logged_in(None)
        .admit(&ClientOp::Ping, || panic!(
            "an authenticated client's operation read the configuration"
        ))
        .is_ok());
}

#[test]
fn a_failed_login_names_the_user_never_the_secret() {
    let mut c = ClientState::new(None, None);
    let opts = ConnectOptions::from_json(br#"{"user":"bob","pass":"hunter2"}"#).unwrap();
    let Verdict::Refused(r) = c.authenticate(&opts, Err(AuthError), &Accounts::disabled()) else {
        panic!("refused credentials were accepted");
    };
    assert_eq!(r.err, "Authorization Violation");
    assert_eq!(r.close, Some(CloseReason::AuthenticationViolation));
    let log = r.log.unwrap();
    assert_eq!(log.level, Level::Error);
    assert_eq!(log.text, "authentication error - User \"bob\"");
    assert!(!c.is_authenticated());
    let nkey = ConnectOptions::from_json(br#"{"nkey":"UABC","sig":"x"}"#).unwrap();
    let Verdict::Refused(r) = c.authenticate(&nkey, Err(AuthError), &Accounts::disabled()) else {
        panic!()
    };
    assert_eq!(r.log.unwrap().text, "authentication error - Nkey \"UABC\"");
}

#[test]
fn a_second_connect_changes_options_not_who_the_client_is() {
    let mut c = logged_in(None);
    let again = ConnectOptions::from_json(
        br#"{"verbose":true,"echo":false,"user":"alice","pass":"x","name":"n2"}"#,
    )
    .unwrap();
    assert_eq!(c.accept_connect(again), Answer::Ok);
    let kept = c.connect_options().unwrap();
    assert_eq!(kept.user.as_deref(), Some("bob"));
    assert_eq!(kept.pass.as_deref(), Some("s3cret"));
    assert_eq!(c.name(), Some("n2"));
    assert!(!c.flags().echo);
}

#[test]
fn bad_connect_json_is_fatal() {
    let r = ClientState::parse_connect(b"{not json").unwrap_err();
    assert_eq!(r.err, "Unknown Protocol Operation");
    assert_eq!(r.close, Some(CloseReason::ParseError));
    assert!(r
        .log
        .unwrap()
        .text
        .starts_with("processConnect: bad CONNECT: "));
}

#[test]
fn protocol_errors_close_with_nats_server_texts() {
    let r = ClientState::protocol_error(
        &ProtoError::MaxPayload { size: 10, max: 5 },
        b"PUB a 10\r\n",
    );
    assert_eq!(r.err, "Maximum Payload Violation");
    assert_eq!(r.close, Some(CloseReason::MaxPayloadExceeded));
    let r = ClientState::protocol_error(&ProtoError::UnknownOp, b"FOO\r\n");
    assert_eq!(r.err, "Unknown Protocol Operation");
    assert_eq!(r.close, Some(CloseReason::ParseError));
}

#[test]
fn publish_permissions_and_pedantic_subjects() {
    let now = t0();
    let mut c = logged_in(Some(perms(Some(&["ok.>"]), None, &[])));
    assert_eq!(
        c.check_publish(b"ok.1", || now),
        PubCheck::Allowed(Answer::Nothing)
    );
    let PubCheck::Denied(r) = c.check_publish(b"no.1", || now) else {
        panic!("a denied publish was allowed")
    };
    assert_eq!(r.err, "Permissions Violation for Publish to \"no.1\"");
    assert_eq!(r.close, None, "a violation keeps the connection");
    assert_eq!(
        r.log.unwrap().text,
        "Publish Violation - User \"bob\", Subject \"no.1\""
    );
    // Pedantic (the default before CONNECT) refuses wildcards in a PUB.
    let mut fresh = ClientState::new(None, None);
    let PubCheck::Invalid(r) = fresh.check_publish(b"a.*", || now) else {
        panic!("pedantic mode let a wildcard publish through")
    };
    assert_eq!(r.err, "Invalid Publish Subject");
    assert_eq!(
        fresh.check_publish(b"a.b", || now),
        PubCheck::Allowed(Answer::Ok)
    );
}

#[test]
fn allow_responses_grants_one_reply_per_request() {
    let now = t0();
    let mut p = perms(Some(&[]), None, &[]);
    p.allow_responses = Some(ResponsePermission::default());
    let mut c = logged_in(Some(p));
    let allowed =
        |c: &mut ClientState| matches!(c.check_publish(b"_INBOX.1", || now), PubCheck::Allowed(_));
    assert!(!allowed(&mut c));
    c.delivered_request(b"_INBOX.1", || now);
    assert!(allowed(&mut c));
    assert!(!allowed(&mut c), "one response only");
}

#[test]
fn an_allow_responses_grant_expires_on_the_virtual_clock() {
    let t = t0();
    let mut p = perms(Some(&[]), None, &[]);
    p.allow_responses = Some(ResponsePermission {
        max_msgs: 2,
        expires: Some(Duration::from_secs(5)),
    });
    let mut c = logged_in(Some(p));
    let allowed = |c: &mut ClientState, at| {
        matches!(c.check_publish(b"_INBOX.9", || at), PubCheck::Allowed(_))
    };
    c.delivered_request(b"_INBOX.9", || t);
    assert!(allowed(&mut c, t + Duration::from_secs(4)));
    assert!(
        !allowed(&mut c, t + Duration::from_secs(6)),
        "a grant used after its expiry"
    );
}

#[test]
fn subscribe_checks_in_nats_server_order() {
    let c = logged_in(Some(perms(None, Some(&["a.>"]), &["a.secret"])));
    assert_eq!(
        new_sub(&c, "a..b", None),
        SubCheck::Refused(shoal_engine::Refusal {
            err: "Invalid Subject".into(),
            log: None,
            close: None
        })
    );
    let SubCheck::Refused(r) = new_sub(&c, "b.1", Some("q")) else {
        panic!("a denied subscription was accepted")
    };
    assert_eq!(
        r.err,
        "Permissions Violation for Subscription to \"b.1\" using queue \"q\""
    );
    assert_eq!(
        r.log.unwrap().text,
        "Subscription Violation - User \"bob\", Subject \"b.1\", Queue: \"q\", SID 1"
    );
    let SubCheck::Refused(r) = new_sub(&c, "b.1", None) else {
        panic!()
    };
    assert_eq!(r.err, "Permissions Violation for Subscription to \"b.1\"");
    // A wildcard overlapping the deny list is allowed, filtered at delivery.
    assert_eq!(
        new_sub(&c, "a.*", None),
        SubCheck::New {
            subject: Bytes::from_static(b"a.*"),
            prefix_len: 0,
            deny_filter: true
        }
    );
    assert!(c.denies_delivery(b"a.secret"));
    assert!(!c.denies_delivery(b"a.public"));
    assert_eq!(
        c.check_subscribe(b"a.1", None, b"1", true, 0, 0),
        SubCheck::Duplicate
    );
    let SubCheck::Refused(r) = c.check_subscribe(b"a.1", None, b"9", false, 3, 3) else {
        panic!("the limit was not applied")
    };
    assert_eq!(r.err, "maximum subscriptions exceeded");
    assert!(matches!(
        c.check_subscribe(b"a.1", None, b"9", false, 2, 3),
        SubCheck::New { .. }
    ));
}

#[test]
fn an_account_puts_its_prefix_before_every_subscription() {
    let accounts = accounts_with_a();
    let mut c = ClientState::new(accounts.get(None), None);
    let opts = ConnectOptions::from_json(b"{}").unwrap();
    assert!(matches!(
        c.authenticate(&opts, Ok(session("u", None, Some("A"))), &accounts),
        Verdict::Accepted { .. }
    ));
    let SubCheck::New {
        subject,
        prefix_len,
        ..
    } = new_sub(&c, "x.y", None)
    else {
        panic!()
    };
    assert_eq!(&subject[prefix_len..], b"x.y");
    assert_eq!(&subject[..prefix_len], c.prefix());
    assert!(prefix_len > 0);
}

#[test]
fn unsubscribe_with_a_max_waits_for_it() {
    assert_eq!(ClientState::unsubscribe(None, 0), Unsub::Now);
    assert_eq!(ClientState::unsubscribe(Some(3), 1), Unsub::AtMax(3));
    assert_eq!(ClientState::unsubscribe(Some(3), 3), Unsub::Now);
}

#[test]
fn keep_alive_goes_stale_after_max_unanswered_pings() {
    let mut c = ClientState::new(None, None);
    assert_eq!(
        c.ping_tick(true, 2),
        PingTick::Wait,
        "no PING before the CONNECT verdict"
    );
    assert_eq!(c.ping_tick(false, 2), PingTick::Ping);
    assert_eq!(c.ping_tick(false, 2), PingTick::Ping);
    let PingTick::Stale(r) = c.ping_tick(false, 2) else {
        panic!("two unanswered PINGs did not make it stale")
    };
    assert_eq!(r.err, "Stale Connection");
    assert_eq!(r.close, Some(CloseReason::StaleConnection));
    c.pong();
    assert_eq!(c.ping_tick(false, 2), PingTick::Ping);
}

#[test]
fn timers_close_with_nats_server_texts() {
    let c = ClientState::new(None, None);
    let r = c.auth_timeout().unwrap();
    assert_eq!(r.err, "Authentication Timeout");
    assert_eq!(r.close, Some(CloseReason::AuthenticationTimeout));
    assert!(logged_in(None).auth_timeout().is_none());
    let r = ClientState::tls_required();
    assert_eq!(r.err, "Secure Connection - TLS Required");
    assert_eq!(r.close, Some(CloseReason::TlsError));
    let r = ClientState::too_many_connections();
    assert_eq!(r.err, "maximum connections exceeded");
    assert_eq!(r.close, Some(CloseReason::MaxConnectionsExceeded));
    let r = ClientState::expired();
    assert_eq!(r.err, "User Authentication Expired");
    assert_eq!(r.log.unwrap().level, Level::Info);
}

#[test]
fn a_reload_rechecks_credentials_accounts_and_subscriptions() {
    let accounts = Accounts::disabled();
    // Never authenticated, and now authentication is required.
    let mut anon = ClientState::new(None, None);
    let Recheck::Refused(r) = anon.recheck(false, true, None, &accounts) else {
        panic!()
    };
    assert_eq!(r.close, Some(CloseReason::AuthenticationViolation));
    assert!(matches!(
        anon.recheck(false, false, None, &accounts),
        Recheck::Stays
    ));
    // Credentials that no longer pass.
    let mut c = logged_in(None);
    assert!(matches!(
        c.recheck(true, true, Some(Err(AuthError)), &accounts),
        Recheck::Refused(_)
    ));
    // New permissions: a subscription they forbid goes, a wildcard one
    // now filters the deny list.
    let p = perms(None, Some(&["a.>"]), &["a.x"]);
    assert!(matches!(
        c.recheck(
            true,
            true,
            Some(Ok(session("bob", Some(p), None))),
            &accounts
        ),
        Recheck::Stays
    ));
    let r = c.keeps_subscription(b"b.1").unwrap_err();
    assert_eq!(r.err, "Permissions Violation for Subscription to \"b.1\"");
    assert_eq!(c.keeps_subscription(b"a.*"), Ok(true));
    assert_eq!(c.keeps_subscription(b"a.y"), Ok(false));
    // Moved into another account: closed so it reconnects there.
    let with_a = accounts_with_a();
    assert!(matches!(
        c.recheck(
            true,
            true,
            Some(Ok(session("bob", None, Some("A")))),
            &with_a
        ),
        Recheck::AccountChanged(_)
    ));
}

#[test]
fn traces_never_show_a_password_or_token() {
    let line =
        ClientState::redacted_connect(br#"{"user":"bob","pass":"hunter2","auth_token":"tok"}"#);
    assert!(
        !line.contains("hunter2") && !line.contains("tok\""),
        "{line}"
    );
    assert!(line.contains("[REDACTED]"));
}
