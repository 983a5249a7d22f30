//! Fuzz target: the route frame decoder. A peer's bytes, cut into frames and
//! each payload decoded as its kind says, must never panic, and a frame
//! longer than the limit must be refused before it is buffered.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shoal_core::route::{self as wire, FrameKind};

const MAX_FRAME: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    loop {
        match wire::next_frame(&mut buf, MAX_FRAME) {
            Ok(Some(frame)) => {
                assert!(frame.body.len() <= MAX_FRAME);
                let _ = match frame.kind {
                    FrameKind::Info => wire::decode_info(&frame.body).map(|_| ()),
                    FrameKind::Interest => wire::decode_interest(&frame.body).map(|_| ()),
                    FrameKind::Msg => wire::decode_msg(&frame.body).map(|_| ()),
                    FrameKind::Sync | FrameKind::SyncAck => {
                        wire::decode_token(frame.kind, &frame.body).map(|_| ())
                    }
                    FrameKind::Ping | FrameKind::Pong | FrameKind::SnapshotDone => {
                        wire::expect_empty(&frame)
                    }
                };
            }
            Ok(None) => {
                // Waiting for more: never more than one frame's worth.
                assert!(buf.len() < MAX_FRAME + wire::FRAME_HEADER);
                break;
            }
            Err(_) => break,
        }
    }
});
