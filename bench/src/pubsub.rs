//! Publisher → subscribers throughput, with a sequence number in every
//! payload so loss and reordering are counted, not assumed.

use crate::conn::Conn;
use shoal_core::proto::{self, ServerOp};
use std::io;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct PubSubParams {
    pub url: String,
    pub subject: String,
    pub subscribers: usize,
    pub size: usize,
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

fn seq_of(payload: &[u8]) -> Option<u64> {
    payload
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
}

pub fn run(p: &PubSubParams) -> io::Result<PubSubResult> {
    let ready = Arc::new(Barrier::new(p.subscribers + 1));
    let mut subs = Vec::new();
    for i in 0..p.subscribers {
        let mut c = Conn::connect(&p.url)?;
        c.subscribe(&p.subject, None, i as u64 + 1);
        c.ping()?;
        c.set_read_timeout(Duration::from_secs(5))?;
        let ready = ready.clone();
        let msgs = p.msgs;
        subs.push(std::thread::spawn(
            move || -> io::Result<(u64, u64, Instant)> {
                ready.wait();
                let mut got = 0u64;
                let mut disorder = 0u64;
                let mut expect = 0u64;
                while got < msgs {
                    match c.next_op() {
                        Ok(ServerOp::Msg(m)) => {
                            if let Some(seq) = seq_of(&m.payload) {
                                if seq != expect {
                                    disorder += 1;
                                }
                                expect = seq + 1;
                            }
                            got += 1;
                        }
                        Ok(ServerOp::Err(e)) => {
                            return Err(io::Error::other(String::from_utf8_lossy(&e).into_owned()));
                        }
                        Ok(_) => {}
                        Err(e)
                            if e.kind() == io::ErrorKind::WouldBlock
                                || e.kind() == io::ErrorKind::TimedOut =>
                        {
                            break
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok((got, disorder, Instant::now()))
            },
        ));
    }
    let mut publisher = Conn::connect(&p.url)?;
    // Subscriptions made on other connections must be visible to the
    // publisher's connection: a PING on each subscriber above did that on
    // servers with the PONG guarantee; give the others a moment too.
    std::thread::sleep(Duration::from_millis(50));
    let version = publisher.info.version.clone();
    let mut payload = vec![0u8; p.size];
    ready.wait();
    let start = Instant::now();
    let batch = (64 * 1024 / (p.size + p.subject.len() + 16)).max(1) as u64;
    let mut seq = 0u64;
    while seq < p.msgs {
        let end = (seq + batch).min(p.msgs);
        while seq < end {
            if p.size >= 8 {
                payload[..8].copy_from_slice(&seq.to_le_bytes());
            }
            proto::write_pub(
                &mut publisher.wbuf,
                p.subject.as_bytes(),
                None,
                None,
                &payload,
            );
            seq += 1;
        }
        publisher.flush()?;
    }
    publisher.ping()?;
    let publish_secs = start.elapsed().as_secs_f64();
    let mut lost = 0;
    let mut disorder = 0;
    let mut last = start;
    for s in subs {
        let (got, d, t) = s
            .join()
            .map_err(|_| io::Error::other("subscriber panicked"))??;
        lost += p.msgs - got;
        disorder += d;
        last = last.max(t);
    }
    let secs = (last - start).as_secs_f64().max(publish_secs);
    let delivered = (p.msgs * p.subscribers as u64 - lost) as f64;
    Ok(PubSubResult {
        published: p.msgs,
        publish_secs,
        delivered_per_sec: delivered / secs,
        published_per_sec: p.msgs as f64 / secs,
        delivered_mb_per_sec: delivered * p.size as f64 / secs / 1e6,
        lost,
        out_of_order: disorder,
        server_version: version,
    })
}
