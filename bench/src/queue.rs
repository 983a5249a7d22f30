//! P publishers to a queue group of Q members: every message must reach
//! exactly one member. Reports throughput, duplicates, missing messages and
//! how evenly the group shared the load.

use crate::conn::Conn;
use crate::publish::{join_publishers, stamp_of, start_publishers};
use shoal_core::proto::ServerOp;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct QueueParams {
    pub url: String,
    pub subject: String,
    pub publishers: usize,
    pub members: usize,
    /// At least 12: the payload carries the sequence and publisher numbers.
    pub size: usize,
    /// Messages per publisher.
    pub msgs: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueResult {
    pub delivered_per_sec: f64,
    pub duplicates: u64,
    pub missing: u64,
    /// First and last missing message (`publisher * msgs + seq`), to tell a
    /// window at the start or end from scattered loss.
    pub missing_range: Option<(u64, u64)>,
    /// Messages each member received.
    pub per_member: Vec<u64>,
    pub server_version: String,
}

/// How long a member waits without a message, once publishing is over,
/// before it concludes that nothing more is coming.
const IDLE: Duration = Duration::from_secs(2);

pub fn run(p: &QueueParams) -> io::Result<QueueResult> {
    let size = p.size.max(12);
    let publishers = p.publishers.max(1);
    let total = p.msgs * publishers as u64;
    let ready = Arc::new(Barrier::new(p.members + publishers + 1));
    let published = Arc::new(AtomicBool::new(false));
    // Members stop when the group has everything, or after `IDLE` without a
    // message once publishing is over (then what is missing is lost).
    let received = Arc::new(AtomicU64::new(0));
    let mut members = Vec::new();
    for i in 0..p.members {
        let mut c = Conn::connect(&p.url)?;
        c.subscribe(&p.subject, Some("bench-queue"), i as u64 + 1);
        c.ping()?;
        c.set_read_timeout(Duration::from_millis(200))?;
        let (ready, published, received, per_publisher) =
            (ready.clone(), published.clone(), received.clone(), p.msgs);
        members.push(std::thread::spawn(
            move || -> io::Result<(Vec<u64>, Instant)> {
                ready.wait();
                let mut seqs = Vec::new();
                let mut last = Instant::now();
                loop {
                    if received.load(Ordering::Relaxed) >= total {
                        return Ok((seqs, last));
                    }
                    match c.next_op() {
                        Ok(ServerOp::Msg(m)) => {
                            let (seq, from) = stamp_of(&m.payload)
                                .ok_or_else(|| io::Error::other("short payload"))?;
                            seqs.push(from as u64 * per_publisher + seq);
                            received.fetch_add(1, Ordering::Relaxed);
                            last = Instant::now();
                        }
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) =>
                        {
                            if published.load(Ordering::Acquire) && last.elapsed() > IDLE {
                                return Ok((seqs, last));
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
            },
        ));
    }
    let (version, pubs) = start_publishers(&p.url, &p.subject, publishers, size, p.msgs, &ready)?;
    std::thread::sleep(Duration::from_millis(50));
    ready.wait();
    let start = Instant::now();
    join_publishers(pubs)?;
    published.store(true, Ordering::Release);
    let mut seen = vec![0u8; total as usize];
    let mut per_member = Vec::new();
    let mut end = start;
    for m in members {
        let (seqs, last) = m
            .join()
            .map_err(|_| io::Error::other("member panicked"))??;
        per_member.push(seqs.len() as u64);
        end = end.max(last);
        for s in seqs {
            if let Some(slot) = seen.get_mut(s as usize) {
                *slot = slot.saturating_add(1);
            }
        }
    }
    let duplicates = seen.iter().filter(|&&c| c > 1).count() as u64;
    let missing = seen.iter().filter(|&&c| c == 0).count() as u64;
    let first = seen.iter().position(|&c| c == 0);
    let last = seen.iter().rposition(|&c| c == 0);
    let missing_range = first.zip(last).map(|(a, b)| (a as u64, b as u64));
    let delivered: u64 = per_member.iter().sum();
    Ok(QueueResult {
        delivered_per_sec: delivered as f64 / (end - start).as_secs_f64().max(1e-9),
        duplicates,
        missing,
        missing_range,
        per_member,
        server_version: version,
    })
}
