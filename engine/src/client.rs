//! A client connection's protocol state and every decision on what the
//! client sends: the CONNECT handshake's outcome, the gate before
//! authentication, PUB and SUB checks (subjects, permissions, limits),
//! UNSUB, keep-alive, and the `-ERR` texts and log lines nats-server uses
//! for each refusal.
//!
//! The glue (`shoal-net`) owns the socket and the read buffer; it parses
//! an operation, asks [`ClientState`] what to do, and carries out the
//! answer: an [`Answer`] to write, a [`Refusal`] to write, log and maybe
//! close on, or, for an accepted SUB or PUB, the index change or fan-out.
//! Nothing here reads a clock: time is a parameter (`Instant` for
//! `allow_responses` grants, Unix seconds for JWT validity).
//!
//! Routes have their own state (`crate::link::Learned` and the link's
//! keep-alive in the glue): a route link carries no permissions, account
//! or subscriptions of a client.

use crate::keepalive::{KeepAlive, Tick};
use bytes::Bytes;
use shoal_core::auth::{Account, Accounts, AuthError, ClientPermissions, ConnectContext, Session};
use shoal_core::proto::{ClientOp, ConnectOptions, ProtoError};
use shoal_core::subject::{has_wildcard, is_valid_pattern, is_valid_publish, is_valid_queue};
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// Why a connection closed, in nats-server's words (`/connz`
/// `reason`, log lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    ClientClosed,
    ReadError,
    WriteError,
    SlowConsumerPendingBytes,
    SlowConsumerWriteDeadline,
    StaleConnection,
    AuthenticationTimeout,
    AuthenticationViolation,
    AuthenticationExpired,
    ParseError,
    MaxPayloadExceeded,
    MaxConnectionsExceeded,
    ServerShutdown,
    LameDuck,
    DuplicateRoute,
    TlsError,
    AccountChanged,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CloseReason::ClientClosed => "Client Closed",
            CloseReason::ReadError => "Read Error",
            CloseReason::WriteError => "Write Error",
            CloseReason::SlowConsumerPendingBytes => "Slow Consumer (Pending Bytes)",
            CloseReason::SlowConsumerWriteDeadline => "Slow Consumer (Write Deadline)",
            CloseReason::StaleConnection => "Stale Connection",
            CloseReason::AuthenticationTimeout => "Authentication Timeout",
            CloseReason::AuthenticationViolation => "Authentication Failure",
            CloseReason::AuthenticationExpired => "Authentication Expired",
            CloseReason::ParseError => "Parse Error",
            CloseReason::MaxPayloadExceeded => "Maximum Payload Exceeded",
            CloseReason::MaxConnectionsExceeded => "Maximum Connections Exceeded",
            CloseReason::ServerShutdown => "Server Shutdown",
            CloseReason::LameDuck => "Lame Duck Mode",
            CloseReason::DuplicateRoute => "Duplicate Route",
            CloseReason::TlsError => "TLS Handshake Failure",
            CloseReason::AccountChanged => "Account Changed",
        })
    }
}

/// Options a client set in CONNECT that the delivery path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFlags {
    pub verbose: bool,
    pub pedantic: bool,
    pub echo: bool,
    pub headers: bool,
    pub no_responders: bool,
}

impl Default for ClientFlags {
    fn default() -> Self {
        ClientFlags {
            verbose: false,
            pedantic: false,
            echo: true,
            headers: false,
            no_responders: false,
        }
    }
}

/// How loud a log line is, as nats-server logs the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Info,
}

/// A line for the server's log; the glue puts `<addr> - cid:<id> - ` in
/// front, as nats-server does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: Level,
    pub text: String,
}

impl LogLine {
    fn error(text: String) -> Self {
        LogLine {
            level: Level::Error,
            text,
        }
    }
    fn info(text: String) -> Self {
        LogLine {
            level: Level::Info,
            text,
        }
    }
}

