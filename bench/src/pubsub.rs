//! P publishers → S subscribers on one subject (fan-out) throughput, with a
//! sequence number and the publisher's number in every payload, so loss and
//! reordering (per publisher) are counted, not assumed.

use crate::conn::Conn;
use crate::publish::{join_publishers, stamp_of, start_publishers};
use shoal_core::proto::ServerOp;
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

pub fn run(p: &PubSubParams) -> io::Result<PubSubResult> {
    let publishers = p.publishers.max(1);
    let expected = p.msgs * publishers as u64;
    let ready = Arc::new(Barrier::new(p.subscribers + publishers + 1));
    let (pub_url, sub_url) = crate::conn::endpoints(&p.url);
    let mut subs = Vec::new();
    for i in 0..p.subscribers {
        let mut c = Conn::connect(&sub_url)?;
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
    let (version, pubs) =
        start_publishers(&pub_url, &p.subject, publishers, p.size, p.msgs, &ready)?;
    // Subscriptions made on other connections must be visible to the
    // publishers' connections: the PING on each subscriber did that on
    // servers with that guarantee; give the others a moment too.
    crate::conn::settle(&p.url);
    ready.wait();
    let start = Instant::now();
    join_publishers(pubs)?;
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
