//! `KeyedVec`, a small map from `u64` keys (sequence, packet, request and connection numbers)
//! to values, kept as a `Vec` sorted by key; the core's in-flight tables and the browser
//! host's use it.
//!
//! Hand-written instead of `BTreeMap`/`HashMap` for bundle size: each `BTreeMap<K, V>` a wasm
//! module uses adds several kilobytes of node-balancing code, and a `HashMap` brings hashbrown
//! and SipHash along. These maps hold the few packets, requests or replies in flight and are
//! mostly filled in key order, so appending to a `Vec` is the common case and a binary search
//! handles the rest.

use crate::prelude::*;

use core::ops::RangeInclusive;

/// Values by `u64` key, iterated in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyedVec<V> {
    entries: Vec<(u64, V)>,
}

impl<V> Default for KeyedVec<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<V> KeyedVec<V> {
    /// Stores `value` under `key`, returning the value it replaces.
    pub(crate) fn insert(&mut self, key: u64, value: V) -> Option<V> {
        match self.entries.last() {
            Some((last, _)) if *last < key => {
                self.entries.push((key, value));
                None
            }
            None => {
                self.entries.push((key, value));
                None
            }
            Some(_) => match self.entries.binary_search_by_key(&key, |(k, _)| *k) {
                Ok(index) => Some(core::mem::replace(&mut self.entries[index].1, value)),
                Err(index) => {
                    self.entries.insert(index, (key, value));
                    None
                }
            },
        }
    }

    /// The value stored under `key`.
    pub(crate) fn get(&self, key: u64) -> Option<&V> {
        let index = self.entries.binary_search_by_key(&key, |(k, _)| *k).ok()?;
        Some(&self.entries[index].1)
    }

    /// The value stored under `key`, to change it.
    pub(crate) fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        let index = self.entries.binary_search_by_key(&key, |(k, _)| *k).ok()?;
        Some(&mut self.entries[index].1)
    }

    /// Takes the value stored under `key` out.
    pub(crate) fn remove(&mut self, key: u64) -> Option<V> {
        let index = self.entries.binary_search_by_key(&key, |(k, _)| *k).ok()?;
        Some(self.entries.remove(index).1)
    }

    /// Takes out every entry whose key is in `keys`, in key order.
    pub(crate) fn remove_range(&mut self, keys: RangeInclusive<u64>) -> Vec<(u64, V)> {
        let start = self.entries.partition_point(|(k, _)| k < keys.start());
        let end = self.entries.partition_point(|(k, _)| k <= keys.end());
        if start >= end {
            return Vec::new();
        }
        self.entries.drain(start..end).collect()
    }

    /// The values in key order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, value)| value)
    }

    /// The entries in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &V)> {
        self.entries.iter().map(|(key, value)| (*key, value))
    }

    /// Whether a value is stored under `key`.
    pub(crate) fn contains_key(&self, key: u64) -> bool {
        self.get(key).is_some()
    }

    /// Keeps only the entries `keep` accepts.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u64, &V) -> bool) {
        self.entries.retain(|(key, value)| keep(*key, value));
    }

    /// How many entries there are.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes every entry.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

impl<V> IntoIterator for KeyedVec<V> {
    type Item = (u64, V);
    type IntoIter = alloc::vec::IntoIter<(u64, V)>;

    /// The entries in key order.
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::KeyedVec;
    use crate::prelude::*;

    #[test]
    fn keeps_key_order_whatever_the_insertion_order() {
        let mut map = KeyedVec::default();
        for key in [5, 1, 9, 3, 7] {
            assert_eq!(map.insert(key, key * 10), None);
        }
        assert_eq!(map.insert(3, 31), Some(30));
        assert_eq!(
            map.values().copied().collect::<Vec<_>>(),
            [10, 31, 50, 70, 90]
        );
        assert_eq!(map.remove(5), Some(50));
        assert_eq!(map.remove(5), None);
        assert_eq!(map.remove_range(2..=8), [(3, 31), (7, 70)]);
        assert_eq!(map.remove_range(20..=30), []);
        assert_eq!(map.into_iter().collect::<Vec<_>>(), [(1, 10), (9, 90)]);
    }

    #[test]
    fn matches_a_btree_map_under_a_mixed_sequence_of_operations() {
        let mut map = KeyedVec::default();
        let mut model = alloc::collections::BTreeMap::new();
        let mut state = 0x2545_f491_u64;
        for step in 0..2_000u64 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let key = (state >> 33) % 64;
            match (state >> 20) % 4 {
                0 | 1 => assert_eq!(map.insert(key, step), model.insert(key, step)),
                2 => assert_eq!(map.remove(key), model.remove(&key)),
                _ => {
                    let range = key..=key + (state >> 40) % 16;
                    let expected: Vec<_> =
                        model.range(range.clone()).map(|(k, v)| (*k, *v)).collect();
                    for (k, _) in &expected {
                        model.remove(k);
                    }
                    assert_eq!(map.remove_range(range), expected);
                }
            }
            assert_eq!(map.get(key), model.get(&key));
            if let (Some(value), Some(expected)) = (map.get_mut(key), model.get_mut(&key)) {
                *value += 1;
                *expected += 1;
            }
            assert_eq!(map.is_empty(), model.is_empty());
            assert_eq!(map.len(), model.len());
            assert_eq!(map.contains_key(key), model.contains_key(&key));
            assert!(map.values().eq(model.values()));
            assert!(map.iter().eq(model.iter().map(|(k, v)| (*k, v))));
            if step % 97 == 0 {
                map.retain(|k, v| (k + v) % 3 != 0);
                model.retain(|k, v| (*k + *v) % 3 != 0);
            }
        }
    }
}
