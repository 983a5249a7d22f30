use super::*;
use bytes::{BufMut, BytesMut};

fn one(buf: &mut BytesMut) -> Frame {
    next_frame(buf, 1 << 20).unwrap().expect("a complete frame")
}

#[test]
fn info_round_trips() {
    let info = RouteInfo {
        proto: ROUTE_PROTO,
        server_id: "NABC".into(),
        cluster: "c1".into(),
        route_url: "nats://127.0.0.1:6222".into(),
        client_urls: vec!["127.0.0.1:4222".into()],
        peers: vec!["nats://127.0.0.1:6223".into()],
        user: Some("ruser".into()),
        pass: Some("secret".into()),
        ..Default::default()
    };
    let mut buf = BytesMut::new();
    write_info(&mut buf, &info);
    let f = one(&mut buf);
    assert_eq!(f.kind, FrameKind::Info);
    assert_eq!(decode_info(&f.body).unwrap(), info);
    assert!(buf.is_empty());
}

#[test]
fn msg_round_trips_as_slices_of_the_frame() {
    let mut buf = BytesMut::new();
    // An odd prefix puts the payload at an unaligned offset.
    write_empty(&mut buf, FrameKind::Ping);
    write_msg(
        &mut buf,
        &MsgFrame {
            subject: b"orders.new",
            reply: Some(b"_INBOX.x"),
            headers: Some(b"NATS/1.0\r\nA: b\r\n\r\n"),
            payload: b"hello",
            plain: true,
            queues: vec![b"workers", b"audit"],
        },
    );
    assert_eq!(one(&mut buf).kind, FrameKind::Ping);
    let f = one(&mut buf);
    assert_eq!(f.kind, FrameKind::Msg);
    let m = decode_msg(&f.body).unwrap();
    assert_eq!(&m.subject[..], b"orders.new");
    assert_eq!(m.reply.as_deref(), Some(&b"_INBOX.x"[..]));
    assert_eq!(m.headers.as_deref(), Some(&b"NATS/1.0\r\nA: b\r\n\r\n"[..]));
    assert_eq!(&m.payload[..], b"hello");
    assert!(m.plain);
    assert_eq!(m.queues, vec![&b"workers"[..], &b"audit"[..]]);
    // Zero copy: the payload points into the frame body.
    let body = f.body.as_ptr_range();
    assert!(body.contains(&m.payload.as_ptr()));
}

#[test]
fn interest_and_tokens_round_trip() {
    let batch = InterestBatch {
        ops: vec![
            InterestOp {
                subject: b"a.*".to_vec(),
                queue: None,
                weight: 1,
            },
            InterestOp {
                subject: b"a.>".to_vec(),
                queue: Some(b"q".to_vec()),
                weight: 3,
            },
        ],
    };
    let mut buf = BytesMut::new();
    write_interest(&mut buf, &batch);
    write_token(&mut buf, FrameKind::Sync, 77);
    assert_eq!(decode_interest(&one(&mut buf).body).unwrap(), batch);
    let t = one(&mut buf);
    assert_eq!(t.kind, FrameKind::Sync);
    assert_eq!(decode_token(t.kind, &t.body).unwrap(), 77);
}

#[test]
fn partial_frames_wait_for_more_bytes() {
    let mut full = BytesMut::new();
    write_msg(
        &mut full,
        &MsgFrame {
            subject: b"x",
            reply: None,
            headers: None,
            payload: b"payload",
            plain: true,
            queues: vec![],
        },
    );
    let bytes = full.freeze();
    for cut in 0..bytes.len() {
        let mut buf = BytesMut::from(&bytes[..cut]);
        assert_eq!(next_frame(&mut buf, 1024).unwrap(), None, "cut at {cut}");
        buf.extend_from_slice(&bytes[cut..]);
        assert_eq!(one(&mut buf).kind, FrameKind::Msg);
    }
}

#[test]
fn oversized_and_unknown_frames_are_refused_before_buffering() {
    let mut buf = BytesMut::new();
    buf.put_u32_le(10_000_000);
    buf.put_u8(FrameKind::Msg as u8);
    assert_eq!(
        next_frame(&mut buf, 1 << 20),
        Err(FrameError::TooLarge {
            len: 10_000_000,
            max: 1 << 20
        })
    );
    let mut buf = BytesMut::new();
    buf.put_u32_le(0);
    buf.put_u8(99);
    assert_eq!(next_frame(&mut buf, 1024), Err(FrameError::UnknownKind(99)));
}

#[test]
fn garbage_payloads_are_errors_not_panics() {
    let bodies: [&[u8]; 5] = [
        b"",
        b"\x00",
        b"\xff\xff\xff\xff\xff\xff\xff\xff",
        &[7u8; 64],
        &[0xffu8; 300],
    ];
    for b in bodies {
        let body = bytes::Bytes::copy_from_slice(b);
        assert!(decode_msg(&body).is_err());
        assert!(decode_info(b).is_err() || b.is_empty());
        assert!(decode_interest(b).is_err() || b.is_empty());
    }
}