/// Something the client sent (or failed to do) that the server refuses:
/// the glue writes `-ERR '<err>'`, logs `log`, and when `close` is set
/// closes the connection once that is flushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub err: Cow<'static, str>,
    pub log: Option<LogLine>,
    pub close: Option<CloseReason>,
}

impl Refusal {
    /// An error that keeps the connection (permissions, invalid subjects,
    /// limits on subscriptions), as nats-server keeps it.
    fn keep(err: impl Into<Cow<'static, str>>, log: Option<LogLine>) -> Self {
        Refusal {
            err: err.into(),
            log,
            close: None,
        }
    }
    /// An error after which the connection is closed.
    fn close(err: impl Into<Cow<'static, str>>, log: Option<LogLine>, why: CloseReason) -> Self {
        Refusal {
            err: err.into(),
            log,
            close: Some(why),
        }
    }
}

/// What an accepted operation answers: `+OK` in verbose mode, nothing
/// otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Ok,
    Nothing,
}

/// A PUB's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubCheck {
    /// Route it, after answering.
    Allowed(Answer),
    /// Not a valid subject to publish to (pedantic mode): refused before
    /// anything else, a message trace included.
    Invalid(Refusal),
    /// The permissions forbid it (a traced message reports the refusal).
    Denied(Refusal),
}

/// A SUB's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubCheck {
    /// Index it: `subject` is in the client's account space (its prefix,
    /// `prefix_len` bytes, in front); `deny_filter` asks delivery to check
    /// the deny list (a wildcard subscription of a client with
    /// permissions).
    New {
        subject: Bytes,
        prefix_len: usize,
        deny_filter: bool,
    },
    /// The sid is in use: nats-server ignores the SUB (and says `+OK`).
    Duplicate,
    Refused(Refusal),
}

/// An UNSUB's outcome for a subscription that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsub {
    /// Remove it now.
    Now,
    /// Keep it until it has delivered this many messages in all.
    AtMax(u64),
}

/// The keep-alive timer fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PingTick {
    /// Not authenticated yet while authentication is required: the auth
    /// timer decides its fate, and no PING may precede the CONNECT verdict.
    Wait,
    /// Send a PING (one more outstanding).
    Ping,
    /// Too many PINGs unanswered.
    Stale(Refusal),
}

/// The first CONNECT's credentials were checked.
#[derive(Debug)]
pub enum Verdict {
    /// Authenticated: when the session expires (Unix seconds), if ever,
    /// for the glue's expiry timer.
    Accepted {
        expires: Option<i64>,
    },
    Refused(Refusal),
}

/// The outcome of re-checking a client against a reloaded configuration.
#[derive(Debug)]
pub enum Recheck {
    /// Its credentials no longer pass, or it must now authenticate.
    Refused(Refusal),
    /// Its account's subject space changed: close it so it reconnects into
    /// the new one (its subscriptions are indexed in the old space).
    AccountChanged(LogLine),
    /// It stays, with new permissions; its subscriptions must be checked
    /// again with [`ClientState::keeps_subscription`].
    Stays,
}

/// One client connection's protocol state, held by value by the glue (one
/// per connection, on its shard).
///
/// The call contract: the glue calls in the order the client's operations
/// arrive, and carries out each answer before the next call. `admit`
/// comes first for every operation; a first CONNECT is
/// `parse_connect`, the credential check (the glue's, on or off the
/// shard), `authenticate` with its verdict, then `accept_connect`; a later
/// CONNECT goes straight to `accept_connect`. `check_publish` precedes the
/// fan-out of a PUB, `check_subscribe` the index insert of a SUB;
/// `denies_delivery` and `delivered_request` are called by the delivery
/// path for messages written to this client; the timers' calls
/// (`ping_tick`, `auth_timeout`) and a reload's (`recheck`, then
/// `keeps_subscription` for every subscription) come between operations,
/// never during one. No call waits or fails by itself: everything it
/// decides is in its return value.
#[derive(Debug)]
pub struct ClientState {
    flags: ClientFlags,
    perms: Option<ClientPermissions>,
    /// The client's account (the default account until it authenticates);
    /// its prefix goes before every subject it uses.
    account: Option<Arc<Account>>,
    authenticated: bool,
    name: Option<String>,
    /// The options of its CONNECT, credentials those of the first one.
    connect: Option<ConnectOptions>,
    /// Who it authenticated as (user name, nkey or JWT subject).
    auth_user: Option<String>,
    /// The nonce its INFO carried, which its CONNECT signs.
    nonce: Option<String>,
    keepalive: KeepAlive,
}

