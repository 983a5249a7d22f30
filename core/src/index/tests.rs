use super::*;

fn sorted<T: Ord + Clone>(v: &[T]) -> Vec<T> {
    let mut v = v.to_vec();
    v.sort();
    v
}

#[test]
fn wildcards_follow_nats_semantics() {
    let mut idx = SubjectIndex::new();
    idx.insert(b"foo", None, 1).unwrap();
    idx.insert(b"foo.*", None, 2).unwrap();
    idx.insert(b"foo.>", None, 3).unwrap();
    idx.insert(b"*.bar", None, 4).unwrap();
    idx.insert(b">", None, 5).unwrap();
    idx.insert(b"foo.bar.baz", None, 6).unwrap();
    assert_eq!(sorted(&idx.matches(b"foo").plain), [1, 5]);
    assert_eq!(sorted(&idx.matches(b"foo.bar").plain), [2, 3, 4, 5]);
    assert_eq!(sorted(&idx.matches(b"foo.bar.baz").plain), [3, 5, 6]);
    assert_eq!(sorted(&idx.matches(b"x.bar").plain), [4, 5]);
    assert_eq!(sorted(&idx.matches(b"x.y.z").plain), [5]);
    assert!(idx.has_match(b"foo.q"));
    assert!(!SubjectIndex::<u8>::new().has_match(b"foo"));
}

#[test]
fn queue_groups_grouped_by_name_across_patterns() {
    let mut idx = SubjectIndex::new();
    idx.insert(b"orders.*", Some(b"workers"), 1).unwrap();
    idx.insert(b"orders.new", Some(b"workers"), 2).unwrap();
    idx.insert(b"orders.new", Some(b"audit"), 3).unwrap();
    idx.insert(b"orders.new", None, 4).unwrap();
    let m = idx.matches(b"orders.new");
    assert_eq!(m.plain, [4]);
    assert_eq!(m.queues.len(), 2);
    let workers = m
        .queues
        .iter()
        .find(|g| g.name.as_ref() == b"workers")
        .unwrap();
    assert_eq!(sorted(&workers.members), [(1, 1), (2, 1)]);
    assert_eq!(workers.total, 2);
    let audit = m
        .queues
        .iter()
        .find(|g| g.name.as_ref() == b"audit")
        .unwrap();
    assert_eq!(audit.members, [(3, 1)]);
}

#[test]
fn multiset_semantics_give_weights() {
    let mut idx = SubjectIndex::new();
    for _ in 0..3 {
        idx.insert(b"q", Some(b"g"), "shard1").unwrap();
    }
    idx.insert(b"q", Some(b"g"), "shard0").unwrap();
    assert_eq!(idx.len(), 4);
    let m = idx.matches(b"q");
    assert_eq!(sorted(&m.queues[0].members), [("shard0", 1), ("shard1", 3)]);
    assert_eq!(m.queues[0].total, 4);
    assert!(idx.remove(b"q", Some(b"g"), &"shard1"));
    let m = idx.matches(b"q");
    assert_eq!(sorted(&m.queues[0].members), [("shard0", 1), ("shard1", 2)]);
    assert_eq!(m.queues[0].total, 3);
    assert!(
        !idx.remove(b"q", None, &"shard1"),
        "not a plain subscription"
    );
    assert!(!idx.remove(b"q", Some(b"other"), &"shard1"));
}

#[test]
fn cache_is_invalidated_on_insert_and_remove() {
    let mut idx = SubjectIndex::new();
    assert!(idx.matches(b"a.b").is_empty());
    idx.insert(b"a.b", None, 1).unwrap();
    assert_eq!(idx.matches(b"a.b").plain, [1], "literal insert invalidates");
    idx.insert(b"a.*", None, 2).unwrap();
    assert_eq!(
        sorted(&idx.matches(b"a.b").plain),
        [1, 2],
        "wildcard insert invalidates"
    );
    let before = idx.cache_stats();
    idx.matches(b"a.b");
    assert_eq!(idx.cache_stats().hits, before.hits + 1);
    idx.insert(b"zzz", None, 3).unwrap();
    assert_eq!(
        idx.cache_stats().entries,
        1,
        "unrelated insert keeps the entry"
    );
    assert!(idx.remove(b"a.*", None, &2));
    assert_eq!(idx.matches(b"a.b").plain, [1], "remove invalidates");
    assert!(idx.remove(b"a.b", None, &1));
    assert!(idx.matches(b"a.b").is_empty());
}

#[test]
fn cache_stays_bounded() {
    let mut idx = SubjectIndex::with_cache_capacity(8);
    idx.insert(b">", None, 0).unwrap();
    for i in 0..100 {
        assert_eq!(idx.matches(format!("s.{i}").as_bytes()).plain, [0]);
        assert!(idx.cache_stats().entries <= 8);
    }
}

