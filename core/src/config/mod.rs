//! The server configuration model, its defaults (nats-server's), and loading
//! it from a file in nats-server's configuration syntax.
//!
//! Every key is checked: an unknown key, or a value of the wrong kind, is an
//! error naming the key and its line, and the server does not start.

pub mod conf;

use crate::auth::{
    AccountConfig, AuthConfig, Export, Import, NkeyUser, Permissions, ResponsePermission, Secret,
    SubjectPermission, User,
};
use crate::proto::{DEFAULT_MAX_CONTROL_LINE, DEFAULT_MAX_PAYLOAD, MAX_PAYLOAD_LIMIT};
use conf::{Entry, Value};
use std::time::Duration;
use thiserror::Error;

/// TLS settings (`tls { cert_file, key_file, ca_file, verify, timeout }`,
/// or `--tls --tlscert --tlskey --tlscacert --tlsverify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert_file: String,
    pub key_file: String,
    /// CA certificates that client certificates must chain to (`verify`).
    pub ca_file: Option<String>,
    /// Require and verify a client certificate (mutual TLS).
    pub verify: bool,
    /// Time allowed for the TLS handshake.
    pub timeout: Duration,
    /// `handshake_first` (nats-server 2.10): TLS before the INFO.
    pub handshake_first: HandshakeFirst,
}

/// When the TLS handshake comes relative to the server's INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HandshakeFirst {
    /// INFO in plain text first, then the client starts TLS (classic).
    #[default]
    Off,
    /// The client starts TLS at once; INFO comes encrypted.
    Always,
    /// TLS first if the client starts it within this delay, else the
    /// classic way (`handshake_first: auto` waits 50 ms, as nats-server).
    Auto(Duration),
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: String::new(),
            key_file: String::new(),
            ca_file: None,
            verify: false,
            // nats-server's default TLS handshake timeout.
            timeout: Duration::from_secs(2),
            handshake_first: HandshakeFirst::Off,
        }
    }
}

/// Route/cluster settings. `Debug` hides the password and any password in
/// a route URL.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub name: Option<String>,
    /// `host:port` to listen for routes on.
    pub listen: Option<String>,
    /// Seed route URLs (`nats://host:port`).
    pub routes: Vec<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub auth_timeout: Option<Duration>,
    /// Strict interest mode: a PONG after a SUB waits until every peer
    /// acknowledged the interest.
    pub sync_interest: bool,
    /// How long strict mode waits for the peers before `-ERR`.
    pub sync_timeout: Duration,
    /// Queue groups: deliver to a member on this node when there is one.
    pub queue_prefer_local: bool,
    /// The route URL announced to peers, when `listen` is not reachable as is
    /// (e.g. listening on 0.0.0.0).
    pub advertise: Option<String>,
    /// Route TLS (`cluster { tls { } }`): every link in both directions.
    pub tls: Option<TlsConfig>,
    /// `cluster { write_deadline }`: the route links' own write deadline
    /// (`None`: the server's `write_deadline`).
    pub write_deadline: Option<Duration>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: None,
            listen: None,
            routes: Vec::new(),
            user: None,
            password: None,
            auth_timeout: None,
            sync_interest: false,
            sync_timeout: Duration::from_secs(2),
            queue_prefer_local: true,
            advertise: None,
            tls: None,
            write_deadline: None,
        }
    }
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let routes: Vec<String> = self.routes.iter().map(|r| redact_url(r)).collect();
        f.debug_struct("ClusterConfig")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("routes", &routes)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("auth_timeout", &self.auth_timeout)
            .field("sync_interest", &self.sync_interest)
            .field("sync_timeout", &self.sync_timeout)
            .field("queue_prefer_local", &self.queue_prefer_local)
            .field("advertise", &self.advertise)
            .field("tls", &self.tls)
            .field("write_deadline", &self.write_deadline)
            .finish()
    }
}

