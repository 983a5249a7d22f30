//! Message tracing, as nats-server 2.11 defines it: a message published
//! with the header `Nats-Trace-Dest: <subject>` makes every server on its
//! path publish one JSON event to that subject, saying where the message
//! came in (ingress) and where it went or why it did not (egress), per
//! subscription and per route. `Nats-Trace-Only: true` traces without
//! delivering. The event format is nats-server's (`MsgTraceEvent`), so the
//! tools that read its events (`nats trace`, the Go `MsgTraceEvent` type)
//! read Shoal's.
//!
//! This module is the pure part: recognising a trace request in a header
//! block, the hop header, and the event document. Time is a parameter; the
//! runtime records what happened and when.

use crate::proto::Headers;
use bytes::Bytes;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::SystemTime;

/// The header asking for a trace: the subject events are published to.
pub const DEST: &str = "Nats-Trace-Dest";
/// Set by the server on a traced message it forwards over a route: which
/// egress of the previous server's event this server's event follows.
pub const HOP: &str = "Nats-Trace-Hop";
/// `true`, `1` or `on`: trace without delivering to subscribers.
pub const ONLY: &str = "Nats-Trace-Only";

/// nats-server's connection kinds, as numbered in trace events.
pub const KIND_CLIENT: u8 = 0;
pub const KIND_ROUTER: u8 = 1;

/// The account of connections and messages outside any configured account.
pub const DEFAULT_ACCOUNT: &str = "$G";

/// Why a matching subscription did not get a traced message
/// (nats-server's texts).
pub const NOT_DELIVERED_NO_ECHO: &str = "Not delivered because of no echo";
pub const NOT_DELIVERED_SUB_DENY: &str = "Not delivered because subscription denies this subject";
pub const NOT_DELIVERED_CLIENT_CLOSED: &str = "Not delivered because client is closed";
pub const NOT_DELIVERED_AUTO_UNSUB: &str = "Not delivered because auto-unsubscribe exceeded";

/// The fast test made on every message that carries headers: whether the
/// block has a `Nats-Trace-Dest` line. A header line always follows a CRLF
/// (the block starts with `NATS/1.0`), so the key is matched at a line
/// start, case-sensitively, as nats-server matches it.
pub fn requested(block: &[u8]) -> bool {
    memchr::memmem::find(block, b"\r\nNats-Trace-Dest:").is_some()
}

/// What a traced message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceRequest {
    /// Where the events go.
    pub dest: String,
    /// Trace without delivering.
    pub only: bool,
    /// The hop this server is on (`Nats-Trace-Hop`, set by the server that
    /// routed it here), `None` on the first server.
    pub hop: Option<String>,
    /// Every header of the message, keys in Go's canonical form (as
    /// nats-server reports them).
    pub header: BTreeMap<String, Vec<String>>,
}

impl TraceRequest {
    /// Reads the trace request of a header block; `None` when the block
    /// asks for none, or cannot be read (nats-server does not trace what it
    /// cannot parse either).
    pub fn parse(block: &[u8]) -> Option<Self> {
        if !requested(block) {
            return None;
        }
        let headers = Headers::parse(block).ok()?;
        let dest = headers.get(DEST)?.trim();
        if dest.is_empty() {
            return None;
        }
        let only = headers
            .get(ONLY)
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "on"));
        let hop = headers.get(HOP).map(str::to_owned);
        let mut header: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in headers.entries() {
            header
                .entry(canonical_key(k))
                .or_default()
                .push(v.to_owned());
        }
        Some(TraceRequest {
            dest: dest.to_owned(),
            only,
            hop,
            header,
        })
    }

    /// The hop id of the `n`th route egress of this server's event
    /// (`1`, `2`, ... on the first server; `1.1`, `1.2`, ... after hop `1`).
    pub fn hop_id(&self, n: u32) -> String {
        hop_id(self.hop.as_deref(), n)
    }
}

/// The id of the `n`th route egress of a server that is on hop `hop`.
pub fn hop_id(hop: Option<&str>, n: u32) -> String {
    match hop {
        Some(h) => format!("{h}.{n}"),
        None => n.to_string(),
    }
}

/// The header block of a traced message forwarded on hop `hop`.
pub fn with_hop(block: &[u8], hop: &str) -> Option<Bytes> {
    let mut h = Headers::parse(block).ok()?;
    h.set(HOP, hop).ok()?;
    Some(h.to_bytes())
}

/// Go's `textproto.CanonicalMIMEHeaderKey`: the first letter and every
/// letter after a hyphen upper case, the others lower case; a key with a
/// character outside a token is left as it is.
pub fn canonical_key(key: &str) -> String {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !key.bytes().all(token) {
        return key.to_owned();
    }
    let mut upper = true;
    key.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// The server part of an event (nats-server's `ServerInfo`).
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    pub name: String,
    pub host: String,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub ver: String,
    pub jetstream: bool,
    pub flags: u64,
    pub seq: u64,
    pub time: String,
}

/// What the traced message was (`MsgTraceRequest`).
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub header: BTreeMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "is_zero")]
    pub msgsize: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// One server's event (`MsgTraceEvent`).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub server: ServerInfo,
    pub request: Request,
    /// Route egresses of this event: how many events of the next servers
    /// to expect.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub hops: u32,
    pub events: Vec<Entry>,
}

