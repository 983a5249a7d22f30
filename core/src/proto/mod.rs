//! The NATS client protocol: a streaming, zero-copy parser for both
//! directions, encoders, the `NATS/1.0` header block and the INFO/CONNECT
//! JSON documents.
//!
//! Everything here is I/O free: the runtime reads into a `BytesMut`, hands it
//! to a parser and writes what the encoders appended. Subjects and payloads
//! come out as `Bytes` slices of the read buffer (reference counted, never
//! copied), so a payload can be queued to many connections and shards without
//! a copy.

mod encode;
mod error;
pub mod headers;
mod info;
mod parser;

pub use encode::*;
pub use error::ProtoError;
pub use headers::{HeaderError, Headers};
pub use info::{ConnectOptions, ServerInfo};
pub use parser::{ClientParser, ServerParser};

use bytes::Bytes;

/// Default maximum length of a control line (nats-server's `max_control_line`).
pub const DEFAULT_MAX_CONTROL_LINE: usize = 4096;
/// Default maximum payload (nats-server's `max_payload`, 1 MiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
/// The largest `max_payload` a node may be configured with (nats-server's
/// ceiling, 64 MiB). Route frames are sized from it: a peer may forward any
/// message its own clients could publish, whatever this node's setting.
pub const MAX_PAYLOAD_LIMIT: usize = 64 * 1024 * 1024;

/// Parser limits. They come from configuration; the parser enforces them so a
/// hostile peer can never make a connection buffer grow without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest control line accepted, excluding the terminating CRLF.
    pub max_control_line: usize,
    /// Largest message (headers + payload) accepted.
    pub max_payload: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_control_line: DEFAULT_MAX_CONTROL_LINE,
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

/// A message as a client publishes it (`PUB` or `HPUB`). The same value is
/// what the runtime fans out, so it carries no per-recipient data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub subject: Bytes,
    pub reply: Option<Bytes>,
    /// The raw `NATS/1.0` header block for `HPUB` (including its final empty
    /// line), `None` for a plain `PUB`.
    pub headers: Option<Bytes>,
    pub payload: Bytes,
}

/// An operation a client sends to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    /// `CONNECT {json}`: the raw JSON; see [`ConnectOptions::from_json`].
    Connect(Bytes),
    /// `PUB` / `HPUB`.
    Pub(Publish),
    /// `SUB subject [queue] sid`.
    Sub {
        subject: Bytes,
        queue: Option<Bytes>,
        sid: Bytes,
    },
    /// `UNSUB sid [max]`.
    Unsub {
        sid: Bytes,
        max: Option<u64>,
    },
    Ping,
    Pong,
}

/// A message as the server delivers it (`MSG` or `HMSG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub subject: Bytes,
    pub sid: Bytes,
    pub reply: Option<Bytes>,
    pub headers: Option<Bytes>,
    pub payload: Bytes,
}

/// An operation the server sends to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp {
    /// `INFO {json}`: the raw JSON; see [`ServerInfo`].
    Info(Bytes),
    Msg(Delivery),
    /// `+OK`
    Ok,
    /// `-ERR 'text'`: the text without the quotes.
    Err(Bytes),
    Ping,
    Pong,
}
