//! Property tests: the parser against arbitrary read boundaries and encode →
//! parse round trips; the subject index (and its cache) against a naive
//! reference matcher under interleaved inserts and removes.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use shoal_core::index::SubjectIndex;
use shoal_core::proto::*;
use shoal_core::subject::pattern_matches;

// ---------- protocol ----------

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_$-]{1,6}"
}

fn subject() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(token(), 1..4).prop_map(|t| Bytes::from(t.join(".")))
}

fn word() -> impl Strategy<Value = Bytes> {
    token().prop_map(Bytes::from)
}

fn payload() -> impl Strategy<Value = Bytes> {
    // Arbitrary bytes, CR and LF included: the payload is length-delimited.
    prop::collection::vec(any::<u8>(), 0..80).prop_map(Bytes::from)
}

fn header_block() -> impl Strategy<Value = Bytes> {
    (
        prop::option::of(100u16..600),
        prop::collection::vec((token(), "[ -~]{0,10}"), 0..3),
    )
        .prop_map(|(status, kv)| {
            let mut h = match status {
                Some(s) => Headers::with_status(s, None),
                None => Headers::new(),
            };
            for (k, v) in kv {
                h.append(&k, v.trim()).unwrap();
            }
            h.to_bytes()
        })
}

fn client_op() -> impl Strategy<Value = ClientOp> {
    prop_oneof![
        (
            subject(),
            prop::option::of(subject()),
            prop::option::of(header_block()),
            payload()
        )
            .prop_map(|(subject, reply, headers, payload)| ClientOp::Pub(Publish {
                subject,
                reply,
                headers,
                payload
            })),
        (subject(), prop::option::of(word()), word()).prop_map(|(subject, queue, sid)| {
            ClientOp::Sub {
                subject,
                queue,
                sid,
            }
        }),
        (word(), prop::option::of(0u64..1_000_000))
            .prop_map(|(sid, max)| ClientOp::Unsub { sid, max }),
        Just(ClientOp::Ping),
        Just(ClientOp::Pong),
        ("[a-z]{0,10}", any::<bool>()).prop_map(|(name, verbose)| {
            let json = serde_json::to_vec(&ConnectOptions {
                name: Some(name),
                verbose,
                ..Default::default()
            })
            .unwrap();
            ClientOp::Connect(Bytes::from(json))
        }),
    ]
}

fn server_op() -> impl Strategy<Value = ServerOp> {
    prop_oneof![
        (
            subject(),
            word(),
            prop::option::of(subject()),
            prop::option::of(header_block()),
            payload()
        )
            .prop_map(
                |(subject, sid, reply, headers, payload)| ServerOp::Msg(Delivery {
                    subject,
                    sid,
                    reply,
                    headers,
                    payload
                })
            ),
        Just(ServerOp::Ok),
        Just(ServerOp::Ping),
        Just(ServerOp::Pong),
        "[ -&(-~]{1,40}".prop_map(|t| ServerOp::Err(Bytes::from(t))),
        "[a-z]{1,10}".prop_map(|server_id| {
            let json = serde_json::to_vec(&ServerInfo {
                server_id,
                ..Default::default()
            })
            .unwrap();
            ServerOp::Info(Bytes::from(json))
        }),
    ]
}

/// Feeds `wire` to a parser in chunks cut at `cuts` (positions, any order).
fn feed<Op>(
    wire: &[u8],
    cuts: &[usize],
    mut next: impl FnMut(&mut BytesMut) -> Result<Option<Op>, ProtoError>,
) -> Vec<Op> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.push(wire.len());
    points.sort_unstable();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut from = 0;
    for to in points {
        buf.extend_from_slice(&wire[from..to]);
        from = to;
        while let Some(op) = next(&mut buf).expect("valid stream") {
            out.push(op);
        }
    }
    assert!(buf.is_empty(), "whole stream consumed");
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn client_stream_parses_the_same_at_any_split(
        ops in prop::collection::vec(client_op(), 1..20),
        cuts in prop::collection::vec(any::<usize>(), 0..30),
    ) {
        let mut wire = BytesMut::new();
        for op in &ops {
            op.write(&mut wire);
        }
        let mut whole = ClientParser::new(Limits::default());
        let at_once = feed(&wire, &[], |b| whole.next(b));
        let mut split = ClientParser::new(Limits::default());
        let in_pieces = feed(&wire, &cuts, |b| split.next(b));
        prop_assert_eq!(&at_once, &ops, "encode -> parse round trip");
        prop_assert_eq!(&in_pieces, &ops, "split reads");
    }

    #[test]
    fn client_stream_byte_by_byte(ops in prop::collection::vec(client_op(), 1..6)) {
        let mut wire = BytesMut::new();
        for op in &ops {
            op.write(&mut wire);
        }
        let cuts: Vec<usize> = (0..wire.len()).collect();
        let mut p = ClientParser::new(Limits::default());
        prop_assert_eq!(feed(&wire, &cuts, |b| p.next(b)), ops);
    }

    #[test]
    fn server_stream_parses_the_same_at_any_split(
        ops in prop::collection::vec(server_op(), 1..20),
        cuts in prop::collection::vec(any::<usize>(), 0..30),
    ) {
        let mut wire = BytesMut::new();
        for op in &ops {
            op.write(&mut wire);
        }
        let mut p = ServerParser::new(Limits::default());
        prop_assert_eq!(feed(&wire, &cuts, |b| p.next(b)), ops);
    }

    #[test]
    fn parser_never_panics_on_garbage(data in prop::collection::vec(any::<u8>(), 0..300), cuts in prop::collection::vec(any::<usize>(), 0..10)) {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        points.push(data.len());
        points.sort_unstable();
        let mut p = ClientParser::new(Limits { max_control_line: 64, max_payload: 128 });
        let mut buf = BytesMut::new();
        let mut from = 0;
        'outer: for to in points {
            buf.extend_from_slice(&data[from..to]);
            from = to;
            loop {
                match p.next(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
            }
            // Bounded memory: an incomplete op never exceeds the limits.
            prop_assert!(buf.len() <= 64 + 2 + 128 + 2);
        }
    }
}

