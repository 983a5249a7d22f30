//! The subject index: which subscriptions match a subject.
//!
//! A token trie like nats-server's sublist: each level maps literal tokens to
//! nodes and has at most one `*` node and one `>` node. A node holds the plain
//! subscriptions whose pattern ends there, its queue groups, and the next
//! level. Matching walks literal, `*` and `>` branches at once, so its cost is
//! bounded by the trie nodes that actually exist along the subject, not by the
//! number of subscriptions.
//!
//! The index is generic over what a subscription points at (`T`: a local
//! connection's subscription, another shard, a route), because each shard of
//! the runtime keeps one index holding all three. It is a multiset: inserting
//! the same `(pattern, queue, value)` twice needs two removes. A match lists a
//! plain subscriber as many times as it was inserted; a queue group lists
//! each value once with its count as a weight (`QueueGroup::members`). A
//! remote shard with three members of a queue group is therefore one entry
//! of weight three, which is exactly what a uniform pick over the members
//! needs, and a value inserted 65,536 times in a group (another shard's or
//! a peer's members) costs one entry in every cached match, not 65,536.
//! Distinct values stay distinct entries: the runtime's local subscriptions
//! are one value each.
//!
//! Match results are cached per subject (ahash map, bounded in entries; each
//! entry's size follows the distinct values matching it). Inserting or
//! removing a literal pattern drops just that subject's entry; a wildcard
//! pattern drops every cached subject it matches. When the cache is full it is
//! cleared, which keeps the cost of a miss-heavy workload amortised O(1).

mod subset;

use crate::subject::{has_wildcard, is_valid_pattern, is_valid_queue, pattern_matches, tokens};
use ahash::AHashMap;
use bytes::Bytes;
use std::hash::Hash;
use std::sync::Arc;
use subset::SubSet;
use thiserror::Error;

/// Subjects with up to this many tokens are tokenised on the stack.
const STACK_TOKENS: usize = 16;

/// Calls `f` with the tokens of `subject`, without allocating for subjects of
/// up to `STACK_TOKENS` tokens (all realistic ones).
fn with_tokens<R>(subject: &[u8], f: impl FnOnce(&[&[u8]]) -> R) -> R {
    let mut stack: [&[u8]; STACK_TOKENS] = [&[]; STACK_TOKENS];
    let mut n = 0;
    for t in tokens(subject) {
        if n == STACK_TOKENS {
            let all: Vec<&[u8]> = tokens(subject).collect();
            return f(&all);
        }
        stack[n] = t;
        n += 1;
    }
    f(&stack[..n])
}

/// Default number of cached match results per index.
pub const DEFAULT_CACHE_CAPACITY: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum IndexError {
    #[error("invalid subject")]
    InvalidSubject,
    #[error("invalid queue name")]
    InvalidQueue,
}

/// The members of one queue group that match a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueGroup<T> {
    pub name: Bytes,
    /// Each value with its weight: how many of the group's subscriptions
    /// matching the subject it holds. A value is listed once per trie node
    /// holding it (once per matching pattern), so it may appear more than
    /// once when it subscribed with several patterns; weights then add up.
    pub members: Vec<(T, u32)>,
    /// The sum of the weights: the number of member subscriptions.
    pub total: u64,
}

impl<T> QueueGroup<T> {
    /// Picks one member subscription uniformly among those whose value is
    /// `eligible`: a value of weight three is three times as likely as one
    /// of weight one, as if every subscription were listed. `draw(n)` must
    /// return a uniformly random number in `0..n` (`n > 0`).
    ///
    /// When every member is eligible (the common case) this costs one draw
    /// and one walk over the entries. Otherwise a weighted reservoir pass
    /// over the eligible entries picks among them; the result stays exactly
    /// uniform over eligible subscriptions (the first draw landing on an
    /// ineligible member leaves the choice entirely to the second pass).
    pub fn pick(
        &self,
        mut eligible: impl FnMut(&T) -> bool,
        mut draw: impl FnMut(u64) -> u64,
    ) -> Option<&T> {
        if self.total == 0 {
            return None;
        }
        let mut at = draw(self.total);
        for (v, w) in &self.members {
            let w = u64::from(*w);
            if at < w {
                if eligible(v) {
                    return Some(v);
                }
                break;
            }
            at -= w;
        }
        let mut seen = 0u64;
        let mut pick = None;
        for (v, w) in &self.members {
            let w = u64::from(*w);
            if w == 0 || !eligible(v) {
                continue;
            }
            seen += w;
            if draw(seen) < w {
                pick = Some(v);
            }
        }
        pick
    }

    /// Every member value (with repeats when listed more than once).
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.members.iter().map(|(v, _)| v)
    }
}

