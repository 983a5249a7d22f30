//! Streaming parsers for both directions of the protocol.
//!
//! Both work the same way: the caller appends whatever it read to a
//! `BytesMut` and calls `next` until it returns `Ok(None)`; every complete
//! operation is split off the front of the buffer, so what remains is always
//! the start of an incomplete one. State kept between calls is small: how far
//! the current control line was already scanned (so a line arriving byte by
//! byte is not rescanned from the start) and, once a `PUB`/`MSG` control line
//! was parsed, the header it announced while its payload is still in flight.
//! The result is therefore the same whatever the read boundaries are.
//!
//! Syntax follows nats-server's parser: verbs case-insensitive, arguments
//! separated by any run of spaces and tabs, lines ended by CRLF (a bare LF is
//! accepted too, as nats-server does), payloads followed by exactly CRLF.

use super::{ClientOp, Delivery, Limits, ProtoError, Publish, ServerOp};
use bytes::{Buf, Bytes, BytesMut};

/// Most arguments any verb takes (`HMSG subject sid reply hdr total`), plus
/// one so that "too many" is detected.
const MAX_ARGS: usize = 6;

/// A `PUB`/`MSG` control line whose message body has not fully arrived yet.
/// The line stays in the buffer (ranges below index into it) so that the
/// whole frame is split off in one piece once complete: one reference-count
/// increment for the frame, which then becomes the payload, plus one per
/// subject/reply slice.
#[derive(Debug)]
struct PendingMsg {
    /// Length of the control line including its terminator.
    line_len: usize,
    subject: (usize, usize),
    sid: Option<(usize, usize)>,
    reply: Option<(usize, usize)>,
    /// Header length for `HPUB`/`HMSG`.
    hdr: Option<usize>,
    total: usize,
}

/// A complete message frame and the parts of it.
struct Frame {
    subject: Bytes,
    sid: Option<Bytes>,
    reply: Option<Bytes>,
    headers: Option<Bytes>,
    payload: Bytes,
}

/// The direction-independent part: finding control lines and message bodies.
#[derive(Debug)]
struct Framer {
    limits: Limits,
    /// Bytes of the current (incomplete) control line already searched for LF.
    scanned: usize,
    pending: Option<PendingMsg>,
}

/// Where the next complete control line is in the buffer.
struct LineSpan {
    /// End of the line content (before CR LF).
    end: usize,
    /// Bytes to consume, including the line terminator.
    consumed: usize,
}

impl Framer {
    fn new(limits: Limits) -> Self {
        Framer {
            limits,
            scanned: 0,
            pending: None,
        }
    }

    fn find_line(&mut self, buf: &BytesMut) -> Result<Option<LineSpan>, ProtoError> {
        let max = self.limits.max_control_line;
        match memchr::memchr(b'\n', &buf[self.scanned..]) {
            Some(i) => {
                let nl = self.scanned + i;
                self.scanned = 0;
                let end = if nl > 0 && buf[nl - 1] == b'\r' {
                    nl - 1
                } else {
                    nl
                };
                if end > max {
                    return Err(ProtoError::MaxControlLine { len: end, max });
                }
                Ok(Some(LineSpan {
                    end,
                    consumed: nl + 1,
                }))
            }
            None => {
                // One byte of slack: the line may end in a CR whose LF is
                // still in flight. Past that it can only get longer.
                if buf.len() > max + 1 {
                    return Err(ProtoError::MaxControlLine {
                        len: buf.len(),
                        max,
                    });
                }
                self.scanned = buf.len();
                Ok(None)
            }
        }
    }