// ---------- subject index ----------

fn pat_token() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("a"), Just("b"), Just("c"), Just("*"), Just(">")]
}

fn pattern() -> impl Strategy<Value = String> {
    prop::collection::vec(pat_token(), 1..5).prop_map(|mut t| {
        // '>' only as the last token.
        if let Some(i) = t.iter().position(|x| *x == ">") {
            t.truncate(i + 1);
        }
        t.join(".")
    })
}

fn literal() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 1..5)
        .prop_map(|t| t.join("."))
}

#[derive(Debug, Clone)]
enum IndexOp {
    Insert(String, Option<&'static str>, u32),
    /// Remove the live subscription at this position (modulo count).
    Remove(usize),
    Match(String),
}

fn index_op() -> impl Strategy<Value = IndexOp> {
    prop_oneof![
        4 => (pattern(), prop::option::of(prop_oneof![Just("q1"), Just("q2")]), 0u32..6)
            .prop_map(|(p, q, v)| IndexOp::Insert(p, q, v)),
        2 => any::<usize>().prop_map(IndexOp::Remove),
        4 => literal().prop_map(IndexOp::Match),
    ]
}

type Live = Vec<(String, Option<&'static str>, u32)>;

fn reference(live: &Live, subject: &str) -> (Vec<u32>, Vec<(String, Vec<u32>)>) {
    let mut plain = Vec::new();
    let mut groups: Vec<(String, Vec<u32>)> = Vec::new();
    for (p, q, v) in live {
        if !pattern_matches(p.as_bytes(), subject.as_bytes()) {
            continue;
        }
        match q {
            None => plain.push(*v),
            Some(q) => match groups.iter_mut().find(|(n, _)| n == q) {
                Some((_, m)) => m.push(*v),
                None => groups.push((q.to_string(), vec![*v])),
            },
        }
    }
    plain.sort_unstable();
    for (_, m) in &mut groups {
        m.sort_unstable();
    }
    groups.sort();
    (plain, groups)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn index_agrees_with_reference_matcher(
        ops in prop::collection::vec(index_op(), 1..120),
        cache in prop_oneof![Just(0usize), Just(3), Just(4096)],
    ) {
        let mut idx = SubjectIndex::with_cache_capacity(cache);
        let mut live: Live = Vec::new();
        for op in ops {
            match op {
                IndexOp::Insert(p, q, v) => {
                    idx.insert(p.as_bytes(), q.map(str::as_bytes), v).unwrap();
                    live.push((p, q, v));
                }
                IndexOp::Remove(i) => {
                    if live.is_empty() {
                        prop_assert!(!idx.remove(b"a", None, &99));
                        continue;
                    }
                    let (p, q, v) = live.swap_remove(i % live.len());
                    prop_assert!(idx.remove(p.as_bytes(), q.map(str::as_bytes), &v));
                }
                IndexOp::Match(s) => {
                    let m = idx.matches(s.as_bytes());
                    let mut plain = m.plain.clone();
                    plain.sort_unstable();
                    let mut groups: Vec<(String, Vec<u32>)> = m
                        .queues
                        .iter()
                        .map(|g| {
                            let mut v: Vec<u32> = g
                                .members
                                .iter()
                                .flat_map(|&(v, w)| std::iter::repeat_n(v, w as usize))
                                .collect();

                            v.sort_unstable();
                            (String::from_utf8(g.name.to_vec()).unwrap(), v)
                        })
                        .collect();
                    groups.sort();
                    for g in &m.queues {
                        let n: u64 = g.members.iter().map(|&(_, w)| u64::from(w)).sum();
                        prop_assert_eq!(g.total, n, "total of a group of {}", s);
                    }
                    let (rp, rg) = reference(&live, &s);
                    prop_assert_eq!(&plain, &rp, "plain subscribers of {}", s);
                    prop_assert_eq!(&groups, &rg, "queue groups of {}", s);
                    prop_assert_eq!(idx.has_match(s.as_bytes()), !rp.is_empty() || !rg.is_empty());
                }
            }
            prop_assert_eq!(idx.len(), live.len());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// If `cover` covers `pattern`, every subject `pattern` matches is matched
    /// by `cover`; and every pattern covers itself.
    #[test]
    fn covering_is_sound(cover in pattern(), p in pattern(), subjects in prop::collection::vec(literal(), 1..20)) {
        prop_assert!(shoal_core::subject::pattern_covers(p.as_bytes(), p.as_bytes()));
        if shoal_core::subject::pattern_covers(cover.as_bytes(), p.as_bytes()) {
            for s in &subjects {
                if pattern_matches(p.as_bytes(), s.as_bytes()) {
                    prop_assert!(pattern_matches(cover.as_bytes(), s.as_bytes()), "{} covers {} but not {}", cover, p, s);
                }
            }
        }
    }
}