/// Everything that matches a subject: plain subscribers, and queue
/// subscribers grouped by queue name (one group per name, even when members
/// subscribed with different patterns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matches<T> {
    pub plain: Vec<T>,
    pub queues: Vec<QueueGroup<T>>,
}

impl<T> Default for Matches<T> {
    fn default() -> Self {
        Matches {
            plain: Vec::new(),
            queues: Vec::new(),
        }
    }
}

impl<T> Matches<T> {
    pub fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.queues.is_empty()
    }
}

/// Cache effectiveness counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
    /// Values (plain and queue members) held by the cached results.
    pub cached_values: usize,
}

#[derive(Debug)]
struct Node<T> {
    plain: SubSet<T>,
    queues: Vec<(Bytes, SubSet<T>)>,
    next: Option<Box<Level<T>>>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            plain: SubSet::default(),
            queues: Vec::new(),
            next: None,
        }
    }
}

#[derive(Debug)]
struct Level<T> {
    literals: AHashMap<Box<[u8]>, Node<T>>,
    star: Option<Box<Node<T>>>,
    full: Option<Box<Node<T>>>,
}

impl<T> Default for Level<T> {
    fn default() -> Self {
        Level {
            literals: AHashMap::new(),
            star: None,
            full: None,
        }
    }
}

impl<T> Level<T> {
    fn is_empty(&self) -> bool {
        self.literals.is_empty() && self.star.is_none() && self.full.is_none()
    }
}

impl<T: Clone + Eq + Hash> Node<T> {
    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.queues.is_empty() && self.next.is_none()
    }

    fn add(&mut self, queue: Option<&[u8]>, value: T) {
        match queue {
            None => self.plain.insert(value),
            Some(q) => match self.queues.iter_mut().find(|(n, _)| n.as_ref() == q) {
                Some((_, set)) => set.insert(value),
                None => {
                    let mut set = SubSet::default();
                    set.insert(value);
                    self.queues.push((Bytes::copy_from_slice(q), set));
                }
            },
        }
    }

    fn take(&mut self, queue: Option<&[u8]>, value: &T) -> bool {
        match queue {
            None => self.plain.remove(value),
            Some(q) => {
                let Some(i) = self.queues.iter().position(|(n, _)| n.as_ref() == q) else {
                    return false;
                };
                let removed = self.queues[i].1.remove(value);
                if self.queues[i].1.is_empty() {
                    self.queues.swap_remove(i);
                }
                removed
            }
        }
    }

    fn collect_into(&self, out: &mut Matches<T>) {
        self.plain.extend_into(&mut out.plain);
        for (name, set) in &self.queues {
            let group = match out.queues.iter_mut().position(|g| g.name == name) {
                Some(i) => &mut out.queues[i],
                None => {
                    out.queues.push(QueueGroup {
                        name: name.clone(),
                        members: Vec::new(),
                        total: 0,
                    });
                    out.queues.last_mut().expect("just pushed")
                }
            };
            group.total += set.extend_weighted_into(&mut group.members);
        }
    }

    fn has_subs(&self) -> bool {
        !self.plain.is_empty() || !self.queues.is_empty()
    }
}

/// A subject index with a bounded match cache. Not thread-safe by design: each
/// shard owns its own.
#[derive(Debug)]
pub struct SubjectIndex<T> {
    root: Level<T>,
    len: usize,
    cache: AHashMap<Box<[u8]>, Arc<Matches<T>>>,
    cache_capacity: usize,
    /// Entries (plain values and queue members) held by cached results:
    /// bounded by [`CACHE_ENTRY_BUDGET`], so the cache's bytes are bounded
    /// too, not only its number of subjects.
    cached_entries: usize,
    hits: u64,
    misses: u64,
}

impl<T: Clone + Eq + Hash> Default for SubjectIndex<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone + Eq + Hash> SubjectIndex<T> {
    pub fn new() -> Self {
        Self::with_cache_capacity(DEFAULT_CACHE_CAPACITY)
    }

    /// An index caching at most `capacity` match results (0 disables the
    /// cache).
    pub fn with_cache_capacity(capacity: usize) -> Self {
        SubjectIndex {
            root: Level::default(),
            len: 0,
            cache: AHashMap::new(),
            cache_capacity: capacity,
            cached_entries: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// Number of subscriptions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits,
            misses: self.misses,
            entries: self.cache.len(),
            cached_values: self.cached_entries,
        }
    }

