//! The `NATS/1.0` header block carried by `HPUB`/`HMSG`.
//!
//! ```text
//! NATS/1.0[ status[ description]]\r\n
//! Key: value\r\n          (a key may repeat: multi-valued)
//! \r\n
//! ```
//!
//! The broker forwards header blocks untouched; it only builds one itself for
//! the no-responders status. This module is also what tests and shoal-bench use
//! to read and write headers.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

/// The header block nats-server sends to a requester when nobody is
/// subscribed to the request subject (`no_responders`).
pub const NO_RESPONDERS: &[u8] = b"NATS/1.0 503\r\n\r\n";

const VERSION_LINE: &[u8] = b"NATS/1.0";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HeaderError {
    #[error("header block does not start with NATS/1.0")]
    BadVersion,
    #[error("bad status code in header block")]
    BadStatus,
    #[error("header line without ':'")]
    BadLine,
    #[error("header block not terminated by an empty line")]
    Unterminated,
    #[error("header name or value contains a forbidden character")]
    Forbidden,
    #[error("header block is not UTF-8")]
    NotUtf8,
}

/// A parsed header block: optional status line and ordered (key, value)
/// pairs. Keys are compared case-sensitively, as nats-server and the
/// current clients do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    status: Option<u16>,
    description: Option<String>,
    entries: Vec<(String, String)>,
}

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// A block with a status line, e.g. `NATS/1.0 503`.
    pub fn with_status(status: u16, description: Option<&str>) -> Self {
        Headers {
            status: Some(status),
            description: description.map(str::to_owned),
            entries: Vec::new(),
        }
    }

    pub fn status(&self) -> Option<u16> {
        self.status
    }

    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Adds a value; a key may carry several values.
    pub fn append(&mut self, key: &str, value: &str) -> Result<(), HeaderError> {
        let bad_key = key.is_empty()
            || key
                .bytes()
                .any(|b| b == b':' || b.is_ascii_whitespace() || b.is_ascii_control());
        let bad_value = value.bytes().any(|b| b == b'\r' || b == b'\n');
        if bad_key || bad_value {
            return Err(HeaderError::Forbidden);
        }
        self.entries.push((key.to_owned(), value.to_owned()));
        Ok(())
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Replaces every value of `key` with one `value` (appended at the end
    /// when the key was absent, in place of its first occurrence otherwise).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), HeaderError> {
        match self.entries.iter().position(|(k, _)| k == key) {
            None => self.append(key, value),
            Some(first) => {
                if value.bytes().any(|b| b == b'\r' || b == b'\n') {
                    return Err(HeaderError::Forbidden);
                }
                self.entries[first].1 = value.to_owned();
                let mut i = 0;
                self.entries.retain(|(k, _)| {
                    i += 1;
                    i - 1 == first || k != key
                });
                Ok(())
            }
        }
    }

    /// Every (key, value) pair, in order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Parses a complete header block (as carried in `HMSG`).
    pub fn parse(block: &[u8]) -> Result<Self, HeaderError> {
        let text = std::str::from_utf8(block).map_err(|_| HeaderError::NotUtf8)?;
        let body = text
            .strip_suffix("\r\n\r\n")
            .ok_or(HeaderError::Unterminated)?;
        let mut lines = body.split("\r\n");
        let first = lines.next().unwrap_or_default();
        let rest = first
            .strip_prefix("NATS/1.0")
            .ok_or(HeaderError::BadVersion)?;
        let mut headers = Headers::new();
        let rest = rest.trim_start_matches([' ', '\t']);
        if !rest.is_empty() {
            let (code, desc) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
            if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HeaderError::BadStatus);
            }
            headers.status = Some(code.parse().map_err(|_| HeaderError::BadStatus)?);
            let desc = desc.trim();
            if !desc.is_empty() {
                headers.description = Some(desc.to_owned());
            }
        }
        for line in lines {
            let (k, v) = line.split_once(':').ok_or(HeaderError::BadLine)?;
            headers.append(k, v.trim_matches([' ', '\t']))?;
        }
        Ok(headers)
    }

    /// Appends the wire form of this block.
    pub fn write(&self, buf: &mut BytesMut) {
        buf.put_slice(VERSION_LINE);
        if let Some(status) = self.status {
            buf.put_u8(b' ');
            buf.put_slice(itoa::Buffer::new().format(status).as_bytes());
            if let Some(d) = &self.description {
                buf.put_u8(b' ');
                buf.put_slice(d.as_bytes());
            }
        }
        buf.put_slice(b"\r\n");
        for (k, v) in &self.entries {
            buf.put_slice(k.as_bytes());
            buf.put_slice(b": ");
            buf.put_slice(v.as_bytes());
            buf.put_slice(b"\r\n");
        }
        buf.put_slice(b"\r\n");
    }

    /// The wire form as `Bytes`.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.write(&mut buf);
        buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_responders_block_parses_as_503() {
        let h = Headers::parse(NO_RESPONDERS).unwrap();
        assert_eq!(h.status(), Some(503));
        assert!(h.is_empty());
        assert_eq!(
            Headers::with_status(503, None).to_bytes().as_ref(),
            NO_RESPONDERS
        );
    }

    #[test]
    fn multi_value_round_trip() {
        let mut h = Headers::with_status(408, Some("Request Timeout"));
        h.append("A", "1").unwrap();
        h.append("B", "x y").unwrap();
        h.append("A", "2").unwrap();
        let wire = h.to_bytes();
        assert_eq!(
            wire.as_ref(),
            b"NATS/1.0 408 Request Timeout\r\nA: 1\r\nB: x y\r\nA: 2\r\n\r\n"
        );
        let back = Headers::parse(&wire).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.get_all("A").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(back.get("B"), Some("x y"));
        assert_eq!(back.get("a"), None);
        assert_eq!(back.description(), Some("Request Timeout"));
    }

    #[test]
    fn set_replaces_every_value_in_place() {
        let mut h = Headers::new();
        h.append("A", "1").unwrap();
        h.append("B", "2").unwrap();
        h.append("A", "3").unwrap();
        h.set("A", "x").unwrap();
        assert_eq!(h.to_bytes().as_ref(), b"NATS/1.0\r\nA: x\r\nB: 2\r\n\r\n");
        h.set("C", "y").unwrap();
        assert_eq!(h.get("C"), Some("y"));
        assert_eq!(h.set("A", "\r\n"), Err(HeaderError::Forbidden));
        assert_eq!(h.entries().count(), 3);
    }

    #[test]
    fn errors() {
        assert_eq!(
            Headers::parse(b"HTTP/1.1\r\n\r\n"),
            Err(HeaderError::BadVersion)
        );
        assert_eq!(
            Headers::parse(b"NATS/1.0\r\nA: 1\r\n"),
            Err(HeaderError::Unterminated)
        );
        assert_eq!(
            Headers::parse(b"NATS/1.0 5x3\r\n\r\n"),
            Err(HeaderError::BadStatus)
        );
        assert_eq!(
            Headers::parse(b"NATS/1.0\r\nnocolon\r\n\r\n"),
            Err(HeaderError::BadLine)
        );
        assert_eq!(
            Headers::parse(b"NATS/1.0\r\n\xff: 1\r\n\r\n"),
            Err(HeaderError::NotUtf8)
        );
        let mut h = Headers::new();
        assert_eq!(h.append("a:b", "1"), Err(HeaderError::Forbidden));
        assert_eq!(h.append("a", "1\r\n"), Err(HeaderError::Forbidden));
        assert_eq!(h.append("", "1"), Err(HeaderError::Forbidden));
    }
}
