//! Authentication: who may connect.
//!
//! Users with plain or bcrypt passwords, or a single token (which may itself
//! be a bcrypt hash), as in nats-server's `authorization` block. Each user may
//! carry [`Permissions`]; [`Authenticator::authenticate`] hands the runtime the
//! compiled permissions for the connection, which it wraps in a per-connection
//! [`ClientPermissions`] (the cached checks).
//!
//! Checking a bcrypt hash costs milliseconds by design; the runtime should do
//! it once per CONNECT, off the message path.

mod permissions;

pub use permissions::{
    ClientPermissions, CompiledPermissions, PermissionError, Permissions, ResponsePermission,
    SubjectPermission,
};

use crate::proto::ConnectOptions;
use ahash::AHashMap;
use std::sync::Arc;
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
    pub password: Secret,
    /// `None`: may publish and subscribe to everything.
    pub permissions: Option<Permissions>,
}

/// The authentication part of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub users: Vec<User>,
    pub token: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthConfigError {
    #[error("can not have a token and a users array")]
    TokenAndUsers,
    #[error("duplicate user {0:?}")]
    DuplicateUser(String),
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
    /// `None`: no restrictions.
    pub permissions: Option<Arc<CompiledPermissions>>,
}

#[derive(Debug)]
struct UserEntry {
    password: Secret,
    permissions: Option<Arc<CompiledPermissions>>,
}

/// Checks CONNECT credentials against the configuration. Immutable and
/// shared by all shards.
#[derive(Debug, Default)]
pub struct Authenticator {
    users: AHashMap<String, UserEntry>,
    token: Option<Secret>,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Result<Self, AuthConfigError> {
        if config.token.is_some() && !config.users.is_empty() {
            return Err(AuthConfigError::TokenAndUsers);
        }
        let mut users = AHashMap::new();
        for u in &config.users {
            let permissions = match &u.permissions {
                None => None,
                Some(p) => Some(Arc::new(CompiledPermissions::compile(p).map_err(
                    |source| AuthConfigError::Permission {
                        user: u.name.clone(),
                        source,
                    },
                )?)),
            };
            let entry = UserEntry {
                password: u.password.clone(),
                permissions,
            };
            if users.insert(u.name.clone(), entry).is_some() {
                return Err(AuthConfigError::DuplicateUser(u.name.clone()));
            }
        }
        Ok(Authenticator {
            users,
            token: config.token.clone(),
        })
    }

    /// Whether clients must authenticate (`auth_required` in INFO).
    pub fn required(&self) -> bool {
        self.token.is_some() || !self.users.is_empty()
    }

    /// Checks the credentials of a CONNECT.
    pub fn authenticate(&self, opts: &ConnectOptions) -> Result<Session, AuthError> {
        if let Some(token) = &self.token {
            let given = opts.auth_token.as_deref().ok_or(AuthError)?;
            return if token.verify(given) {
                Ok(Session::default())
            } else {
                Err(AuthError)
            };
        }
        if self.users.is_empty() {
            return Ok(Session::default());
        }
        let name = opts.user.as_deref().ok_or(AuthError)?;
        let entry = self.users.get(name).ok_or(AuthError)?;
        if !entry.password.verify(opts.pass.as_deref().unwrap_or("")) {
            return Err(AuthError);
        }
        Ok(Session {
            user: Some(name.to_owned()),
            permissions: entry.permissions.clone(),
        })
    }
}

#[cfg(test)]
mod tests;
