//! Authentication: who may connect.
//!
//! Users with plain or bcrypt passwords, or a single token (which may itself
//! be a bcrypt hash), as in nats-server's `authorization` block. Each user may
//! carry [`Permissions`]; [`Authenticator::authenticate`] hands the runtime the
//! compiled permissions for the connection, which it wraps in a per-connection
//! [`ClientPermissions`] (the cached checks).
//!
//! Checking a bcrypt hash costs 50-200 ms by design. [`Authenticator::check_fast`]
//! answers every CONNECT it can without bcrypt (plain secrets, tokens, unknown
//! users, and bcrypt successes already seen, remembered as a SHA-256 digest);
//! the rest go to [`Authenticator::authenticate`], which the runtime runs on a
//! thread of its own, never on a shard. The remembered successes survive a
//! reload for every user whose secret did not change
//! ([`Authenticator::keep_verified_from`]), so a reload does not re-run bcrypt
//! for every connected client.
//!
//! Public-key authentication, as nats-server: nkey users (`users: [{nkey:
//! U...}]`) and operator mode ([`operator`]: users presenting JWTs). Both
//! send the client a nonce in INFO, which it signs with its seed; checking
//! a signature costs tens of microseconds, so those CONNECTs also go to the
//! auth pool rather than a shard.

mod accounts;
pub mod jwt;
pub mod operator;
mod permissions;

pub use accounts::{
    Account, AccountConfig, AccountError, Accounts, Delivery, Export, Import, Via, GLOBAL_ACCOUNT,
};

pub use permissions::{
    ClientPermissions, CompiledPermissions, PermissionError, Permissions, ResponsePermission,
    SubjectPermission,
};

use crate::proto::ConnectOptions;
use ahash::AHashMap;
pub use operator::{OperatorConfig, OperatorError};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// The `-ERR` text for a failed authentication (the connection is closed).
pub const AUTHORIZATION_VIOLATION: &str = "Authorization Violation";

/// A configured secret: plain text, or a bcrypt hash (recognised, as in
/// nats-server, by its `$2` prefix).
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Plain(String),
    Bcrypt(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets, not even in debug logs.
        match self {
            Secret::Plain(_) => f.write_str("Secret::Plain(..)"),
            Secret::Bcrypt(_) => f.write_str("Secret::Bcrypt(..)"),
        }
    }
}

impl Secret {
    /// The configured text (plain or hash), for keying derived secrets.
    fn material(&self) -> &[u8] {
        match self {
            Secret::Plain(s) | Secret::Bcrypt(s) => s.as_bytes(),
        }
    }

    pub fn new(configured: &str) -> Self {
        if configured.starts_with("$2") {
            Secret::Bcrypt(configured.to_owned())
        } else {
            Secret::Plain(configured.to_owned())
        }
    }

    /// Whether `given` is this secret. Plain secrets are compared in constant
    /// time so the comparison leaks nothing through timing.
    pub fn verify(&self, given: &str) -> bool {
        match self {
            Secret::Plain(p) => bool::from(p.as_bytes().ct_eq(given.as_bytes())),
            Secret::Bcrypt(h) => bcrypt::verify(given, h).unwrap_or(false),
        }
    }
}

/// One configured user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// The account the user belongs to (`None`: the default, `$G`).
    pub account: Option<String>,
    pub password: Secret,
    /// `None`: may publish and subscribe to everything.
    pub permissions: Option<Permissions>,
}

/// Secret bytes for the reply MAC key; `Debug` shows only whether any.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ReplySecret(pub Vec<u8>);

impl std::fmt::Debug for ReplySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "ReplySecret(none)"
        } else {
            "ReplySecret(..)"
        })
    }
}

/// One configured nkey user (`users: [{nkey: U...}]`): authenticates by
/// signing the server's nonce with the key's seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NkeyUser {
    /// The public user nkey (`U...`).
    pub key: String,
    pub account: Option<String>,
    pub permissions: Option<Permissions>,
}

