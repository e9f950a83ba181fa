//! Triton's response cache: a successful answer kept under its request, so
//! that the same request again is answered without running the model.
//!
//! **The key** is the model's name, version and content identity (its
//! fingerprint; for an ensemble, also its steps' versions as they serve
//! now), each input's name, datatype, shape and bytes in the order sent, and
//! each requested output with its `classification`. Two requests with the
//! same bytes under another shape or datatype are different keys (Triton's
//! key hashes the bytes alone). `binary_data` and the request parameters
//! are left out: the cached tensors are the same however they are encoded,
//! and no parameter reaches a model's computation. A version swapped in has
//! another identity, so a swap never answers from the old version's cache.
//!
//! **The local cache** is bounded in bytes (its entries' keys, tensors and
//! a fixed overhead each) and evicts the least recently used. A lookup
//! compares the whole key, bytes included, so a hash collision is a miss,
//! never another request's answer.
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use quiver_runtimes::{DataType, Tensor};

use super::model::{BoxFuture, ModelVersion};
use super::request::{InferRequest, RequestedOutput};

/// Where answers are kept (`--cache-config`): [`LocalCache`] here, or a
/// store the server provides (Redis), shared by replicas.
pub trait ResponseCache: Send + Sync {
    /// The answer's outputs stored under `key`, if any. A cache that cannot
    /// answer (a store down) answers `None`: a miss, never an error.
    fn get<'a>(&'a self, key: &'a Key<'a>) -> BoxFuture<'a, Option<Vec<Tensor>>>;
    /// Stores `outputs` under `key` (a failure is the cache's to count).
    fn put<'a>(&'a self, key: &'a Key<'a>, outputs: &'a [Tensor]) -> BoxFuture<'a, ()>;
}

/// A request as the cache sees it, borrowed from the request itself.
pub struct Key<'a> {
    pub model: &'a str,
    pub version: u64,
    /// The version's content identity (and its steps', for an ensemble).
    pub identity: u64,
    pub inputs: &'a [Tensor],
    pub outputs: &'a [RequestedOutput],
    /// Over all of the above (not collision-proof: the local cache compares
    /// whole keys; a shared store keys by a cryptographic digest).
    pub hash: u64,
}

impl<'a> Key<'a> {
    pub fn new(model: &'a ModelVersion, identity: u64, req: &'a InferRequest) -> Key<'a> {
        Key::with_hash(model, identity, req, Key::hash(model, identity, req))
    }

    /// The key of `req` whose hash is known (a copy of a request hashed
    /// before).
    pub fn with_hash(model: &'a ModelVersion, identity: u64, req: &'a InferRequest, hash: u64) -> Key<'a> {
        Key {
            model: model.name(),
            version: model.version,
            identity,
            inputs: &req.inputs,
            outputs: &req.outputs,
            hash,
        }
    }

    fn hash(model: &ModelVersion, identity: u64, req: &InferRequest) -> u64 {
        let mut h = Mix::new(identity ^ model.version);
        h.bytes(model.name().as_bytes());
        for t in &req.inputs {
            h.bytes(t.name.as_bytes());
            h.word(t.datatype as u64);
            for &d in &t.shape {
                h.word(d as u64);
            }
            h.bytes(&t.data);
        }
        for o in &req.outputs {
            h.bytes(o.name.as_bytes());
            h.word(classification(o).unwrap_or(-1) as u64);
        }
        h.finish()
    }

    /// The bytes a stored copy of this key takes.
    fn size(&self) -> usize {
        self.model.len()
            + self
                .inputs
                .iter()
                .map(|t| t.name.len() + t.shape.len() * 8 + t.data.len())
                .sum::<usize>()
            + self.outputs.iter().map(|o| o.name.len() + 8).sum::<usize>()
    }
}

/// A requested output's `classification`, as the key holds it.
fn classification(o: &RequestedOutput) -> Option<i64> {
    o.classification.as_ref().and_then(|k| k.as_i64())
}

/// A fast mix of words and byte runs (rapidhash for the bytes).
struct Mix(u64);

