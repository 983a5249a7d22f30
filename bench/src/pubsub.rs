//! P publishers → S subscribers on one subject (fan-out) throughput, with a
//! sequence number and the publisher's number in every payload, so loss and
//! reordering (per publisher) are counted, not assumed.

use crate::conn::Conn;
use shoal_core::proto::{self, ServerOp};
use std::io;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct PubSubParams {
    pub url: String,
    pub subject: String,
    pub publishers: usize,
    pub subscribers: usize,
    pub size: usize,
    /// Messages per publisher.
    pub msgs: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PubSubResult {
    pub published: u64,
    pub publish_secs: f64,
    /// Messages delivered to all subscribers per second, first publish to
    /// last delivery.
    pub delivered_per_sec: f64,
    pub published_per_sec: f64,
    pub delivered_mb_per_sec: f64,
    pub lost: u64,
    pub out_of_order: u64,
    pub server_version: String,
}

/// `(sequence, publisher)` from a payload: bytes 0..8 and 8..12, when the
/// payload is long enough to carry them.
pub(crate) fn stamp_of(payload: &[u8]) -> Option<(u64, usize)> {
    let seq = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    let publisher = payload.get(8..12).map_or(0, |b| {
        u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize
    });
    Some((seq, publisher))
}

pub(crate) fn stamp(payload: &mut [u8], seq: u64, publisher: usize) {
    if payload.len() >= 8 {
        payload[..8].copy_from_slice(&seq.to_le_bytes());
    }
    if payload.len() >= 12 {
        payload[8..12].copy_from_slice(&(publisher as u32).to_le_bytes());
    }
}

pub fn run(p: &PubSubParams) -> io::Result<PubSubResult> {
    let publishers = p.publishers.max(1);
    let expected = p.msgs * publishers as u64;
    let ready = Arc::new(Barrier::new(p.subscribers + publishers + 1));
    let mut subs = Vec::new();
    for i in 0..p.subscribers {
        let mut c = Conn::connect(&p.url)?;
        c.subscribe(&p.subject, None, i as u64 + 1);
        c.ping()?;
        c.set_read_timeout(Duration::from_secs(5))?;
        let ready = ready.clone();
        subs.push(std::thread::spawn(move || -> io::Result<(u64, u64, Instant)> {
            ready.wait();
            let (mut got, mut disorder) = (0u64, 0u64);
            let mut next = vec![0u64; publishers];
            while got < expected {
                match c.next_op() {
                    Ok(ServerOp::Msg(m)) => {
                        if let Some((seq, from)) = stamp_of(&m.payload) {
                            if let Some(n) = next.get_mut(from) {
                                if seq != *n {
                                    disorder += 1;
                                }
                                *n = seq + 1;
                            }
                        }
                        got += 1;
                    }
                    Ok(ServerOp::Err(e)) => {
                        return Err(io::Error::other(String::from_utf8_lossy(&e).into_owned()));
                    }
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!(
                                "subscriber {i} disconnected after {got} messages (a slow consumer cut by the server?): {e}"
                            ),
                        ))
                    }
                }
            }
            Ok((got, disorder, Instant::now()))
        }));
    }
    let mut pubs = Vec::new();
    let mut version = String::new();
    for id in 0..publishers {
        let mut c = Conn::connect(&p.url)?;
        version = c.info.version.clone();
        let (ready, subject, size, msgs) = (ready.clone(), p.subject.clone(), p.size, p.msgs);
        pubs.push(std::thread::spawn(move || -> io::Result<()> {
            let mut payload = vec![0u8; size];
            ready.wait();
            for seq in 0..msgs {
                stamp(&mut payload, seq, id);
                proto::write_pub(&mut c.wbuf, subject.as_bytes(), None, None, &payload);
                if c.wbuf.len() >= 64 * 1024 {
                    c.flush()?;
                }
            }
            c.flush()?;
            c.ping()
        }));
    }
    // Subscriptions made on other connections must be visible to the
    // publishers' connections: the PING on each subscriber did that on
    // servers with that guarantee; give the others a moment too.
    std::thread::sleep(Duration::from_millis(50));
    ready.wait();
    let start = Instant::now();
    for t in pubs {
        t.join()
            .map_err(|_| io::Error::other("publisher panicked"))??;
    }
    let publish_secs = start.elapsed().as_secs_f64();
    let (mut lost, mut disorder, mut last) = (0, 0, start);
    for s in subs {
        let (got, d, t) = s
            .join()
            .map_err(|_| io::Error::other("subscriber panicked"))??;
        lost += expected - got;
        disorder += d;
        last = last.max(t);
    }
    let secs = (last - start).as_secs_f64().max(publish_secs);
    let delivered = (expected * p.subscribers as u64 - lost) as f64;
    Ok(PubSubResult {
        published: expected,
        publish_secs,
        delivered_per_sec: delivered / secs,
        published_per_sec: expected as f64 / secs,
        delivered_mb_per_sec: delivered * p.size as f64 / secs / 1e6,
        lost,
        out_of_order: disorder,
        server_version: version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let mut p = vec![0u8; 16];
        stamp(&mut p, 42, 3);
        assert_eq!(stamp_of(&p), Some((42, 3)));
        let mut short = vec![0u8; 8];
        stamp(&mut short, 7, 3);
        assert_eq!(stamp_of(&short), Some((7, 0)), "no room for the publisher");
        assert_eq!(stamp_of(&[1, 2, 3]), None);
    }
}
