use super::*;
use std::time::{Duration, Instant};

fn connect(user: Option<&str>, pass: Option<&str>, token: Option<&str>) -> ConnectOptions {
    ConnectOptions {
        user: user.map(Into::into),
        pass: pass.map(Into::into),
        auth_token: token.map(Into::into),
        ..Default::default()
    }
}

fn ctx() -> ConnectContext {
    ConnectContext::default()
}

fn list(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn no_auth_configured_lets_everyone_in() {
    let a = Authenticator::new(&AuthConfig::default()).unwrap();
    assert!(!a.required());
    let s = a.authenticate(&connect(None, None, None), &ctx()).unwrap();
    assert!(s.permissions.is_none());
}

#[test]
fn plain_and_bcrypt_passwords() {
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let cfg = AuthConfig {
        users: vec![
            User {
                name: "alice".into(),
                account: None,
                password: Secret::new("pw"),
                permissions: None,
            },
            User {
                name: "bob".into(),
                account: None,
                password: Secret::new(&hash),
                permissions: None,
            },
        ],
        token: None,
        no_auth_user: None,
        accounts: vec![],
        ..Default::default()
    };
    let a = Authenticator::new(&cfg).unwrap();
    assert!(a.required());
    assert_eq!(
        a.authenticate(&connect(Some("alice"), Some("pw"), None), &ctx())
            .unwrap()
            .user
            .as_deref(),
        Some("alice")
    );
    assert!(a
        .authenticate(&connect(Some("alice"), Some("pW"), None), &ctx())
        .is_err());
    assert!(a
        .authenticate(&connect(Some("alice"), None, None), &ctx())
        .is_err());
    assert!(a
        .authenticate(&connect(Some("bob"), Some("s3cret"), None), &ctx())
        .is_ok());
    assert!(
        a.authenticate(&connect(Some("bob"), Some(&hash), None), &ctx())
            .is_err(),
        "the hash itself is not the password"
    );
    assert!(a
        .authenticate(&connect(Some("carol"), Some("pw"), None), &ctx())
        .is_err());
    assert!(a.authenticate(&connect(None, None, None), &ctx()).is_err());
    assert_eq!(AuthError.err_text(), "Authorization Violation");
}

#[test]
fn token_auth_plain_and_bcrypt() {
    for configured in ["tok".to_string(), bcrypt::hash("tok", 4).unwrap()] {
        let a = Authenticator::new(&AuthConfig {
            users: vec![],
            token: Some(Secret::new(&configured)),
            no_auth_user: None,
            accounts: vec![],
            ..Default::default()
        })
        .unwrap();
        assert!(a.required());
        assert!(a
            .authenticate(&connect(None, None, Some("tok")), &ctx())
            .is_ok());
        assert!(a
            .authenticate(&connect(None, None, Some("tak")), &ctx())
            .is_err());
        assert!(a
            .authenticate(&connect(Some("u"), Some("tok"), None), &ctx())
            .is_err());
    }
}

#[test]
fn config_errors() {
    let u = User {
        name: "a".into(),
        account: None,
        password: Secret::new("x"),
        permissions: None,
    };
    let both = AuthConfig {
        users: vec![u.clone()],
        token: Some(Secret::new("t")),
        no_auth_user: None,
        accounts: vec![],
        ..Default::default()
    };
    assert_eq!(
        Authenticator::new(&both).unwrap_err(),
        AuthConfigError::TokenAndUsers
    );
    let dup = AuthConfig {
        users: vec![u.clone(), u.clone()],
        token: None,
        no_auth_user: None,
        accounts: vec![],
        ..Default::default()
    };
    assert_eq!(
        Authenticator::new(&dup).unwrap_err(),
        AuthConfigError::DuplicateUser("a".into())
    );
    let bad = AuthConfig {
        users: vec![User {
            permissions: Some(Permissions {
                publish: SubjectPermission {
                    allow: Some(list(&["a.>.b"])),
                    deny: vec![],
                },
                ..Default::default()
            }),
            ..u
        }],
        token: None,
        no_auth_user: None,
        accounts: vec![],
        ..Default::default()
    };
    assert!(matches!(
        Authenticator::new(&bad),
        Err(AuthConfigError::Permission { .. })
    ));
}

fn perms(p: Permissions) -> ClientPermissions {
    ClientPermissions::new(Arc::new(CompiledPermissions::compile(&p).unwrap()))
}

#[test]
fn deny_wins_over_allow() {
    let mut c = perms(Permissions {
        publish: SubjectPermission {
            allow: Some(list(&["orders.>", "public"])),
            deny: list(&["orders.secret"]),
        },
        subscribe: SubjectPermission {
            allow: None,
            deny: list(&["admin.>"]),
        },
        allow_responses: None,
    });
    let now = Instant::now();
    assert!(c.may_publish(b"orders.new", now));
    assert!(
        c.may_publish(b"orders.new", now),
        "cached decision is the same"
    );
    assert!(!c.may_publish(b"orders.secret", now));
    assert!(c.may_publish(b"public", now));
    assert!(!c.may_publish(b"private", now));
    assert!(c.may_subscribe(b"anything.*"));
    assert!(!c.may_subscribe(b"admin.users"));
    assert!(!c.may_subscribe(b"admin.>"));
    // A wildcard that only overlaps the deny list is allowed, filtered at delivery.
    assert!(c.may_subscribe(b">"));
    assert!(c.compiled().deny_delivery(b"admin.x"));
    assert!(!c.compiled().deny_delivery(b"user.x"));
}

#[test]
fn subscribe_allow_must_cover_the_pattern() {
    let c = perms(Permissions {
        subscribe: SubjectPermission {
            allow: Some(list(&["foo.>", "bar.baz"])),
            deny: vec![],
        },
        ..Default::default()
    });
    assert!(c.may_subscribe(b"foo.x"));
    assert!(c.may_subscribe(b"foo.*"));
    assert!(c.may_subscribe(b"foo.>"));
    assert!(c.may_subscribe(b"bar.baz"));
    assert!(!c.may_subscribe(b"bar.*"), "bar.baz does not cover bar.*");
    assert!(!c.may_subscribe(b">"));
    assert!(!c.may_subscribe(b"bar.>"));
}

#[test]
fn star_allow_does_not_grant_full_wildcard() {
    let c = perms(Permissions {
        subscribe: SubjectPermission {
            allow: Some(list(&["orders.*"])),
            deny: list(&["orders.hidden"]),
        },
        ..Default::default()
    });
    assert!(c.may_subscribe(b"orders.new"));
    assert!(
        c.may_subscribe(b"orders.*"),
        "overlaps the deny, filtered at delivery"
    );
    assert!(!c.may_subscribe(b"orders.>"), "would receive orders.a.b");
    assert!(!c.may_subscribe(b"orders.hidden"));
}

#[test]
fn empty_allow_list_allows_nothing() {
    let mut c = perms(Permissions {
        publish: SubjectPermission {
            allow: Some(vec![]),
            deny: vec![],
        },
        ..Default::default()
    });
    assert!(!c.may_publish(b"x", Instant::now()));
}

#[test]
fn allow_responses_grants_reply_subjects() {
    let mut c = perms(Permissions {
        allow_responses: Some(ResponsePermission {
            max_msgs: 2,
            expires: Some(Duration::from_secs(10)),
        }),
        ..Default::default()
    });
    let t0 = Instant::now();
    // allow_responses turns the missing publish allow list into an empty one.
    assert!(!c.may_publish(b"anything", t0));
    assert!(!c.may_publish(b"_INBOX.1", t0));
    c.note_request(b"_INBOX.1", t0);
    assert!(c.may_publish(b"_INBOX.1", t0));
    assert!(c.may_publish(b"_INBOX.1", t0));
    assert!(!c.may_publish(b"_INBOX.1", t0), "max_msgs used up");
    c.note_request(b"_INBOX.2", t0);
    assert!(
        !c.may_publish(b"_INBOX.2", t0 + Duration::from_secs(11)),
        "expired"
    );
}

#[test]
fn response_grants_stay_bounded() {
    let mut c = perms(Permissions {
        allow_responses: Some(ResponsePermission::default()),
        ..Default::default()
    });
    let t0 = Instant::now();
    for i in 0..20_000 {
        c.note_request(format!("_INBOX.{i}").as_bytes(), t0);
    }
    assert!(c.outstanding_grants() <= 10_000);
    assert!(
        c.may_publish(b"_INBOX.19999", t0),
        "the newest grant survives"
    );
}

#[test]
fn secrets_are_not_printed() {
    assert!(!format!("{:?}", Secret::new("hunter2")).contains("hunter2"));
}

fn bcrypt_user(name: &str, password: &str) -> User {
    User {
        name: name.into(),
        account: None,
        password: Secret::new(&bcrypt::hash(password, 4).unwrap()),
        permissions: None,
    }
}

#[test]
fn check_fast_answers_without_bcrypt_until_a_success_is_known() {
    let cfg = AuthConfig {
        users: vec![
            bcrypt_user("bob", "s3cret"),
            User {
                name: "alice".into(),
                account: None,
                password: Secret::new("pw"),
                permissions: None,
            },
        ],
        token: None,
        no_auth_user: None,
        accounts: vec![],
        ..Default::default()
    };
    let a = Authenticator::new(&cfg).unwrap();
    let bob = connect(Some("bob"), Some("s3cret"), None);
    assert!(matches!(
        a.check_fast(&bob, &ctx()),
        FastCheck::NeedsSlowCheck
    ));
    // Plain passwords and unknown users never need bcrypt.
    assert!(matches!(
        a.check_fast(&connect(Some("alice"), Some("pw"), None), &ctx()),
        FastCheck::Done(Ok(_))
    ));
    assert!(matches!(
        a.check_fast(&connect(Some("carol"), Some("x"), None), &ctx()),
        FastCheck::Done(Err(_))
    ));
    // A wrong password is not remembered; a right one is.
    assert!(a
        .authenticate(&connect(Some("bob"), Some("wrong"), None), &ctx())
        .is_err());
    assert!(matches!(
        a.check_fast(&connect(Some("bob"), Some("wrong"), None), &ctx()),
        FastCheck::NeedsSlowCheck
    ));
    assert!(a.authenticate(&bob, &ctx()).is_ok());
    assert!(matches!(a.check_fast(&bob, &ctx()), FastCheck::Done(Ok(_))));
    assert!(matches!(
        a.check_fast(&connect(Some("bob"), Some("s3cret!"), None), &ctx()),
        FastCheck::NeedsSlowCheck
    ));
}

#[test]
fn a_reload_keeps_known_successes_only_for_unchanged_secrets() {
    let bob = bcrypt_user("bob", "s3cret");
    let old = Authenticator::new(&AuthConfig {
        users: vec![bob.clone(), bcrypt_user("eve", "e")],
        token: None,
        no_auth_user: None,
        accounts: vec![],
        ..Default::default()
    })
    .unwrap();
    assert!(old
        .authenticate(&connect(Some("bob"), Some("s3cret"), None), &ctx())
        .is_ok());
    assert!(old
        .authenticate(&connect(Some("eve"), Some("e"), None), &ctx())
        .is_ok());
    // Same bob, eve's password changed (to the same text, new hash).
    let new = Authenticator::new(&AuthConfig {
        users: vec![bob, bcrypt_user("eve", "e")],
        token: None,
        no_auth_user: None,
        accounts: vec![],
        ..Default::default()
    })
    .unwrap();
    new.keep_verified_from(&old);
    assert!(matches!(
        new.check_fast(&connect(Some("bob"), Some("s3cret"), None), &ctx()),
        FastCheck::Done(Ok(_))
    ));
    assert!(matches!(
        new.check_fast(&connect(Some("eve"), Some("e"), None), &ctx()),
        FastCheck::NeedsSlowCheck
    ));
}

#[test]
fn debug_shows_no_secret() {
    let a = Authenticator::new(&AuthConfig {
        users: vec![User {
            name: "alice".into(),
            account: None,
            password: Secret::new("plain-s3cret"),
            permissions: None,
        }],
        token: None,
        no_auth_user: None,
        accounts: vec![],
        ..Default::default()
    })
    .unwrap();
    assert!(!format!("{a:?}").contains("s3cret"));
}

#[test]
fn no_auth_user_is_who_connects_without_credentials() {
    let mut cfg = AuthConfig {
        users: vec![
            User {
                name: "anon".into(),
                account: None,
                password: Secret::new("unused"),
                permissions: Some(Permissions {
                    publish: SubjectPermission {
                        allow: Some(vec!["public.>".into()]),
                        deny: vec![],
                    },
                    ..Permissions::default()
                }),
            },
            User {
                name: "bob".into(),
                account: None,
                password: Secret::new("bpw"),
                permissions: None,
            },
        ],
        token: None,
        no_auth_user: Some("anon".into()),
        accounts: vec![],
        ..Default::default()
    };
    let a = Authenticator::new(&cfg).unwrap();
    let s = a.authenticate(&connect(None, None, None), &ctx()).unwrap();
    assert_eq!(s.user.as_deref(), Some("anon"));
    assert!(s.permissions.is_some(), "anon's permissions apply");
    // Credentials given are checked as usual.
    assert!(a
        .authenticate(&connect(Some("bob"), Some("x"), None), &ctx())
        .is_err());
    assert!(a
        .authenticate(&connect(Some("bob"), Some("bpw"), None), &ctx())
        .is_ok());
    cfg.no_auth_user = Some("nobody".into());
    assert!(matches!(
        Authenticator::new(&cfg),
        Err(AuthConfigError::UnknownNoAuthUser(_))
    ));
}