/// `url` with the password of its `user:password@` part replaced by `xxxxx`
/// (as nats-server shows route URLs); anything else unchanged.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let redacted = match rest.rsplit_once('@') {
        Some((auth, host)) => match auth.split_once(':') {
            Some((user, _)) => format!("{user}:xxxxx@{host}"),
            None => rest.to_owned(),
        },
        None => rest.to_owned(),
    };
    match scheme {
        Some(s) => format!("{s}://{redacted}"),
        None => redacted,
    }
}

impl ClusterConfig {
    /// Whether this node takes part in a cluster (listens for or dials routes).
    pub fn enabled(&self) -> bool {
        self.listen.is_some() || !self.routes.is_empty()
    }

    /// Host and port of `listen`, with nats-server's defaults (all
    /// interfaces, 6222) for what is not set yet; `host` and `port` keys each
    /// replace one half.
    fn listen_parts(&self) -> (String, String) {
        let (h, p) = self
            .listen
            .as_deref()
            .and_then(|l| l.rsplit_once(':'))
            .unwrap_or(("0.0.0.0", "6222"));
        (h.to_owned(), p.to_owned())
    }
}

/// Everything the server can be configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub host: String,
    /// Client port; `-1` picks a random free port.
    pub port: i32,
    pub server_name: Option<String>,
    pub http_port: Option<u16>,
    /// Where monitoring listens when `http: host:port` names a host (else
    /// the client host, as `-m` does).
    pub http_host: Option<String>,
    /// The client URL (`host:port`) announced to clients in `connect_urls`,
    /// when the listen address is not reachable as is.
    pub client_advertise: Option<String>,
    pub max_payload: usize,
    pub max_control_line: usize,
    pub max_connections: usize,
    /// Per connection; 0 = unlimited.
    pub max_subscriptions: usize,
    pub max_pending: usize,
    pub write_deadline: Duration,
    pub ping_interval: Duration,
    pub ping_max: u32,
    pub auth: AuthConfig,
    pub auth_timeout: Duration,
    pub lame_duck_duration: Duration,
    pub lame_duck_grace_period: Duration,
    pub cluster: ClusterConfig,
    pub debug: bool,
    pub trace: bool,
    pub log_file: Option<String>,
    pub pid_file: Option<String>,
    /// Shards (executors); `None` = CPUs available to the process.
    pub shards: Option<usize>,
    /// How long an idle shard spins before parking.
    pub spin_before_park: Option<Duration>,
    /// Client TLS: when set, every client must use TLS.
    pub tls: Option<TlsConfig>,
    /// Timestamps on log lines (`logtime`, `-T`), in UTC with `logtime_utc`.
    pub logtime: bool,
    pub logtime_utc: bool,
    /// Where to write `<exe>_<pid>.ports` (`ports_file_dir`).
    pub ports_file_dir: Option<String>,
    /// `server_metadata`: shown in `/varz` `metadata`.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Trace lines show at most this many payload bytes (0: all).
    pub max_traced_msg_len: usize,
    /// Keys accepted for compatibility that change nothing here, each with
    /// its line and why: logged at start so nothing is silently ignored.
    pub notices: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "0.0.0.0".into(),
            port: 4222,
            server_name: None,
            http_port: None,
            http_host: None,
            client_advertise: None,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_control_line: DEFAULT_MAX_CONTROL_LINE,
            max_connections: 64 * 1024,
            max_subscriptions: 0,
            max_pending: 64 * 1024 * 1024,
            write_deadline: Duration::from_secs(10),
            ping_interval: Duration::from_secs(120),
            ping_max: 2,
            auth: AuthConfig::default(),
            auth_timeout: Duration::from_secs(2),
            lame_duck_duration: Duration::from_secs(120),
            lame_duck_grace_period: Duration::from_secs(10),
            cluster: ClusterConfig::default(),
            debug: false,
            trace: false,
            log_file: None,
            pid_file: None,
            shards: None,
            spin_before_park: None,
            tls: None,
            logtime: true,
            logtime_utc: false,
            ports_file_dir: None,
            metadata: std::collections::BTreeMap::new(),
            max_traced_msg_len: 0,
            notices: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("{0}")]
    Syntax(#[from] conf::SyntaxError),
    #[error("line {line}: unknown configuration key {key:?}")]
    UnknownKey { key: String, line: usize },
    #[error("line {line}: invalid value for {key:?}: {reason}")]
    Invalid {
        key: String,
        line: usize,
        reason: String,
    },
}

