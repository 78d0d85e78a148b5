//! The memory of published ids: each with its expiry, bounded by the
//! capacity, evicted oldest first (the module above says why not a general
//! cache). Ids arrive as 128-bit keyed hashes.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

/// A 128-bit id hash, laid out as two words so a map entry with its expiry
/// takes 24 bytes (a `u128` would be aligned to 16 and take 32).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key(u64, u64);

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already a keyed hash: one word of it is a good hash.
        state.write_u64(self.1);
    }
}

/// Passes `Key`'s word through instead of hashing it again.
#[derive(Default)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `Key`; fold anything else in anyway.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Published ids with their expiry, evicted oldest first (see the module
/// documentation for why not a general cache).
pub(super) struct Remembered {
    shards: Box<[Mutex<Shard>]>,
}

struct Shard {
    /// Id → the second (since `epoch`) at which it expires.
    expiry: HashMap<Key, u32, BuildHasherDefault<WordHasher>>,
    /// Ids in insertion order, which is expiry order for ids this process
    /// published and close to it for ids read back from Kafka (the warm
    /// start reads partitions oldest first, the follower as they arrive).
    order: VecDeque<Key>,
    capacity: usize,
}

impl Shard {
    /// Empty: the map grows as ids arrive (sizing it for the capacity up
    /// front would cost its whole table at start-up, about 45 MiB at the
    /// default capacity, before any id is remembered).
    fn new(capacity: usize) -> Self {
        Shard {
            expiry: HashMap::default(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// Keeps a full memory's table at its size under churn. An evicted id
    /// often leaves a tombstone rather than a free slot, and the standard
    /// map, asked to insert with no free slot left, rehashes in place only
    /// while it is at most half full: past that it doubles. A full memory
    /// (one id in, one out, for ever) is past that, so it doubled its table
    /// after some hundreds of thousands of ids per shard (measured: 457,000
    /// at a capacity of 30,000), a step in RSS long after the warm-up (about
    /// 50 MiB at the default capacity). When the shard holds its capacity
    /// and no slot is free, the table is rebuilt at the size that capacity
    /// needs, which clears the tombstones, for O(entries) every few hundred
    /// thousand insertions. While the memory fills, the map grows as usual.
    fn make_room(&mut self) {
        let len = self.expiry.len();
        if len < self.capacity || len < self.expiry.capacity() {
            return;
        }
        // Room for one more: the new id is inserted before the oldest goes.
        let mut fresh = HashMap::with_capacity_and_hasher(self.capacity + 1, Default::default());
        fresh.extend(self.expiry.drain());
        self.expiry = fresh;
    }
}

impl Remembered {
    pub(super) fn new(capacity: usize) -> Self {
        // Few shards for small capacities so the bound stays exact.
        let n = if capacity >= 64 * 1024 { 16 } else { 1 };
        let shards = (0..n)
            .map(|i| Mutex::new(Shard::new(capacity / n + usize::from(i < capacity % n))))
            .collect();
        Remembered { shards }
    }

    fn shard(&self, key: Key) -> MutexGuard<'_, Shard> {
        let i = (key.0 % self.shards.len() as u64) as usize;
        // Nothing panics while holding the lock; the shard stays consistent.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn contains(&self, key: u128, now: u32) -> bool {
        let key = split(key);
        self.shard(key)
            .expiry
            .get(&key)
            .is_some_and(|&expires| expires > now)
    }

    pub(super) fn insert(&self, key: u128, expires: u32, now: u32) {
        let key = split(key);
        let mut shard = self.shard(key);
        let shard = &mut *shard;
        match shard.expiry.get_mut(&key) {
            // Learned again (a replica's own record read back, or a record
            // and its re-delivery): the later expiry wins.
            Some(e) => *e = (*e).max(expires),
            None => {
                shard.make_room();
                shard.expiry.insert(key, expires);
                shard.order.push_back(key);
            }
        }
        while let Some(&oldest) = shard.order.front() {
            let expired = shard.expiry.get(&oldest).is_none_or(|&e| e <= now);
            if !expired && shard.order.len() <= shard.capacity {
                break;
            }
            shard.order.pop_front();
            shard.expiry.remove(&oldest);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).order.len())
            .sum()
    }
}

fn split(key: u128) -> Key {
    Key((key >> 64) as u64, key as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// Ids as the dedup memory sees them: keyed 128-bit hashes.
    fn ids(n: u64) -> impl Iterator<Item = u128> {
        let (a, b) = (
            std::collections::hash_map::RandomState::new(),
            std::collections::hash_map::RandomState::new(),
        );
        (0..n).map(move |i| (u128::from(a.hash_one(i)) << 64) | u128::from(b.hash_one(i)))
    }

    #[test]
    fn a_full_memory_under_churn_keeps_its_table_size() {
        // Without the rebuild the table doubled after about 10,000
        // insertions at this capacity.
        let memory = Remembered::new(1000);
        // What the full memory needs: room for its capacity and one more.
        let full = HashMap::<Key, u32, BuildHasherDefault<WordHasher>>::with_capacity_and_hasher(
            1001,
            Default::default(),
        )
        .capacity();
        let all: Vec<u128> = ids(100_000).collect();
        for (i, &id) in all.iter().enumerate() {
            memory.insert(id, u32::MAX, 0);
            let shard = memory.shards[0].lock().unwrap();
            assert!(
                shard.expiry.capacity() <= full,
                "table grew past {full} after {} insertions",
                i + 1
            );
        }
        assert_eq!(memory.len(), 1000);
        // The newest ids are remembered across the rebuilds, the older not.
        assert!(all[all.len() - 1000..]
            .iter()
            .all(|&id| memory.contains(id, 1)));
        assert!(!memory.contains(all[all.len() - 1001], 1));
    }
}
