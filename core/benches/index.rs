//! Subject index benchmarks at 10, 10,000 and 1,000,000 subscriptions:
//! match with a cache hit, match on a cache miss (a full trie walk), and
//! subscribe/unsubscribe churn. Memory per subscription is measured with a
//! counting allocator and printed before the runs.
//!
//! cargo bench -p shoal-core --bench index

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shoal_core::index::SubjectIndex;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::Instant;

/// Counts live heap bytes so memory per subscription can be reported.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Subscription `i`: a 4-token subject `t.X.Y.Z`; one in ten has a `*`
/// in the third token, so wildcard and literal branches both get walked.
fn pattern(i: usize) -> String {
    let (x, y, z) = (i / 10_000, (i / 100) % 100, i % 100);
    if i % 10 == 0 {
        format!("t.{x}.*.{z}")
    } else {
        format!("t.{x}.{y}.{z}")
    }
}

/// A subject that matches subscription `i` (and the wildcard of its row).
fn subject(i: usize) -> String {
    let (x, y, z) = (i / 10_000, (i / 100) % 100, i % 100);
    format!("t.{x}.{y}.{z}")
}

fn build(n: usize) -> SubjectIndex<u64> {
    let mut idx = SubjectIndex::new();
    for i in 0..n {
        idx.insert(pattern(i).as_bytes(), None, i as u64).unwrap();
    }
    idx
}

fn report_memory_and_insert_rate(n: usize) {
    let before = LIVE.load(Relaxed);
    let t = Instant::now();
    let idx = build(n);
    let took = t.elapsed();
    let bytes = LIVE.load(Relaxed) - before;
    eprintln!(
        "index n={n}: {:.0} bytes/subscription, insert {:.0} ns/subscription",
        bytes as f64 / n as f64,
        took.as_nanos() as f64 / n as f64
    );
    drop(idx);
}

fn bench_index(c: &mut Criterion) {
    for n in [10, 10_000, 1_000_000] {
        report_memory_and_insert_rate(n);
    }
    let mut g = c.benchmark_group("index_match");
    g.throughput(Throughput::Elements(1));
    for n in [10usize, 10_000, 1_000_000] {
        let mut idx = build(n);
        // Hot set: 1,000 subjects (fewer for n = 10), all cached.
        let hot: Vec<String> = (0..n.min(1000))
            .map(|i| subject(i * (n / n.min(1000))))
            .collect();
        for s in &hot {
            idx.matches(s.as_bytes());
        }
        let mut k = 0;
        g.bench_with_input(BenchmarkId::new("cache_hit", n), &n, |b, _| {
            b.iter(|| {
                k = (k + 1) % hot.len();
                black_box(idx.matches(hot[k].as_bytes()));
            })
        });
        // Miss: a full trie walk, over subjects spread across the whole index.
        let spread: Vec<String> = (0..4096).map(|i| subject((i * 7919) % n)).collect();
        let mut k = 0;
        g.bench_with_input(BenchmarkId::new("cache_miss", n), &n, |b, _| {
            b.iter(|| {
                k = (k + 1) % spread.len();
                black_box(idx.matches_uncached(spread[k].as_bytes()));
            })
        });
        // No subscriber at all (what a no-responders check costs).
        g.bench_with_input(BenchmarkId::new("miss_no_interest", n), &n, |b, _| {
            b.iter(|| black_box(idx.has_match(b"other.subject.nobody.wants")))
        });
        // Subscribe + unsubscribe one subscription (connection churn).
        let mut k = 0usize;
        g.bench_with_input(BenchmarkId::new("sub_unsub", n), &n, |b, _| {
            b.iter(|| {
                k = k.wrapping_add(1);
                let p = pattern(n + (k % 1000));
                idx.insert(p.as_bytes(), None, u64::MAX).unwrap();
                assert!(idx.remove(p.as_bytes(), None, &u64::MAX));
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = bench_index
}
criterion_main!(benches);