impl ClientState {
    /// A new connection: nats-server's flags before CONNECT (verbose and
    /// pedantic on), in `account` (the default account, or none without
    /// accounts), with the nonce its INFO carries.
    pub fn new(account: Option<Arc<Account>>, nonce: Option<String>) -> Self {
        ClientState {
            flags: ClientFlags {
                verbose: true,
                pedantic: true,
                ..ClientFlags::default()
            },
            perms: None,
            account,
            authenticated: false,
            name: None,
            connect: None,
            auth_user: None,
            nonce,
            keepalive: KeepAlive::default(),
        }
    }

    pub fn flags(&self) -> ClientFlags {
        self.flags
    }
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    pub fn nonce(&self) -> Option<&str> {
        self.nonce.as_deref()
    }
    pub fn account(&self) -> Option<&Arc<Account>> {
        self.account.as_ref()
    }
    pub fn auth_user(&self) -> Option<&str> {
        self.auth_user.as_deref()
    }
    pub fn connect_options(&self) -> Option<&ConnectOptions> {
        self.connect.as_ref()
    }
    pub fn permissions(&self) -> Option<&ClientPermissions> {
        self.perms.as_ref()
    }
    /// The account prefix of every subject it uses (empty without
    /// accounts).
    pub fn prefix(&self) -> &[u8] {
        self.account.as_ref().map_or(&[][..], |a| &a.prefix[..])
    }

    /// What the server knows of this connection for checking its CONNECT.
    pub fn connect_context(&self, ip: Option<IpAddr>, unix_now: i64) -> ConnectContext {
        ConnectContext {
            nonce: self.nonce.clone(),
            ip,
            now: unix_now,
        }
    }

    /// `User "name"` for log lines (never a password or token).
    pub fn user_label(&self) -> String {
        match self.auth_user.as_deref() {
            Some(user) => format!("User {user:?}"),
            None => "User \"N/A\"".to_string(),
        }
    }

    /// Before authentication only CONNECT is allowed when authentication
    /// is required. `auth_required` is asked only for a client not
    /// authenticated yet: every operation passes here, and reading the
    /// configuration costs the glue a reference count.
    #[inline]
    pub fn admit(
        &self,
        op: &ClientOp,
        auth_required: impl FnOnce() -> bool,
    ) -> Result<(), Refusal> {
        if !self.authenticated && !matches!(op, ClientOp::Connect(_)) && auth_required() {
            return Err(Refusal::close(
                shoal_core::auth::AUTHORIZATION_VIOLATION,
                None,
                CloseReason::AuthenticationViolation,
            ));
        }
        Ok(())
    }

    /// A malformed operation: fatal, with nats-server's text. `line` is
    /// what the parser could not take, shown in the log as a snippet.
    pub fn protocol_error(e: &ProtoError, line: &[u8]) -> Refusal {
        let why = match e {
            ProtoError::MaxPayload { .. } => CloseReason::MaxPayloadExceeded,
            _ => CloseReason::ParseError,
        };
        Refusal::close(e.err_text(), Some(LogLine::error(e.log_text(line))), why)
    }

    /// A CONNECT's JSON, parsed; bad JSON is fatal.
    pub fn parse_connect(json: &[u8]) -> Result<ConnectOptions, Refusal> {
        ConnectOptions::from_json(json).map_err(|e| {
            Refusal::close(
                "Unknown Protocol Operation",
                Some(LogLine::error(format!("processConnect: bad CONNECT: {e}"))),
                CloseReason::ParseError,
            )
        })
    }

