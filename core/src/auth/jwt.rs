//! NATS JWTs (nats-server's operator mode): decoding, signature checks and
//! the claims Shoal acts on.
//!
//! A JWT is `header.payload.signature`, each part base64url without
//! padding; the header names `ed25519-nkey` (JWT v2), the payload is JSON
//! whose `iss` is the public nkey that signed it, and the signature is
//! ed25519 over the ASCII of `header.payload`. The chain of trust is
//! operator → account → user: an account JWT is signed by a trusted
//! operator (or one of its signing keys), a user JWT by its account (or one
//! of the account's signing keys, then naming the account in
//! `issuer_account`). Version 1 JWTs (header `ed25519`, written by nsc
//! until 2020) are read too, as nats-server 2.9 reads them: the signature
//! covers the payload alone, the claim type is at the top level rather than
//! in `nats`.
//!
//! Everything here is pure: time comes in as a parameter.

use super::permissions::{Permissions, ResponsePermission, SubjectPermission};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JwtError {
    #[error("not a JWT (expected header.payload.signature)")]
    Shape,
    #[error("JWT part is not base64url")]
    Encoding,
    #[error("JWT header or claims are not valid JSON: {0}")]
    Json(String),
    #[error("JWT algorithm {0:?} is not supported (expected `ed25519-nkey` or `ed25519`)")]
    Algorithm(String),
    #[error("JWT issuer {0:?} is not a public nkey")]
    Issuer(String),
    #[error("JWT signature does not verify")]
    Signature,
    #[error("JWT is a {found} JWT, expected {expected}")]
    Kind {
        expected: &'static str,
        found: String,
    },
}

/// The registered claims every NATS JWT has, with its `nats` section.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims<N> {
    #[serde(default)]
    pub jti: String,
    /// Issued at (Unix seconds).
    #[serde(default)]
    pub iat: i64,
    pub iss: String,
    pub sub: String,
    #[serde(default)]
    pub name: String,
    /// Expires at (Unix seconds); absent or 0: never.
    #[serde(default)]
    pub exp: Option<i64>,
    /// Not valid before (Unix seconds).
    #[serde(default)]
    pub nbf: Option<i64>,
    #[serde(default)]
    pub nats: N,
    /// A v1 JWT's claim type (v2 has it in `nats.type`).
    #[serde(default, rename = "type")]
    pub v1_type: String,
}

impl<N> Claims<N> {
    /// Whether the claims are valid at `now` (Unix seconds).
    pub fn valid_at(&self, now: i64) -> bool {
        self.exp.is_none_or(|e| e == 0 || now < e) && self.nbf.is_none_or(|n| now >= n)
    }

    /// The claim type: `nats.type` (v2, given as `nats_type`), else the v1
    /// top-level `type`.
    pub fn kind<'a>(&'a self, nats_type: &'a str) -> &'a str {
        if nats_type.is_empty() {
            &self.v1_type
        } else {
            nats_type
        }
    }

    /// When the claims expire (Unix seconds), if ever.
    pub fn expires(&self) -> Option<i64> {
        self.exp.filter(|&e| e != 0)
    }
}

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    alg: String,
}

/// Decodes a JWT and checks that its issuer (`iss`) signed it. Which
/// issuers to trust is the caller's decision.
pub fn decode<N: DeserializeOwned + Default>(jwt: &str) -> Result<Claims<N>, JwtError> {
    let jwt = jwt.trim();
    let mut parts = jwt.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Shape);
    };
    let b64 = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| JwtError::Encoding);
    let header: Header =
        serde_json::from_slice(&b64(h)?).map_err(|e| JwtError::Json(e.to_string()))?;
    if header.alg != "ed25519-nkey" && header.alg != "ed25519" {
        return Err(JwtError::Algorithm(header.alg));
    }
    let claims: Claims<N> =
        serde_json::from_slice(&b64(p)?).map_err(|e| JwtError::Json(e.to_string()))?;
    let signature = b64(s)?;
    // v2 signs `header.payload`; v1 signed the payload alone (which is
    // why v2 named its algorithm anew).
    let signed = if header.alg == "ed25519" {
        p
    } else {
        &jwt[..h.len() + 1 + p.len()]
    };
    let issuer = nkeys::KeyPair::from_public_key(&claims.iss)
        .map_err(|_| JwtError::Issuer(claims.iss.clone()))?;
    issuer
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| JwtError::Signature)?;
    Ok(claims)
}

/// Whether `sig` (base64url, or standard base64 as nats-server also takes)
/// is `key`'s signature of `nonce`: how a client proves it holds the seed
/// of an nkey (its own, or its user JWT's subject).
pub fn verify_nonce(key: &str, nonce: &str, sig: &str) -> bool {
    let Ok(sig) = URL_SAFE_NO_PAD
        .decode(sig)
        .or_else(|_| STANDARD.decode(sig))
    else {
        return false;
    };
    nkeys::KeyPair::from_public_key(key)
        .and_then(|k| k.verify(nonce.as_bytes(), &sig))
        .is_ok()
}