#[test]
fn invalid_subjects_inside_valid_archives_are_refused() {
    let mut buf = BytesMut::new();
    let msg = |subject: &'static [u8], reply: Option<&'static [u8]>| MsgFrame {
        subject,
        reply,
        headers: None,
        payload: b"x",
        plain: true,
        queues: vec![],
    };
    // What a non-pedantic client may publish crosses the route as it is.
    for (subject, reply) in [
        (&b"foo.*"[..], None),
        (b"orders..created", None),
        (b"foo", Some(&b"bad..reply"[..])),
        (b"foo", Some(b"_INBOX.>")),
    ] {
        write_msg(&mut buf, &msg(subject, reply));
        let m = decode_msg(&one(&mut buf).body).unwrap();
        assert_eq!(&m.subject[..], subject);
        assert_eq!(m.reply.as_deref(), reply);
    }
    // Control bytes or an empty subject: this message is refused, and the
    // error says the link may go on.
    for (subject, reply) in [
        (&b"foo\x01bar"[..], None),
        (b"", None),
        (b"foo", Some(&b"re ply"[..])),
    ] {
        write_msg(&mut buf, &msg(subject, reply));
        let e = decode_msg(&one(&mut buf).body).unwrap_err();
        assert!(e.is_refused_message(), "{e}");
    }
    write_interest(
        &mut buf,
        &InterestBatch {
            ops: vec![InterestOp {
                subject: b"foo..bar".to_vec(),
                queue: None,
                weight: 1,
            }],
        },
    );
    assert!(decode_interest(&one(&mut buf).body).is_err());
    write_msg(
        &mut buf,
        &MsgFrame {
            subject: b"ok",
            reply: None,
            headers: None,
            payload: b"",
            plain: false,
            queues: vec![b"bad queue"],
        },
    );
    assert!(decode_msg(&one(&mut buf).body)
        .unwrap_err()
        .is_refused_message());
}

#[test]
fn every_truncation_of_a_valid_archive_is_an_error() {
    let mut buf = BytesMut::new();
    write_msg(
        &mut buf,
        &MsgFrame {
            subject: b"a.b",
            reply: Some(b"r"),
            headers: None,
            payload: b"0123456789",
            plain: true,
            queues: vec![b"q"],
        },
    );
    let body = one(&mut buf).body;
    for cut in 0..body.len() {
        let b = body.slice(..cut);
        assert!(decode_msg(&b).is_err(), "cut at {cut}");
    }
    // And flipping bytes never panics.
    for i in 0..body.len() {
        let mut v = body.to_vec();
        v[i] ^= 0xff;
        let _ = decode_msg(&bytes::Bytes::from(v));
    }
}

fn long_op(i: usize, queue: bool) -> InterestOp {
    InterestOp {
        subject: format!("big.{i}.{}", "x".repeat(4000)).into_bytes(),
        queue: queue.then(|| format!("q{i}").into_bytes()),
        weight: 1,
    }
}

/// The length of a frame's payload as written.
fn written_len(f: impl FnOnce(&mut BytesMut)) -> usize {
    let mut buf = BytesMut::new();
    f(&mut buf);
    buf.len() - FRAME_HEADER
}

#[test]
fn interest_is_cut_into_frames_by_bytes_not_by_count() {
    // ~300 subscriptions with 4 KB subjects: 1.2 MB, fewer than the 1024
    // operations per frame the snapshot was once cut at.
    let ops: Vec<InterestOp> = (0..300).map(|i| long_op(i, i % 2 == 0)).collect();
    let batches = interest_batches(ops.clone(), INTEREST_FRAME_TARGET);
    assert!(batches.len() > 1);
    let mut back = Vec::new();
    for b in &batches {
        let len = written_len(|buf| write_interest(buf, b));
        assert!(len <= b.encoded_bound(), "{len} > bound");
        assert!(len <= INTEREST_FRAME_TARGET, "frame of {len} bytes");
        let mut buf = BytesMut::new();
        write_interest(&mut buf, b);
        back.extend(decode_interest(&one(&mut buf).body).unwrap().ops);
    }
    assert_eq!(back, ops, "every operation, in order");
    assert!(interest_batches(Vec::new(), INTEREST_FRAME_TARGET).is_empty());
}

#[test]
fn an_operation_larger_than_the_target_goes_alone() {
    let ops = vec![long_op(1, false), long_op(2, true), long_op(3, false)];
    let batches = interest_batches(ops, 1000);
    assert_eq!(
        batches.iter().map(|b| b.ops.len()).collect::<Vec<_>>(),
        [1, 1, 1]
    );
    let small = (0..10)
        .map(|i| InterestOp {
            subject: format!("s.{i}").into_bytes(),
            queue: None,
            weight: 0,
        })
        .collect::<Vec<_>>();
    assert_eq!(interest_batches(small, 1000).len(), 1);
}