    /// The verdict on the first CONNECT's credentials. On success the
    /// client takes the session's user, permissions and account (looked up
    /// in `accounts`); the options themselves take effect with
    /// [`ClientState::accept_connect`].
    pub fn authenticate(
        &mut self,
        opts: &ConnectOptions,
        verdict: Result<Session, AuthError>,
        accounts: &Accounts,
    ) -> Verdict {
        match verdict {
            Ok(session) => {
                self.auth_user = session.user;
                self.perms = session.permissions.map(ClientPermissions::new);
                self.account = accounts.get(session.account.as_deref());
                self.authenticated = true;
                Verdict::Accepted {
                    expires: session.expires,
                }
            }
            Err(e) => {
                // nats-server: "authentication error - User \"bob\"" (never
                // the password, token or JWT); an nkey user by its public
                // key.
                let text = match (&opts.user, &opts.nkey) {
                    (Some(user), _) => format!("authentication error - User {user:?}"),
                    (None, Some(nkey)) => format!("authentication error - Nkey {nkey:?}"),
                    (None, None) => "authentication error".to_string(),
                };
                Verdict::Refused(Refusal::close(
                    e.err_text(),
                    Some(LogLine::error(text)),
                    CloseReason::AuthenticationViolation,
                ))
            }
        }
    }

    /// An accepted CONNECT: its options take effect. A later CONNECT may
    /// change the options but not who the client is: the credentials kept
    /// are those that were checked (else a client could show, and be
    /// re-checked at reload as, a user it never proved to be).
    pub fn accept_connect(&mut self, mut opts: ConnectOptions) -> Answer {
        self.flags = ClientFlags {
            verbose: opts.verbose,
            pedantic: opts.pedantic,
            echo: opts.echo,
            headers: opts.headers,
            no_responders: opts.no_responders,
        };
        self.name.clone_from(&opts.name);
        if let Some(first) = &self.connect {
            opts.user.clone_from(&first.user);
            opts.pass.clone_from(&first.pass);
            opts.auth_token.clone_from(&first.auth_token);
            opts.jwt.clone_from(&first.jwt);
            opts.nkey.clone_from(&first.nkey);
            opts.sig.clone_from(&first.sig);
        }
        self.connect = Some(opts);
        self.ok()
    }

    /// `+OK` in verbose mode.
    pub fn ok(&self) -> Answer {
        if self.flags.verbose {
            Answer::Ok
        } else {
            Answer::Nothing
        }
    }

    /// A PUB: the pedantic subject check, then the publish permission (an
    /// `allow_responses` grant is used up here, hence `&mut` and `now`,
    /// which is asked only for a client with permissions: a clock read per
    /// message is a tenth of the publish path's cost).
    #[inline]
    pub fn check_publish(&mut self, subject: &[u8], now: impl FnOnce() -> Instant) -> PubCheck {
        if self.flags.pedantic && !is_valid_publish(subject) {
            return PubCheck::Invalid(Refusal::keep("Invalid Publish Subject", None));
        }
        let allowed = match self.perms.as_mut() {
            Some(perms) => perms.may_publish(subject, now()),
            None => true,
        };
        if !allowed {
            let subject = String::from_utf8_lossy(subject);
            return PubCheck::Denied(Refusal::keep(
                format!("Permissions Violation for Publish to \"{subject}\""),
                Some(LogLine::error(format!(
                    "Publish Violation - {}, Subject {subject:?}",
                    self.user_label()
                ))),
            ));
        }
        PubCheck::Allowed(self.ok())
    }

    /// A subscription the index refused although its subject passed
    /// [`ClientState::check_subscribe`] (the two agree on the rules; this
    /// is nats-server's answer should they not).
    pub fn invalid_subject() -> Refusal {
        Refusal::keep("Invalid Subject", None)
    }

