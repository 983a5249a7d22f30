//! Accounts: separate subject spaces on one server, as nats-server's
//! `accounts {}` block.
//!
//! Each account's subjects live under a prefix token (`$ACC:<name>.`) in the
//! shards' indexes and on route links, so the index, the match cache, queue
//! groups, the cross-shard mirrors and the route interest keep accounts
//! apart without knowing about them: a `>` in one account is `$ACC:a.>`
//! and cannot match another account's subjects. The prefix is added at the
//! edge (a client's SUB and PUB) and taken off when a message is written to
//! a client. Without an `accounts` block nothing is prefixed (the default
//! account `$G` is the whole subject space, as before), so configurations
//! without accounts pay nothing.
//!
//! Sharing between accounts follows nats-server's exports and imports:
//! - a **stream** export/import copies every message published in the
//!   exporting account on a matching subject into the importing account
//!   (optionally under a `prefix`);
//! - a **service** import makes a request published in the importing
//!   account on the service subject (or its local name `to`) reach the
//!   exporter's responders; its reply subject is rewritten to
//!   `_R_.<account>.<mac>.<reply>`, and a publish on such a subject in any
//!   account is delivered to `<reply>` in `<account>` once its MAC checks.
//!   The MAC is keyed by a digest of the accounts configuration (names and
//!   credentials), which every node of a cluster shares and no client
//!   knows, so no client can forge a way into another account.

use crate::subject::{is_valid_pattern, is_valid_publish, pattern_matches};
use ahash::AHashMap;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The default account (users outside any `accounts` entry).
pub const GLOBAL_ACCOUNT: &str = "$G";

/// What an account offers other accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// A service (requests in, replies back) rather than a stream.
    pub service: bool,
    /// The subject (pattern) offered.
    pub subject: String,
    /// The accounts that may import it (`accounts: [...]`); `None`: every
    /// account.
    pub accounts: Option<Vec<String>>,
}

impl Export {
    pub fn stream(subject: &str) -> Self {
        Export {
            service: false,
            subject: subject.to_owned(),
            accounts: None,
        }
    }

    pub fn service(subject: &str) -> Self {
        Export {
            service: true,
            ..Export::stream(subject)
        }
    }
}

/// What an account takes from another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub service: bool,
    /// The exporting account.
    pub account: String,
    /// The subject (pattern) in the exporting account.
    pub subject: String,
    /// Streams: a token prefix in the importing account (`prefix`).
    /// Services: the local subject requests are published on (`to`).
    pub local: Option<String>,
}

/// One `accounts` entry (its users are in the auth configuration).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountConfig {
    pub name: String,
    pub exports: Vec<Export>,
    pub imports: Vec<Import>,
}

/// A stream another account imports from this one.
#[derive(Debug)]
struct StreamOut {
    pattern: String,
    /// The importing account.
    to: Arc<str>,
    to_prefix: Vec<u8>,
    /// `prefix.` put before the subject in the importing account.
    subject_prefix: Vec<u8>,
}

/// A service this account imports.
#[derive(Debug)]
struct ServiceIn {
    /// The subject requests are published on here.
    local: String,
    /// The exporter's subject for it.
    remote: String,
    /// The exporting account.
    to: Arc<str>,
    to_prefix: Vec<u8>,
}

/// An account as the runtime uses it (immutable, shared by the shards).
#[derive(Debug)]
pub struct Account {
    pub name: String,
    /// `$ACC:<name>.`, or empty when no accounts are configured.
    pub prefix: Vec<u8>,
    streams_out: Vec<StreamOut>,
    services_in: Vec<ServiceIn>,
}

/// One delivery a publish in an account makes: the subject (already in its
/// account's space, prefix included) and the reply to carry.
#[derive(Debug, PartialEq, Eq)]
pub struct Delivery {
    pub subject: Vec<u8>,
    pub reply: Option<Vec<u8>>,
    /// How it left the publisher's account (message tracing's `se` and
    /// `si` entries).
    pub via: Via,
}

