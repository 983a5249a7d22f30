//! Publishers: the `pub` scenario (P publishers, no subscribers: the rate a
//! server absorbs), and the publisher threads and payload stamps every
//! delivery scenario shares. Each publisher ends with a PING/PONG, so every
//! message it sent was processed.

use crate::conn::Conn;
use shoal_core::proto;
use std::io;
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct PubParams {
    pub url: String,
    pub subject: String,
    pub publishers: usize,
    pub size: usize,
    /// Messages per publisher.
    pub msgs: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PubResult {
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
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

/// Connects `publishers` connections and starts a thread for each that,
/// once `ready` is passed, sends `msgs` stamped messages of `size` bytes to
/// `subject` in 64 KiB writes and ends with PING/PONG. Returns the server
/// version (from INFO) and the threads.
pub(crate) fn start_publishers(
    url: &str,
    subject: &str,
    publishers: usize,
    size: usize,
    msgs: u64,
    ready: &Arc<Barrier>,
) -> io::Result<(String, Vec<JoinHandle<io::Result<()>>>)> {
    let mut version = String::new();
    let mut threads = Vec::with_capacity(publishers);
    for id in 0..publishers {
        let mut c = Conn::connect(url)?;
        version = c.server_version();
        let (ready, subject) = (ready.clone(), subject.to_owned());
        threads.push(std::thread::spawn(move || -> io::Result<()> {
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
    Ok((version, threads))
}

/// Waits for publisher threads; the first error wins.
pub(crate) fn join_publishers(threads: Vec<JoinHandle<io::Result<()>>>) -> io::Result<()> {
    for t in threads {
        t.join()
            .map_err(|_| io::Error::other("publisher panicked"))??;
    }
    Ok(())
}

pub fn run(p: &PubParams) -> io::Result<PubResult> {
    let ready = Arc::new(Barrier::new(p.publishers + 1));
    let (version, threads) =
        start_publishers(&p.url, &p.subject, p.publishers, p.size, p.msgs, &ready)?;
    ready.wait();
    let start = Instant::now();
    join_publishers(threads)?;
    let secs = start.elapsed().as_secs_f64();
    let total = p.msgs as f64 * p.publishers as f64;
    Ok(PubResult {
        msgs_per_sec: total / secs,
        mb_per_sec: total * p.size as f64 / secs / 1e6,
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