    /// A SUB: subject and queue syntax, the subscribe permission, a sid in
    /// use, the `max_subscriptions` limit (`count` the client's
    /// subscriptions now, 0 for no limit), then the subject in the
    /// client's account space.
    pub fn check_subscribe(
        &self,
        subject: &[u8],
        queue: Option<&[u8]>,
        sid: &[u8],
        sid_in_use: bool,
        count: usize,
        max_subscriptions: usize,
    ) -> SubCheck {
        if !is_valid_pattern(subject) || queue.is_some_and(|q| !is_valid_queue(q)) {
            return SubCheck::Refused(Self::invalid_subject());
        }
        let deny_filter = match &self.perms {
            Some(perms) => {
                if !perms.may_subscribe(subject) {
                    return SubCheck::Refused(self.sub_violation(subject, queue, Some(sid)));
                }
                has_wildcard(subject)
            }
            None => false,
        };
        if sid_in_use {
            return SubCheck::Duplicate;
        }
        if max_subscriptions > 0 && count >= max_subscriptions {
            return SubCheck::Refused(Refusal::keep(
                "maximum subscriptions exceeded",
                Some(LogLine::error("maximum subscriptions exceeded".into())),
            ));
        }
        let prefix = self.prefix();
        let subject = if prefix.is_empty() {
            Bytes::copy_from_slice(subject)
        } else {
            Bytes::from([prefix, subject].concat())
        };
        SubCheck::New {
            subject,
            prefix_len: prefix.len(),
            deny_filter,
        }
    }

    /// nats-server's subscription violation: the error names the queue
    /// when there is one; the log line names the user and the sid.
    fn sub_violation(&self, subject: &[u8], queue: Option<&[u8]>, sid: Option<&[u8]>) -> Refusal {
        let subject = String::from_utf8_lossy(subject);
        let err = match queue {
            Some(q) => format!(
                "Permissions Violation for Subscription to \"{subject}\" using queue \"{}\"",
                String::from_utf8_lossy(q)
            ),
            None => format!("Permissions Violation for Subscription to \"{subject}\""),
        };
        let log = sid.map(|sid| {
            let queue = queue.map_or_else(String::new, |q| {
                format!(", Queue: {:?}", String::from_utf8_lossy(q))
            });
            LogLine::error(format!(
                "Subscription Violation - {}, Subject {subject:?}{queue}, SID {}",
                self.user_label(),
                String::from_utf8_lossy(sid)
            ))
        });
        Refusal::keep(err, log)
    }

    /// An UNSUB of a subscription that delivered `delivered` messages.
    pub fn unsubscribe(max: Option<u64>, delivered: u64) -> Unsub {
        match max {
            Some(max) if delivered < max => Unsub::AtMax(max),
            _ => Unsub::Now,
        }
    }

    /// Whether a message on `subject` (without the account prefix) must not
    /// be written to this client's wildcard subscription: asked only for a
    /// subscription with a deny filter (a wildcard subscription of a client
    /// with permissions), so other deliveries never borrow the state.
    #[inline]
    pub fn denies_delivery(&self, subject: &[u8]) -> bool {
        self.perms
            .as_ref()
            .is_some_and(|perms| perms.compiled().deny_delivery(subject))
    }

    /// A request written to this client: with `allow_responses` it may
    /// publish one answer (or more, as configured) to `reply`. `now` is
    /// asked only then (reading the clock per delivered request costs the
    /// request-reply path).
    #[inline]
    pub fn delivered_request(&mut self, reply: &[u8], now: impl FnOnce() -> Instant) {
        if let Some(perms) = self.perms.as_mut() {
            if perms.compiled().allows_responses().is_some() {
                perms.note_request(reply, now());
            }
        }
    }

    /// Whether a request nobody answered gets a `503` status (the client
    /// asked for it and can read headers).
    pub fn wants_no_responders(&self) -> bool {
        self.flags.no_responders && self.flags.headers
    }

    /// The keep-alive timer fired; `max` is `ping_max`.
    pub fn ping_tick(&mut self, auth_required: bool, max: u32) -> PingTick {
        if !self.authenticated && auth_required {
            return PingTick::Wait;
        }
        match self.keepalive.tick(max) {
            Tick::Ping => PingTick::Ping,
            Tick::Stale => PingTick::Stale(Refusal::close(
                "Stale Connection",
                None,
                CloseReason::StaleConnection,
            )),
        }
    }

