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