/// One step of a message through a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type")]
pub enum Entry {
    #[serde(rename = "in")]
    Ingress {
        ts: String,
        kind: u8,
        cid: u64,
        #[serde(skip_serializing_if = "String::is_empty")]
        name: String,
        acc: String,
        subj: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A stream export copied the message into the importing account
    /// (`acc`) as `to`.
    #[serde(rename = "se")]
    StreamExport { ts: String, acc: String, to: String },
    /// A service import sent the request published on `from` into the
    /// exporting account (`acc`) as `to`.
    #[serde(rename = "si")]
    ServiceImport {
        ts: String,
        acc: String,
        from: String,
        to: String,
    },
    #[serde(rename = "eg")]
    Egress {
        ts: String,
        kind: u8,
        cid: u64,
        #[serde(skip_serializing_if = "String::is_empty")]
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        hop: Option<String>,
        /// Only when it differs from the ingress account (a service
        /// import or stream export moved the message).
        #[serde(skip_serializing_if = "Option::is_none")]
        acc: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        sub: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        queue: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// nats-server's timestamp form (RFC 3339, UTC, nanoseconds).
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_nanos(at).to_string()
}

impl Event {
    /// The document published to the trace destination.
    pub fn to_json(&self) -> Vec<u8> {
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_vec(self).expect("a trace event serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &[u8] =
        b"NATS/1.0\r\nNats-Trace-Dest: my.trace\r\nx-app: 1\r\nX-App: 2\r\nNats-Trace-Only: On\r\n\r\n";

    #[test]
    fn a_request_is_read_with_canonical_keys() {
        assert!(requested(BLOCK));
        let r = TraceRequest::parse(BLOCK).unwrap();
        assert_eq!(r.dest, "my.trace");
        assert!(r.only);
        assert_eq!(r.hop, None);
        assert_eq!(r.header["X-App"], ["1", "2"]);
        assert_eq!(r.header["Nats-Trace-Dest"], ["my.trace"]);
        assert_eq!(r.hop_id(2), "2");
    }

    #[test]
    fn no_request_without_the_header_at_a_line_start() {
        assert!(!requested(b"NATS/1.0\r\nX: 1\r\n\r\n"));
        assert!(!requested(b"NATS/1.0\r\nX-Nats-Trace-Dest: a\r\n\r\n"));
        assert!(!requested(b"NATS/1.0\r\nnats-trace-dest: a\r\n\r\n"));
        assert_eq!(
            TraceRequest::parse(b"NATS/1.0\r\nNats-Trace-Dest: \r\n\r\n"),
            None
        );
        let r =
            TraceRequest::parse(b"NATS/1.0\r\nNats-Trace-Dest: t\r\nNats-Trace-Only: no\r\n\r\n")
                .unwrap();
        assert!(!r.only);
    }

    #[test]
    fn the_hop_header_is_set_and_extended() {
        let block = with_hop(BLOCK, "1").unwrap();
        let r = TraceRequest::parse(&block).unwrap();
        assert_eq!(r.hop.as_deref(), Some("1"));
        assert_eq!(r.hop_id(3), "1.3");
        let again = with_hop(&block, "1.3").unwrap();
        let r = TraceRequest::parse(&again).unwrap();
        assert_eq!(r.header["Nats-Trace-Hop"], ["1.3"]);
    }

    #[test]
    fn canonical_keys_follow_go() {
        assert_eq!(canonical_key("nats-trace-dest"), "Nats-Trace-Dest");
        assert_eq!(canonical_key("X-APP"), "X-App");
        assert_eq!(canonical_key("a b"), "a b");
    }

    #[test]
    fn the_event_document_has_nats_server_field_names() {
        let e = Event {
            server: ServerInfo {
                name: "n1".into(),
                host: "127.0.0.1".into(),
                id: "ID".into(),
                cluster: None,
                ver: "2.11.0".into(),
                jetstream: false,
                flags: 0,
                seq: 1,
                time: "t".into(),
            },
            request: Request {
                header: TraceRequest::parse(BLOCK).unwrap().header,
                msgsize: 42,
            },
            hops: 1,
            events: vec![
                Entry::Ingress {
                    ts: "t".into(),
                    kind: KIND_CLIENT,
                    cid: 5,
                    name: String::new(),
                    acc: DEFAULT_ACCOUNT.into(),
                    subj: "foo".into(),
                    error: None,
                },
                Entry::Egress {
                    ts: "t".into(),
                    kind: KIND_ROUTER,
                    cid: 7,
                    name: "n2".into(),
                    hop: Some("1".into()),
                    acc: None,
                    sub: None,
                    queue: None,
                    error: None,
                },
            ],
        };
        let v: serde_json::Value = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(v["hops"], 1);
        assert_eq!(v["request"]["msgsize"], 42);
        assert_eq!(v["events"][0]["type"], "in");
        assert_eq!(v["events"][0]["acc"], "$G");
        assert_eq!(v["events"][0]["subj"], "foo");
        assert!(v["events"][0].get("name").is_none());
        assert_eq!(v["events"][1]["type"], "eg");
        assert_eq!(v["events"][1]["kind"], 1);
        assert_eq!(v["events"][1]["hop"], "1");
        assert!(v["events"][1].get("sub").is_none());
        assert_eq!(v["server"]["jetstream"], false);
        assert!(v["server"].get("cluster").is_none());
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        assert_eq!(timestamp(t), "1970-01-01T00:00:01.500000000Z");
    }
}
