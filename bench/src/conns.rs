//! Many connections, each subscribed to one subject; a publisher sends M
//! messages and every connection must receive all of them: per-connection
//! overhead and fan-out to many sockets.

use crate::conn::Conn;
use shoal_core::proto::{self, ServerOp};
use std::io;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ConnsParams {
    pub url: String,
    pub subject: String,
    pub connections: usize,
    pub size: usize,
    pub msgs: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnsResult {
    /// Time to open and subscribe every connection.
    pub connect_secs: f64,
    pub delivered_per_sec: f64,
    pub lost: u64,
    pub server_version: String,
}

pub fn run(p: &ConnsParams) -> io::Result<ConnsResult> {
    let ready = Arc::new(Barrier::new(p.connections + 1));
    let t0 = Instant::now();
    let mut threads = Vec::with_capacity(p.connections);
    for i in 0..p.connections {
        let mut c = Conn::connect(&p.url)?;
        c.subscribe(&p.subject, None, i as u64 + 1);
        c.ping()?;
        c.set_read_timeout(Duration::from_secs(5))?;
        let (ready, msgs) = (ready.clone(), p.msgs);
        // Thousands of readers: small stacks.
        let t = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || -> u64 {
                ready.wait();
                let mut got = 0;
                while got < msgs {
                    match c.next_op() {
                        Ok(ServerOp::Msg(_)) => got += 1,
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                got
            })?;
        threads.push(t);
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    let mut publisher = Conn::connect(&p.url)?;
    std::thread::sleep(Duration::from_millis(100));
    let version = publisher.server_version();
    let payload = vec![b'c'; p.size];
    ready.wait();
    let start = Instant::now();
    for _ in 0..p.msgs {
        proto::write_pub(
            &mut publisher.wbuf,
            p.subject.as_bytes(),
            None,
            None,
            &payload,
        );
    }
    publisher.flush()?;
    publisher.ping()?;
    let mut delivered = 0;
    for t in threads {
        delivered += t.join().map_err(|_| io::Error::other("reader panicked"))?;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(ConnsResult {
        connect_secs,
        delivered_per_sec: delivered as f64 / secs,
        lost: p.msgs * p.connections as u64 - delivered,
        server_version: version,
    })
}
