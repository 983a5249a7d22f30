use crate::subject::{is_routable, is_valid_pattern, is_valid_queue};
use bytes::{BufMut, Bytes, BytesMut};
use rkyv::rancor;
use rkyv::with::{InlineAsBox, Map};
use rkyv::{Archive, Deserialize, Serialize};
use thiserror::Error;

/// Bytes before a frame's payload: `u32` length, `u8` kind.
pub const FRAME_HEADER: usize = 5;

/// Route protocol version, sent in INFO; a peer with another major version is
/// refused.
pub const ROUTE_PROTO: u32 = 1;

/// Room in a message frame for everything but headers and payload: subject,
/// reply, the names of the queue groups the sender picked the receiver for,
/// and the archive's own fields. The sender splits the queue names over
/// several frames rather than exceed it.
pub const MSG_OVERHEAD_LIMIT: usize = 1024 * 1024;

/// The largest frame payload a node sends or accepts: the largest message
/// any node may be configured to accept plus [`MSG_OVERHEAD_LIMIT`].
///
/// The limit is fixed by the protocol, not derived from either node's
/// `max_payload`: nodes with different settings (or one that raised its
/// setting by a reload) must not cut each other's links, because a route
/// carries any message its sender's clients were allowed to publish, as
/// nats-server's routes do. Senders never exceed it (interest frames are
/// cut by bytes, message frames split their queue names, and a message that
/// cannot fit even alone is refused and counted, not sent); a hostile peer
/// that announces a larger frame is cut, and one that announces a large
/// frame without sending it costs only what it sends ([`next_frame`]).
pub const MAX_FRAME: usize = crate::proto::MAX_PAYLOAD_LIMIT + MSG_OVERHEAD_LIMIT;

/// The size interest frames are cut at: far below [`MAX_FRAME`], so a
/// snapshot of any size arrives in frames a peer applies a bit at a time.
pub const INTEREST_FRAME_TARGET: usize = 64 * 1024;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// [`RouteInfo`]: first frame in each direction, and again whenever the
    /// sender's view of the cluster changes (gossip).
    Info = 1,
    /// [`InterestBatch`]: interest of the sender's own clients.
    Interest = 2,
    /// [`MsgFrame`]: one message for the receiver's local subscribers.
    Msg = 3,
    /// Keep-alive; answered with `Pong`. Empty payload.
    Ping = 4,
    Pong = 5,
    /// `u64` token: answered with `SyncAck` once everything before it was
    /// applied (strict interest mode).
    Sync = 6,
    SyncAck = 7,
    /// The full interest snapshot sent at link up is complete. Empty payload.
    SnapshotDone = 8,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<FrameKind> {
        Some(match b {
            1 => FrameKind::Info,
            2 => FrameKind::Interest,
            3 => FrameKind::Msg,
            4 => FrameKind::Ping,
            5 => FrameKind::Pong,
            6 => FrameKind::Sync,
            7 => FrameKind::SyncAck,
            8 => FrameKind::SnapshotDone,
            _ => return None,
        })
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("malformed {kind:?} frame: {reason}")]
    Malformed { kind: FrameKind, reason: String },
    /// A well-formed message this node does not accept (its subject, reply
    /// or a queue name breaks `is_routable`/`is_valid_queue`): the message is
    /// dropped and counted; the link stays up.
    #[error("message refused: {0}")]
    Refused(&'static str),
}

impl FrameError {
    /// Whether the link can go on after this error: only one message's
    /// content was at fault, not the framing or the archive.
    pub fn is_refused_message(&self) -> bool {
        matches!(self, FrameError::Refused(_))
    }
}

fn malformed(kind: FrameKind, reason: impl std::fmt::Display) -> FrameError {
    FrameError::Malformed {
        kind,
        reason: reason.to_string(),
    }
}

/// One frame cut from the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub body: Bytes,
}