    /// Takes the pending message once all of it (and its CRLF) is buffered.
    fn take_frame(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtoError> {
        let Some(p) = &self.pending else {
            return Ok(None);
        };
        let body_end = p.line_len + p.total;
        if buf.len() < body_end + 2 {
            return Ok(None);
        }
        if &buf[body_end..body_end + 2] != b"\r\n" {
            return Err(ProtoError::MissingTerminator);
        }
        let p = self.pending.take().expect("checked above");
        let mut payload = buf.split_to(body_end + 2).freeze();
        let subject = slice(&payload, p.subject);
        let sid = p.sid.map(|r| slice(&payload, r));
        let reply = p.reply.map(|r| slice(&payload, r));
        payload.advance(p.line_len);
        payload.truncate(p.total);
        let headers = p.hdr.map(|h| payload.split_to(h));
        Ok(Some(Frame {
            subject,
            sid,
            reply,
            headers,
            payload,
        }))
    }

    fn check_size(&self, size: usize) -> Result<(), ProtoError> {
        if size > self.limits.max_payload {
            return Err(ProtoError::MaxPayload {
                size,
                max: self.limits.max_payload,
            });
        }
        Ok(())
    }
}

/// Splits `line[from..]` into whitespace separated argument ranges.
/// Returns the number found; more than `MAX_ARGS` is reported as `MAX_ARGS`.
fn split_args(line: &[u8], from: usize, out: &mut [(usize, usize); MAX_ARGS]) -> usize {
    let mut n = 0;
    let mut start = None;
    for (i, &b) in line.iter().enumerate().skip(from) {
        if b == b' ' || b == b'\t' {
            if let Some(s) = start.take() {
                out[n] = (s, i);
                n += 1;
                if n == MAX_ARGS {
                    return n;
                }
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out[n] = (s, line.len());
        n += 1;
    }
    n
}

/// Parses a size field: decimal digits only (no sign), as nats-server's
/// `parseSize`.
fn parse_size(digits: &[u8], verb: &'static str) -> Result<usize, ProtoError> {
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(ProtoError::BadSize { verb });
    }
    Ok(digits
        .iter()
        .fold(0usize, |acc, d| acc * 10 + usize::from(d - b'0')))
}

/// The verb at the start of a line and the offset where its arguments start.
fn verb(line: &[u8]) -> (&[u8], usize) {
    let end = memchr::memchr2(b' ', b'\t', line).unwrap_or(line.len());
    (&line[..end], end)
}

/// The rest of the line after the verb and the whitespace that follows it
/// (CONNECT/INFO JSON, -ERR text).
fn rest_offset(line: &[u8], after_verb: usize) -> usize {
    line[after_verb..]
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .map_or(line.len(), |p| after_verb + p)
}

fn slice(line: &Bytes, r: (usize, usize)) -> Bytes {
    line.slice(r.0..r.1)
}

/// Parses what a client sends: `CONNECT`, `PUB`, `HPUB`, `SUB`, `UNSUB`,
/// `PING`, `PONG`.
#[derive(Debug)]
pub struct ClientParser {
    framer: Framer,
}

impl ClientParser {
    pub fn new(limits: Limits) -> Self {
        ClientParser {
            framer: Framer::new(limits),
        }
    }

    pub fn limits(&self) -> Limits {
        self.framer.limits
    }

    /// Parses the next complete operation from the front of `buf`, removing
    /// its bytes. `Ok(None)` means more input is needed. After an error the
    /// stream cannot be resynchronised: close the connection.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<ClientOp>, ProtoError> {
        loop {
            if self.framer.pending.is_some() {
                return Ok(self.framer.take_frame(buf)?.map(|f| {
                    ClientOp::Pub(Publish {
                        subject: f.subject,
                        reply: f.reply,
                        headers: f.headers,
                        payload: f.payload,
                    })
                }));
            }
            let Some(span) = self.framer.find_line(buf)? else {
                return Ok(None);
            };
            let line = &buf[..span.end];
            let (v, after) = verb(line);
            let mut args = [(0, 0); MAX_ARGS];
            if v.eq_ignore_ascii_case(b"PUB") {
                let n = split_args(line, after, &mut args);
                let (subject, reply, size) = match n {
                    2 => (args[0], None, args[1]),
                    3 => (args[0], Some(args[1]), args[2]),
                    _ => return Err(ProtoError::BadArgs { verb: "PUB" }),
                };
                let total = parse_size(&line[size.0..size.1], "PUB")?;
                self.framer.check_size(total)?;
                self.framer.pending = Some(PendingMsg {
                    line_len: span.consumed,
                    subject,
                    sid: None,
                    reply,
                    hdr: None,
                    total,
                });
                continue;
            }
            if v.eq_ignore_ascii_case(b"HPUB") {
                let n = split_args(line, after, &mut args);
                let (subject, reply, hdr, size) = match n {
                    3 => (args[0], None, args[1], args[2]),
                    4 => (args[0], Some(args[1]), args[2], args[3]),
                    _ => return Err(ProtoError::BadArgs { verb: "HPUB" }),
                };
                let hdr = parse_size(&line[hdr.0..hdr.1], "HPUB")?;
                let total = parse_size(&line[size.0..size.1], "HPUB")?;
                if hdr > total {
                    return Err(ProtoError::HeaderTooLarge { hdr, total });
                }
                self.framer.check_size(total)?;
                self.framer.pending = Some(PendingMsg {
                    line_len: span.consumed,
                    subject,
                    sid: None,
                    reply,
                    hdr: Some(hdr),
                    total,
                });
                continue;
            }
            let op = if v.eq_ignore_ascii_case(b"PING") {
                buf.advance(span.consumed);
                ClientOp::Ping
            } else if v.eq_ignore_ascii_case(b"PONG") {
                buf.advance(span.consumed);
                ClientOp::Pong
            } else if v.eq_ignore_ascii_case(b"SUB") {
                let n = split_args(line, after, &mut args);
                let (subject, queue, sid) = match n {
                    2 => (args[0], None, args[1]),
                    3 => (args[0], Some(args[1]), args[2]),
                    _ => return Err(ProtoError::BadArgs { verb: "SUB" }),
                };
                let line = buf.split_to(span.consumed).freeze();
                ClientOp::Sub {
                    subject: slice(&line, subject),
                    queue: queue.map(|q| slice(&line, q)),
                    sid: slice(&line, sid),
                }
            } else if v.eq_ignore_ascii_case(b"UNSUB") {
                let n = split_args(line, after, &mut args);
                let max = match n {
                    1 => None,
                    2 => Some(parse_size(&line[args[1].0..args[1].1], "UNSUB")? as u64),
                    _ => return Err(ProtoError::BadArgs { verb: "UNSUB" }),
                };
                let line = buf.split_to(span.consumed).freeze();
                ClientOp::Unsub {
                    sid: slice(&line, args[0]),
                    max,
                }
            } else if v.eq_ignore_ascii_case(b"CONNECT") {
                let from = rest_offset(line, after);
                let line = buf.split_to(span.consumed).freeze();
                ClientOp::Connect(line.slice(from..span.end))
            } else {
                return Err(ProtoError::UnknownOp);
            };
            return Ok(Some(op));
        }
    }
}

/// Parses what a server sends: `INFO`, `MSG`, `HMSG`, `+OK`, `-ERR`, `PING`,
/// `PONG`. Used by shoal-bench and the tests.
#[derive(Debug)]
pub struct ServerParser {
    framer: Framer,
}

impl ServerParser {
    pub fn new(limits: Limits) -> Self {
        ServerParser {
            framer: Framer::new(limits),
        }
    }