#[test]
fn rejects_invalid_patterns_and_queues() {
    let mut idx = SubjectIndex::new();
    assert_eq!(
        idx.insert(b"a..b", None, 1),
        Err(IndexError::InvalidSubject)
    );
    assert_eq!(
        idx.insert(b"a.>.b", None, 1),
        Err(IndexError::InvalidSubject)
    );
    assert_eq!(idx.insert(b"", None, 1), Err(IndexError::InvalidSubject));
    assert_eq!(
        idx.insert(b"a", Some(b""), 1),
        Err(IndexError::InvalidQueue)
    );
    assert_eq!(
        idx.insert(b"a", Some(b"x y"), 1),
        Err(IndexError::InvalidQueue)
    );
    assert!(idx.is_empty());
}

#[test]
fn removal_prunes_the_trie() {
    let mut idx = SubjectIndex::new();
    idx.insert(b"a.b.c.d", None, 1).unwrap();
    idx.insert(b"a.*.>", Some(b"q"), 2).unwrap();
    assert!(idx.remove(b"a.b.c.d", None, &1));
    assert!(idx.remove(b"a.*.>", Some(b"q"), &2));
    assert!(idx.root.is_empty(), "every node pruned");
    assert!(idx.is_empty());
}

#[test]
fn many_subscribers_on_one_subject() {
    let mut idx = SubjectIndex::new();
    for i in 0..10_000u32 {
        idx.insert(b"hot", None, i).unwrap();
    }
    assert_eq!(idx.matches(b"hot").plain.len(), 10_000);
    for i in 0..10_000u32 {
        assert!(idx.remove(b"hot", None, &i));
    }
    assert!(idx.root.is_empty());
}

#[test]
fn long_subjects_past_the_stack_token_buffer() {
    let mut idx = SubjectIndex::new();
    let long: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
    let subject = long.join(".");
    let pattern = format!("{}.>", long[..20].join("."));
    idx.insert(subject.as_bytes(), None, 1).unwrap();
    idx.insert(pattern.as_bytes(), None, 2).unwrap();
    assert_eq!(sorted(&idx.matches(subject.as_bytes()).plain), [1, 2]);
    assert!(idx.remove(subject.as_bytes(), None, &1));
    assert!(idx.remove(pattern.as_bytes(), None, &2));
    assert!(idx.root.is_empty());
}

/// One value holding 65,536 members of a group (another shard's members, or
/// a peer announcing that weight) must not make every cached match result of
/// the group's subjects hold 65,536 entries: one entry with the weight.
#[test]
fn queue_weight_costs_one_entry_per_value() {
    let mut idx = SubjectIndex::new();
    for _ in 0..65_536 {
        idx.insert(b"foo.>", Some(b"g"), 7u32).unwrap();
    }
    idx.insert(b"foo.*", Some(b"g"), 8u32).unwrap();
    for subject in ["foo.bar", "foo.baz"] {
        let m = idx.matches(subject.as_bytes());
        assert_eq!(m.queues.len(), 1);
        let g = &m.queues[0];
        assert_eq!(sorted(&g.members), [(7, 65_536), (8, 1)]);
        assert_eq!(g.total, 65_537);
        assert!(g.members.capacity() <= 4, "no room reserved per member");
    }
    // Past `SMALL_MAX` distinct values the node's set is a counted map:
    // still one entry per value.
    for v in 100..200u32 {
        idx.insert(b"foo.>", Some(b"g"), v).unwrap();
        idx.insert(b"foo.>", Some(b"g"), v).unwrap();
    }
    let m = idx.matches(b"foo.bar");
    assert_eq!(m.queues[0].members.len(), 102);
    assert_eq!(m.queues[0].total, 65_537 + 200);
}

/// A value subscribed with two patterns that both match is listed once per
/// pattern; the weights add up to its subscriptions.
#[test]
fn queue_member_under_two_patterns() {
    let mut idx = SubjectIndex::new();
    idx.insert(b"a.*", Some(b"g"), 1).unwrap();
    idx.insert(b"a.b", Some(b"g"), 1).unwrap();
    idx.insert(b"a.b", Some(b"g"), 1).unwrap();
    let m = idx.matches(b"a.b");
    assert_eq!(m.queues[0].total, 3);
    let w: u32 = m.queues[0]
        .members
        .iter()
        .filter(|(v, _)| *v == 1)
        .map(|(_, w)| w)
        .sum();
    assert_eq!(w, 3);
}

fn group(members: &[(char, u32)]) -> QueueGroup<char> {
    QueueGroup {
        name: Bytes::from_static(b"g"),
        members: members.to_vec(),
        total: members.iter().map(|(_, w)| u64::from(*w)).sum(),
    }
}