    /// The client answered a PING.
    pub fn pong(&mut self) {
        self.keepalive.pong();
    }

    /// The auth timer fired: a client not authenticated by now is closed.
    pub fn auth_timeout(&self) -> Option<Refusal> {
        (!self.authenticated).then(|| {
            Refusal::close(
                "Authentication Timeout",
                Some(LogLine::error("Authentication Timeout".into())),
                CloseReason::AuthenticationTimeout,
            )
        })
    }

    /// Its user JWT expired.
    pub fn expired() -> Refusal {
        Refusal::close(
            "User Authentication Expired",
            Some(LogLine::info("User Authentication Expired".into())),
            CloseReason::AuthenticationExpired,
        )
    }

    /// A client that answered a TLS-only server in plain text (the
    /// handshake error itself is logged by the glue, which saw it).
    pub fn tls_required() -> Refusal {
        Refusal::close(
            "Secure Connection - TLS Required",
            None,
            CloseReason::TlsError,
        )
    }

    /// A connection over `max_connections`.
    pub fn too_many_connections() -> Refusal {
        Refusal::close(
            "maximum connections exceeded",
            Some(LogLine::error("maximum connections exceeded".into())),
            CloseReason::MaxConnectionsExceeded,
        )
    }

    /// A reload changed the rules. `was_required`/`required`: whether
    /// authentication was and is required; `verdict` is the re-check of an
    /// authenticated client's credentials (None for one that never
    /// authenticated). A client that never sent CONNECT is refused when
    /// the new configuration requires authentication; one whose account's
    /// space changed is closed; otherwise it takes its (possibly new)
    /// account and permissions.
    pub fn recheck(
        &mut self,
        was_required: bool,
        required: bool,
        verdict: Option<Result<Session, AuthError>>,
        accounts: &Accounts,
    ) -> Recheck {
        let refused = |e: AuthError| {
            Recheck::Refused(Refusal::close(
                e.err_text(),
                Some(LogLine::error(
                    "authentication error (configuration reloaded)".into(),
                )),
                CloseReason::AuthenticationViolation,
            ))
        };
        let (account, perms) = match verdict {
            None if !was_required && required => return refused(AuthError),
            None => (accounts.get(None), None),
            Some(Err(e)) => return refused(e),
            Some(Ok(session)) => (
                accounts.get(session.account.as_deref()),
                Some(session.permissions.map(ClientPermissions::new)),
            ),
        };
        let prefix =
            |a: &Option<Arc<Account>>| a.as_ref().map(|a| a.prefix.clone()).unwrap_or_default();
        if prefix(&self.account) != prefix(&account) {
            return Recheck::AccountChanged(LogLine::info(
                "account changed by a configuration reload, closing the connection so the client reconnects into it".into(),
            ));
        }
        self.account = account;
        if let Some(perms) = perms {
            self.perms = perms;
        }
        Recheck::Stays
    }

    /// After a reload: whether a subscription (its subject without the
    /// account prefix) is still allowed, and if so its new deny filter
    /// (decided by the permissions in force, not those at SUB time).
    pub fn keeps_subscription(&self, subject: &[u8]) -> Result<bool, Refusal> {
        match &self.perms {
            Some(perms) if !perms.may_subscribe(subject) => {
                Err(self.sub_violation(subject, None, None))
            }
            Some(_) => Ok(has_wildcard(subject)),
            None => Ok(false),
        }
    }

    /// The CONNECT for a trace line, with the password and token replaced.
    pub fn redacted_connect(json: &[u8]) -> String {
        let redacted = ConnectOptions::from_json(json).map(|mut o| {
            for secret in [&mut o.pass, &mut o.auth_token] {
                if secret.is_some() {
                    *secret = Some("[REDACTED]".into());
                }
            }
            o
        });
        format!("{redacted:?}")
    }
}