    /// Adds a subscription of `value` to `pattern` (in queue group `queue`).
    pub fn insert(
        &mut self,
        pattern: &[u8],
        queue: Option<&[u8]>,
        value: T,
    ) -> Result<(), IndexError> {
        if !is_valid_pattern(pattern) {
            return Err(IndexError::InvalidSubject);
        }
        if queue.is_some_and(|q| !is_valid_queue(q)) {
            return Err(IndexError::InvalidQueue);
        }
        let mut toks = tokens(pattern).peekable();
        let mut level = &mut self.root;
        while let Some(tok) = toks.next() {
            let node: &mut Node<T> = match tok {
                b"*" => level.star.get_or_insert_with(Default::default),
                b">" => level.full.get_or_insert_with(Default::default),
                _ => {
                    if !level.literals.contains_key(tok) {
                        level.literals.insert(tok.into(), Node::default());
                    }
                    level.literals.get_mut(tok).expect("inserted above")
                }
            };
            if toks.peek().is_none() {
                node.add(queue, value);
                break;
            }
            level = node.next.get_or_insert_with(Default::default);
        }
        self.len += 1;
        self.invalidate(pattern);
        Ok(())
    }

    /// Every entry: its pattern, queue, value and how many times the value
    /// is held there. For invariant checks (it walks the whole trie).
    pub fn for_each(&self, mut f: impl FnMut(&[u8], Option<&[u8]>, &T, usize)) {
        /// What is told each entry: pattern, queue, value, multiplicity.
        type Visit<'a, T> = dyn FnMut(&[u8], Option<&[u8]>, &T, usize) + 'a;
        fn walk<T: Clone + Eq + Hash>(
            level: &Level<T>,
            prefix: &mut Vec<u8>,
            f: &mut Visit<'_, T>,
        ) {
            let children = level
                .literals
                .iter()
                .map(|(k, n)| (&k[..], n))
                .chain(level.star.as_deref().map(|n| (&b"*"[..], n)))
                .chain(level.full.as_deref().map(|n| (&b">"[..], n)));
            for (tok, node) in children {
                let len = prefix.len();
                if !prefix.is_empty() {
                    prefix.push(b'.');
                }
                prefix.extend_from_slice(tok);
                node.plain.for_each_counted(|v, c| f(prefix, None, v, c));
                for (q, set) in &node.queues {
                    set.for_each_counted(|v, c| f(prefix, Some(q), v, c));
                }
                if let Some(next) = node.next.as_deref() {
                    walk(next, prefix, f);
                }
                prefix.truncate(len);
            }
        }
        walk(&self.root, &mut Vec::new(), &mut f);
    }

    /// How many subscriptions of `value` to exactly `pattern` (in `queue`)
    /// it holds: what a checker compares a mirror with.
    pub fn count(&self, pattern: &[u8], queue: Option<&[u8]>, value: &T) -> usize {
        if !is_valid_pattern(pattern) {
            return 0;
        }
        let mut toks = tokens(pattern).peekable();
        let mut level = &self.root;
        while let Some(tok) = toks.next() {
            let node = match tok {
                b"*" => level.star.as_deref(),
                b">" => level.full.as_deref(),
                _ => level.literals.get(tok),
            };
            let Some(node) = node else { return 0 };
            if toks.peek().is_none() {
                return match queue {
                    None => node.plain.count(value),
                    Some(q) => node
                        .queues
                        .iter()
                        .find(|(n, _)| n.as_ref() == q)
                        .map_or(0, |(_, set)| set.count(value)),
                };
            }
            let Some(next) = node.next.as_deref() else {
                return 0;
            };
            level = next;
        }
        0
    }

    /// Removes one subscription of `value` to `pattern` (in `queue`); returns
    /// whether it was there. Empty trie nodes are pruned.
    pub fn remove(&mut self, pattern: &[u8], queue: Option<&[u8]>, value: &T) -> bool {
        if !is_valid_pattern(pattern) {
            return false;
        }
        let removed = with_tokens(pattern, |toks| {
            remove_from_level(&mut self.root, toks, queue, value)
        });
        if removed {
            self.len -= 1;
            self.invalidate(pattern);
        }
        removed
    }

    fn invalidate(&mut self, pattern: &[u8]) {
        if self.cache.is_empty() {
            return;
        }
        if has_wildcard(pattern) {
            let mut dropped = 0;
            self.cache.retain(|subject, m| {
                let keep = !pattern_matches(pattern, subject);
                if !keep {
                    dropped += entries_of(m);
                }
                keep
            });
            self.cached_entries -= dropped;
        } else if let Some(m) = self.cache.remove(pattern) {
            self.cached_entries -= entries_of(&m);
        }
    }