/// The kind of a public nkey, by its first letter (nkeys' prefixes).
pub fn key_kind(key: &str) -> Option<char> {
    nkeys::KeyPair::from_public_key(key)
        .ok()
        .and_then(|_| key.chars().next())
}

/// `{allow: [...], deny: [...]}`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct JwtSubjects {
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    #[serde(default)]
    pub deny: Option<Vec<String>>,
}

impl JwtSubjects {
    fn is_empty(&self) -> bool {
        self.allow.as_ref().is_none_or(Vec::is_empty)
            && self.deny.as_ref().is_none_or(Vec::is_empty)
    }

    fn to_permission(&self) -> SubjectPermission {
        SubjectPermission {
            // An empty allow list restricts nothing in a JWT (nats-server).
            allow: self.allow.clone().filter(|a| !a.is_empty()),
            deny: self.deny.clone().unwrap_or_default(),
        }
    }
}

/// `resp`: responses allowed to requests received.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct JwtResponses {
    #[serde(default)]
    pub max: i64,
    /// Nanoseconds (Go's `time.Duration`).
    #[serde(default)]
    pub ttl: i64,
}

/// Publish, subscribe and response permissions as a JWT carries them.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct JwtPermissions {
    #[serde(default, rename = "pub")]
    pub publish: JwtSubjects,
    #[serde(default, rename = "sub")]
    pub subscribe: JwtSubjects,
    #[serde(default)]
    pub resp: Option<JwtResponses>,
}

impl JwtPermissions {
    pub fn is_empty(&self) -> bool {
        self.publish.is_empty() && self.subscribe.is_empty() && self.resp.is_none()
    }

    /// `None` when the JWT restricts nothing.
    pub fn to_permissions(&self) -> Option<Permissions> {
        if self.is_empty() {
            return None;
        }
        Some(Permissions {
            publish: self.publish.to_permission(),
            subscribe: self.subscribe.to_permission(),
            allow_responses: self.resp.as_ref().map(|r| ResponsePermission {
                max_msgs: match r.max {
                    0 => 1,
                    n if n < 0 => usize::MAX,
                    n => n as usize,
                },
                expires: (r.ttl > 0).then(|| Duration::from_nanos(r.ttl as u64)),
            }),
        })
    }
}

/// `src`: a list of CIDRs, or (older JWTs) one comma-separated string.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum CidrList {
    List(Vec<String>),
    Joined(String),
}

impl Default for CidrList {
    fn default() -> Self {
        CidrList::List(Vec::new())
    }
}

impl CidrList {
    pub fn entries(&self) -> Vec<&str> {
        match self {
            CidrList::List(l) => l
                .iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .collect(),
            CidrList::Joined(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }
}

/// A window of the day a user may connect in (`times`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct TimeRange {
    pub start: String,
    pub end: String,
}

fn unlimited() -> i64 {
    -1
}

/// What restricts a user (its own JWT, or a scoped signing key's template).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct UserLimits {
    #[serde(flatten)]
    pub permissions: JwtPermissions,
    #[serde(default)]
    pub src: CidrList,
    #[serde(default)]
    pub times: Vec<TimeRange>,
    #[serde(default)]
    pub times_location: String,
    #[serde(default)]
    pub bearer_token: bool,
    #[serde(default)]
    pub allowed_connection_types: Vec<String>,
    /// Most subscriptions, bytes in flight and payload size (-1: no
    /// limit).
    #[serde(default = "unlimited")]
    pub subs: i64,
    #[serde(default = "unlimited")]
    pub data: i64,
    #[serde(default = "unlimited")]
    pub payload: i64,
}

impl Default for UserLimits {
    fn default() -> Self {
        UserLimits {
            permissions: JwtPermissions::default(),
            src: CidrList::default(),
            times: Vec::new(),
            times_location: String::new(),
            bearer_token: false,
            allowed_connection_types: Vec::new(),
            subs: -1,
            data: -1,
            payload: -1,
        }
    }
}

impl UserLimits {
    /// Whether it sets a subscription, data or payload limit (which Shoal
    /// does not enforce per user: such a user is refused, not let in
    /// unlimited).
    pub fn has_counted_limits(&self) -> bool {
        self.subs >= 0 || self.data >= 0 || self.payload >= 0
    }
}

/// A user JWT's `nats` section.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserNats {
    #[serde(flatten)]
    pub limits: UserLimits,
    /// The account, when a signing key of it issued the JWT.
    #[serde(default)]
    pub issuer_account: String,
    #[serde(default, rename = "type")]
    pub kind: String,
}