/// The authentication part of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub users: Vec<User>,
    pub nkeys: Vec<NkeyUser>,
    /// Operator mode (users come from JWTs; no `users`, `nkeys` or
    /// `accounts` then).
    pub operator: OperatorConfig,
    /// Extra secret material for the service-reply MAC key, set by the
    /// server (the cluster's route credentials, or a per-process random
    /// key): with JWTs or nkeys only, everything in the configuration is
    /// public. Never printed.
    pub reply_secret: ReplySecret,
    pub token: Option<Secret>,
    /// A client that gives no user name is this user (nats-server's
    /// `no_auth_user`), with its permissions and without its password.
    pub no_auth_user: Option<String>,
    /// The `accounts` block (empty: one subject space).
    pub accounts: Vec<AccountConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthConfigError {
    #[error("can not have a token and a users array")]
    TokenAndUsers,
    #[error("duplicate user {0:?}")]
    DuplicateUser(String),
    #[error("no_auth_user {0:?} not present as user in authorization block")]
    UnknownNoAuthUser(String),
    #[error("unknown account {0:?}")]
    UnknownAccount(String),
    #[error("{0}")]
    Account(#[from] AccountError),
    #[error("{0:?} is not a valid public user nkey")]
    BadNkey(String),
    #[error("{0}")]
    Operator(#[from] OperatorError),
    #[error("user {user:?}: {source}")]
    Permission {
        user: String,
        source: PermissionError,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("authorization violation")]
pub struct AuthError;

impl AuthError {
    pub fn err_text(&self) -> &'static str {
        AUTHORIZATION_VIOLATION
    }
}

/// What a successful CONNECT is allowed to do.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// The authenticated user name, if users are configured.
    pub user: Option<String>,
    /// The user's account (`None`: the default account).
    pub account: Option<String>,
    /// `None`: no restrictions.
    pub permissions: Option<Arc<CompiledPermissions>>,
    /// When the credentials expire (a user JWT's `exp`, Unix seconds): the
    /// connection is closed then, as nats-server does.
    pub expires: Option<i64>,
}

/// What the server knows about a connection that the CONNECT does not say.
#[derive(Debug, Clone, Default)]
pub struct ConnectContext {
    /// The nonce sent in INFO (when nkeys or operator mode are configured).
    pub nonce: Option<String>,
    pub ip: Option<IpAddr>,
    /// Unix seconds (JWT validity, revocations, connect times).
    pub now: i64,
}

impl ConnectContext {
    /// The context at this moment.
    pub fn now(nonce: Option<String>, ip: Option<IpAddr>) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        ConnectContext { nonce, ip, now }
    }
}

#[derive(Debug)]
struct UserEntry {
    account: Option<String>,
    password: Checked,
    permissions: Option<Arc<CompiledPermissions>>,
}

#[derive(Debug)]
struct NkeyEntry {
    account: Option<String>,
    permissions: Option<Arc<CompiledPermissions>>,
}

/// Most bcrypt successes remembered per secret (a user's few clients and
/// their password rotations); the oldest is forgotten first.
const VERIFIED_MAX: usize = 16;

/// A configured secret and the bcrypt successes already paid for.
///
/// A success is remembered as SHA-256(hash ‖ 0 ‖ password), never the
/// password: a memory dump yields nothing a brute force of the bcrypt hash
/// would not. Failures are not remembered (they stay expensive to guess,
/// and off the shards).
struct Checked {
    secret: Secret,
    verified: Mutex<Vec<[u8; 32]>>,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.secret.fmt(f)
    }
}

impl Checked {
    fn new(secret: Secret) -> Self {
        Checked {
            secret,
            verified: Mutex::new(Vec::new()),
        }
    }

    fn digest(hash: &str, given: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(hash.as_bytes());
        h.update([0u8]);
        h.update(given.as_bytes());
        h.finalize().into()
    }

    /// The answer when it costs no bcrypt; `None` when bcrypt must run.
    fn verify_fast(&self, given: &str) -> Option<bool> {
        match &self.secret {
            Secret::Plain(_) => Some(self.secret.verify(given)),
            Secret::Bcrypt(hash) => {
                let d = Self::digest(hash, given);
                let known = self.verified.lock().ok()?;
                known
                    .iter()
                    .any(|k| bool::from(k.ct_eq(&d)))
                    .then_some(true)
            }
        }
    }

    /// The full check (bcrypt when needed); a bcrypt success is remembered.
    fn verify(&self, given: &str) -> bool {
        if let Some(answer) = self.verify_fast(given) {
            return answer;
        }
        let ok = self.secret.verify(given);
        if let (true, Secret::Bcrypt(hash)) = (ok, &self.secret) {
            let d = Self::digest(hash, given);
            if let Ok(mut known) = self.verified.lock() {
                if known.len() >= VERIFIED_MAX {
                    known.remove(0);
                }
                known.push(d);
            }
        }
        ok
    }

    /// Takes over `old`'s remembered successes when the secret is the same.
    fn keep_verified_from(&self, old: &Checked) {
        if self.secret != old.secret {
            return;
        }
        if let (Ok(mut mine), Ok(theirs)) = (self.verified.lock(), old.verified.lock()) {
            mine.clone_from(&theirs);
        }
    }
}

/// The answer of [`Authenticator::check_fast`].
#[derive(Debug)]
pub enum FastCheck {
    Done(Result<Session, AuthError>),
    /// Only bcrypt or a signature check can tell: call
    /// [`Authenticator::authenticate`] off the message path.
    NeedsSlowCheck,
}

