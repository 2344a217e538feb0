//! Document routing and slicing, bit-for-bit like OpenSearch: `murmur3_x86_32`, `Uid.encodeId`,
//! `OperationRouting` shard selection and `SliceBuilder.toFilter` slice membership.

/// Seed OpenSearch's `TermsSliceQuery` uses when hashing `_id` terms.
pub const SLICE_SEED: u32 = 7919;

/// MurmurHash3 x86 32-bit, as in Lucene's `StringHelper.murmurhash3_x86_32`.
pub fn murmur3_x86_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h1 = seed;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k1 = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k1 = k1.wrapping_mul(C1);
        k1 = k1.rotate_left(15);
        k1 = k1.wrapping_mul(C2);
        h1 ^= k1;
        h1 = h1.rotate_left(13);
        h1 = h1.wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let mut k1: u32 = 0;
    if tail.len() >= 3 {
        k1 ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        k1 ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        k1 ^= u32::from(tail[0]);
        k1 = k1.wrapping_mul(C1);
        k1 = k1.rotate_left(15);
        k1 = k1.wrapping_mul(C2);
        h1 ^= k1;
    }
    h1 ^= data.len() as u32;
    h1 ^= h1 >> 16;
    h1 = h1.wrapping_mul(0x85eb_ca6b);
    h1 ^= h1 >> 13;
    h1 = h1.wrapping_mul(0xc2b2_ae35);
    h1 ^= h1 >> 16;
    h1
}

/// OpenSearch's `Murmur3HashFunction.hash(String)`: UTF-16 code units, little-endian, seed 0.
pub fn routing_hash(routing: &str) -> i32 {
    let mut bytes = Vec::with_capacity(routing.len() * 2);
    for unit in routing.encode_utf16() {
        bytes.extend_from_slice(&unit.to_le_bytes());
    }
    murmur3_x86_32(&bytes, 0) as i32
}

fn ceil_log2(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Default `index.number_of_routing_shards` for an index with `num_shards` primaries.
pub fn default_routing_shards(num_shards: u32) -> u32 {
    let shift = 10u32.saturating_sub(ceil_log2(num_shards)).max(1);
    num_shards << shift
}

/// Shard that a document with this routing value (normally its `_id`) lives on.
pub fn shard_for(routing: &str, num_shards: u32, routing_num_shards: u32) -> u32 {
    let hash = routing_hash(routing);
    let factor = (routing_num_shards / num_shards).max(1);
    (hash.rem_euclid(routing_num_shards as i32) as u32) / factor
}

fn is_url_safe_base64_id(id: &str) -> bool {
    let b = id.as_bytes();
    if b.is_empty() || b.len() % 4 == 1 {
        return false;
    }
    if !b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
    {
        return false;
    }
    let last = b[b.len() - 1];
    match b.len() % 4 {
        2 => b"AQgw".contains(&last),
        3 => b"AEIMQUYcgkosw048".contains(&last),
        _ => true,
    }
}

/// OpenSearch's `Uid.encodeId`: the bytes of the `_id` term in the index.
pub fn encode_id(id: &str) -> Vec<u8> {
    let b = id.as_bytes();
    if !b.is_empty() && b.iter().all(u8::is_ascii_digit) {
        let mut out = Vec::with_capacity(1 + b.len().div_ceil(2));
        out.push(0xFE);
        for pair in b.chunks(2) {
            let hi = pair[0] - b'0';
            let lo = if pair.len() == 2 {
                pair[1] - b'0'
            } else {
                0x0F
            };
            out.push((hi << 4) | lo);
        }
        return out;
    }
    if is_url_safe_base64_id(id) {
        use base64::Engine as _;
        if let Ok(decoded) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b) {
            let mut out = Vec::with_capacity(decoded.len() + 1);
            if decoded.first().is_some_and(|f| *f >= 0xFD) {
                out.push(0xFD);
            }
            out.extend_from_slice(&decoded);
            return out;
        }
    }
    let mut out = Vec::with_capacity(b.len() + 1);
    out.push(0xFF);
    out.extend_from_slice(b);
    out
}

/// Slice of a search: `{ "id": id, "max": max }` (field `_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slice {
    /// Slice number, `0 <= id < max`.
    pub id: u32,
    /// Number of slices, `> 1`.
    pub max: u32,
}

/// What a slice takes of one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardSlice {
    /// The slice does not touch this shard.
    None,
    /// The whole shard.
    All,
    /// Documents whose `floorMod(murmur3(encodeId(_id), 7919), n) == id`.
    Hash { id: u32, n: u32 },
}