#[test]
fn encoded_bounds_are_upper_bounds() {
    for sub in [1, 100, 5000] {
        for with in [false, true] {
            let op = InterestOp {
                subject: vec![b'a'; sub],
                queue: with.then(|| vec![b'q'; sub / 2 + 1]),
                weight: u32::MAX,
            };
            let batch = InterestBatch { ops: vec![op; 3] };
            assert!(written_len(|b| write_interest(b, &batch)) <= batch.encoded_bound());
            let subject = vec![b's'; sub];
            let names: Vec<Vec<u8>> = (0..sub % 7).map(|i| vec![b'n'; i * 10 + 1]).collect();
            let m = MsgFrame {
                subject: &subject,
                reply: with.then_some(&subject[..]),
                headers: with.then_some(b"NATS/1.0\r\n\r\n"),
                payload: &subject,
                plain: with,
                queues: names.iter().map(|n| &n[..]).collect(),
            };
            assert!(written_len(|b| write_msg(b, &m)) <= m.encoded_bound());
        }
    }
}

#[test]
fn queue_names_are_split_over_frames_that_fit() {
    let names: Vec<Vec<u8>> = (0..300).map(|i| long_op(i, false).subject).collect();
    let payload = vec![b'p'; 10_000];
    let m = MsgFrame {
        subject: b"work",
        reply: Some(b"_INBOX.1"),
        headers: None,
        payload: &payload,
        plain: true,
        queues: names.iter().map(|n| &n[..]).collect(),
    };
    let max = 100_000;
    let runs = msg_queue_runs(&m, max).unwrap();
    assert!(runs.len() > 1);
    let mut next = 0;
    let mut got = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run.start, next, "runs are contiguous");
        assert!(!run.is_empty());
        next = run.end;
        let part = MsgFrame {
            plain: m.plain && i == 0,
            queues: m.queues[run.clone()].to_vec(),
            ..m
        };
        let mut buf = BytesMut::new();
        write_msg(&mut buf, &part);
        assert!(buf.len() - FRAME_HEADER <= max);
        let d = decode_msg(&next_frame(&mut buf, max).unwrap().unwrap().body).unwrap();
        assert_eq!(d.plain, i == 0);
        assert_eq!(&d.payload[..], &payload[..]);
        got.extend(d.queues);
    }
    assert_eq!(next, names.len());
    assert_eq!(got, names);

    // Nothing to split: one frame.
    let plain = MsgFrame {
        queues: vec![],
        ..m
    };
    assert_eq!(
        msg_queue_runs(&plain, max),
        Some(std::iter::once(0..0).collect::<Vec<_>>())
    );
    // Too large alone, or with one of its names: refused.
    assert_eq!(msg_queue_runs(&plain, 10_000), None);
    let one_name = MsgFrame {
        payload: b"",
        queues: vec![&names[0][..]],
        ..m
    };
    assert_eq!(msg_queue_runs(&one_name, 1_000), None);
}

#[test]
fn a_message_of_the_largest_payload_fits_the_frame_limit() {
    let subject = vec![b's'; 64 * 1024];
    let names: Vec<Vec<u8>> = (0..100).map(|_| vec![b'q'; 4096]).collect();
    let payload = vec![0u8; crate::proto::MAX_PAYLOAD_LIMIT];
    let m = MsgFrame {
        subject: &subject,
        reply: Some(&subject),
        headers: None,
        payload: &payload,
        plain: true,
        queues: names.iter().map(|n| &n[..]).collect(),
    };
    let runs = msg_queue_runs(&m, MAX_FRAME).unwrap();
    assert_eq!(runs, vec![0..100]);
}

#[test]
fn an_announced_frame_is_not_allocated_before_its_bytes_arrive() {
    let mut buf = BytesMut::new();
    buf.put_u32_le(MAX_FRAME as u32);
    buf.put_u8(FrameKind::Msg as u8);
    assert_eq!(next_frame(&mut buf, MAX_FRAME), Ok(None));
    assert!(buf.capacity() < 1 << 20, "reserved {}", buf.capacity());
    // One byte over the limit is refused outright.
    let mut buf = BytesMut::new();
    buf.put_u32_le(MAX_FRAME as u32 + 1);
    buf.put_u8(FrameKind::Msg as u8);
    assert!(matches!(
        next_frame(&mut buf, MAX_FRAME),
        Err(FrameError::TooLarge { .. })
    ));
}

#[test]
fn route_info_debug_hides_the_password() {
    let info = RouteInfo {
        user: Some("ruser".into()),
        pass: Some("s3cret".into()),
        ..RouteInfo::default()
    };
    let shown = format!("{info:?}");
    assert!(
        !shown.contains("s3cret") && shown.contains("ruser"),
        "{shown}"
    );
}