    /// Everything matching `subject`, from the cache when possible.
    pub fn matches(&mut self, subject: &[u8]) -> Arc<Matches<T>> {
        if let Some(m) = self.cache.get(subject) {
            self.hits += 1;
            return m.clone();
        }
        self.misses += 1;
        let m = Arc::new(self.matches_uncached(subject));
        let entries = entries_of(&m);
        // A result too large to keep would evict everything else for one
        // subject; it is cheap relative to delivering to that many anyway.
        if self.cache_capacity > 0 && entries <= CACHE_ENTRY_BUDGET / 16 {
            if self.cache.len() >= self.cache_capacity
                || self.cached_entries + entries > CACHE_ENTRY_BUDGET
            {
                self.cache.clear();
                self.cached_entries = 0;
            }
            self.cache.insert(subject.into(), m.clone());
            self.cached_entries += entries;
        }
        m
    }

    /// Everything matching `subject`, computed from the trie.
    pub fn matches_uncached(&self, subject: &[u8]) -> Matches<T> {
        let mut out = Matches::default();
        if subject.is_empty() {
            return out;
        }
        with_tokens(subject, |toks| collect_level(&self.root, toks, &mut out));
        out
    }

    /// Whether anything matches `subject` (no allocation, no cache).
    pub fn has_match(&self, subject: &[u8]) -> bool {
        if subject.is_empty() {
            return false;
        }
        with_tokens(subject, |toks| any_in_level(&self.root, toks))
    }
}

/// Most entries (plain values and weighted queue members) all cached match
/// results of one index may hold together: about 4-8 MiB per shard. Without
/// it 4,096 cached subjects each matching 10,000 subscriptions (`SUB >` from
/// many clients) would hold 40 million entries.
pub const CACHE_ENTRY_BUDGET: usize = 1 << 18;

fn entries_of<T>(m: &Matches<T>) -> usize {
    m.plain.len() + m.queues.iter().map(|g| g.members.len()).sum::<usize>()
}

fn collect_level<T: Clone + Eq + Hash>(level: &Level<T>, toks: &[&[u8]], out: &mut Matches<T>) {
    let (tok, rest) = (toks[0], &toks[1..]);
    if let Some(n) = level.literals.get(tok) {
        collect_node(n, rest, out);
    }
    if let Some(n) = &level.star {
        collect_node(n, rest, out);
    }
    if let Some(n) = &level.full {
        n.collect_into(out);
    }
}

fn collect_node<T: Clone + Eq + Hash>(node: &Node<T>, rest: &[&[u8]], out: &mut Matches<T>) {
    if rest.is_empty() {
        node.collect_into(out);
    } else if let Some(next) = &node.next {
        collect_level(next, rest, out);
    }
}

fn any_in_level<T: Clone + Eq + Hash>(level: &Level<T>, toks: &[&[u8]]) -> bool {
    let (tok, rest) = (toks[0], &toks[1..]);
    level.full.as_ref().is_some_and(|n| n.has_subs())
        || level
            .literals
            .get(tok)
            .is_some_and(|n| any_in_node(n, rest))
        || level.star.as_ref().is_some_and(|n| any_in_node(n, rest))
}

fn any_in_node<T: Clone + Eq + Hash>(node: &Node<T>, rest: &[&[u8]]) -> bool {
    if rest.is_empty() {
        node.has_subs()
    } else {
        node.next.as_ref().is_some_and(|l| any_in_level(l, rest))
    }
}

fn remove_from_level<T: Clone + Eq + Hash>(
    level: &mut Level<T>,
    toks: &[&[u8]],
    queue: Option<&[u8]>,
    value: &T,
) -> bool {
    let (tok, rest) = (toks[0], &toks[1..]);
    match tok {
        b"*" | b">" => {
            let slot = if tok == b"*" {
                &mut level.star
            } else {
                &mut level.full
            };
            let Some(node) = slot.as_deref_mut() else {
                return false;
            };
            let removed = remove_from_node(node, rest, queue, value);
            if node.is_empty() {
                *slot = None;
            }
            removed
        }
        _ => {
            let Some(node) = level.literals.get_mut(tok) else {
                return false;
            };
            let removed = remove_from_node(node, rest, queue, value);
            if node.is_empty() {
                level.literals.remove(tok);
            }
            removed
        }
    }
}

fn remove_from_node<T: Clone + Eq + Hash>(
    node: &mut Node<T>,
    rest: &[&[u8]],
    queue: Option<&[u8]>,
    value: &T,
) -> bool {
    if rest.is_empty() {
        return node.take(queue, value);
    }
    let Some(next) = node.next.as_deref_mut() else {
        return false;
    };
    let removed = remove_from_level(next, rest, queue, value);
    if next.is_empty() {
        node.next = None;
    }
    removed
}

#[cfg(test)]
mod tests;