impl Slice {
    /// `SliceBuilder.toFilter` for shard `shard_id` of an index with `num_shards` shards.
    pub fn for_shard(&self, shard_id: u32, num_shards: u32) -> ShardSlice {
        if num_shards == 1 {
            return ShardSlice::Hash {
                id: self.id,
                n: self.max,
            };
        }
        if self.max >= num_shards {
            let target_shard = self.id % num_shards;
            if target_shard != shard_id {
                return ShardSlice::None;
            }
            let sub_id = self.id / num_shards;
            let n = self.max / num_shards + u32::from(self.max % num_shards > shard_id);
            if n == 1 {
                ShardSlice::All
            } else {
                ShardSlice::Hash { id: sub_id, n }
            }
        } else if shard_id % self.max == self.id {
            ShardSlice::All
        } else {
            ShardSlice::None
        }
    }
}

/// Whether a document id belongs to hash slice `id` of `n`.
pub fn id_in_hash_slice(doc_id: &str, id: u32, n: u32) -> bool {
    let h = murmur3_x86_32(&encode_id(doc_id), SLICE_SEED) as i32;
    h.rem_euclid(n as i32) as u32 == id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_known_values() {
        assert_eq!(murmur3_x86_32(b"", 0), 0);
        assert_eq!(murmur3_x86_32(b"", 1), 0x514E_28B7);
        assert_eq!(murmur3_x86_32(b"hello", 0), 0x248B_FA47);
        assert_eq!(
            murmur3_x86_32(b"The quick brown fox jumps over the lazy dog", 0),
            0x2E4F_F723
        );
        assert_eq!(murmur3_x86_32(&[0xFF, 0xFF, 0xFF, 0xFF], 0), 0x7629_3B50);
    }

    #[test]
    fn routing_num_shards_defaults() {
        assert_eq!(default_routing_shards(1), 1024);
        assert_eq!(default_routing_shards(3), 768);
        assert_eq!(default_routing_shards(5), 640);
        assert_eq!(default_routing_shards(2), 1024);
        assert_eq!(default_routing_shards(4), 1024);
    }

    #[test]
    fn encode_id_forms() {
        assert_eq!(encode_id("1"), vec![0xFE, 0x1F]);
        assert_eq!(encode_id("42"), vec![0xFE, 0x42]);
        assert_eq!(encode_id("123"), vec![0xFE, 0x12, 0x3F]);
        // "AAAA" is URL-safe base64 of three zero bytes.
        assert_eq!(encode_id("AAAA"), vec![0, 0, 0]);
        // "_w" decodes to 0xFF, which needs the 0xFD escape.
        assert_eq!(encode_id("_w"), vec![0xFD, 0xFF]);
        // 'B' is not a valid last char for length % 4 == 2: plain UTF-8.
        assert_eq!(encode_id("AB"), vec![0xFF, b'A', b'B']);
        assert_eq!(encode_id("evt-1"), vec![0xFF, b'e', b'v', b't', b'-', b'1']);
        assert_eq!(encode_id("a"), vec![0xFF, b'a']);
    }

    fn docs_of_slice(ids: &[&str], shards: u32, routing_shards: u32, slice: Slice) -> Vec<String> {
        ids.iter()
            .filter(|id| {
                let shard = shard_for(id, shards, routing_shards);
                match slice.for_shard(shard, shards) {
                    ShardSlice::None => false,
                    ShardSlice::All => true,
                    ShardSlice::Hash { id: sid, n } => id_in_hash_slice(id, sid, n),
                }
            })
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn upstream_12_slices_partition() {
        // test/scroll/12_slices.yml: 5 shards, 5 routing shards, ids 1..4, max 2.
        let ids = ["1", "2", "3", "4"];
        assert_eq!(
            docs_of_slice(&ids, 5, 5, Slice { id: 0, max: 2 }),
            vec!["2", "3", "4"]
        );
        assert_eq!(
            docs_of_slice(&ids, 5, 5, Slice { id: 1, max: 2 }),
            vec!["1"]
        );
    }

    #[test]
    fn slices_partition_every_id_exactly_once() {
        let ids: Vec<String> = (0..500)
            .map(|i| {
                if i % 3 == 0 {
                    format!("{i}")
                } else {
                    format!("doc-{i}")
                }
            })
            .collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        for shards in [1u32, 3, 5] {
            let rs = default_routing_shards(shards);
            for max in 2..8u32 {
                let mut seen = std::collections::HashMap::new();
                for sid in 0..max {
                    for d in docs_of_slice(&refs, shards, rs, Slice { id: sid, max }) {
                        *seen.entry(d).or_insert(0) += 1;
                    }
                }
                assert_eq!(seen.len(), ids.len(), "shards {shards} max {max}: union");
                assert!(
                    seen.values().all(|c| *c == 1),
                    "shards {shards} max {max}: overlap"
                );
            }
        }
    }

    #[test]
    fn shard_routing_is_in_range_and_spread() {
        let mut counts = [0u32; 3];
        for i in 0..3000 {
            counts[shard_for(&format!("id{i}"), 3, 768) as usize] += 1;
        }
        assert!(counts.iter().all(|c| *c > 800), "{counts:?}");
    }
}
