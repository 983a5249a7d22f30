//! Codec benchmarks: parsing a read buffer of PUBs, encoding MSG frames.
//!
//! cargo bench -p shoal-core --bench parser

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shoal_core::proto::{write_msg, write_pub, ClientParser, Limits};

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_pub");
    for size in [16usize, 1024] {
        let payload = vec![b'x'; size];
        let mut wire = BytesMut::new();
        for _ in 0..1000 {
            write_pub(&mut wire, b"bench.subject.one", None, None, &payload);
        }
        let wire = wire.freeze();
        g.throughput(Throughput::Elements(1000));
        g.bench_with_input(BenchmarkId::new("1000_msgs", size), &size, |b, _| {
            b.iter(|| {
                let mut p = ClientParser::new(Limits::default());
                let mut buf = BytesMut::from(&wire[..]);
                let mut n = 0;
                while let Some(op) = p.next(&mut buf).unwrap() {
                    black_box(op);
                    n += 1;
                }
                assert_eq!(n, 1000);
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("encode_msg");
    g.throughput(Throughput::Elements(1));
    let payload = [b'x'; 16];
    let mut out = BytesMut::with_capacity(1 << 20);
    g.bench_function("16B", |b| {
        b.iter(|| {
            if out.len() > (1 << 19) {
                out.clear();
            }
            write_msg(
                &mut out,
                b"bench.subject.one",
                b"42",
                Some(b"_INBOX.abc"),
                None,
                &payload,
            );
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = bench_parse
}
criterion_main!(benches);