/// What `-js` and a `jetstream` block are refused with.
pub const JETSTREAM_UNSUPPORTED: &str =
    "JetStream is not supported: Shoal is a core NATS server (pub/sub, queue groups, request-reply)";

fn invalid<T>(e: &Entry, reason: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        key: e.key.clone(),
        line: e.line,
        reason: reason.into(),
    })
}

fn unknown<T>(e: &Entry) -> Result<T, ConfigError> {
    Err(ConfigError::UnknownKey {
        key: e.key.clone(),
        line: e.line,
    })
}

fn string(e: &Entry) -> Result<String, ConfigError> {
    match &e.value {
        Value::String(s) => Ok(s.clone()),
        Value::Int(n) => Ok(n.to_string()),
        _ => invalid(e, "expected a string"),
    }
}

fn boolean(e: &Entry) -> Result<bool, ConfigError> {
    match e.value {
        Value::Bool(b) => Ok(b),
        _ => invalid(e, "expected true or false"),
    }
}

fn size(e: &Entry) -> Result<usize, ConfigError> {
    match e.value {
        Value::Int(n) if n >= 0 => Ok(n as usize),
        _ => invalid(
            e,
            "expected a non-negative number (size suffixes like 1MB allowed)",
        ),
    }
}

/// A duration: a string like `"10s"`, `"2m"`, `"1m30s"`, `"500ms"`, or a
/// number of seconds, as nats-server accepts.
/// The longest duration a setting may have: deadlines are added to the
/// current time, which must not overflow (a reload with a larger value
/// would otherwise abort the running server).
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn duration(e: &Entry) -> Result<Duration, ConfigError> {
    let d = match &e.value {
        Value::Int(n) if *n >= 0 => Duration::from_secs(*n as u64),
        Value::Float(f) if *f >= 0.0 => match Duration::try_from_secs_f64(*f) {
            Ok(d) => d,
            Err(_) => return invalid(e, "duration too large"),
        },
        Value::String(s) => humantime::parse_duration(s)
            .or_else(|err| invalid(e, format!("bad duration {s:?}: {err}")))?,
        _ => {
            return invalid(
                e,
                "expected a duration such as \"10s\" or a number of seconds",
            )
        }
    };
    if d > MAX_DURATION {
        return invalid(e, "duration too large (at most 100 years)");
    }
    Ok(d)
}

/// A duration that must not be zero (a zero ping interval would make every
/// connection stale at once; a zero write deadline every blocked write a
/// slow consumer).
fn positive_duration(e: &Entry) -> Result<Duration, ConfigError> {
    let d = duration(e)?;
    if d.is_zero() {
        return invalid(e, "must be greater than zero");
    }
    Ok(d)
}