/// Cuts the next complete frame off the front of `buf`. `Ok(None)` when more
/// bytes are needed. A length over `max` is refused before the payload is
/// buffered, so a hostile peer cannot make the buffer grow without bound.
pub fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
    if buf.len() < FRAME_HEADER {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let kind = FrameKind::from_u8(buf[4]).ok_or(FrameError::UnknownKind(buf[4]))?;
    if buf.len() < FRAME_HEADER + len {
        // Room for the rest, but never more than twice what has arrived
        // (at least 64 KiB): a header announcing a large frame costs memory
        // as its bytes come, not up front; growth stays geometric.
        let missing = FRAME_HEADER + len - buf.len();
        buf.reserve(missing.min(buf.len().max(64 * 1024)));
        return Ok(None);
    }
    let mut frame = buf.split_to(FRAME_HEADER + len);
    let _ = frame.split_to(FRAME_HEADER);
    Ok(Some(Frame {
        kind,
        body: frame.freeze(),
    }))
}

/// Appends a frame whose payload is already encoded.
pub fn write_frame(out: &mut BytesMut, kind: FrameKind, body: &[u8]) {
    out.reserve(FRAME_HEADER + body.len());
    out.put_u32_le(body.len() as u32);
    out.put_u8(kind as u8);
    out.put_slice(body);
}

/// rkyv's writer straight into the outbound buffer (positions count from the
/// payload's first byte): no scratch buffer, no second copy.
struct OutWriter {
    out: BytesMut,
    start: usize,
}

impl rkyv::ser::Positional for OutWriter {
    fn pos(&self) -> usize {
        self.out.len() - self.start
    }
}

impl<E> rkyv::ser::Writer<E> for OutWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

/// Appends a frame whose payload is `value` archived with rkyv.
fn write_archived<T>(out: &mut BytesMut, kind: FrameKind, value: &T)
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            OutWriter,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    let header = out.len();
    out.put_u32_le(0);
    out.put_u8(kind as u8);
    let start = out.len();
    // The writer takes the buffer by value (a pointer move, no copy) and
    // gives it back.
    let w = OutWriter {
        out: std::mem::take(out),
        start,
    };
    // Archiving these plain structs into memory has no failure mode (no
    // shared pointers; lengths are bounded by the payload limit, far below
    // u32). Should it ever fail, the buffer went with the writer: `out` is
    // left empty, which drops what was queued but keeps the stream framed.
    match rkyv::api::high::to_bytes_in::<_, rancor::Error>(value, w) {
        Ok(w) => {
            *out = w.out;
            let len = (out.len() - start) as u32;
            out[header..header + 4].copy_from_slice(&len.to_le_bytes());
        }
        Err(_) => debug_assert!(false, "archiving a route frame failed"),
    }
}

/// A node introducing itself (first frame each way) or updating its view of
/// the cluster (gossip).
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Default)]
pub struct RouteInfo {
    pub proto: u32,
    pub server_id: String,
    pub server_name: String,
    pub version: String,
    pub cluster: String,
    /// Where this node accepts routes (`nats://host:port`).
    pub route_url: String,
    /// Where this node accepts clients (`host:port`), for `connect_urls`.
    pub client_urls: Vec<String>,
    /// Route URLs of the peers this node is linked to (gossip).
    pub peers: Vec<String>,
    /// Credentials, from the dialing side, when the cluster requires them.
    pub user: Option<String>,
    pub pass: Option<String>,
    /// The sender is in lame duck mode (do not send it clients).
    pub lame_duck: bool,
}

impl std::fmt::Debug for RouteInfo {
    /// Everything but the password (never printed, even in debug logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteInfo")
            .field("proto", &self.proto)
            .field("server_id", &self.server_id)
            .field("server_name", &self.server_name)
            .field("version", &self.version)
            .field("cluster", &self.cluster)
            .field("route_url", &self.route_url)
            .field("client_urls", &self.client_urls)
            .field("peers", &self.peers)
            .field("user", &self.user)
            .field("pass", &self.pass.as_ref().map(|_| "[REDACTED]"))
            .field("lame_duck", &self.lame_duck)
            .finish()
    }
}

