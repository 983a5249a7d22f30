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

    /// The line to log at `[ERR]` for this error, in nats-server's words
    /// (`processPub Bad or Missing Size: "x 999999999999"`), so an operator
    /// grepping for nats-server's messages finds a hostile or buggy client.
    /// `line` is the offending control line (what is left of the read buffer
    /// when the parser failed); at most [`LOG_SNIPPET`] bytes of it are shown.
    pub fn log_text(&self, line: &[u8]) -> String {
        let line = line
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .map_or(line, |end| &line[..end]);
        let snippet =
            |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(LOG_SNIPPET)]).into_owned();
        // The arguments: what follows the verb and its whitespace.
        let args = {
            let after_verb = line
                .iter()
                .position(|&b| b == b' ' || b == b'\t')
                .unwrap_or(line.len());
            let start = line[after_verb..]
                .iter()
                .position(|&b| b != b' ' && b != b'\t')
                .map_or(line.len(), |p| after_verb + p);
            snippet(&line[start..])
        };
        match self {
            ProtoError::BadSize { verb } => {
                format!("process{} Bad or Missing Size: {args:?}", op_name(verb))
            }
            ProtoError::HeaderTooLarge { .. } => {
                format!("processHeaderPub Bad or Missing Header Size: {args:?}")
            }
            ProtoError::BadArgs { verb } => {
                format!("process{} Parse Error: {args:?}", op_name(verb))
            }
            ProtoError::MaxPayload { size, max } => {
                format!("maximum payload exceeded: {size} vs {max}")
            }
            ProtoError::MaxControlLine { len, max } => {
                format!("maximum control line exceeded: {len} vs {max}")
            }
            ProtoError::UnknownOp | ProtoError::MissingTerminator => {
                format!("Client parser ERROR: proto={:?}", snippet(line))
            }
        }
    }
}

/// Longest piece of a client's bytes put in a log line (nats-server shows a
/// short snippet too): enough to recognise the client, not enough to flood.
pub const LOG_SNIPPET: usize = 64;

/// nats-server's name for the function that parses `verb`, as its log lines
/// say it (`processPub`, `processHeaderPub`, ...).
fn op_name(verb: &str) -> &'static str {
    match verb {
        "PUB" => "Pub",
        "HPUB" => "HeaderPub",
        "SUB" => "Sub",
        "UNSUB" => "Unsub",
        "MSG" => "Msg",
        "HMSG" => "HeaderMsg",
        _ => "Op",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_text_names_the_operation_and_quotes_the_arguments() {
        let e = ProtoError::BadSize { verb: "PUB" };
        assert_eq!(
            e.log_text(b"PUB x 999999999999999999999\r\nrest"),
            r#"processPub Bad or Missing Size: "x 999999999999999999999""#
        );
        let e = ProtoError::BadArgs { verb: "SUB" };
        assert_eq!(e.log_text(b"SUB\r\n"), r#"processSub Parse Error: """#);
        let e = ProtoError::UnknownOp;
        assert_eq!(
            e.log_text(b"FOO \"bar\"\r\n"),
            r#"Client parser ERROR: proto="FOO \"bar\"""#
        );
        let e = ProtoError::MaxPayload { size: 2, max: 1 };
        assert_eq!(e.log_text(b""), "maximum payload exceeded: 2 vs 1");
    }

    #[test]
    fn log_text_is_bounded() {
        let long = vec![b'x'; 10_000];
        let text = ProtoError::UnknownOp.log_text(&long);
        assert!(text.len() < LOG_SNIPPET + 40, "{text}");
    }
}
