//! Operator mode: accounts and users come from JWTs signed along a chain
//! of trust (operator → account → user), as nats-server's `operator`,
//! `resolver: MEMORY` and `resolver_preload`.
//!
//! At start every preloaded account JWT is checked against the trusted
//! operators and becomes an account (named by its public key) with the
//! exports and imports it declares; users are never configured: a client
//! presents its user JWT and signs the server's nonce with the user's seed,
//! and [`Trust::authenticate`] checks the chain, the account's revocations,
//! the user's source networks and connect times, and derives its
//! permissions. An import the server cannot honour (an unknown exporter, no
//! matching export, a missing or invalid activation token) is left out with
//! a notice, as nats-server leaves it unwired.

use super::accounts::{AccountConfig, AccountError, Accounts, Export, Import};
use super::jwt::{
    self, AccountNats, ActivationNats, Claims, JwtError, OperatorNats, SigningKey, UserLimits,
    UserNats,
};
use super::permissions::{CompiledPermissions, PermissionError};
use super::{AuthError, ConnectContext, Session};
use crate::proto::ConnectOptions;
use ahash::AHashMap;
use std::collections::HashMap;
use std::sync::Arc;
use thiserror::Error;

/// The operator-mode part of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorConfig {
    /// Operator JWTs (`operator`, `operators`, `root`, ...).
    pub operators: Vec<String>,
    /// Trusted operator public keys (`trusted`, `trusted_keys`), instead of
    /// operator JWTs.
    pub trusted_keys: Vec<String>,
    /// `resolver`: only `MEMORY` is supported.
    pub resolver: Option<String>,
    /// `resolver_preload`: account public key → account JWT.
    pub preload: Vec<(String, String)>,
    pub system_account: Option<String>,
}

