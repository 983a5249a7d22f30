//! P publishers, no subscribers: the rate a server absorbs messages. Each
//! publisher ends with a PING/PONG, so every message was processed.

use crate::conn::Conn;
use shoal_core::proto;
use std::io;
use std::sync::{Arc, Barrier};
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

pub fn run(p: &PubParams) -> io::Result<PubResult> {
    let ready = Arc::new(Barrier::new(p.publishers + 1));
    let mut conns = Vec::new();
    for _ in 0..p.publishers {
        conns.push(Conn::connect(&p.url)?);
    }
    let version = conns[0].info.version.clone();
    let threads: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let (ready, subject, size, n) = (ready.clone(), p.subject.clone(), p.size, p.msgs);
            std::thread::spawn(move || -> io::Result<()> {
                let payload = vec![b'p'; size];
                ready.wait();
                for _ in 0..n {
                    proto::write_pub(&mut c.wbuf, subject.as_bytes(), None, None, &payload);
                    if c.wbuf.len() >= 64 * 1024 {
                        c.flush()?;
                    }
                }
                c.ping()
            })
        })
        .collect();
    ready.wait();
    let start = Instant::now();
    for t in threads {
        t.join()
            .map_err(|_| io::Error::other("publisher panicked"))??;
    }
    let secs = start.elapsed().as_secs_f64();
    let total = p.msgs as f64 * p.publishers as f64;
    Ok(PubResult {
        msgs_per_sec: total / secs,
        mb_per_sec: total * p.size as f64 / secs / 1e6,
        server_version: version,
    })
}