/// A `tls { }` block; `cert_file` and `key_file` are required.
fn tls_block(entries: &[Entry]) -> Result<TlsConfig, ConfigError> {
    let mut t = TlsConfig::default();
    for e in entries {
        match e.key.as_str() {
            "cert_file" => t.cert_file = string(e)?,
            "key_file" => t.key_file = string(e)?,
            "ca_file" => t.ca_file = Some(string(e)?),
            "verify" => t.verify = boolean(e)?,
            "timeout" => t.timeout = duration(e)?,
            "handshake_first" | "first" => {
                t.handshake_first = match &e.value {
                    Value::Bool(true) => HandshakeFirst::Always,
                    Value::Bool(false) => HandshakeFirst::Off,
                    Value::String(s) if s.eq_ignore_ascii_case("auto") => {
                        HandshakeFirst::Auto(Duration::from_millis(50))
                    }
                    Value::String(s) if s.eq_ignore_ascii_case("true") => HandshakeFirst::Always,
                    Value::String(s) if s.eq_ignore_ascii_case("false") => HandshakeFirst::Off,
                    _ => HandshakeFirst::Auto(positive_duration(e)?),
                }
            }
            _ => return unknown(e),
        }
    }
    if t.cert_file.is_empty() || t.key_file.is_empty() {
        return Err(ConfigError::Invalid {
            key: "tls".into(),
            line: entries.first().map_or(0, |e| e.line),
            reason: "cert_file and key_file are required".into(),
        });
    }
    Ok(t)
}

fn map(e: &Entry) -> Result<&[Entry], ConfigError> {
    match &e.value {
        Value::Map(m) => Ok(m),
        _ => invalid(e, "expected a block { ... }"),
    }
}

fn string_list(e: &Entry) -> Result<Vec<String>, ConfigError> {
    match &e.value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => invalid(e, "expected a list of strings"),
            })
            .collect(),
        _ => invalid(e, "expected a string or a list of strings"),
    }
}

/// `host:port` split for `listen`.
fn host_port(e: &Entry, s: &str) -> Result<(Option<String>, i32), ConfigError> {
    if let Ok(p) = s.parse::<i32>() {
        return Ok((None, p));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => match p.parse::<i32>() {
            Ok(port) => Ok(((!h.is_empty()).then(|| h.to_owned()), port)),
            Err(_) => invalid(e, "expected host:port"),
        },
        None => invalid(e, "expected host:port"),
    }
}

impl ServerConfig {
    /// Loads a configuration file's text over the defaults.
    pub fn from_conf(text: &str) -> Result<Self, ConfigError> {
        let mut c = ServerConfig::default();
        for e in conf::parse(text)? {
            c.apply(&e)?;
        }
        Ok(c)
    }