impl OperatorConfig {
    pub fn enabled(&self) -> bool {
        !self.operators.is_empty() || !self.trusted_keys.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OperatorError {
    #[error("operators require an account resolver to be configured")]
    NoResolver,
    #[error(
        "resolver {0:?} is not supported: Shoal has the MEMORY resolver (with resolver_preload)"
    )]
    Resolver(String),
    #[error("operators do not allow Accounts to be configured directly")]
    Accounts,
    #[error("operators do not allow users to be configured directly")]
    Users,
    #[error("conflicting options for 'TrustedKeys' and 'TrustedOperators'")]
    Conflict,
    #[error("system_account in config and operator JWT must be identical")]
    SystemAccount,
    #[error("trusted Keys {0:?} are required to be a valid public operator nkey")]
    TrustedKey(String),
    #[error("operator JWT: {0}")]
    Operator(JwtError),
    #[error("resolver_preload account {key:?}: {reason}")]
    Account { key: String, reason: String },
    #[error("{0}")]
    AccountSetup(#[from] AccountError),
}

/// One trusted account.
#[derive(Debug)]
struct TrustedAccount {
    expires: Option<i64>,
    /// Signing keys; a scoped key carries the limits of the users it signs.
    signing: AHashMap<String, Option<UserLimits>>,
    revocations: HashMap<String, i64>,
    defaults: Option<Arc<CompiledPermissions>>,
    disallow_bearer: bool,
}

/// The trusted operators' accounts, ready to authenticate users.
#[derive(Debug)]
pub struct Trust {
    accounts: AHashMap<String, TrustedAccount>,
}

#[derive(serde::Deserialize, Default)]
struct AccountLimits {
    #[serde(default)]
    disallow_bearer: bool,
}

#[derive(serde::Deserialize, Default)]
struct AccountNatsWithLimits {
    #[serde(flatten)]
    nats: AccountNats,
    #[serde(default)]
    limits: AccountLimits,
}

fn account_error(key: &str, reason: impl ToString) -> OperatorError {
    OperatorError::Account {
        key: key.to_owned(),
        reason: reason.to_string(),
    }
}

impl Trust {
    /// Checks the operators and the preloaded accounts; returns the trust,
    /// the accounts to build and notices for what was left out.
    pub fn new(
        cfg: &OperatorConfig,
        notices: &mut Vec<String>,
    ) -> Result<(Trust, Vec<AccountConfig>), OperatorError> {
        match cfg.resolver.as_deref() {
            None => return Err(OperatorError::NoResolver),
            Some(r) if r.eq_ignore_ascii_case("MEMORY") || r.eq_ignore_ascii_case("mem") => {}
            Some(r) => return Err(OperatorError::Resolver(r.to_owned())),
        }
        if !cfg.operators.is_empty() && !cfg.trusted_keys.is_empty() {
            return Err(OperatorError::Conflict);
        }
        let mut trusted: Vec<String> = cfg.trusted_keys.clone();
        let mut jwt_system = Vec::new();
        for op in &cfg.operators {
            let claims: Claims<OperatorNats> = jwt::decode(op).map_err(OperatorError::Operator)?;
            jwt::expect_kind(claims.kind(&claims.nats.kind), "operator")
                .map_err(OperatorError::Operator)?;
            if !claims.nats.strict_signing_key_usage {
                trusted.push(claims.sub.clone());
            }
            trusted.extend(claims.nats.signing_keys.iter().cloned());
            if !claims.nats.system_account.is_empty() {
                jwt_system.push(claims.nats.system_account.clone());
            }
        }
        for k in &trusted {
            if jwt::key_kind(k) != Some('O') {
                return Err(OperatorError::TrustedKey(k.clone()));
            }
        }
        if let Some(sys) = &cfg.system_account {
            if !jwt_system.is_empty() && !jwt_system.contains(sys) {
                return Err(OperatorError::SystemAccount);
            }
        }

        let mut accounts = AHashMap::new();
        let mut configs = Vec::new();
        let mut declared: Vec<(String, Vec<jwt::JwtExport>, Vec<jwt::JwtImport>)> = Vec::new();
        for (key, token) in &cfg.preload {
            let claims: Claims<AccountNatsWithLimits> =
                jwt::decode(token).map_err(|e| account_error(key, e))?;
            jwt::expect_kind(claims.kind(&claims.nats.nats.kind), "account")
                .map_err(|e| account_error(key, e))?;
            if &claims.sub != key {
                return Err(account_error(
                    key,
                    format!("the JWT is for account {:?}", claims.sub),
                ));
            }
            if !trusted.contains(&claims.iss) {
                return Err(account_error(key, "not signed by a trusted operator"));
            }
            let AccountNatsWithLimits { nats, limits } = claims.nats;
            let defaults = match nats.default_permissions.to_permissions() {
                None => None,
                Some(p) => Some(Arc::new(CompiledPermissions::compile(&p).map_err(
                    |PermissionError(s)| {
                        account_error(key, format!("invalid default permission subject {s:?}"))
                    },
                )?)),
            };
            if let Some(k) = nats
                .signing_keys
                .iter()
                .find(|k| jwt::key_kind(k.key()) != Some('A'))
            {
                return Err(account_error(
                    key,
                    format!("signing key {:?} is not an account key", k.key()),
                ));
            }
            let signing = nats
                .signing_keys
                .iter()
                .map(|k| match k {
                    SigningKey::Key(k) => (k.clone(), None),
                    SigningKey::Scoped { key, template } => {
                        (key.clone(), Some(UserLimits::clone(template)))
                    }
                })
                .collect();
            accounts.insert(
                key.clone(),
                TrustedAccount {
                    expires: claims.exp.filter(|&e| e != 0),
                    signing,
                    revocations: nats.revocations.clone(),
                    defaults,
                    disallow_bearer: limits.disallow_bearer,
                },
            );
            declared.push((key.clone(), nats.exports, nats.imports));
        }
        let trust = Trust { accounts };

        // Exports first: a token-requiring export is open to the accounts
        // whose import carries a valid activation token.
        let mut activated: Vec<(String, String, String)> = Vec::new(); // (exporter, subject, importer)
        for (importer, _, imports) in &declared {
            for imp in imports {
                if imp.token.is_empty() {
                    continue;
                }
                match trust.activation(&imp.token, &imp.account, importer) {
                    Ok(subject) => activated.push((imp.account.clone(), subject, importer.clone())),
                    Err(why) => notices.push(format!(
                        "account {importer}: import {:?} from {}: activation token {why}: left out",
                        imp.subject, imp.account
                    )),
                }
            }
        }
        for (name, exports, imports) in &declared {
            let mut c = AccountConfig {
                name: name.clone(),
                ..AccountConfig::default()
            };
            for x in exports {
                let mut e = if x.kind.is_service() {
                    Export::service(&x.subject)
                } else {
                    Export::stream(&x.subject)
                };
                if x.token_req {
                    e.accounts = Some(
                        activated
                            .iter()
                            .filter(|(exp, subj, _)| exp == name && subj == &x.subject)
                            .map(|(_, _, imp)| imp.clone())
                            .collect(),
                    );
                }
                c.exports.push(e);
            }
            for i in imports {
                let service = i.kind.is_service();
                let local = if service {
                    [&i.local_subject, &i.to]
                        .into_iter()
                        .find(|s| !s.is_empty())
                        .cloned()
                } else {
                    if !i.local_subject.is_empty() && i.local_subject != i.subject {
                        notices.push(format!(
                            "account {name}: stream import {:?} from {} renames it to {:?}, which Shoal does not support (use `to` as a prefix): left out",
                            i.subject, i.account, i.local_subject
                        ));
                        continue;
                    }
                    (!i.to.is_empty()).then(|| i.to.clone())
                };
                c.imports.push(Import {
                    service,
                    account: i.account.clone(),
                    subject: i.subject.clone(),
                    local,
                });
            }
            configs.push(c);
        }
        // An import the accounts cannot honour is left out (nats-server
        // leaves it unwired), one at a time, with the reason.
        loop {
            match Accounts::new(&configs, b"check") {
                Ok(_) => break,
                Err(e) => {
                    let (account, from, subject) = match &e {
                        AccountError::UnknownAccount { account, from } => {
                            (account.clone(), from.clone(), None)
                        }
                        AccountError::NotExported {
                            account,
                            from,
                            subject,
                        }
                        | AccountError::NotAuthorized {
                            account,
                            from,
                            subject,
                            ..
                        } => (account.clone(), from.clone(), Some(subject.clone())),
                        _ => return Err(e.into()),
                    };
                    let Some(c) = configs.iter_mut().find(|c| c.name == account) else {
                        return Err(e.into());
                    };
                    let before = c.imports.len();
                    c.imports.retain(|i| {
                        !(i.account == from && subject.as_ref().is_none_or(|s| &i.subject == s))
                    });
                    if c.imports.len() == before {
                        return Err(e.into());
                    }
                    notices.push(format!("{e}: import left out"));
                }
            }
        }
        Ok((trust, configs))
    }

