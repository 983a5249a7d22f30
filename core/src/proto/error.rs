//! Parser errors and the `-ERR` text nats-server sends for each.

use thiserror::Error;

/// Why a byte stream is not valid NATS protocol. Every variant is fatal for
/// the connection (nats-server closes on all of them); [`ProtoError::err_text`]
/// is what to send in the `-ERR` before closing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtoError {
    /// The verb is not one this side of the protocol accepts.
    #[error("unknown protocol operation")]
    UnknownOp,
    /// A control line longer than `max_control_line`.
    #[error("maximum control line exceeded: {len} > {max}")]
    MaxControlLine { len: usize, max: usize },
    /// A message larger than `max_payload`.
    #[error("maximum payload violation: {size} > {max}")]
    MaxPayload { size: usize, max: usize },
    /// A size, header size or max field that is not a decimal number.
    #[error("bad or missing size in {verb}")]
    BadSize { verb: &'static str },
    /// The header size of an `HPUB`/`HMSG` is larger than its total size.
    #[error("header size {hdr} larger than total size {total}")]
    HeaderTooLarge { hdr: usize, total: usize },
    /// Wrong number of arguments for the verb.
    #[error("wrong number of arguments for {verb}")]
    BadArgs { verb: &'static str },
    /// The payload was not followed by CRLF (the size field lied).
    #[error("message payload not terminated by CRLF")]
    MissingTerminator,
}

impl ProtoError {
    /// The text for `-ERR '<text>'`, exactly as nats-server sends it.
    ///
    /// nats-server closes a connection with a malformed argument list (bad
    /// size, wrong argument count, header larger than total) without sending
    /// anything; Shoal sends `'Unknown Protocol Operation'` first so the client
    /// learns why, which every NATS client already handles as a fatal error.
    pub fn err_text(&self) -> &'static str {
        match self {
            ProtoError::MaxControlLine { .. } => "maximum control line exceeded",
            ProtoError::MaxPayload { .. } => "Maximum Payload Violation",
            ProtoError::UnknownOp
            | ProtoError::BadSize { .. }
            | ProtoError::HeaderTooLarge { .. }
            | ProtoError::BadArgs { .. }
            | ProtoError::MissingTerminator => "Unknown Protocol Operation",
        }
    }
}