    /// As [`ClientParser::next`].
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<ServerOp>, ProtoError> {
        loop {
            if self.framer.pending.is_some() {
                return Ok(self.framer.take_frame(buf)?.map(|f| {
                    ServerOp::Msg(Delivery {
                        subject: f.subject,
                        sid: f.sid.expect("MSG always has a sid"),
                        reply: f.reply,
                        headers: f.headers,
                        payload: f.payload,
                    })
                }));
            }
            let Some(span) = self.framer.find_line(buf)? else {
                return Ok(None);
            };
            let line = &buf[..span.end];
            let (v, after) = verb(line);
            let mut args = [(0, 0); MAX_ARGS];
            let is_msg = v.eq_ignore_ascii_case(b"MSG");
            if is_msg || v.eq_ignore_ascii_case(b"HMSG") {
                let n = split_args(line, after, &mut args);
                let verb = if is_msg { "MSG" } else { "HMSG" };
                let fixed = if is_msg { 3 } else { 4 };
                let reply = match n {
                    n if n == fixed => None,
                    n if n == fixed + 1 => Some(args[2]),
                    _ => return Err(ProtoError::BadArgs { verb }),
                };
                let sizes = &args[n - (fixed - 2)..n];
                let total_field = sizes[sizes.len() - 1];
                let total = parse_size(&line[total_field.0..total_field.1], verb)?;
                let hdr = if is_msg {
                    None
                } else {
                    let h = parse_size(&line[sizes[0].0..sizes[0].1], verb)?;
                    if h > total {
                        return Err(ProtoError::HeaderTooLarge { hdr: h, total });
                    }
                    Some(h)
                };
                self.framer.check_size(total)?;
                self.framer.pending = Some(PendingMsg {
                    line_len: span.consumed,
                    subject: args[0],
                    sid: Some(args[1]),
                    reply,
                    hdr,
                    total,
                });
                continue;
            }
            let op = if v.eq_ignore_ascii_case(b"PING") {
                buf.advance(span.consumed);
                ServerOp::Ping
            } else if v.eq_ignore_ascii_case(b"PONG") {
                buf.advance(span.consumed);
                ServerOp::Pong
            } else if v.eq_ignore_ascii_case(b"+OK") {
                buf.advance(span.consumed);
                ServerOp::Ok
            } else if v.eq_ignore_ascii_case(b"-ERR") {
                let mut from = rest_offset(line, after);
                let mut to = span.end;
                if to - from >= 2 && line[from] == b'\'' && line[to - 1] == b'\'' {
                    from += 1;
                    to -= 1;
                }
                let line = buf.split_to(span.consumed).freeze();
                ServerOp::Err(line.slice(from..to))
            } else if v.eq_ignore_ascii_case(b"INFO") {
                let from = rest_offset(line, after);
                let line = buf.split_to(span.consumed).freeze();
                ServerOp::Info(line.slice(from..span.end))
            } else {
                return Err(ProtoError::UnknownOp);
            };
            return Ok(Some(op));
        }
    }
}
