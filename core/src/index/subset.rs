//! The subscriptions attached to one trie node (plain, or one queue group).

use ahash::AHashMap;
use std::hash::Hash;

/// Past this many entries a node switches from a vector to a counted map, so
/// removing one of 100,000 subscribers of a hot subject is O(1), while the
/// common case (a handful of subscribers) stays a small, cache-friendly vector.
const SMALL_MAX: usize = 32;

/// A multiset of subscription targets.
#[derive(Debug, Clone)]
pub(super) enum SubSet<T> {
    Few(Vec<T>),
    Many {
        counts: AHashMap<T, u32>,
        total: usize,
    },
}

impl<T> Default for SubSet<T> {
    fn default() -> Self {
        SubSet::Few(Vec::new())
    }
}

impl<T: Clone + Eq + Hash> SubSet<T> {
    pub(super) fn insert(&mut self, value: T) {
        match self {
            SubSet::Few(v) if v.len() < SMALL_MAX => v.push(value),
            SubSet::Few(v) => {
                let mut counts = AHashMap::with_capacity(v.len() * 2);
                let total = v.len() + 1;
                for x in v.drain(..).chain(std::iter::once(value)) {
                    *counts.entry(x).or_insert(0) += 1;
                }
                *self = SubSet::Many { counts, total };
            }
            SubSet::Many { counts, total } => {
                *counts.entry(value).or_insert(0) += 1;
                *total += 1;
            }
        }
    }

    /// Removes one occurrence of `value`; false if there was none.
    pub(super) fn remove(&mut self, value: &T) -> bool {
        match self {
            SubSet::Few(v) => match v.iter().position(|x| x == value) {
                Some(i) => {
                    v.swap_remove(i);
                    true
                }
                None => false,
            },
            SubSet::Many { counts, total } => {
                let Some(c) = counts.get_mut(value) else {
                    return false;
                };
                *c -= 1;
                if *c == 0 {
                    counts.remove(value);
                }
                *total -= 1;
                true
            }
        }
    }

    /// Each distinct value with its count.
    pub(super) fn for_each_counted(&self, mut f: impl FnMut(&T, usize)) {
        match self {
            SubSet::Few(v) => {
                for (i, x) in v.iter().enumerate() {
                    // Count each distinct value once, at its first place.
                    if v[..i].iter().all(|y| y != x) {
                        f(x, v.iter().filter(|y| *y == x).count());
                    }
                }
            }
            SubSet::Many { counts, .. } => {
                for (x, &c) in counts {
                    f(x, c as usize);
                }
            }
        }
    }

    /// How many occurrences of `value` it holds.
    pub(super) fn count(&self, value: &T) -> usize {
        match self {
            SubSet::Few(v) => v.iter().filter(|x| *x == value).count(),
            SubSet::Many { counts, .. } => counts.get(value).map_or(0, |&c| c as usize),
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            SubSet::Few(v) => v.len(),
            SubSet::Many { total, .. } => *total,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends each distinct value once with its count to `out`, and returns
    /// the sum of the counts. A value held a million times costs one entry,
    /// which keeps a cached match result small whatever another shard or a
    /// peer announces (queue groups are picked by weight, never listed per
    /// member); distinct values are still one entry each.
    pub(super) fn extend_weighted_into(&self, out: &mut Vec<(T, u32)>) -> u64 {
        match self {
            SubSet::Few(v) => {
                // At most `SMALL_MAX` entries: the quadratic merge is cheap.
                let start = out.len();
                for x in v {
                    match out[start..].iter_mut().find(|(y, _)| y == x) {
                        Some((_, c)) => *c += 1,
                        None => out.push((x.clone(), 1)),
                    }
                }
                v.len() as u64
            }
            SubSet::Many { counts, total } => {
                out.extend(counts.iter().map(|(x, &c)| (x.clone(), c)));
                *total as u64
            }
        }
    }

    /// Appends every occurrence (with multiplicity) to `out`.
    pub(super) fn extend_into(&self, out: &mut Vec<T>) {
        match self {
            SubSet::Few(v) => out.extend_from_slice(v),
            SubSet::Many { counts, total } => {
                out.reserve(*total);
                for (x, &c) in counts {
                    out.extend(std::iter::repeat_n(x.clone(), c as usize));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_into_a_map_and_keeps_multiplicity() {
        let mut s = SubSet::default();
        for i in 0..100u32 {
            s.insert(i % 40);
        }
        assert!(matches!(s, SubSet::Many { .. }));
        assert_eq!(s.len(), 100);
        assert!(s.remove(&3));
        assert!(s.remove(&3));
        assert!(s.remove(&3));
        assert!(!s.remove(&3), "3 was inserted three times");
        let mut out = Vec::new();
        s.extend_into(&mut out);
        assert_eq!(out.len(), 97);
        assert_eq!(out.iter().filter(|&&x| x == 0).count(), 3);
    }

    #[test]
    fn weighted_listing_has_one_entry_per_value() {
        for n in [3u32, 100] {
            let mut s = SubSet::default();
            for _ in 0..n {
                s.insert('a');
            }
            s.insert('b');
            let mut out = vec![('z', 7)];
            assert_eq!(s.extend_weighted_into(&mut out), u64::from(n) + 1);
            out.sort();
            assert_eq!(
                out,
                [('a', n), ('b', 1), ('z', 7)],
                "earlier entries untouched"
            );
        }
    }
}