/// Which rule made a [`Delivery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The publisher's own account.
    Own,
    /// A stream export, into the importing account.
    StreamExport(Arc<str>),
    /// A service import, into the exporting account.
    ServiceImport(Arc<str>),
    /// A service reply back into the requester's account.
    Reply,
}

/// Every account, or none (`enabled` false: no prefixes at all).
pub struct Accounts {
    by_name: AHashMap<String, Arc<Account>>,
    key: [u8; 32],
    enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("account name {0:?} must be one subject token")]
    BadName(String),
    #[error("duplicate account {0:?}")]
    Duplicate(String),
    #[error("account {account:?} imports from unknown account {from:?}")]
    UnknownAccount { account: String, from: String },
    #[error("account {account:?} imports {subject:?} from {from:?}, which does not export it")]
    NotExported {
        account: String,
        from: String,
        subject: String,
    },
    #[error("invalid subject {0:?} in an export or import")]
    BadSubject(String),
    /// nats-server: "stream import not authorized" / "service import not
    /// authorized", which stops it at start too.
    #[error("{kind} import not authorized: account {account:?} imports {subject:?} from {from:?}, whose export lists the accounts that may import it")]
    NotAuthorized {
        kind: &'static str,
        account: String,
        from: String,
        subject: String,
    },
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the reply MAC key.
        f.debug_struct("Accounts")
            .field("names", &self.by_name.keys().collect::<Vec<_>>())
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

const REPLY_PREFIX: &[u8] = b"_R_.";

fn prefix_of(name: &str) -> Vec<u8> {
    format!("$ACC:{name}.").into_bytes()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| !matches!(b, b'.' | b'*' | b'>' | b' ' | b'\t' | b'\r' | b'\n'))
}

impl Default for Accounts {
    fn default() -> Self {
        Accounts::disabled()
    }
}

impl Accounts {
    /// No accounts configured: one subject space, nothing prefixed.
    pub fn disabled() -> Accounts {
        let mut by_name = AHashMap::new();
        by_name.insert(
            GLOBAL_ACCOUNT.to_owned(),
            Arc::new(Account {
                name: GLOBAL_ACCOUNT.to_owned(),
                prefix: Vec::new(),
                streams_out: Vec::new(),
                services_in: Vec::new(),
            }),
        );
        Accounts {
            by_name,
            key: [0; 32],
            enabled: false,
        }
    }

