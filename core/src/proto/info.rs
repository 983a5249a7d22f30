//! The JSON documents of the protocol: `INFO` (server → client) and
//! `CONNECT` (client → server), with nats-server's field names and defaults.

use serde::{Deserialize, Serialize};

fn is_false(b: &bool) -> bool {
    !*b
}

fn yes() -> bool {
    true
}

/// The `INFO` document. Field names are nats-server's, so every client reads
/// it; optional fields are left out when unset, as nats-server does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerInfo {
    pub server_id: String,
    pub server_name: String,
    pub version: String,
    pub proto: u32,
    pub host: String,
    pub port: u16,
    pub headers: bool,
    pub max_payload: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub auth_required: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub tls_required: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub tls_verify: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connect_urls: Vec<String>,
    /// Lame duck mode: the server is about to go away; clients should move.
    #[serde(skip_serializing_if = "is_false")]
    pub ldm: bool,
    /// Shoal's own version (`version` is the nats-server release whose
    /// client-visible behaviour Shoal implements; clients gate features on
    /// it). Absent from nats-server's INFO.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shoal_version: Option<String>,
    /// Random text the client signs with its nkey (sent when nkey users or
    /// operator mode are configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// The `CONNECT` document. Options a client leaves out take nats-server's
/// defaults: `verbose`, `pedantic` and `echo` on, everything else off.
///
/// `Debug` shows whether a password or token was given, never its value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectOptions {
    pub verbose: bool,
    pub pedantic: bool,
    pub tls_required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub protocol: u32,
    #[serde(default = "yes")]
    pub echo: bool,
    pub headers: bool,
    pub no_responders: bool,
    /// A user JWT (operator mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<String>,
    /// The client's public nkey (nkey users).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nkey: Option<String>,
    /// The signature of the server's nonce by the nkey or the JWT's user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "[REDACTED]");
        f.debug_struct("ConnectOptions")
            .field("verbose", &self.verbose)
            .field("pedantic", &self.pedantic)
            .field("tls_required", &self.tls_required)
            .field("auth_token", &secret(&self.auth_token))
            .field("user", &self.user)
            .field("pass", &secret(&self.pass))
            .field("name", &self.name)
            .field("lang", &self.lang)
            .field("version", &self.version)
            .field("protocol", &self.protocol)
            .field("echo", &self.echo)
            .field("headers", &self.headers)
            .field("no_responders", &self.no_responders)
            .field("jwt", &secret(&self.jwt))
            .field("nkey", &self.nkey)
            .field("sig", &secret(&self.sig))
            .finish()
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            verbose: true,
            pedantic: true,
            tls_required: false,
            auth_token: None,
            user: None,
            pass: None,
            name: None,
            lang: None,
            version: None,
            protocol: 0,
            echo: yes(),
            headers: false,
            no_responders: false,
            jwt: None,
            nkey: None,
            sig: None,
        }
    }
}

impl ConnectOptions {
    /// Parses the JSON of a `CONNECT`; unknown fields are ignored (clients
    /// send newer fields).
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password_or_token() {
        let c =
            ConnectOptions::from_json(br#"{"user":"a","pass":"s3cret-p","auth_token":"s3cret-t"}"#)
                .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("\"a\""), "{shown}");
    }

    #[test]
    fn connect_defaults_match_nats_server() {
        let c = ConnectOptions::from_json(b"{}").unwrap();
        assert!(c.verbose && c.pedantic && c.echo);
        assert!(!c.headers && !c.no_responders);
        let c = ConnectOptions::from_json(
            br#"{"verbose":false,"pedantic":false,"echo":false,"headers":true,"no_responders":true,"user":"a","pass":"b","sig":"x","protocol":1}"#,
        )
        .unwrap();
        assert!(!c.verbose && !c.pedantic && !c.echo && c.headers && c.no_responders);
        assert_eq!(c.user.as_deref(), Some("a"));
        assert_eq!(c.protocol, 1);
        assert!(ConnectOptions::from_json(b"{not json").is_err());
    }

    #[test]
    fn info_leaves_out_unset_fields() {
        let info = ServerInfo {
            server_id: "ID".into(),
            proto: 1,
            headers: true,
            ..Default::default()
        };
        let json = serde_json::to_string(&info).unwrap();
        assert!(!json.contains("auth_required"));
        assert!(!json.contains("ldm"));
        assert!(json.contains("\"headers\":true"));
        let info = ServerInfo {
            auth_required: true,
            ldm: true,
            connect_urls: vec!["127.0.0.1:4222".into()],
            ..info
        };
        let json = serde_json::to_string(&info).unwrap();
        assert!(json.contains("\"auth_required\":true"));
        assert!(json.contains("\"ldm\":true"));
        let back: ServerInfo = serde_json::from_str(&json).unwrap();
        assert_eq!(back, info);
    }
}
