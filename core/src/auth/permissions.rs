//! Per-user publish/subscribe permissions.
//!
//! Semantics follow nats-server:
//! - an allow list, when present, is exhaustive; a deny list always wins;
//! - a subscription pattern is allowed when an allow pattern covers it
//!   (`foo.>` allows `SUB foo.*`, `foo.bar` does not) and no deny pattern
//!   covers it; a wildcard subscription that merely overlaps a deny pattern is
//!   allowed, and the runtime filters denied subjects at delivery
//!   ([`CompiledPermissions::deny_delivery`]). Stricter than nats-server,
//!   whose check matches the pattern as if it were a subject, so that an
//!   allow of `foo.*` lets a client subscribe to `foo.>` and receive
//!   `foo.a.b`, which the allow list never granted;
//! - `allow_responses` lets a client publish to the reply subject of a request
//!   it received (at most `max_msgs` times within `expires`), and, as in
//!   nats-server, turns a missing publish allow list into an empty one.

use super::super::index::SubjectIndex;
use crate::subject::{is_valid_pattern, pattern_covers};
use ahash::AHashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Most cached publish decisions per connection (nats-server uses 128 too).
const PUB_CACHE_MAX: usize = 128;
/// Most outstanding response grants per connection.
const REPLY_GRANTS_MAX: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid permission subject {0:?}")]
pub struct PermissionError(pub String);

/// Allow and deny lists of subject patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectPermission {
    /// `None`: everything not denied is allowed. `Some(empty)`: nothing is.
    pub allow: Option<Vec<String>>,
    pub deny: Vec<String>,
}

/// `allow_responses`: how many responses per request, for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponsePermission {
    pub max_msgs: usize,
    /// `None`: grants never expire.
    pub expires: Option<Duration>,
}