/// One interest change: `weight` is the number of the sender's subscribers
/// behind it (1 for a plain subject, the member count for a queue group);
/// 0 retracts it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct InterestOp {
    pub subject: Vec<u8>,
    pub queue: Option<Vec<u8>>,
    pub weight: u32,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct InterestBatch {
    pub ops: Vec<InterestOp>,
}

/// Bytes an archived fixed part may take (relative pointer and length per
/// slice, option tags, a `u32`): a generous upper bound, checked by tests.
const PER_FIELD: usize = 16;

impl InterestOp {
    /// An upper bound of the bytes this operation adds to an interest frame.
    pub fn encoded_bound(&self) -> usize {
        self.subject.len() + self.queue.as_ref().map_or(0, |q| q.len()) + 3 * PER_FIELD
    }
}

impl InterestBatch {
    /// An upper bound of this batch's frame payload.
    pub fn encoded_bound(&self) -> usize {
        PER_FIELD
            + self
                .ops
                .iter()
                .map(InterestOp::encoded_bound)
                .sum::<usize>()
    }
}

/// Cuts interest operations into batches whose frames take at most `target`
/// bytes each (by [`InterestBatch::encoded_bound`]), in order. An operation
/// larger than `target` by itself gets a batch of its own: the caller checks
/// such a batch against [`MAX_FRAME`] before sending it.
pub fn interest_batches(ops: Vec<InterestOp>, target: usize) -> Vec<InterestBatch> {
    let mut batches = Vec::new();
    let mut cur = InterestBatch::default();
    let mut size = PER_FIELD;
    for op in ops {
        let n = op.encoded_bound();
        if !cur.ops.is_empty() && size + n > target {
            batches.push(std::mem::take(&mut cur));
            size = PER_FIELD;
        }
        size += n;
        cur.ops.push(op);
    }
    if !cur.ops.is_empty() {
        batches.push(cur);
    }
    batches
}

/// A message for the receiver's subscribers, serialized from borrowed slices
/// (no copy into an owned struct on the send path).
#[derive(Archive, Serialize)]
pub struct MsgFrame<'a> {
    #[rkyv(with = InlineAsBox)]
    pub subject: &'a [u8],
    #[rkyv(with = Map<InlineAsBox>)]
    pub reply: Option<&'a [u8]>,
    #[rkyv(with = Map<InlineAsBox>)]
    pub headers: Option<&'a [u8]>,
    #[rkyv(with = InlineAsBox)]
    pub payload: &'a [u8],
    /// Deliver to the receiver's plain subscribers.
    pub plain: bool,
    /// Deliver to one member of each of these queue groups (the sender
    /// picked the receiver for them).
    #[rkyv(with = Map<InlineAsBox>)]
    pub queues: Vec<&'a [u8]>,
}

impl MsgFrame<'_> {
    /// An upper bound of this message's frame payload.
    pub fn encoded_bound(&self) -> usize {
        6 * PER_FIELD
            + self.subject.len()
            + self.reply.map_or(0, |r| r.len())
            + self.headers.map_or(0, |h| h.len())
            + self.payload.len()
            + self
                .queues
                .iter()
                .map(|q| q.len() + PER_FIELD)
                .sum::<usize>()
    }
}

/// How one message goes to one peer: `msg.queues` cut into runs (indices),
/// one frame each, so that every frame stays within `max` bytes by
/// [`MsgFrame::encoded_bound`]. The first frame also carries the plain
/// delivery; the others name queue groups only, so each group still gets
/// the message once. Without queue names there is one (empty) run. `None`
/// when the message cannot be sent within `max` at all (its subject, reply,
/// headers and payload alone, or with one of its queue names, are too
/// large): the caller refuses it rather than send what the peer must cut the
/// link for.
pub fn msg_queue_runs(msg: &MsgFrame<'_>, max: usize) -> Option<Vec<std::ops::Range<usize>>> {
    let name = |q: &&[u8]| q.len() + PER_FIELD;
    let fixed = msg.encoded_bound() - msg.queues.iter().map(name).sum::<usize>();
    let mut runs = Vec::new();
    let (mut start, mut size) = (0, fixed);
    for (i, q) in msg.queues.iter().enumerate() {
        let n = name(q);
        if fixed + n > max {
            return None;
        }
        if size + n > max {
            runs.push(start..i);
            (start, size) = (i, fixed);
        }
        size += n;
    }
    if fixed > max {
        return None;
    }
    runs.push(start..msg.queues.len());
    Some(runs)
}