impl Mix {
    fn new(seed: u64) -> Mix {
        Mix(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(0xff51_afd7_ed55_8ccd).rotate_left(29);
    }
    fn bytes(&mut self, b: &[u8]) {
        self.word(b.len() as u64);
        self.word(rapidhash::v3::rapidhash_v3(b));
    }
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

/// A key kept with its entry: its own copy of the input bytes, so that an
/// entry never holds a request's wire buffer alive.
struct StoredKey {
    model: String,
    version: u64,
    identity: u64,
    inputs: Vec<(String, DataType, Vec<i64>, Bytes)>,
    outputs: Vec<(String, Option<i64>)>,
}

impl StoredKey {
    fn of(key: &Key<'_>) -> StoredKey {
        StoredKey {
            model: key.model.to_owned(),
            version: key.version,
            identity: key.identity,
            inputs: key
                .inputs
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        t.datatype,
                        t.shape.clone(),
                        Bytes::copy_from_slice(&t.data),
                    )
                })
                .collect(),
            outputs: key
                .outputs
                .iter()
                .map(|o| (o.name.clone(), classification(o)))
                .collect(),
        }
    }

    fn matches(&self, key: &Key<'_>) -> bool {
        self.model == key.model
            && self.version == key.version
            && self.identity == key.identity
            && self.inputs.len() == key.inputs.len()
            && self
                .inputs
                .iter()
                .zip(key.inputs)
                .all(|((name, datatype, shape, data), t)| {
                    *name == t.name && *datatype == t.datatype && *shape == t.shape && *data == t.data
                })
            && self.outputs.len() == key.outputs.len()
            && self
                .outputs
                .iter()
                .zip(key.outputs)
                .all(|((name, k), o)| *name == o.name && *k == classification(o))
    }
}

struct Entry {
    key: StoredKey,
    outputs: Vec<Tensor>,
    bytes: usize,
    /// Its place in the recency order.
    used: u64,
}

/// What one entry costs beyond its bytes (maps, names, vectors).
const ENTRY_OVERHEAD: usize = 256;

#[derive(Default)]
struct Lru {
    entries: HashMap<u64, Entry>,
    /// Recency tick -> key hash, oldest first.
    order: BTreeMap<u64, u64>,
    tick: u64,
    bytes: usize,
}

/// The local cache: at most `capacity` bytes, least recently used out first.
pub struct LocalCache {
    capacity: usize,
    lru: Mutex<Lru>,
    evictions: AtomicU64,
}

/// What the local cache holds now, for its gauges and the tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub entries: usize,
    pub bytes: usize,
    pub capacity: usize,
    pub evictions: u64,
}

impl LocalCache {
    pub fn new(capacity: usize) -> LocalCache {
        LocalCache {
            capacity,
            lru: Mutex::default(),
            evictions: AtomicU64::new(0),
        }
    }

    pub fn usage(&self) -> Usage {
        let lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
        Usage {
            entries: lru.entries.len(),
            bytes: lru.bytes,
            capacity: self.capacity,
            evictions: self.evictions.load(Relaxed),
        }
    }

    fn lookup(&self, key: &Key<'_>) -> Option<Vec<Tensor>> {
        let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
        lru.tick += 1;
        let tick = lru.tick;
        let entry = lru.entries.get_mut(&key.hash).filter(|e| e.key.matches(key))?;
        let old = std::mem::replace(&mut entry.used, tick);
        // Shared bytes: the answer is the stored tensors, not a copy.
        let outputs = entry.outputs.clone();
        lru.order.remove(&old);
        lru.order.insert(tick, key.hash);
        Some(outputs)
    }

    fn store(&self, key: &Key<'_>, outputs: &[Tensor]) {
        let bytes = ENTRY_OVERHEAD
            + key.size()
            + outputs
                .iter()
                .map(|t| t.name.len() + t.shape.len() * 8 + t.data.len())
                .sum::<usize>();
        if bytes > self.capacity {
            return;
        }
        // Copied out of the batch's output buffer, which a slice would
        // keep alive whole.
        let outputs: Vec<Tensor> = outputs
            .iter()
            .map(|t| Tensor {
                name: t.name.clone(),
                datatype: t.datatype,
                shape: t.shape.clone(),
                data: Bytes::copy_from_slice(&t.data),
            })
            .collect();
        let stored = StoredKey::of(key);
        let mut lru = self.lru.lock().unwrap_or_else(|e| e.into_inner());
        lru.tick += 1;
        let tick = lru.tick;
        if let Some(old) = lru.entries.remove(&key.hash) {
            lru.order.remove(&old.used);
            lru.bytes -= old.bytes;
        }
        let mut evicted = 0;
        while lru.bytes + bytes > self.capacity {
            let Some((_, oldest)) = lru.order.pop_first() else {
                break;
            };
            if let Some(gone) = lru.entries.remove(&oldest) {
                lru.bytes -= gone.bytes;
                evicted += 1;
            }
        }
        self.evictions.fetch_add(evicted, Relaxed);
        lru.bytes += bytes;
        lru.order.insert(tick, key.hash);
        lru.entries.insert(
            key.hash,
            Entry {
                key: stored,
                outputs,
                bytes,
                used: tick,
            },
        );
        let (entries, held) = (lru.entries.len(), lru.bytes);
        drop(lru);
        crate::telemetry::cache_usage(entries, held, self.capacity, evicted);
    }
}