    fn apply(&mut self, e: &Entry) -> Result<(), ConfigError> {
        match e.key.to_ascii_lowercase().as_str() {
            "listen" => {
                let (host, port) = host_port(e, &string(e)?)?;
                if let Some(h) = host {
                    self.host = h;
                }
                self.port = port;
            }
            "host" | "net" => self.host = string(e)?,
            "port" => match e.value {
                Value::Int(p) if (-1..=65535).contains(&p) => self.port = p as i32,
                _ => return invalid(e, "expected a port number (or -1 for random)"),
            },
            "server_name" => self.server_name = Some(string(e)?),
            "http" | "monitor_port" | "http_port" => {
                let s = string(e)?;
                let (host, port) = host_port(e, &s)?;
                self.http_port =
                    Some(u16::try_from(port).or_else(|_| invalid(e, "expected a port"))?);
                if host.is_some() {
                    self.http_host = host;
                }
            }
            "max_payload" => {
                // nats-server's ceiling; route frames are sized for it.
                let n = size(e)?;
                if n > MAX_PAYLOAD_LIMIT {
                    return invalid(e, "at most 64MB");
                }
                self.max_payload = n;
            }
            "max_control_line" => self.max_control_line = size(e)?,
            "max_connections" | "max_conn" => self.max_connections = size(e)?,
            "max_subscriptions" | "max_subs" => self.max_subscriptions = size(e)?,
            "max_pending" => self.max_pending = size(e)?,
            "write_deadline" => self.write_deadline = positive_duration(e)?,
            "ping_interval" => self.ping_interval = positive_duration(e)?,
            "ping_max" => self.ping_max = size(e)? as u32,
            "lame_duck_duration" => self.lame_duck_duration = duration(e)?,
            "lame_duck_grace_period" => self.lame_duck_grace_period = duration(e)?,
            "debug" => self.debug = boolean(e)?,
            "trace" => self.trace = boolean(e)?,
            "logfile" | "log_file" => self.log_file = Some(string(e)?),
            "pidfile" | "pid_file" => self.pid_file = Some(string(e)?),
            "shards" => self.shards = Some(size(e)?.max(1)),
            "spin_before_park" => self.spin_before_park = Some(duration(e)?),
            "authorization" => self.apply_authorization(map(e)?)?,
            "cluster" => self.apply_cluster(map(e)?)?,
            "client_advertise" => self.client_advertise = Some(string(e)?),
            "tls" => self.tls = Some(tls_block(map(e)?)?),
            "logtime" => self.logtime = boolean(e)?,
            "logtime_utc" => self.logtime_utc = boolean(e)?,
            "ports_file_dir" => self.ports_file_dir = Some(string(e)?),
            "server_metadata" | "metadata" => {
                for m in map(e)? {
                    self.metadata.insert(m.key.clone(), string(m)?);
                }
            }
            "max_traced_msg_len" => self.max_traced_msg_len = size(e)?,
            "no_auth_user" => self.auth.no_auth_user = Some(string(e)?),
            "accounts" => self.apply_accounts(map(e)?)?,
            // Operator mode (nats-server's keys for it).
            "operator" | "operators" | "root" | "roots" | "root_operator" | "root_operators"
            | "trusted_operators" => {
                for item in string_list(e)? {
                    let jwt = operator_jwt(e, &item)?;
                    self.auth.operator.operators.push(jwt);
                }
            }
            "trusted" | "trusted_keys" => self.auth.operator.trusted_keys = string_list(e)?,
            "resolver" => match &e.value {
                Value::String(s) => self.auth.operator.resolver = Some(s.clone()),
                _ => {
                    return invalid(
                        e,
                        "Shoal supports `resolver: MEMORY` (with resolver_preload) only",
                    )
                }
            },
            "resolver_preload" => {
                for a in map(e)? {
                    self.auth.operator.preload.push((a.key.clone(), string(a)?));
                }
            }
            "system_account" => self.auth.operator.system_account = Some(string(e)?),
            // As in nats-server, a store directory alone does not enable
            // JetStream (client test harnesses always pass one).
            "store_dir" => {
                string(e)?;
                self.notices.push(format!(
                    "line {}: store_dir is ignored: Shoal has no JetStream",
                    e.line
                ));
            }
            "jetstream" => {
                let disabled = match &e.value {
                    Value::Bool(b) => !b,
                    Value::String(s) => {
                        matches!(s.to_ascii_lowercase().as_str(), "disabled" | "disable")
                    }
                    Value::Map(m) => m
                        .iter()
                        .any(|f| f.key == "enabled" && f.value == Value::Bool(false)),
                    _ => false,
                };
                if !disabled {
                    return invalid(e, JETSTREAM_UNSUPPORTED);
                }
            }
            // Shoal never stalls a fast producer: a subscriber that cannot
            // keep up is cut as a slow consumer, the publisher goes on.
            "no_fast_producer_stall" => {
                boolean(e)?;
            }
            "write_timeout" => self.write_timeout(e, "clients")?,
            _ => return unknown(e),
        }
        Ok(())
    }

    /// `write_timeout: default | close | retry` (nats-server 2.11). Shoal
    /// closes a connection whose write deadline passes (nats-server's
    /// `close`, and its default for clients); `retry` is accepted with a
    /// notice saying Shoal closes anyway.
    fn write_timeout(&mut self, e: &Entry, kind: &str) -> Result<(), ConfigError> {
        match string(e)?.to_ascii_lowercase().as_str() {
            "default" | "close" => Ok(()),
            "retry" => {
                self.notices.push(format!(
                    "line {}: write_timeout \"retry\" for {kind} is not supported: Shoal closes a connection whose write deadline passes",
                    e.line
                ));
                Ok(())
            }
            _ => invalid(e, "expected default, retry or close"),
        }
    }