/// An account's signing key: a plain key, or a scoped one whose template
/// replaces the permissions of the users it signs.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SigningKey {
    Key(String),
    Scoped {
        key: String,
        #[serde(default)]
        template: Box<UserLimits>,
    },
}

impl SigningKey {
    pub fn key(&self) -> &str {
        match self {
            SigningKey::Key(k) | SigningKey::Scoped { key: k, .. } => k,
        }
    }
}

/// `type` of an export or import: a string in v2 JWTs (`stream`,
/// `service`), a number in some writers (1 stream, 2 service).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ExportKind {
    Name(String),
    Number(i64),
}

impl ExportKind {
    pub fn is_service(&self) -> bool {
        match self {
            ExportKind::Name(n) => n.eq_ignore_ascii_case("service"),
            ExportKind::Number(n) => *n == 2,
        }
    }
}

impl Default for ExportKind {
    fn default() -> Self {
        ExportKind::Name("stream".into())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct JwtExport {
    #[serde(default)]
    pub name: String,
    pub subject: String,
    #[serde(default, rename = "type")]
    pub kind: ExportKind,
    /// Importers need an activation token signed by this account.
    #[serde(default)]
    pub token_req: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct JwtImport {
    #[serde(default)]
    pub name: String,
    /// The subject in the exporting account.
    pub subject: String,
    /// The exporting account.
    pub account: String,
    /// An activation token (a JWT the exporter signed for this account).
    #[serde(default)]
    pub token: String,
    /// Streams: a prefix; services: the local subject (older field).
    #[serde(default)]
    pub to: String,
    /// The subject in the importing account.
    #[serde(default)]
    pub local_subject: String,
    #[serde(default, rename = "type")]
    pub kind: ExportKind,
}

/// An account JWT's `nats` section.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AccountNats {
    #[serde(default)]
    pub imports: Vec<JwtImport>,
    #[serde(default)]
    pub exports: Vec<JwtExport>,
    #[serde(default)]
    pub signing_keys: Vec<SigningKey>,
    /// User key (or `*` for all) → users issued at or before this time
    /// (Unix seconds) are revoked.
    #[serde(default)]
    pub revocations: HashMap<String, i64>,
    #[serde(default)]
    pub default_permissions: JwtPermissions,
    #[serde(default, rename = "type")]
    pub kind: String,
}

/// An operator JWT's `nats` section.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OperatorNats {
    #[serde(default)]
    pub signing_keys: Vec<String>,
    #[serde(default)]
    pub system_account: String,
    /// Only the signing keys may sign accounts, not the operator's own key.
    #[serde(default)]
    pub strict_signing_key_usage: bool,
    #[serde(default, rename = "type")]
    pub kind: String,
}

/// An activation token's `nats` section (what an exporter lets one
/// importer take).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ActivationNats {
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub issuer_account: String,
    #[serde(default, rename = "type")]
    pub kind: String,
}

/// Checks that the claims are of the `expected` kind (`nats.type`).
pub fn expect_kind(found: &str, expected: &'static str) -> Result<(), JwtError> {
    if found == expected {
        Ok(())
    } else {
        Err(JwtError::Kind {
            expected,
            found: found.to_owned(),
        })
    }
}

/// Whether `ip` is inside one of `cidrs` (an address alone is a /32 or
/// /128). An entry that does not parse matches nothing.
pub fn ip_allowed(cidrs: &[&str], ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    cidrs.iter().any(|c| {
        let (addr, bits) = match c.split_once('/') {
            Some((a, b)) => (a, b.parse::<u32>().ok()),
            None => (*c, None),
        };
        let Ok(net) = addr.parse::<IpAddr>() else {
            return false;
        };
        match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let bits = bits.unwrap_or(32).min(32);
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let bits = bits.unwrap_or(128).min(128);
                let mask = if bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - bits)
                };
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    })
}

/// Whether the time of day `now` (Unix seconds, UTC) is inside one of the
/// windows (`HH:MM:SS`, end exclusive; a window may wrap past midnight).
/// `None` when a window does not parse.
pub fn within_times(ranges: &[TimeRange], now: i64) -> Option<bool> {
    let parse = |s: &str| -> Option<i64> {
        let mut it = s.split(':');
        let h: i64 = it.next()?.parse().ok()?;
        let m: i64 = it.next()?.parse().ok()?;
        let sec: i64 = it.next().unwrap_or("0").parse().ok()?;
        ((0..24).contains(&h) && (0..60).contains(&m) && (0..60).contains(&sec))
            .then_some(h * 3600 + m * 60 + sec)
    };
    let t = now.rem_euclid(86_400);
    let mut any = false;
    for r in ranges {
        let (s, e) = (parse(&r.start)?, parse(&r.end)?);
        any |= if s <= e {
            s <= t && t < e
        } else {
            t >= s || t < e
        };
    }
    Some(any)
}
