//! A trivial NATS-protocol sink: INFO, then PONG for every `PING` line,
//! everything else dropped unparsed. Running `pub` against it measures the
//! load generator's own ceiling: the rate above which a server comparison
//! would measure the tool, not the server. It finds PINGs by searching the
//! byte stream, so it is only a sink for shoal-bench's own publishers, whose
//! payloads never contain `PING`: cheap enough never to be the limit.

use bytes::BytesMut;
use shoal_core::proto::{self, ServerInfo};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};

/// Serves forever on `addr` (one thread per connection).
pub fn serve(addr: &str) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    eprintln!("sink listening on {}", listener.local_addr()?);
    serve_on(listener)
}

/// Serves forever on a bound listener.
pub fn serve_on(listener: TcpListener) -> io::Result<()> {
    for stream in listener.incoming() {
        let stream = stream?;
        std::thread::spawn(move || {
            let _ = handle(stream);
        });
    }
    Ok(())
}

fn handle(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = BytesMut::new();
    proto::write_info(
        &mut out,
        &ServerInfo {
            server_id: "sink".into(),
            version: "sink".into(),
            proto: 1,
            headers: true,
            max_payload: 64 << 20,
            ..Default::default()
        },
    );
    stream.write_all(&out)?;
    out.clear();
    let finder = memchr::memmem::Finder::new(b"PING\r\n");
    // Bytes kept from the previous read: a PING may straddle two reads.
    let mut carry: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        let pings = if carry.is_empty() {
            finder.find_iter(&chunk[..n]).count()
        } else {
            carry.extend_from_slice(&chunk[..n.min(5)]);
            finder.find_iter(&carry).count() + finder.find_iter(&chunk[..n]).count()
        };
        carry.clear();
        carry.extend_from_slice(&chunk[n.saturating_sub(5)..n]);
        for _ in 0..pings {
            out.extend_from_slice(proto::PONG);
        }
        if !out.is_empty() {
            stream.write_all(&out)?;
            out.clear();
        }
    }
}