    /// `accounts { NAME { users: [...], exports: [...], imports: [...] } }`.
    fn apply_accounts(&mut self, entries: &[Entry]) -> Result<(), ConfigError> {
        for acc in entries {
            let mut config = AccountConfig {
                name: acc.key.clone(),
                ..AccountConfig::default()
            };
            for e in map(acc)? {
                match e.key.as_str() {
                    "users" => {
                        let (users, nkeys) = parse_users(e)?;
                        for mut user in users {
                            user.account = Some(acc.key.clone());
                            self.auth.users.push(user);
                        }
                        for mut nkey in nkeys {
                            nkey.account = Some(acc.key.clone());
                            self.auth.nkeys.push(nkey);
                        }
                    }
                    "exports" => {
                        for x in maps(e)? {
                            let mut export = None;
                            let mut allowed = None;
                            for f in x {
                                match f.key.as_str() {
                                    "stream" => export = Some(Export::stream(&string(f)?)),
                                    "service" => export = Some(Export::service(&string(f)?)),
                                    // Who may import it (nats-server's list).
                                    "accounts" => allowed = Some(string_list(f)?),
                                    // Reply routing is stateless (a MAC'd reply
                                    // subject, accounts.rs): every reply reaches
                                    // the requester, which serves `stream` and
                                    // `chunked`; `singleton`'s one-reply limit
                                    // is not enforced (docs/compatibility.md).
                                    "response" | "response_type" => {
                                        let kind = string(f)?.to_ascii_lowercase();
                                        if !matches!(
                                            kind.as_str(),
                                            "singleton" | "stream" | "chunked"
                                        ) {
                                            return invalid(
                                                f,
                                                "expected singleton, stream or chunked",
                                            );
                                        }
                                    }
                                    "response_threshold" => {
                                        duration(f)?;
                                    }
                                    _ => return unknown(f),
                                }
                            }
                            let Some(mut export) = export else {
                                return invalid(e, "an export needs `stream` or `service`");
                            };
                            export.accounts = allowed;
                            config.exports.push(export);
                        }
                    }
                    "imports" => {
                        for x in maps(e)? {
                            config.imports.push(parse_import(e, x)?);
                        }
                    }
                    _ => return unknown(e),
                }
            }
            self.auth.accounts.push(config);
        }
        Ok(())
    }

    fn apply_authorization(&mut self, entries: &[Entry]) -> Result<(), ConfigError> {
        let mut user = None;
        let mut password = None;
        for e in entries {
            match e.key.as_str() {
                "user" | "username" => user = Some(string(e)?),
                "password" | "pass" => password = Some(string(e)?),
                "token" => self.auth.token = Some(Secret::new(&string(e)?)),
                "timeout" => self.auth_timeout = duration(e)?,
                "users" => {
                    let (users, nkeys) = parse_users(e)?;
                    self.auth.users.extend(users);
                    self.auth.nkeys.extend(nkeys);
                }
                _ => return unknown(e),
            }
        }
        if let Some(name) = user {
            self.auth.users.push(User {
                name,
                account: None,
                password: Secret::new(password.as_deref().unwrap_or("")),
                permissions: None,
            });
        }
        Ok(())
    }

