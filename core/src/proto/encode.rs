//! Encoders: append protocol frames to a `BytesMut`.
//!
//! Each encoder reserves the exact frame length once and appends in place, so
//! encoding never allocates beyond the growth of the caller's buffer. The
//! runtime keeps one outbound buffer per connection and appends every frame
//! for that connection to it, then writes it in one syscall.

use super::{ConnectOptions, ServerInfo};
use bytes::{BufMut, BytesMut};

/// Shorthand for frames without arguments.
pub const PING: &[u8] = b"PING\r\n";
pub const PONG: &[u8] = b"PONG\r\n";
pub const OK: &[u8] = b"+OK\r\n";

fn num_len(n: usize) -> usize {
    // Counting digits is cheaper than formatting twice.
    let mut len = 1;
    let mut v = n / 10;
    while v > 0 {
        len += 1;
        v /= 10;
    }
    len
}

fn put_num(buf: &mut BytesMut, n: usize) {
    buf.put_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `MSG subject sid [reply] size` or, when `headers` is set,
/// `HMSG subject sid [reply] hdr_size total_size`, then the body.
pub fn write_msg(
    buf: &mut BytesMut,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    headers: Option<&[u8]>,
    payload: &[u8],
) {
    let hdr_len = headers.map_or(0, <[u8]>::len);
    let total = hdr_len + payload.len();
    let verb: &[u8] = if headers.is_some() { b"HMSG " } else { b"MSG " };
    write_message_frame(
        buf,
        verb,
        subject,
        Some(sid),
        reply,
        headers,
        payload,
        hdr_len,
        total,
    );
}

/// Appends `PUB subject [reply] size` or `HPUB subject [reply] hdr total`,
/// then the body. Used by clients (shoal-bench, tests).
pub fn write_pub(
    buf: &mut BytesMut,
    subject: &[u8],
    reply: Option<&[u8]>,
    headers: Option<&[u8]>,
    payload: &[u8],
) {
    let hdr_len = headers.map_or(0, <[u8]>::len);
    let total = hdr_len + payload.len();
    let verb: &[u8] = if headers.is_some() { b"HPUB " } else { b"PUB " };
    write_message_frame(
        buf, verb, subject, None, reply, headers, payload, hdr_len, total,
    );
}

#[allow(clippy::too_many_arguments)]
fn write_message_frame(
    buf: &mut BytesMut,
    verb: &[u8],
    subject: &[u8],
    sid: Option<&[u8]>,
    reply: Option<&[u8]>,
    headers: Option<&[u8]>,
    payload: &[u8],
    hdr_len: usize,
    total: usize,
) {
    let len = verb.len()
        + subject.len()
        + sid.map_or(0, |s| s.len() + 1)
        + reply.map_or(0, |r| r.len() + 1)
        + headers.map_or(0, |_| num_len(hdr_len) + 1)
        + 1
        + num_len(total)
        + 2
        + total
        + 2;
    buf.reserve(len);
    buf.put_slice(verb);
    buf.put_slice(subject);
    buf.put_u8(b' ');
    if let Some(sid) = sid {
        buf.put_slice(sid);
        buf.put_u8(b' ');
    }
    if let Some(reply) = reply {
        buf.put_slice(reply);
        buf.put_u8(b' ');
    }
    if headers.is_some() {
        put_num(buf, hdr_len);
        buf.put_u8(b' ');
    }
    put_num(buf, total);
    buf.put_slice(b"\r\n");
    if let Some(h) = headers {
        buf.put_slice(h);
    }
    buf.put_slice(payload);
    buf.put_slice(b"\r\n");
}

/// Appends `-ERR 'text'`.
pub fn write_err(buf: &mut BytesMut, text: &str) {
    write_line(buf, b"-ERR '", text.as_bytes(), b"'");
}

/// Appends `head body tail CRLF`.
fn write_line(buf: &mut BytesMut, head: &[u8], body: &[u8], tail: &[u8]) {
    buf.reserve(head.len() + body.len() + tail.len() + 2);
    buf.put_slice(head);
    buf.put_slice(body);
    buf.put_slice(tail);
    buf.put_slice(b"\r\n");
}

/// Appends `INFO {json}`; the JSON is serialised straight into the buffer.
pub fn write_info(buf: &mut BytesMut, info: &ServerInfo) {
    write_json_line(buf, b"INFO ", info);
}

/// Appends `CONNECT {json}`.
pub fn write_connect(buf: &mut BytesMut, opts: &ConnectOptions) {
    write_json_line(buf, b"CONNECT ", opts);
}

fn write_json_line<T: serde::Serialize>(buf: &mut BytesMut, verb: &[u8], value: &T) {
    buf.put_slice(verb);
    // Serialising plain structs of strings, numbers and bools cannot fail.
    serde_json::to_writer(buf.writer(), value).expect("JSON of a plain struct");
    buf.put_slice(b"\r\n");
}

/// Appends `SUB subject [queue] sid`.
pub fn write_sub(buf: &mut BytesMut, subject: &[u8], queue: Option<&[u8]>, sid: &[u8]) {
    buf.reserve(subject.len() + queue.map_or(0, |q| q.len() + 1) + sid.len() + 8);
    buf.put_slice(b"SUB ");
    buf.put_slice(subject);
    buf.put_u8(b' ');
    if let Some(q) = queue {
        buf.put_slice(q);
        buf.put_u8(b' ');
    }
    buf.put_slice(sid);
    buf.put_slice(b"\r\n");
}

/// Appends `UNSUB sid [max]`.
pub fn write_unsub(buf: &mut BytesMut, sid: &[u8], max: Option<u64>) {
    buf.reserve(sid.len() + 30);
    buf.put_slice(b"UNSUB ");
    buf.put_slice(sid);
    if let Some(max) = max {
        buf.put_u8(b' ');
        buf.put_slice(itoa::Buffer::new().format(max).as_bytes());
    }
    buf.put_slice(b"\r\n");
}

impl super::ClientOp {
    /// Appends the wire form of this operation (what a client sends).
    pub fn write(&self, buf: &mut BytesMut) {
        use super::ClientOp::*;
        match self {
            Connect(json) => write_line(buf, b"CONNECT ", json, b""),
            Pub(p) => write_pub(
                buf,
                &p.subject,
                p.reply.as_deref(),
                p.headers.as_deref(),
                &p.payload,
            ),
            Sub {
                subject,
                queue,
                sid,
            } => write_sub(buf, subject, queue.as_deref(), sid),
            Unsub { sid, max } => write_unsub(buf, sid, *max),
            Ping => buf.put_slice(PING),
            Pong => buf.put_slice(PONG),
        }
    }
}

impl super::ServerOp {
    /// Appends the wire form of this operation (what a server sends).
    pub fn write(&self, buf: &mut BytesMut) {
        use super::ServerOp::*;
        match self {
            Info(json) => write_line(buf, b"INFO ", json, b""),
            Msg(m) => write_msg(
                buf,
                &m.subject,
                &m.sid,
                m.reply.as_deref(),
                m.headers.as_deref(),
                &m.payload,
            ),
            Ok => buf.put_slice(OK),
            Err(text) => write_line(buf, b"-ERR '", text, b"'"),
            Ping => buf.put_slice(PING),
            Pong => buf.put_slice(PONG),
        }
    }
}