    /// Builds the accounts; `secret` feeds the reply MAC key (the
    /// configuration's credentials: what every node has and no client).
    pub fn new(configs: &[AccountConfig], secret: &[u8]) -> Result<Accounts, AccountError> {
        if configs.is_empty() {
            return Ok(Accounts::disabled());
        }
        let mut names: Vec<&str> = vec![GLOBAL_ACCOUNT];
        for c in configs {
            if !valid_name(&c.name) {
                return Err(AccountError::BadName(c.name.clone()));
            }
            if names.contains(&c.name.as_str()) {
                return Err(AccountError::Duplicate(c.name.clone()));
            }
            names.push(&c.name);
        }
        let config_of = |n: &str| configs.iter().find(|c| c.name == n);
        let mut streams_out: AHashMap<String, Vec<StreamOut>> = AHashMap::new();
        let mut services_in: AHashMap<String, Vec<ServiceIn>> = AHashMap::new();
        for c in configs {
            for imp in &c.imports {
                if !names.contains(&imp.account.as_str()) {
                    return Err(AccountError::UnknownAccount {
                        account: c.name.clone(),
                        from: imp.account.clone(),
                    });
                }
                if !is_valid_pattern(imp.subject.as_bytes()) {
                    return Err(AccountError::BadSubject(imp.subject.clone()));
                }
                let offers: Vec<&Export> = config_of(&imp.account)
                    .map(|e| {
                        e.exports
                            .iter()
                            .filter(|x| {
                                x.service == imp.service && covers(&x.subject, &imp.subject)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let authorized = offers
                    .iter()
                    .any(|x| x.accounts.as_ref().is_none_or(|a| a.contains(&c.name)));
                if !offers.is_empty() && !authorized {
                    return Err(AccountError::NotAuthorized {
                        kind: if imp.service { "service" } else { "stream" },
                        account: c.name.clone(),
                        from: imp.account.clone(),
                        subject: imp.subject.clone(),
                    });
                }
                if offers.is_empty() {
                    return Err(AccountError::NotExported {
                        account: c.name.clone(),
                        from: imp.account.clone(),
                        subject: imp.subject.clone(),
                    });
                }
                if imp.service {
                    let local = imp.local.clone().unwrap_or_else(|| imp.subject.clone());
                    if !is_valid_pattern(local.as_bytes()) {
                        return Err(AccountError::BadSubject(local));
                    }
                    services_in
                        .entry(c.name.clone())
                        .or_default()
                        .push(ServiceIn {
                            local,
                            remote: imp.subject.clone(),
                            to: imp.account.as_str().into(),
                            to_prefix: prefix_of(&imp.account),
                        });
                } else {
                    let subject_prefix = match &imp.local {
                        Some(p) => format!("{p}.").into_bytes(),
                        None => Vec::new(),
                    };
                    streams_out
                        .entry(imp.account.clone())
                        .or_default()
                        .push(StreamOut {
                            pattern: imp.subject.clone(),
                            to: c.name.as_str().into(),
                            to_prefix: prefix_of(&c.name),
                            subject_prefix,
                        });
                }
            }
        }
        let by_name = names
            .iter()
            .map(|n| {
                let a = Account {
                    name: (*n).to_owned(),
                    prefix: prefix_of(n),
                    streams_out: streams_out.remove(*n).unwrap_or_default(),
                    services_in: services_in.remove(*n).unwrap_or_default(),
                };
                ((*n).to_owned(), Arc::new(a))
            })
            .collect();
        let mut h = Sha256::new();
        h.update(b"shoal service reply key\0");
        for c in configs {
            h.update(c.name.as_bytes());
            h.update([0]);
        }
        h.update(secret);
        Ok(Accounts {
            by_name,
            key: h.finalize().into(),
            enabled: true,
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The account of a user (`None`: the default account).
    pub fn get(&self, name: Option<&str>) -> Option<Arc<Account>> {
        self.by_name.get(name.unwrap_or(GLOBAL_ACCOUNT)).cloned()
    }

    fn mac(&self, account: &str, reply: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(account.as_bytes());
        h.update([0]);
        h.update(reply);
        let d = h.finalize();
        d[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Where a publish by a client of `from` on `subject` (its own space,
    /// no prefix) with `reply` goes: its own account, the accounts that
    /// import it as a stream, the exporters of a service it imports; or,
    /// for a service reply subject (`_R_.…`) with a valid MAC, only the
    /// requester's account.
    pub fn deliveries(
        &self,
        from: &Account,
        subject: &[u8],
        reply: Option<&[u8]>,
    ) -> Vec<Delivery> {
        let with = |prefix: &[u8], s: &[u8]| {
            let mut v = Vec::with_capacity(prefix.len() + s.len());
            v.extend_from_slice(prefix);
            v.extend_from_slice(s);
            v
        };
        if let Some(rest) = subject.strip_prefix(REPLY_PREFIX) {
            if let Some(d) = self.decode_reply(rest) {
                return vec![d];
            }
        }
        let mut out = vec![Delivery {
            subject: with(&from.prefix, subject),
            reply: reply.map(<[u8]>::to_vec),
            via: Via::Own,
        }];
        let text = std::str::from_utf8(subject).unwrap_or("");
        for s in &from.streams_out {
            if pattern_matches(s.pattern.as_bytes(), subject) {
                let mut subj = s.to_prefix.clone();
                subj.extend_from_slice(&s.subject_prefix);
                subj.extend_from_slice(subject);
                out.push(Delivery {
                    subject: subj,
                    reply: None,
                    via: Via::StreamExport(s.to.clone()),
                });
            }
        }
        for s in &from.services_in {
            if let Some(remote) = map_subject(&s.local, &s.remote, text) {
                let reply = reply.map(|r| {
                    let mut v = REPLY_PREFIX.to_vec();
                    v.extend_from_slice(from.name.as_bytes());
                    v.push(b'.');
                    v.extend_from_slice(self.mac(&from.name, r).as_bytes());
                    v.push(b'.');
                    v.extend_from_slice(r);
                    v
                });
                out.push(Delivery {
                    subject: with(&s.to_prefix, remote.as_bytes()),
                    reply,
                    via: Via::ServiceImport(s.to.clone()),
                });
            }
        }
        out
    }

    /// `<account>.<mac>.<reply>` (after `_R_.`) → the reply in its account.
    fn decode_reply(&self, rest: &[u8]) -> Option<Delivery> {
        let dot = rest.iter().position(|&b| b == b'.')?;
        let account = std::str::from_utf8(&rest[..dot]).ok()?;
        let rest = &rest[dot + 1..];
        let dot = rest.iter().position(|&b| b == b'.')?;
        let (mac, reply) = (&rest[..dot], &rest[dot + 1..]);
        let acc = self.by_name.get(account)?;
        let want = self.mac(account, reply);
        let ok: bool = subtle::ConstantTimeEq::ct_eq(want.as_bytes(), mac).into();
        (ok && is_valid_publish(reply)).then(|| {
            let mut subject = acc.prefix.clone();
            subject.extend_from_slice(reply);
            Delivery {
                subject,
                reply: None,
                via: Via::Reply,
            }
        })
    }
}

/// Whether export pattern `export` covers import subject `import`
/// (everything the import can match, the export matches).
fn covers(export: &str, import: &str) -> bool {
    export == import
        || pattern_matches(export.as_bytes(), import.as_bytes())
        || export == ">"
        || (export.ends_with(".>") && import.starts_with(&export[..export.len() - 1]))
}

/// The exporter's subject for `subject` published on the local name
/// `local` of a service whose exporter subject is `remote` (same wildcard
/// shape); `None` when `subject` is not the service.
fn map_subject(local: &str, remote: &str, subject: &str) -> Option<String> {
    if !pattern_matches(local.as_bytes(), subject.as_bytes()) {
        return None;
    }
    if local == remote {
        return Some(subject.to_owned());
    }
    // Wildcard tokens of `local` take the subject's tokens into the same
    // positions of `remote`.
    let (lt, st): (Vec<&str>, Vec<&str>) =
        (local.split('.').collect(), subject.split('.').collect());
    let mut taken: Vec<String> = Vec::new();
    for (i, t) in lt.iter().enumerate() {
        match *t {
            "*" => taken.push(st[i].to_owned()),
            ">" => taken.push(st[i..].join(".")),
            _ => {}
        }
    }
    let mut taken = taken.into_iter();
    let mapped: Vec<String> = remote
        .split('.')
        .map(|t| match t {
            "*" | ">" => taken.next().unwrap_or_default(),
            other => other.to_owned(),
        })
        .collect();
    Some(mapped.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> Accounts {
        Accounts::new(
            &[
                AccountConfig {
                    name: "A".into(),
                    exports: vec![Export::stream("events.>"), Export::service("svc.>")],
                    imports: vec![],
                },
                AccountConfig {
                    name: "B".into(),
                    exports: vec![],
                    imports: vec![
                        Import {
                            service: false,
                            account: "A".into(),
                            subject: "events.>".into(),
                            local: Some("from_a".into()),
                        },
                        Import {
                            service: true,
                            account: "A".into(),
                            subject: "svc.>".into(),
                            local: Some("a.svc.>".into()),
                        },
                    ],
                },
            ],
            b"secret",
        )
        .unwrap()
    }

    fn subjects(d: &[Delivery]) -> Vec<String> {
        d.iter()
            .map(|d| String::from_utf8_lossy(&d.subject).into_owned())
            .collect()
    }

    #[test]
    fn each_account_has_its_own_space() {
        let accs = two();
        let a = accs.get(Some("A")).unwrap();
        let g = accs.get(None).unwrap();
        assert_eq!(subjects(&accs.deliveries(&g, b"x", None)), ["$ACC:$G.x"]);
        assert_eq!(subjects(&accs.deliveries(&a, b"x", None)), ["$ACC:A.x"]);
        let off = Accounts::disabled();
        let g = off.get(None).unwrap();
        assert_eq!(
            subjects(&off.deliveries(&g, b"x", None)),
            ["x"],
            "no accounts: no prefix"
        );
    }

    #[test]
    fn streams_are_copied_to_importers() {
        let accs = two();
        let a = accs.get(Some("A")).unwrap();
        assert_eq!(
            subjects(&accs.deliveries(&a, b"events.1", Some(b"r"))),
            ["$ACC:A.events.1", "$ACC:B.from_a.events.1"]
        );
        assert_eq!(
            subjects(&accs.deliveries(&a, b"other", None)),
            ["$ACC:A.other"]
        );
    }

    #[test]
    fn a_service_request_reaches_the_exporter_and_its_reply_comes_back() {
        let accs = two();
        let b = accs.get(Some("B")).unwrap();
        let a = accs.get(Some("A")).unwrap();
        let d = accs.deliveries(&b, b"a.svc.echo", Some(b"_INBOX.1"));
        assert_eq!(subjects(&d), ["$ACC:B.a.svc.echo", "$ACC:A.svc.echo"]);
        let reply = d[1].reply.clone().unwrap();
        assert!(reply.starts_with(b"_R_.B."));
        // The responder in A answers on that reply: it lands in B's inbox.
        let back = accs.deliveries(&a, &reply, None);
        assert_eq!(subjects(&back), ["$ACC:B._INBOX.1"]);
        // A forged MAC, or another account, goes nowhere special.
        let forged = b"_R_.B.0000000000000000._INBOX.1";
        assert_eq!(
            subjects(&accs.deliveries(&a, forged, None)),
            ["$ACC:A._R_.B.0000000000000000._INBOX.1"]
        );
    }

    #[test]
    fn imports_must_be_exported() {
        let bad = Accounts::new(
            &[
                AccountConfig {
                    name: "A".into(),
                    ..AccountConfig::default()
                },
                AccountConfig {
                    name: "B".into(),
                    exports: vec![],
                    imports: vec![Import {
                        service: false,
                        account: "A".into(),
                        subject: "x".into(),
                        local: None,
                    }],
                },
            ],
            b"",
        );
        assert!(matches!(bad, Err(AccountError::NotExported { .. })));
        let bad = Accounts::new(
            &[AccountConfig {
                name: "a.b".into(),
                ..AccountConfig::default()
            }],
            b"",
        );
        assert!(matches!(bad, Err(AccountError::BadName(_))));
    }

    #[test]
    fn service_subjects_map_wildcards_in_order() {
        assert_eq!(
            map_subject("a.svc.>", "svc.>", "a.svc.x.y").as_deref(),
            Some("svc.x.y")
        );
        assert_eq!(
            map_subject("q.*", "svc.*.go", "q.z").as_deref(),
            Some("svc.z.go")
        );
        assert_eq!(map_subject("q.*", "svc.*", "p.z"), None);
    }

    #[test]
    fn export_account_lists_restrict_who_imports() {
        let restricted = |exports: Vec<Export>, importer: &str| {
            Accounts::new(
                &[
                    AccountConfig {
                        name: "A".into(),
                        exports,
                        imports: vec![],
                    },
                    AccountConfig {
                        name: importer.into(),
                        exports: vec![],
                        imports: vec![Import {
                            service: true,
                            account: "A".into(),
                            subject: "svc.echo".into(),
                            local: None,
                        }],
                    },
                ],
                b"k",
            )
        };
        let only_b = Export {
            accounts: Some(vec!["B".into()]),
            ..Export::service("svc.>")
        };
        assert!(restricted(vec![only_b.clone()], "B").is_ok());
        let err = restricted(vec![only_b.clone()], "C").unwrap_err();
        assert!(matches!(
            err,
            AccountError::NotAuthorized {
                kind: "service",
                ..
            }
        ));
        assert!(err.to_string().starts_with("service import not authorized"));
        // Another export of the same subject open to every account admits C.
        assert!(restricted(vec![only_b, Export::service("svc.echo")], "C").is_ok());
        // A stream export does not authorize a service import.
        assert!(matches!(
            restricted(vec![Export::stream("svc.>")], "B").unwrap_err(),
            AccountError::NotExported { .. }
        ));
    }
}