    /// Checks an activation token for `importer`'s import from `exporter`;
    /// the subject it activates.
    fn activation(&self, token: &str, exporter: &str, importer: &str) -> Result<String, String> {
        let claims: Claims<ActivationNats> = jwt::decode(token).map_err(|e| e.to_string())?;
        jwt::expect_kind(claims.kind(&claims.nats.kind), "activation")
            .map_err(|e| e.to_string())?;
        // Checked when the configuration is loaded (and again at reload).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if !claims.valid_at(now) {
            return Err("has expired or is not valid yet".into());
        }
        let Some(acc) = self.accounts.get(exporter) else {
            return Err("names an unknown exporter".into());
        };
        let issuer_ok = claims.iss == exporter
            || (acc.signing.contains_key(&claims.iss)
                && (claims.nats.issuer_account.is_empty()
                    || claims.nats.issuer_account == exporter));
        if !issuer_ok {
            return Err("is not signed by the exporter".into());
        }
        if claims.sub != importer {
            return Err("is for another account".into());
        }
        Ok(claims.nats.subject)
    }

    /// Authenticates a CONNECT carrying a user JWT (and, unless the JWT is
    /// a bearer token, the user's signature of the nonce).
    pub fn authenticate(
        &self,
        opts: &ConnectOptions,
        ctx: &ConnectContext,
    ) -> Result<Session, AuthError> {
        let token = opts.jwt.as_deref().ok_or(AuthError)?;
        let claims: Claims<UserNats> = jwt::decode(token).map_err(|_| AuthError)?;
        if claims.kind(&claims.nats.kind) != "user"
            || !claims.valid_at(ctx.now)
            || jwt::key_kind(&claims.sub) != Some('U')
        {
            return Err(AuthError);
        }
        let account_key = if claims.nats.issuer_account.is_empty() {
            claims.iss.as_str()
        } else {
            claims.nats.issuer_account.as_str()
        };
        let account = self.accounts.get(account_key).ok_or(AuthError)?;
        if account.expires.is_some_and(|e| ctx.now >= e) {
            return Err(AuthError);
        }
        let limits: &UserLimits = if claims.iss == account_key {
            &claims.nats.limits
        } else {
            match account.signing.get(&claims.iss) {
                None => return Err(AuthError),
                Some(None) => &claims.nats.limits,
                // A scoped key's users get its template; a user of a
                // scoped key that sets anything itself is refused (as
                // nats-server: "scoped users require no permissions or
                // limits set").
                Some(Some(template)) => {
                    if claims.nats.limits != UserLimits::default() {
                        return Err(AuthError);
                    }
                    template
                }
            }
        };
        // Limits Shoal does not enforce per user refuse the user rather
        // than let it in unlimited.
        if limits.has_counted_limits() {
            return Err(AuthError);
        }
        let bearer = limits.bearer_token;
        if bearer && account.disallow_bearer {
            return Err(AuthError);
        }
        if !limits.allowed_connection_types.is_empty()
            && !limits
                .allowed_connection_types
                .iter()
                .any(|t| t.eq_ignore_ascii_case("STANDARD"))
        {
            return Err(AuthError);
        }
        if !bearer {
            let (Some(nonce), Some(sig)) = (ctx.nonce.as_deref(), opts.sig.as_deref()) else {
                return Err(AuthError);
            };
            if !jwt::verify_nonce(&claims.sub, nonce, sig) {
                return Err(AuthError);
            }
        }
        // Revoked by name or all at once (`*`): either entry counts.
        let revoked = [claims.sub.as_str(), "*"]
            .iter()
            .filter_map(|k| account.revocations.get(*k))
            .any(|&t| claims.iat <= t);
        if revoked {
            return Err(AuthError);
        }
        let src = limits.src.entries();
        if !src.is_empty() && !ctx.ip.is_some_and(|ip| jwt::ip_allowed(&src, ip)) {
            return Err(AuthError);
        }
        if !limits.times.is_empty() {
            // Windows in a named time zone would need a zone database: a
            // user restricted that way is refused rather than let in.
            if !matches!(limits.times_location.as_str(), "" | "UTC" | "Etc/UTC") {
                return Err(AuthError);
            }
            if jwt::within_times(&limits.times, ctx.now) != Some(true) {
                return Err(AuthError);
            }
        }
        let permissions = match limits.permissions.to_permissions() {
            Some(p) => Some(Arc::new(
                CompiledPermissions::compile(&p).map_err(|_| AuthError)?,
            )),
            None => account.defaults.clone(),
        };
        Ok(Session {
            user: Some(claims.sub.clone()),
            account: Some(account_key.to_owned()),
            permissions,
            // The user's or its account's, whichever comes first.
            expires: match (claims.expires(), account.expires) {
                (Some(u), Some(a)) => Some(u.min(a)),
                (u, a) => u.or(a),
            },
        })
    }
}