    fn apply_cluster(&mut self, entries: &[Entry]) -> Result<(), ConfigError> {
        for e in entries {
            match e.key.as_str() {
                "name" => self.cluster.name = Some(string(e)?),
                "listen" => self.cluster.listen = Some(string(e)?),
                "host" => {
                    let (_, port) = self.cluster.listen_parts();
                    self.cluster.listen = Some(format!("{}:{port}", string(e)?));
                }
                "port" => {
                    let (host, _) = self.cluster.listen_parts();
                    self.cluster.listen = Some(format!("{host}:{}", size(e)?));
                }
                "routes" => self.cluster.routes = string_list(e)?,
                "sync_interest" => self.cluster.sync_interest = boolean(e)?,
                "sync_timeout" => self.cluster.sync_timeout = duration(e)?,
                "queue_prefer_local" => self.cluster.queue_prefer_local = boolean(e)?,
                "advertise" | "cluster_advertise" => self.cluster.advertise = Some(string(e)?),
                "write_deadline" => self.cluster.write_deadline = Some(positive_duration(e)?),
                "write_timeout" => self.write_timeout(e, "routes")?,
                // Shoal always backs off between redials (with jitter).
                "connect_backoff" => {
                    boolean(e)?;
                }
                // One link per pair of nodes is Shoal's design (shards share
                // it); a pool size is accepted and noted.
                "pool_size" => {
                    let n = size(e)?;
                    if n > 1 {
                        self.notices.push(format!(
                            "line {}: cluster pool_size {n}: Shoal keeps one route link per pair of nodes, shared by its shards",
                            e.line
                        ));
                    }
                }
                "compression" => match &e.value {
                    Value::Bool(false) => {}
                    Value::String(s) if s.eq_ignore_ascii_case("off") || s.eq_ignore_ascii_case("disabled") => {}
                    _ => self.notices.push(format!(
                        "line {}: cluster compression is not supported: route links are not compressed",
                        e.line
                    )),
                },
                "tls" => self.cluster.tls = Some(tls_block(map(e)?)?),
                "authorization" => {
                    for a in map(e)? {
                        match a.key.as_str() {
                            "user" | "username" => self.cluster.user = Some(string(a)?),
                            "password" | "pass" => self.cluster.password = Some(string(a)?),
                            "timeout" => self.cluster.auth_timeout = Some(duration(a)?),
                            _ => return unknown(a),
                        }
                    }
                }
                _ => return unknown(e),
            }
        }
        Ok(())
    }
}

/// The maps of a list (`exports: [ {stream: ...}, ... ]`).
fn maps(e: &Entry) -> Result<Vec<&[Entry]>, ConfigError> {
    let Value::Array(items) = &e.value else {
        return invalid(e, "expected a list");
    };
    items
        .iter()
        .map(|i| match i {
            Value::Map(m) => Ok(m.as_slice()),
            _ => invalid(e, "expected a list of { ... }"),
        })
        .collect()
}

/// `{stream: {account: A, subject: S}, prefix: P}` or
/// `{service: {account: A, subject: S}, to: T}`.
fn parse_import(list: &Entry, fields: &[Entry]) -> Result<Import, ConfigError> {
    let mut import: Option<Import> = None;
    let mut local = None;
    for f in fields {
        match f.key.as_str() {
            "stream" | "service" => {
                let mut account = None;
                let mut subject = None;
                for g in map(f)? {
                    match g.key.as_str() {
                        "account" => account = Some(string(g)?),
                        "subject" => subject = Some(string(g)?),
                        _ => return unknown(g),
                    }
                }
                let (Some(account), Some(subject)) = (account, subject) else {
                    return invalid(f, "needs account and subject");
                };
                import = Some(Import {
                    service: f.key == "service",
                    account,
                    subject,
                    local: None,
                });
            }
            "prefix" | "to" => local = Some(string(f)?),
            _ => return unknown(f),
        }
    }
    let Some(mut import) = import else {
        return invalid(list, "an import needs stream or service");
    };
    import.local = local;
    Ok(import)
}

/// An operator given as a JWT, or as the path of a file holding one (as
/// `nsc` writes it, possibly between `-----BEGIN ... JWT-----` lines).
fn operator_jwt(e: &Entry, item: &str) -> Result<String, ConfigError> {
    let item = item.trim();
    if item.starts_with("eyJ") {
        return Ok(item.to_owned());
    }
    let text = std::fs::read_to_string(item)
        .or_else(|err| invalid(e, format!("cannot read operator JWT file {item:?}: {err}")))?;
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("eyJ"))
        .map(str::to_owned)
        .map_or_else(
            || invalid(e, format!("no JWT in operator file {item:?}")),
            Ok,
        )
}