/// Checks CONNECT credentials against the configuration. Immutable and
/// shared by all shards.
#[derive(Debug, Default)]
pub struct Authenticator {
    users: AHashMap<String, UserEntry>,
    /// nkey users by public key.
    nkeys: AHashMap<String, NkeyEntry>,
    trust: Option<operator::Trust>,
    /// What was left out of the configuration, for the start log.
    notices: Vec<String>,
    token: Option<Checked>,
    no_auth_user: Option<String>,
    accounts: Arc<Accounts>,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Result<Self, AuthConfigError> {
        if config.token.is_some() && !config.users.is_empty() {
            return Err(AuthConfigError::TokenAndUsers);
        }
        let mut users = AHashMap::new();
        for u in &config.users {
            let permissions = user_rules(config, &u.name, &u.permissions, &u.account)?;
            let entry = UserEntry {
                account: u.account.clone(),
                password: Checked::new(u.password.clone()),
                permissions,
            };
            if users.insert(u.name.clone(), entry).is_some() {
                return Err(AuthConfigError::DuplicateUser(u.name.clone()));
            }
        }
        let mut nkeys = AHashMap::new();
        for n in &config.nkeys {
            if jwt::key_kind(&n.key) != Some('U') {
                return Err(AuthConfigError::BadNkey(n.key.clone()));
            }
            let permissions = user_rules(config, &n.key, &n.permissions, &n.account)?;
            let entry = NkeyEntry {
                account: n.account.clone(),
                permissions,
            };
            if nkeys.insert(n.key.clone(), entry).is_some() {
                return Err(AuthConfigError::DuplicateUser(n.key.clone()));
            }
        }
        if let Some(name) = &config.no_auth_user {
            if !users.contains_key(name) && !nkeys.contains_key(name) {
                return Err(AuthConfigError::UnknownNoAuthUser(name.clone()));
            }
        }
        // The service reply MAC is keyed by what every node's configuration
        // holds and no client knows: the users' secrets.
        let mut secret = Vec::new();
        for u in &config.users {
            secret.extend_from_slice(u.name.as_bytes());
            secret.push(0);
            secret.extend_from_slice(u.password.material());
            secret.push(0);
        }
        if let Some(t) = &config.token {
            secret.extend_from_slice(t.material());
        }
        for n in &config.nkeys {
            secret.extend_from_slice(n.key.as_bytes());
            secret.push(0);
        }
        secret.extend_from_slice(&config.reply_secret.0);
        let mut notices = Vec::new();
        let (trust, accounts) = if config.operator.enabled() {
            if !config.accounts.is_empty() {
                return Err(OperatorError::Accounts.into());
            }
            if !config.users.is_empty() || !config.nkeys.is_empty() || config.token.is_some() {
                return Err(OperatorError::Users.into());
            }
            let (trust, configs) = operator::Trust::new(&config.operator, &mut notices)?;
            for (_, jwt) in &config.operator.preload {
                secret.extend_from_slice(jwt.as_bytes());
            }
            (Some(trust), Accounts::new(&configs, &secret)?)
        } else {
            if config.operator.resolver.is_some() || !config.operator.preload.is_empty() {
                notices.push(
                    "resolver and resolver_preload are ignored without an operator".to_owned(),
                );
            }
            (None, Accounts::new(&config.accounts, &secret)?)
        };
        let accounts = Arc::new(accounts);
        Ok(Authenticator {
            users,
            nkeys,
            trust,
            notices,
            token: config.token.clone().map(Checked::new),
            no_auth_user: config.no_auth_user.clone(),
            accounts,
        })
    }

    /// What the configuration held that the server leaves out (logged at
    /// start).
    pub fn notices(&self) -> &[String] {
        &self.notices
    }

    /// Whether INFO carries a nonce for the client to sign (nkey users or
    /// operator mode).
    pub fn nonce_required(&self) -> bool {
        self.trust.is_some() || !self.nkeys.is_empty()
    }

    /// The accounts (one default account when none are configured).
    pub fn accounts(&self) -> &Arc<Accounts> {
        &self.accounts
    }

    /// After a reload: the bcrypt successes `old` remembered, for every user
    /// (and the token) whose secret is unchanged.
    pub fn keep_verified_from(&self, old: &Authenticator) {
        if let (Some(new), Some(old)) = (&self.token, &old.token) {
            new.keep_verified_from(old);
        }
        for (name, entry) in &self.users {
            if let Some(o) = old.users.get(name) {
                entry.password.keep_verified_from(&o.password);
            }
        }
    }

    /// Checks the credentials of a CONNECT without running bcrypt, when
    /// that is possible.
    pub fn check_fast(&self, opts: &ConnectOptions, ctx: &ConnectContext) -> FastCheck {
        if self.needs_signature(opts) {
            return FastCheck::NeedsSlowCheck;
        }
        self.check(opts, ctx, |secret, given| secret.verify_fast(given))
            .map_or(FastCheck::NeedsSlowCheck, FastCheck::Done)
    }

