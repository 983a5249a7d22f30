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
    assert_eq!(sorted(&workers.members), [1, 2]);
    let audit = m
        .queues
        .iter()
        .find(|g| g.name.as_ref() == b"audit")
        .unwrap();
    assert_eq!(audit.members, [3]);
}

#[test]
fn multiset_semantics_give_weights() {
    let mut idx = SubjectIndex::new();
    for _ in 0..3 {
        idx.insert(b"q", Some(b"g"), "shard1").unwrap();
    }
    idx.insert(b"q", Some(b"g"), "shard0").unwrap();
    assert_eq!(idx.len(), 4);
    assert_eq!(idx.matches(b"q").queues[0].members.len(), 4);
    assert!(idx.remove(b"q", Some(b"g"), &"shard1"));
    assert_eq!(idx.matches(b"q").queues[0].members.len(), 3);
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