impl ResponseCache for LocalCache {
    fn get<'a>(&'a self, key: &'a Key<'a>) -> BoxFuture<'a, Option<Vec<Tensor>>> {
        let found = self.lookup(key);
        Box::pin(std::future::ready(found))
    }

    fn put<'a>(&'a self, key: &'a Key<'a>, outputs: &'a [Tensor]) -> BoxFuture<'a, ()> {
        self.store(key, outputs);
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, datatype: DataType, shape: Vec<i64>, data: &[u8]) -> Tensor {
        Tensor {
            name: name.into(),
            datatype,
            shape,
            data: Bytes::copy_from_slice(data),
        }
    }

    fn key<'a>(inputs: &'a [Tensor], outputs: &'a [RequestedOutput], version: u64) -> Key<'a> {
        let mut h = Mix::new(version);
        for t in inputs {
            h.bytes(t.name.as_bytes());
            h.word(t.datatype as u64);
            for &d in &t.shape {
                h.word(d as u64);
            }
            h.bytes(&t.data);
        }
        Key {
            model: "m",
            version,
            identity: 7,
            inputs,
            outputs,
            hash: h.finish(),
        }
    }

    #[test]
    fn same_bytes_under_another_shape_or_datatype_are_other_keys() {
        let cache = LocalCache::new(1 << 20);
        let bytes = [1u8, 0, 0, 0, 2, 0, 0, 0];
        let a = [tensor("x", DataType::Int32, vec![1, 2], &bytes)];
        let b = [tensor("x", DataType::Int32, vec![2, 1], &bytes)];
        let c = [tensor("x", DataType::Fp32, vec![1, 2], &bytes)];
        let answer = [tensor("y", DataType::Int32, vec![1], &[9, 0, 0, 0])];
        cache.store(&key(&a, &[], 1), &answer);
        assert_eq!(cache.lookup(&key(&a, &[], 1)).unwrap()[0].data, answer[0].data);
        assert!(cache.lookup(&key(&b, &[], 1)).is_none());
        assert!(cache.lookup(&key(&c, &[], 1)).is_none());
        assert!(cache.lookup(&key(&a, &[], 2)).is_none(), "another version");
        let asked = [RequestedOutput {
            name: "y".into(),
            ..Default::default()
        }];
        assert!(cache.lookup(&key(&a, &asked, 1)).is_none(), "other outputs asked");
    }

    #[test]
    fn a_hash_collision_is_a_miss_not_another_answer() {
        let cache = LocalCache::new(1 << 20);
        let a = [tensor("x", DataType::Uint8, vec![1], &[1])];
        let b = [tensor("x", DataType::Uint8, vec![1], &[2])];
        cache.store(&key(&a, &[], 1), &[tensor("y", DataType::Uint8, vec![1], &[1])]);
        let mut forged = key(&b, &[], 1);
        forged.hash = key(&a, &[], 1).hash;
        assert!(cache.lookup(&forged).is_none());
    }

    #[test]
    fn it_stays_within_its_bytes_and_evicts_the_least_recently_used() {
        // Room for three entries of about 1,276 bytes.
        let capacity = 3 * (ENTRY_OVERHEAD + 1100);
        let cache = LocalCache::new(capacity);
        let inputs: Vec<[Tensor; 1]> = (0..8u8)
            .map(|i| [tensor("x", DataType::Uint8, vec![1000], &[i; 1000])])
            .collect();
        let answer = [tensor("y", DataType::Uint8, vec![1], &[0])];
        for (i, input) in inputs.iter().enumerate().take(4) {
            cache.store(&key(input, &[], 1), &answer);
            assert!(cache.usage().bytes <= capacity, "after {i}");
        }
        // The fourth pushed the first out.
        assert_eq!(cache.usage().entries, 3, "{:?}", cache.usage());
        assert!(cache.lookup(&key(&inputs[0], &[], 1)).is_none());
        // Entry 1 used again: 2 is now the oldest and goes first.
        assert!(cache.lookup(&key(&inputs[1], &[], 1)).is_some());
        cache.store(&key(&inputs[5], &[], 1), &answer);
        assert!(cache.lookup(&key(&inputs[1], &[], 1)).is_some());
        assert!(cache.lookup(&key(&inputs[2], &[], 1)).is_none());
        let usage = cache.usage();
        assert!(usage.bytes <= capacity && usage.evictions >= 2, "{usage:?}");
        // An answer bigger than the whole cache is not kept.
        let big = [tensor("x", DataType::Uint8, vec![1], &vec![0; capacity])];
        cache.store(&key(&big, &[], 1), &answer);
        assert!(cache.lookup(&key(&big, &[], 1)).is_none());
    }
}