    /// Whether deciding this CONNECT means checking a signature.
    fn needs_signature(&self, opts: &ConnectOptions) -> bool {
        self.trust.is_some() || (opts.nkey.is_some() && !self.nkeys.is_empty())
    }

    /// Whether clients must authenticate (`auth_required` in INFO).
    pub fn required(&self) -> bool {
        self.token.is_some()
            || !self.users.is_empty()
            || !self.nkeys.is_empty()
            || self.trust.is_some()
    }

    /// Checks the credentials of a CONNECT; may run bcrypt (50-200 ms):
    /// call it off the message path unless [`Authenticator::check_fast`]
    /// said it is not needed.
    pub fn authenticate(
        &self,
        opts: &ConnectOptions,
        ctx: &ConnectContext,
    ) -> Result<Session, AuthError> {
        self.check(opts, ctx, |secret, given| Some(secret.verify(given)))
            .unwrap_or(Err(AuthError))
    }

    /// The rules, with `verify` deciding a secret (`None`: cannot tell
    /// cheaply, which the whole check then returns).
    fn check(
        &self,
        opts: &ConnectOptions,
        ctx: &ConnectContext,
        verify: impl Fn(&Checked, &str) -> Option<bool>,
    ) -> Option<Result<Session, AuthError>> {
        if let Some(trust) = &self.trust {
            return Some(trust.authenticate(opts, ctx));
        }
        if let (Some(key), false) = (&opts.nkey, self.nkeys.is_empty()) {
            return Some(self.check_nkey(key, opts, ctx));
        }
        if let Some(token) = &self.token {
            let Some(given) = opts.auth_token.as_deref() else {
                return Some(Err(AuthError));
            };
            return Some(if verify(token, given)? {
                Ok(Session::default())
            } else {
                Err(AuthError)
            });
        }
        if self.users.is_empty() && self.nkeys.is_empty() {
            return Some(Ok(Session::default()));
        }
        let Some(name) = opts.user.as_deref() else {
            // No credentials at all: the `no_auth_user`, when configured.
            return Some(match (&self.no_auth_user, &opts.auth_token) {
                (Some(name), None) => match (self.users.get(name), self.nkeys.get(name)) {
                    (Some(entry), _) => Ok(Session {
                        user: Some(name.clone()),
                        account: entry.account.clone(),
                        permissions: entry.permissions.clone(),
                        expires: None,
                    }),
                    (None, Some(entry)) => Ok(Session {
                        user: Some(name.clone()),
                        account: entry.account.clone(),
                        permissions: entry.permissions.clone(),
                        expires: None,
                    }),
                    (None, None) => Err(AuthError),
                },
                _ => Err(AuthError),
            });
        };
        let Some(entry) = self.users.get(name) else {
            return Some(Err(AuthError));
        };
        if !verify(&entry.password, opts.pass.as_deref().unwrap_or(""))? {
            return Some(Err(AuthError));
        }
        Some(Ok(Session {
            user: Some(name.to_owned()),
            account: entry.account.clone(),
            permissions: entry.permissions.clone(),
            expires: None,
        }))
    }

    /// An nkey user: known key, and its signature of the nonce.
    fn check_nkey(
        &self,
        key: &str,
        opts: &ConnectOptions,
        ctx: &ConnectContext,
    ) -> Result<Session, AuthError> {
        let entry = self.nkeys.get(key).ok_or(AuthError)?;
        let (Some(nonce), Some(sig)) = (ctx.nonce.as_deref(), opts.sig.as_deref()) else {
            return Err(AuthError);
        };
        if !jwt::verify_nonce(key, nonce, sig) {
            return Err(AuthError);
        }
        Ok(Session {
            user: Some(key.to_owned()),
            account: entry.account.clone(),
            permissions: entry.permissions.clone(),
            expires: None,
        })
    }
}

/// A configured user's (or nkey's) permissions compiled, and its account
/// checked to exist.
fn user_rules(
    config: &AuthConfig,
    name: &str,
    permissions: &Option<Permissions>,
    account: &Option<String>,
) -> Result<Option<Arc<CompiledPermissions>>, AuthConfigError> {
    let compiled = permissions
        .as_ref()
        .map(|p| {
            CompiledPermissions::compile(p)
                .map(Arc::new)
                .map_err(|source| AuthConfigError::Permission {
                    user: name.to_owned(),
                    source,
                })
        })
        .transpose()?;
    if let Some(a) = account {
        if !config.accounts.iter().any(|c| &c.name == a) && a != GLOBAL_ACCOUNT {
            return Err(AuthConfigError::UnknownAccount(a.clone()));
        }
    }
    Ok(compiled)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_jwt;