/// The exact distribution of `QueueGroup::pick`: runs it under every
/// sequence of draws, each weighted by its probability.
fn pick_distribution(
    g: &QueueGroup<char>,
    eligible: impl Fn(&char) -> bool,
) -> Vec<(Option<char>, f64)> {
    let mut out: Vec<(Option<char>, f64)> = Vec::new();
    // The draws of the current run: (value, bound).
    let mut script: Vec<(u64, u64)> = Vec::new();
    loop {
        let mut i = 0;
        let pick = g
            .pick(&eligible, |n| {
                assert!(n > 0);
                if i == script.len() {
                    script.push((0, n));
                }
                assert_eq!(script[i].1, n, "same draws for the same prefix");
                i += 1;
                script[i - 1].0
            })
            .copied();
        assert_eq!(i, script.len(), "every scripted draw used");
        let p: f64 = script.iter().map(|(_, n)| 1.0 / *n as f64).product();
        match out.iter_mut().find(|(v, _)| *v == pick) {
            Some((_, q)) => *q += p,
            None => out.push((pick, p)),
        }
        // Next sequence of draws (an odometer over the draws' ranges).
        while let Some((v, n)) = script.last_mut() {
            *v += 1;
            if *v < *n {
                break;
            }
            script.pop();
        }
        if script.is_empty() {
            break;
        }
    }
    out.sort_by_key(|a| a.0);
    out
}

fn assert_distribution(got: &[(Option<char>, f64)], want: &[(Option<char>, f64)]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.0, w.0, "{got:?} vs {want:?}");
        assert!((g.1 - w.1).abs() < 1e-9, "{got:?} vs {want:?}");
    }
}

#[test]
fn pick_is_proportional_to_weight() {
    let g = group(&[('a', 1), ('b', 3), ('c', 2), ('b', 2)]);
    assert_distribution(
        &pick_distribution(&g, |_| true),
        &[
            (Some('a'), 1.0 / 8.0),
            (Some('b'), 5.0 / 8.0),
            (Some('c'), 2.0 / 8.0),
        ],
    );
    // The draw is a position in the cumulative weights.
    let at = |r: u64| *g.pick(|_| true, |_| r).unwrap();
    assert_eq!(
        (0..8).map(at).collect::<String>(),
        "abbbccbb",
        "position r picks the member covering r"
    );
}

#[test]
fn pick_skips_ineligible_members_uniformly() {
    let g = group(&[('a', 1), ('b', 3), ('c', 2), ('d', 1)]);
    assert_distribution(
        &pick_distribution(&g, |&v| v != 'b'),
        &[(Some('a'), 0.25), (Some('c'), 0.5), (Some('d'), 0.25)],
    );
    assert_distribution(&pick_distribution(&g, |&v| v == 'c'), &[(Some('c'), 1.0)]);
    assert_distribution(&pick_distribution(&g, |_| false), &[(None, 1.0)]);
    assert_eq!(group(&[]).pick(|_| true, |_| unreachable!()), None);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Whatever the weights, repeats and eligible subset, a pick is uniform
    /// over eligible subscriptions (exactly, over every draw sequence).
    #[test]
    fn pick_is_uniform_over_eligible_subscriptions(
        members in proptest::collection::vec((0u8..4, 1u32..4), 0..4),
        eligible in proptest::collection::vec(proptest::bool::ANY, 4),
    ) {
        let members: Vec<(char, u32)> =
            members.iter().map(|&(v, w)| ((b'a' + v) as char, w)).collect();
        let ok = |v: &char| eligible[(*v as u8 - b'a') as usize];
        let weight_of = |v: char| -> u64 {
            members.iter().filter(|m| m.0 == v).map(|m| u64::from(m.1)).sum()
        };
        let total: u64 = "abcd".chars().filter(|v| ok(v)).map(weight_of).sum();
        let mut want: Vec<(Option<char>, f64)> = "abcd"
            .chars()
            .filter(|v| ok(v) && weight_of(*v) > 0)
            .map(|v| (Some(v), weight_of(v) as f64 / total as f64))
            .collect();
        if want.is_empty() {
            want.push((None, 1.0));
        }
        assert_distribution(&pick_distribution(&group(&members), ok), &want);
    }
}

/// The cache is bounded in bytes, not only in subjects: thousands of
/// subscriptions matching every subject (`>` from many clients) do not make
/// each cached subject hold a copy of all of them without limit.
#[test]
fn cache_is_bounded_by_entries_held() {
    let mut idx = SubjectIndex::<u32>::new();
    for v in 0..10_000u32 {
        idx.insert(b">", None, v).unwrap();
    }
    for i in 0..4_000 {
        let m = idx.matches(format!("s.{i}").as_bytes());
        assert_eq!(m.plain.len(), 10_000);
    }
    let st = idx.cache_stats();
    assert!(
        st.cached_values <= CACHE_ENTRY_BUDGET,
        "{} values cached",
        st.cached_values
    );
    // Invalidation keeps the count true.
    idx.remove(b">", None, &0);
    assert_eq!(idx.cache_stats().cached_values, 0);
    let m = idx.matches(b"s.x");
    assert_eq!(m.plain.len(), 9_999);
    assert_eq!(idx.cache_stats().cached_values, 9_999);
}
