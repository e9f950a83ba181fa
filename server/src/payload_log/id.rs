//! `ce-id`: the client's `ce-id` header, else a version 4 UUID the process
//! makes. The request path only takes a number from a counter; the worker
//! turns it into the UUID's text when it writes the event, so a logged
//! request allocates and formats no id on the serving thread.
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::SystemTime;

/// An event's id, as the request path hands it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventId {
    /// The client's `ce-id`.
    Given(String),
    /// The process's `n`-th id (see [`EventId::new`]).
    Made(u64),
}

impl EventId {
    /// A new id: unique in the process, unpredictable across processes.
    pub fn new() -> EventId {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        EventId::Made(NEXT.fetch_add(1, Relaxed))
    }

    /// Appends the id as a JSON string.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            // Writing a string into a vector cannot fail.
            EventId::Given(s) => drop(serde_json::to_writer(&mut *out, s)),
            EventId::Made(n) => {
                out.push(b'"');
                out.extend_from_slice(&uuid(*n));
                out.push(b'"');
            }
        }
    }
}

impl Default for EventId {
    fn default() -> Self {
        EventId::new()
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventId::Given(s) => f.write_str(s),
            // The text is ASCII hex digits and dashes.
            EventId::Made(n) => f.write_str(std::str::from_utf8(&uuid(*n)).unwrap_or_default()),
        }
    }
}

/// The `n`-th id's text: a version 4 UUID from a per-process random seed
/// and `n`, through a mixer (distinct `n`, distinct UUIDs).
fn uuid(n: u64) -> [u8; 36] {
    static SEED: OnceLock<u64> = OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        h.write_u32(std::process::id());
        h.finish()
    });
    let hi = mix(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let lo = mix(hi ^ seed.rotate_left(32) ^ n);
    let v = ((hi as u128) << 64 | lo as u128) & !(0xF000u128 << 64) & !(0xC << 60);
    let v = v | (0x4000u128 << 64) | (0x8u128 << 60);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [b'-'; 36];
    let mut at = 0;
    for (i, byte) in v.to_be_bytes().into_iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        text[at] = HEX[usize::from(byte >> 4)];
        text[at + 1] = HEX[usize::from(byte & 0xF)];
        at += 2;
    }
    text
}

/// SplitMix64's finaliser.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_uuids_v4() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| EventId::new().to_string()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(50) {
            assert_eq!(id.len(), 36, "{id}");
            assert_eq!(&id[14..15], "4", "{id}");
            assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
            assert!(
                id.bytes().enumerate().all(|(i, b)| match i {
                    8 | 13 | 18 | 23 => b == b'-',
                    _ => b.is_ascii_hexdigit() && !b.is_ascii_uppercase(),
                }),
                "{id}"
            );
        }
    }

    #[test]
    fn json_is_the_text_quoted() {
        for id in [EventId::new(), EventId::Given("a\"b".into())] {
            let mut out = Vec::new();
            id.write_json(&mut out);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, id.to_string());
        }
    }
}
