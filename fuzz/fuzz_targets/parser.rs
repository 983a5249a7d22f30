//! Fuzz target: the client and server parsers must never panic, must keep
//! memory bounded by the limits, and must produce the same operations whatever
//! the read boundaries (the first input byte picks the chunk size).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shoal_core::proto::{ClientOp, ClientParser, Limits, ProtoError, ServerOp, ServerParser};

const LIMITS: Limits = Limits {
    max_control_line: 256,
    max_payload: 1024,
};

/// Feeds `data` to a parser in chunks of `chunk` bytes; returns the
/// operations and whether the parser rejected the stream.
fn run<Op>(
    data: &[u8],
    chunk: usize,
    mut next: impl FnMut(&mut BytesMut) -> Result<Option<Op>, ProtoError>,
) -> (Vec<Op>, bool) {
    let mut buf = BytesMut::new();
    let mut ops = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match next(&mut buf) {
                Ok(Some(op)) => ops.push(op),
                Ok(None) => break,
                Err(_) => return (ops, true),
            }
        }
        assert!(buf.len() <= LIMITS.max_control_line + 2 + LIMITS.max_payload + 2);
    }
    (ops, false)
}

fn run_client(data: &[u8], chunk: usize) -> (Vec<ClientOp>, bool) {
    let mut p = ClientParser::new(LIMITS);
    run(data, chunk, |b| p.next(b))
}

fn run_server(data: &[u8], chunk: usize) -> (Vec<ServerOp>, bool) {
    let mut p = ServerParser::new(LIMITS);
    run(data, chunk, |b| p.next(b))
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first % 17) + 1;
    // Same operations and the same verdict whatever the read boundaries.
    assert_eq!(run_client(rest, rest.len()), run_client(rest, chunk));
    assert_eq!(run_server(rest, rest.len()), run_server(rest, chunk));
});