/// A received message: slices of the frame, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMsg {
    pub subject: Bytes,
    pub reply: Option<Bytes>,
    pub headers: Option<Bytes>,
    pub payload: Bytes,
    pub plain: bool,
    pub queues: Vec<Bytes>,
}

pub fn write_info(out: &mut BytesMut, info: &RouteInfo) {
    write_archived(out, FrameKind::Info, info);
}

pub fn write_interest(out: &mut BytesMut, batch: &InterestBatch) {
    write_archived(out, FrameKind::Interest, batch);
}

pub fn write_msg(out: &mut BytesMut, msg: &MsgFrame<'_>) {
    write_archived(out, FrameKind::Msg, msg);
}

pub fn write_token(out: &mut BytesMut, kind: FrameKind, token: u64) {
    write_archived(out, kind, &token);
}

pub fn write_empty(out: &mut BytesMut, kind: FrameKind) {
    write_frame(out, kind, &[]);
}

pub fn decode_info(body: &[u8]) -> Result<RouteInfo, FrameError> {
    rkyv::from_bytes::<RouteInfo, rancor::Error>(body).map_err(|e| malformed(FrameKind::Info, e))
}

pub fn decode_interest(body: &[u8]) -> Result<InterestBatch, FrameError> {
    let k = FrameKind::Interest;
    let batch =
        rkyv::from_bytes::<InterestBatch, rancor::Error>(body).map_err(|e| malformed(k, e))?;
    for op in &batch.ops {
        if !is_valid_pattern(&op.subject) {
            return Err(malformed(k, "invalid subject"));
        }
        if op.queue.as_deref().is_some_and(|q| !is_valid_queue(q)) {
            return Err(malformed(k, "invalid queue group"));
        }
    }
    Ok(batch)
}

pub fn decode_msg(body: &Bytes) -> Result<RouteMsg, FrameError> {
    let k = FrameKind::Msg;
    let a =
        rkyv::access::<ArchivedMsgFrame<'_>, rancor::Error>(body).map_err(|e| malformed(k, e))?;
    let subject: &[u8] = a.subject.get();
    if !is_routable(subject) {
        return Err(FrameError::Refused("invalid subject"));
    }
    let reply = a.reply.as_ref().map(|r| r.get());
    if reply.is_some_and(|r| !is_routable(r)) {
        return Err(FrameError::Refused("invalid reply subject"));
    }
    let mut queues = Vec::with_capacity(a.queues.len());
    for q in a.queues.iter() {
        let q: &[u8] = q.get();
        if !is_valid_queue(q) {
            return Err(FrameError::Refused("invalid queue group"));
        }
        queues.push(body.slice_ref(q));
    }
    Ok(RouteMsg {
        subject: body.slice_ref(subject),
        reply: reply.map(|r| body.slice_ref(r)),
        headers: a.headers.as_ref().map(|h| body.slice_ref(h.get())),
        payload: body.slice_ref(a.payload.get()),
        plain: a.plain,
        queues,
    })
}

pub fn decode_token(kind: FrameKind, body: &[u8]) -> Result<u64, FrameError> {
    rkyv::from_bytes::<u64, rancor::Error>(body).map_err(|e| malformed(kind, e))
}

/// Checks that a frame meant to be empty is.
pub fn expect_empty(frame: &Frame) -> Result<(), FrameError> {
    if frame.body.is_empty() {
        Ok(())
    } else {
        Err(malformed(frame.kind, "unexpected payload"))
    }
}