/// `users: [ {user: ..., password: ..., permissions: {...}}, {nkey: U...}, ... ]`:
/// password users and nkey users.
fn parse_users(e: &Entry) -> Result<(Vec<User>, Vec<NkeyUser>), ConfigError> {
    let Value::Array(items) = &e.value else {
        return invalid(e, "expected a list of users");
    };
    let mut users = Vec::new();
    let mut nkeys = Vec::new();
    for item in items {
        match item {
            Value::Map(fields) => match parse_user(e, fields)? {
                Ok(u) => users.push(u),
                Err(n) => nkeys.push(n),
            },
            _ => return invalid(e, "expected {user: ..., password: ...}"),
        }
    }
    Ok((users, nkeys))
}

/// A password user, or (`Err`) an nkey user.
fn parse_user(list: &Entry, fields: &[Entry]) -> Result<Result<User, NkeyUser>, ConfigError> {
    let mut name = None;
    let mut password = None;
    let mut nkey = None;
    let mut permissions = None;
    for f in fields {
        match f.key.as_str() {
            "user" | "username" => name = Some(string(f)?),
            "password" | "pass" => password = Some(string(f)?),
            "nkey" => nkey = Some(string(f)?),
            "permissions" => permissions = Some(parse_permissions(map(f)?)?),
            _ => return unknown(f),
        }
    }
    if let Some(key) = nkey {
        if name.is_some() || password.is_some() {
            return invalid(list, "an nkey user has no 'user' or 'password'");
        }
        return Ok(Err(NkeyUser {
            key,
            account: None,
            permissions,
        }));
    }
    let Some(name) = name else {
        return invalid(list, "a user entry has no 'user'");
    };
    Ok(Ok(User {
        name,
        account: None,
        password: Secret::new(password.as_deref().unwrap_or("")),
        permissions,
    }))
}

fn parse_permissions(fields: &[Entry]) -> Result<Permissions, ConfigError> {
    let mut p = Permissions::default();
    for f in fields {
        match f.key.as_str() {
            "publish" | "pub" => p.publish = parse_subject_permission(f)?,
            "subscribe" | "sub" => p.subscribe = parse_subject_permission(f)?,
            "allow_responses" => {
                p.allow_responses = match &f.value {
                    Value::Bool(false) => None,
                    Value::Bool(true) => Some(ResponsePermission::default()),
                    Value::Map(m) => {
                        let mut rp = ResponsePermission::default();
                        for r in m {
                            match r.key.as_str() {
                                "max" | "max_msgs" => rp.max_msgs = size(r)?,
                                "expires" | "ttl" => {
                                    let d = duration(r)?;
                                    rp.expires = (!d.is_zero()).then_some(d);
                                }
                                _ => return unknown(r),
                            }
                        }
                        Some(rp)
                    }
                    _ => return invalid(f, "expected true, false or {max, expires}"),
                }
            }
            _ => return unknown(f),
        }
    }
    Ok(p)
}

/// `publish: "foo"`, `publish: ["a", "b"]` (allow lists) or
/// `publish: { allow: [...], deny: [...] }`.
fn parse_subject_permission(e: &Entry) -> Result<SubjectPermission, ConfigError> {
    match &e.value {
        Value::Map(m) => {
            let mut sp = SubjectPermission::default();
            for f in m {
                match f.key.as_str() {
                    "allow" => sp.allow = Some(string_list(f)?),
                    "deny" => sp.deny = string_list(f)?,
                    _ => return unknown(f),
                }
            }
            Ok(sp)
        }
        _ => Ok(SubjectPermission {
            allow: Some(string_list(e)?),
            deny: Vec::new(),
        }),
    }
}

#[cfg(test)]
mod tests;