impl Default for ResponsePermission {
    /// nats-server's `allow_responses: true`: one response, no expiry.
    fn default() -> Self {
        ResponsePermission {
            max_msgs: 1,
            expires: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish: SubjectPermission,
    pub subscribe: SubjectPermission,
    pub allow_responses: Option<ResponsePermission>,
}

#[derive(Debug)]
struct CompiledList {
    allow: Option<SubjectIndex<()>>,
    deny: Option<SubjectIndex<()>>,
    /// The patterns themselves, for the subscribe check (coverage, not
    /// matching: see `covers`).
    allow_patterns: Option<Vec<Vec<u8>>>,
    deny_patterns: Vec<Vec<u8>>,
}

fn compile_patterns(patterns: &[String]) -> Result<SubjectIndex<()>, PermissionError> {
    let mut idx = SubjectIndex::with_cache_capacity(0);
    for p in patterns {
        if !is_valid_pattern(p.as_bytes()) {
            return Err(PermissionError(p.clone()));
        }
        idx.insert(p.as_bytes(), None, ())
            .map_err(|_| PermissionError(p.clone()))?;
    }
    Ok(idx)
}

impl CompiledList {
    fn compile(p: &SubjectPermission) -> Result<Self, PermissionError> {
        Ok(CompiledList {
            allow: p.allow.as_deref().map(compile_patterns).transpose()?,
            deny: if p.deny.is_empty() {
                None
            } else {
                Some(compile_patterns(&p.deny)?)
            },
            allow_patterns: p
                .allow
                .as_ref()
                .map(|a| a.iter().map(|s| s.as_bytes().to_vec()).collect()),
            deny_patterns: p.deny.iter().map(|s| s.as_bytes().to_vec()).collect(),
        })
    }

    /// For a subscription pattern: allowed when an allow pattern covers it
    /// (everything it can receive is allowed) and no deny pattern covers it.
    /// A pattern that merely overlaps a deny pattern is allowed; the runtime
    /// filters the denied subjects at delivery.
    fn covers(&self, pattern: &[u8]) -> bool {
        self.allow_patterns
            .as_ref()
            .is_none_or(|a| a.iter().any(|c| pattern_covers(c, pattern)))
            && !self
                .deny_patterns
                .iter()
                .any(|d| pattern_covers(d, pattern))
    }

    fn allows(&self, subject: &[u8]) -> bool {
        self.allow.as_ref().is_none_or(|a| a.has_match(subject))
            && !self.deny.as_ref().is_some_and(|d| d.has_match(subject))
    }
}

/// A user's permissions, compiled once and shared by all its connections.
#[derive(Debug)]
pub struct CompiledPermissions {
    publish: CompiledList,
    subscribe: CompiledList,
    responses: Option<ResponsePermission>,
}

impl CompiledPermissions {
    pub fn compile(p: &Permissions) -> Result<Self, PermissionError> {
        let mut publish = p.publish.clone();
        if p.allow_responses.is_some() && publish.allow.is_none() {
            publish.allow = Some(Vec::new());
        }
        Ok(CompiledPermissions {
            publish: CompiledList::compile(&publish)?,
            subscribe: CompiledList::compile(&p.subscribe)?,
            responses: p.allow_responses,
        })
    }

    /// Whether the lists allow publishing to `subject` (responses aside).
    pub fn may_publish(&self, subject: &[u8]) -> bool {
        self.publish.allows(subject)
    }

    /// Whether the lists allow subscribing to `pattern`.
    pub fn may_subscribe(&self, pattern: &[u8]) -> bool {
        self.subscribe.covers(pattern)
    }

    /// Whether a message on `subject` must not be delivered to this user's
    /// wildcard subscriptions because a subscribe deny pattern matches it.
    pub fn deny_delivery(&self, subject: &[u8]) -> bool {
        self.subscribe
            .deny
            .as_ref()
            .is_some_and(|d| d.has_match(subject))
    }

    pub fn allows_responses(&self) -> Option<ResponsePermission> {
        self.responses
    }
}

#[derive(Debug, Clone, Copy)]
struct ReplyGrant {
    remaining: usize,
    expires_at: Option<Instant>,
}

/// One connection's view of its permissions: the shared compiled lists plus a
/// per-connection cache of publish decisions and the response grants earned
/// by requests it received. Owned by the connection; no locks.
#[derive(Debug)]
pub struct ClientPermissions {
    perms: Arc<CompiledPermissions>,
    pub_cache: AHashMap<Box<[u8]>, bool>,
    grants: AHashMap<Box<[u8]>, ReplyGrant>,
}

impl ClientPermissions {
    pub fn new(perms: Arc<CompiledPermissions>) -> Self {
        ClientPermissions {
            perms,
            pub_cache: AHashMap::new(),
            grants: AHashMap::new(),
        }
    }

    pub fn compiled(&self) -> &Arc<CompiledPermissions> {
        &self.perms
    }

    /// Whether this connection may publish to `subject` now. A response
    /// grant, if used, is consumed.
    pub fn may_publish(&mut self, subject: &[u8], now: Instant) -> bool {
        let allowed = match self.pub_cache.get(subject) {
            Some(&a) => a,
            None => {
                let a = self.perms.may_publish(subject);
                if self.pub_cache.len() >= PUB_CACHE_MAX {
                    self.pub_cache.clear();
                }
                self.pub_cache.insert(subject.into(), a);
                a
            }
        };
        allowed || self.use_grant(subject, now)
    }

    pub fn may_subscribe(&self, pattern: &[u8]) -> bool {
        self.perms.may_subscribe(pattern)
    }

    /// Response grants currently held (bounded; for monitoring and tests).
    pub fn outstanding_grants(&self) -> usize {
        self.grants.len()
    }

    /// Records that this connection received a request whose reply subject is
    /// `reply`, when the user has `allow_responses`.
    pub fn note_request(&mut self, reply: &[u8], now: Instant) {
        let Some(rp) = self.perms.responses else {
            return;
        };
        if self.grants.len() >= REPLY_GRANTS_MAX && !self.grants.contains_key(reply) {
            self.grants
                .retain(|_, g| g.expires_at.is_none_or(|e| e > now));
            if self.grants.len() >= REPLY_GRANTS_MAX {
                // Still full of live grants: the oldest requests are the
                // least likely to be answered; drop one to stay bounded.
                if let Some(k) = self.grants.keys().next().cloned() {
                    self.grants.remove(&k);
                }
            }
        }
        self.grants.insert(
            reply.into(),
            ReplyGrant {
                remaining: rp.max_msgs.max(1),
                expires_at: rp.expires.map(|d| now + d),
            },
        );
    }

    fn use_grant(&mut self, subject: &[u8], now: Instant) -> bool {
        let Some(g) = self.grants.get_mut(subject) else {
            return false;
        };
        if g.expires_at.is_some_and(|e| e <= now) {
            self.grants.remove(subject);
            return false;
        }
        g.remaining -= 1;
        if g.remaining == 0 {
            self.grants.remove(subject);
        }
        true
    }
}
