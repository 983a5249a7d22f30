//! The codec's behaviour on hand-written input: every verb, every error path
//! with the exact `-ERR` text, split reads, zero copy.

use bytes::{Bytes, BytesMut};
use shoal_core::proto::*;

fn parse_all(input: &[u8]) -> Result<Vec<ClientOp>, ProtoError> {
    let mut p = ClientParser::new(Limits::default());
    let mut buf = BytesMut::from(input);
    let mut ops = Vec::new();
    while let Some(op) = p.next(&mut buf)? {
        ops.push(op);
    }
    Ok(ops)
}

fn err_of(input: &[u8]) -> ProtoError {
    parse_all(input).expect_err("input must be rejected")
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[test]
fn every_client_verb() {
    let ops = parse_all(
        b"CONNECT {\"verbose\":false}\r\nPUB foo 5\r\nhello\r\nPUB foo _INBOX.1 0\r\n\r\n\
HPUB foo bar 12 14\r\nNATS/1.0\r\n\r\nhi\r\nSUB foo 1\r\nSUB foo.* workers 2\r\n\
UNSUB 1\r\nUNSUB 2 10\r\nPING\r\nPONG\r\n",
    )
    .unwrap();
    assert_eq!(
        ops,
        vec![
            ClientOp::Connect(b("{\"verbose\":false}")),
            ClientOp::Pub(Publish {
                subject: b("foo"),
                reply: None,
                headers: None,
                payload: b("hello")
            }),
            ClientOp::Pub(Publish {
                subject: b("foo"),
                reply: Some(b("_INBOX.1")),
                headers: None,
                payload: b("")
            }),
            ClientOp::Pub(Publish {
                subject: b("foo"),
                reply: Some(b("bar")),
                headers: Some(b("NATS/1.0\r\n\r\n")),
                payload: b("hi")
            }),
            ClientOp::Sub {
                subject: b("foo"),
                queue: None,
                sid: b("1")
            },
            ClientOp::Sub {
                subject: b("foo.*"),
                queue: Some(b("workers")),
                sid: b("2")
            },
            ClientOp::Unsub {
                sid: b("1"),
                max: None
            },
            ClientOp::Unsub {
                sid: b("2"),
                max: Some(10)
            },
            ClientOp::Ping,
            ClientOp::Pong,
        ]
    );
}

#[test]
fn verbs_are_case_insensitive_and_args_split_on_tabs_and_runs() {
    let ops = parse_all(b"pub\tfoo  \t 3\r\nabc\r\nsUb foo\t\t7\r\nping\r\nPoNg\r\nconnect {}\r\n")
        .unwrap();
    assert_eq!(ops.len(), 5);
    assert!(matches!(&ops[0], ClientOp::Pub(p) if p.subject == "foo" && p.payload == "abc"));
    assert!(
        matches!(&ops[1], ClientOp::Sub { subject, sid, .. } if subject == "foo" && sid == "7")
    );
    assert_eq!(ops[2], ClientOp::Ping);
    assert_eq!(ops[3], ClientOp::Pong);
    assert_eq!(ops[4], ClientOp::Connect(b("{}")));
}

#[test]
fn bare_lf_line_endings_are_accepted() {
    let ops = parse_all(b"PING\nSUB a 1\n").unwrap();
    assert_eq!(ops.len(), 2);
}

#[test]
fn pub_arriving_in_three_reads() {
    let mut p = ClientParser::new(Limits::default());
    let mut buf = BytesMut::new();
    buf.extend_from_slice(b"PUB foo.bar rep");
    assert_eq!(p.next(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"ly 11\r\nhello");
    assert_eq!(p.next(&mut buf).unwrap(), None);
    buf.extend_from_slice(b" world\r\nPING\r\n");
    let op = p.next(&mut buf).unwrap().unwrap();
    assert_eq!(
        op,
        ClientOp::Pub(Publish {
            subject: b("foo.bar"),
            reply: Some(b("reply")),
            headers: None,
            payload: b("hello world"),
        })
    );
    assert_eq!(p.next(&mut buf).unwrap(), Some(ClientOp::Ping));
    assert_eq!(p.next(&mut buf).unwrap(), None);
    assert!(buf.is_empty());
}

#[test]
fn payload_is_a_slice_of_the_read_buffer() {
    let mut p = ClientParser::new(Limits::default());
    let mut buf = BytesMut::with_capacity(1024);
    buf.extend_from_slice(b"PUB subj 4\r\nDATA\r\n");
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + 1024;
    let Some(ClientOp::Pub(m)) = p.next(&mut buf).unwrap() else {
        panic!("expected a PUB");
    };
    assert!(
        range.contains(&(m.payload.as_ptr() as usize)),
        "payload was copied"
    );
    assert!(
        range.contains(&(m.subject.as_ptr() as usize)),
        "subject was copied"
    );
}

#[test]
fn unknown_operations() {
    for input in [
        &b"FOO bar\r\n"[..],
        b"\r\n",
        b" PING\r\n",
        b"MSG a 1 1\r\nx\r\n",
        b"PUBX a 1\r\n",
    ] {
        let e = err_of(input);
        assert_eq!(
            e,
            ProtoError::UnknownOp,
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(e.err_text(), "Unknown Protocol Operation");
    }
}

#[test]
fn control_line_too_long_whole_and_split() {
    let limits = Limits {
        max_control_line: 16,
        max_payload: 1024,
    };
    let mut p = ClientParser::new(limits);
    let mut buf = BytesMut::from(&b"SUB aaaaaaaaaaaaaaa 1\r\n"[..]);
    let e = p.next(&mut buf).unwrap_err();
    assert!(matches!(e, ProtoError::MaxControlLine { max: 16, .. }));
    assert_eq!(e.err_text(), "maximum control line exceeded");

    // Never terminated: detected as soon as it is too long, not buffered forever.
    let mut p = ClientParser::new(limits);
    let mut buf = BytesMut::new();
    for _ in 0..17 {
        buf.extend_from_slice(b"x");
        if p.next(&mut buf).is_err() {
            return;
        }
    }
    buf.extend_from_slice(b"x");
    assert!(matches!(
        p.next(&mut buf),
        Err(ProtoError::MaxControlLine { .. })
    ));
}

#[test]
fn control_line_of_exactly_the_limit_is_fine() {
    let limits = Limits {
        max_control_line: 10,
        max_payload: 1024,
    };
    let mut p = ClientParser::new(limits);
    let mut buf = BytesMut::from(&b"SUB abc 12"[..]);
    assert_eq!(p.next(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"\r");
    assert_eq!(p.next(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"\n");
    assert!(p.next(&mut buf).unwrap().is_some());
}

#[test]
fn maximum_payload_violation() {
    let limits = Limits {
        max_control_line: 4096,
        max_payload: 8,
    };
    for input in [&b"PUB a 9\r\n"[..], b"HPUB a 4 9\r\n"] {
        let mut p = ClientParser::new(limits);
        let e = p.next(&mut BytesMut::from(input)).unwrap_err();
        assert!(matches!(e, ProtoError::MaxPayload { size: 9, max: 8 }));
        assert_eq!(e.err_text(), "Maximum Payload Violation");
    }
    let mut p = ClientParser::new(limits);
    assert!(p
        .next(&mut BytesMut::from(&b"PUB a 8\r\n12345678\r\n"[..]))
        .unwrap()
        .is_some());
}

#[test]
fn sizes_that_are_not_numbers() {
    for (input, verb) in [
        (&b"PUB a x\r\n"[..], "PUB"),
        (b"PUB a -1\r\n", "PUB"),
        (b"PUB a +1\r\n", "PUB"),
        (b"PUB a 1e3\r\n", "PUB"),
        (b"HPUB a x 10\r\n", "HPUB"),
        (b"HPUB a 1 ten\r\n", "HPUB"),
        (b"UNSUB 1 many\r\n", "UNSUB"),
        (b"PUB a 99999999999999999999\r\n", "PUB"),
    ] {
        let e = err_of(input);
        assert_eq!(
            e,
            ProtoError::BadSize { verb },
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(e.err_text(), "Unknown Protocol Operation");
    }
}

#[test]
fn header_size_larger_than_total() {
    let e = err_of(b"HPUB a 10 5\r\n");
    assert_eq!(e, ProtoError::HeaderTooLarge { hdr: 10, total: 5 });
    assert_eq!(e.err_text(), "Unknown Protocol Operation");
}

#[test]
fn wrong_argument_counts() {
    for (input, verb) in [
        (&b"PUB\r\n"[..], "PUB"),
        (b"PUB a\r\n", "PUB"),
        (b"PUB a b c 1\r\n", "PUB"),
        (b"HPUB a 1\r\n", "HPUB"),
        (b"SUB a\r\n", "SUB"),
        (b"SUB a q 1 x\r\n", "SUB"),
        (b"UNSUB\r\n", "UNSUB"),
        (b"UNSUB 1 2 3\r\n", "UNSUB"),
    ] {
        let e = err_of(input);
        assert_eq!(
            e,
            ProtoError::BadArgs { verb },
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(e.err_text(), "Unknown Protocol Operation");
    }
}

#[test]
fn payload_longer_than_announced() {
    let e = err_of(b"PUB a 2\r\nabc\r\n");
    assert_eq!(e, ProtoError::MissingTerminator);
    assert_eq!(e.err_text(), "Unknown Protocol Operation");
}

#[test]
fn server_ops_parse() {
    let mut p = ServerParser::new(Limits::default());
    let mut buf = BytesMut::from(
        &b"INFO {\"server_id\":\"x\"}\r\n+OK\r\nMSG foo 1 5\r\nhello\r\nMSG foo 2 inbox 0\r\n\r\n\
HMSG foo 3 16 18\r\nNATS/1.0 503\r\n\r\nhi\r\n-ERR 'Authorization Violation'\r\nPING\r\nPONG\r\n"[..],
    );
    let mut ops = Vec::new();
    while let Some(op) = p.next(&mut buf).unwrap() {
        ops.push(op);
    }
    assert_eq!(ops.len(), 8);
    assert_eq!(ops[0], ServerOp::Info(b("{\"server_id\":\"x\"}")));
    assert_eq!(ops[1], ServerOp::Ok);
    assert!(
        matches!(&ops[2], ServerOp::Msg(m) if m.sid == "1" && m.payload == "hello" && m.reply.is_none())
    );
    assert!(matches!(&ops[3], ServerOp::Msg(m) if m.reply.as_deref() == Some(&b"inbox"[..])));
    let ServerOp::Msg(m) = &ops[4] else { panic!() };
    assert_eq!(
        Headers::parse(m.headers.as_ref().unwrap())
            .unwrap()
            .status(),
        Some(503)
    );
    assert_eq!(m.payload, "hi");
    assert_eq!(ops[5], ServerOp::Err(b("Authorization Violation")));
    assert_eq!(ops[6], ServerOp::Ping);
    assert_eq!(ops[7], ServerOp::Pong);
}

#[test]
fn server_parser_errors() {
    for input in [
        &b"PUB a 1\r\nx\r\n"[..],
        b"MSG a\r\n",
        b"HMSG a 1 5 2\r\n",
        b"MSG a 1 z\r\n",
    ] {
        let mut p = ServerParser::new(Limits::default());
        assert!(
            p.next(&mut BytesMut::from(input)).is_err(),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn encoders_write_exact_frames() {
    let mut buf = BytesMut::new();
    write_msg(&mut buf, b"foo", b"9", None, None, b"hi");
    write_msg(
        &mut buf,
        b"foo",
        b"9",
        Some(b"r"),
        Some(headers::NO_RESPONDERS),
        b"",
    );
    write_err(&mut buf, "Maximum Payload Violation");
    buf.extend_from_slice(OK);
    write_sub(&mut buf, b"a.*", Some(b"q"), b"1");
    write_unsub(&mut buf, b"1", Some(5));
    write_pub(&mut buf, b"a", Some(b"r"), None, b"x");
    write_pub(&mut buf, b"a", None, Some(b"NATS/1.0\r\n\r\n"), b"x");
    assert_eq!(
        &buf[..],
        &b"MSG foo 9 2\r\nhi\r\nHMSG foo 9 r 16 16\r\nNATS/1.0 503\r\n\r\n\r\n\
-ERR 'Maximum Payload Violation'\r\n+OK\r\nSUB a.* q 1\r\nUNSUB 1 5\r\nPUB a r 1\r\nx\r\n\
HPUB a 12 13\r\nNATS/1.0\r\n\r\nx\r\n"[..]
    );
    let mut buf = BytesMut::new();
    write_info(
        &mut buf,
        &ServerInfo {
            server_id: "S".into(),
            max_payload: 1,
            ..Default::default()
        },
    );
    assert!(buf.starts_with(b"INFO {\"server_id\":\"S\""));
    assert!(buf.ends_with(b"}\r\n"));
    let mut p = ServerParser::new(Limits::default());
    let Some(ServerOp::Info(json)) = p.next(&mut buf).unwrap() else {
        panic!()
    };
    let info: ServerInfo = serde_json::from_slice(&json).unwrap();
    assert_eq!(info.max_payload, 1);
}
