//! The `neuroglancer_uint64_sharded_v1` layout: which `.shard` file and minishard hold a
//! chunk (compressed Morton code, optional preshift, identity or MurmurHash3 hash), the
//! shard index and minishard indices, and building a shard file from encoded chunks.

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// The hash that spreads chunk ids over shards and minishards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardHash {
    /// The shifted chunk id itself: neighbouring chunks share a shard.
    Identity,
    /// MurmurHash3_x86_128 (seed 0) of the shifted id's 8 little-endian bytes, low 64 bits.
    Murmurhash3X86_128,
}

/// A scale's `sharding` parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardingSpec {
    /// Low bits of the chunk id dropped before hashing: 2^preshift_bits consecutive chunks
    /// share a minishard.
    pub preshift_bits: u32,
    /// The hash.
    pub hash: ShardHash,
    /// Bits of the hash that pick the minishard within a shard.
    pub minishard_bits: u32,
    /// Bits of the hash (above the minishard bits) that pick the shard.
    pub shard_bits: u32,
    /// Minishard indices are gzip-compressed.
    pub minishard_index_gzip: bool,
    /// Chunk data is gzip-compressed.
    pub data_gzip: bool,
}

/// Largest minishard count this writer lays out (the shard index takes 16 bytes each).
const MAX_WRITE_MINISHARD_BITS: u32 = 20;

/// Bits of a chunk-grid coordinate along an axis of `n` chunks: ceil(log2(n)).
fn axis_bits(n: u64) -> u32 {
    if n <= 1 {
        0
    } else {
        64 - (n - 1).leading_zeros()
    }
}

/// Total bits of the compressed Morton codes of a grid; over 64 cannot be sharded.
pub(crate) fn morton_bits(grid: [u64; 3]) -> u32 {
    grid.iter().map(|&g| axis_bits(g)).sum()
}

/// The compressed Morton code of chunk `pos` (x, y, z) in a grid of `grid` chunks: bits of
/// x, y and z interleaved, each axis dropping out once its coordinates have no more bits.
pub(crate) fn compressed_morton_code(pos: [u64; 3], grid: [u64; 3]) -> u64 {
    let bits = grid.map(axis_bits);
    let max = bits.iter().copied().max().unwrap_or(0);
    let mut code = 0u64;
    let mut j = 0;
    for i in 0..max {
        for d in 0..3 {
            if i < bits[d] {
                code |= ((pos[d] >> i) & 1) << j;
                j += 1;
            }
        }
    }
    code
}

/// MurmurHash3_x86_128 of `data` with `seed`: the four 32-bit words h1..h4.
pub(crate) fn murmurhash3_x86_128(data: &[u8], seed: u32) -> [u32; 4] {
    const C1: u32 = 0x239b_961b;
    const C2: u32 = 0xab0e_9789;
    const C3: u32 = 0x38b3_4ae5;
    const C4: u32 = 0xa1e3_8b93;
    let fmix = |mut h: u32| {
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    };
    let mix =
        |k: u32, c: u32, r: u32, c_next: u32| k.wrapping_mul(c).rotate_left(r).wrapping_mul(c_next);
    let [mut h1, mut h2, mut h3, mut h4] = [seed; 4];
    let mut blocks = data.chunks_exact(16);
    for block in blocks.by_ref() {
        let k: [u32; 4] = std::array::from_fn(|i| {
            u32::from_le_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ])
        });
        h1 ^= mix(k[0], C1, 15, C2);
        h1 = h1
            .rotate_left(19)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x561c_cd1b);
        h2 ^= mix(k[1], C2, 16, C3);
        h2 = h2
            .rotate_left(17)
            .wrapping_add(h3)
            .wrapping_mul(5)
            .wrapping_add(0x0bca_a747);
        h3 ^= mix(k[2], C3, 17, C4);
        h3 = h3
            .rotate_left(15)
            .wrapping_add(h4)
            .wrapping_mul(5)
            .wrapping_add(0x96cd_1c35);
        h4 ^= mix(k[3], C4, 18, C1);
        h4 = h4
            .rotate_left(13)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x32ac_3b17);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        // The tail's bytes fill k1..k4 little-endian; each k present is mixed as above.
        let mut k = [0u32; 4];
        for (i, &b) in tail.iter().enumerate() {
            k[i / 4] |= u32::from(b) << (8 * (i % 4));
        }
        let words = tail.len().div_ceil(4);
        if words > 3 {
            h4 ^= mix(k[3], C4, 18, C1);
        }
        if words > 2 {
            h3 ^= mix(k[2], C3, 17, C4);
        }
        if words > 1 {
            h2 ^= mix(k[1], C2, 16, C3);
        }
        h1 ^= mix(k[0], C1, 15, C2);
    }
    let len = data.len() as u32;
    h1 ^= len;
    h2 ^= len;
    h3 ^= len;
    h4 ^= len;
    h1 = h1.wrapping_add(h2).wrapping_add(h3).wrapping_add(h4);
    h2 = h2.wrapping_add(h1);
    h3 = h3.wrapping_add(h1);
    h4 = h4.wrapping_add(h1);
    h1 = fmix(h1);
    h2 = fmix(h2);
    h3 = fmix(h3);
    h4 = fmix(h4);
    h1 = h1.wrapping_add(h2).wrapping_add(h3).wrapping_add(h4);
    h2 = h2.wrapping_add(h1);
    h3 = h3.wrapping_add(h1);
    h4 = h4.wrapping_add(h1);
    [h1, h2, h3, h4]
}

fn low_bits(n: u32) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

impl ShardingSpec {
    /// A layout for a grid of `grid` chunks of `chunk_bytes` bytes each (before encoding):
    /// identity hash, so that a shard is an aligned box of up to 512 neighbouring chunks
    /// (at most 256 MiB of raw data), 8 chunks per minishard; gzip-compressed minishard
    /// indices, chunk data gzip-compressed if `data_gzip`.
    pub fn for_volume(grid: [u64; 3], chunk_bytes: u64, data_gzip: bool) -> Self {
        let total = morton_bits(grid);
        let mut per_shard = total.min(9);
        while per_shard > 0 && (chunk_bytes.max(1) << per_shard) > 256 << 20 {
            per_shard -= 1;
        }
        let preshift_bits = per_shard.min(3);
        Self {
            preshift_bits,
            hash: ShardHash::Identity,
            minishard_bits: per_shard - preshift_bits,
            shard_bits: total - per_shard,
            minishard_index_gzip: true,
            data_gzip,
        }
    }

    /// The hashed, shifted chunk id.
    fn hashed(&self, chunk_id: u64) -> u64 {
        let shifted = if self.preshift_bits >= 64 {
            0
        } else {
            chunk_id >> self.preshift_bits
        };
        match self.hash {
            ShardHash::Identity => shifted,
            ShardHash::Murmurhash3X86_128 => {
                let h = murmurhash3_x86_128(&shifted.to_le_bytes(), 0);
                u64::from(h[0]) | (u64::from(h[1]) << 32)
            }
        }
    }

    /// The shard and the minishard within it that hold `chunk_id`.
    pub fn locate(&self, chunk_id: u64) -> (u64, u64) {
        let h = self.hashed(chunk_id);
        let minishard = h & low_bits(self.minishard_bits);
        let shard = if self.minishard_bits >= 64 {
            0
        } else {
            (h >> self.minishard_bits) & low_bits(self.shard_bits)
        };
        (shard, minishard)
    }

    /// The shard file's name: the shard number in lowercase hex, zero-padded to
    /// ceil(shard_bits / 4) digits, then `.shard`.
    pub fn shard_file(&self, shard: u64) -> String {
        let width = self.shard_bits.div_ceil(4) as usize;
        format!("{shard:0width$x}.shard")
    }

    /// Bytes of the shard index at the start of each shard file.
    pub(crate) fn index_bytes(&self) -> u64 {
        16u64 << self.minishard_bits.min(40)
    }

    /// The `sharding` object of `info`.
    pub fn to_json(&self) -> Value {
        let enc = |gzip: bool| if gzip { "gzip" } else { "raw" };
        json!({
            "@type": "neuroglancer_uint64_sharded_v1",
            "preshift_bits": self.preshift_bits,
            "hash": match self.hash {
                ShardHash::Identity => "identity",
                ShardHash::Murmurhash3X86_128 => "murmurhash3_x86_128",
            },
            "minishard_bits": self.minishard_bits,
            "shard_bits": self.shard_bits,
            "minishard_index_encoding": enc(self.minishard_index_gzip),
            "data_encoding": enc(self.data_gzip),
        })
    }

    /// Why this layout cannot be written for a grid of `grid` chunks, if it cannot.
    pub(crate) fn check_writable(&self, grid: [u64; 3]) -> std::result::Result<(), String> {
        if morton_bits(grid) > 64 {
            return Err(format!(
                "a grid of {grid:?} chunks has chunk ids over 64 bits"
            ));
        }
        if self.minishard_bits > MAX_WRITE_MINISHARD_BITS {
            return Err(format!(
                "minishard_bits {} would make a shard index of {} MiB; at most {MAX_WRITE_MINISHARD_BITS}",
                self.minishard_bits,
                self.index_bytes() >> 20
            ));
        }
        Ok(())
    }

    /// Chunks (x, y, z) of the aligned box that one shard covers, when every shard is one
    /// such box (identity hash with enough shard bits for every chunk); `None` when a
    /// shard's chunks may lie anywhere in the volume.
    pub fn shard_box(&self, grid: [u64; 3]) -> Option<[u64; 3]> {
        let total = morton_bits(grid);
        let low = self.preshift_bits + self.minishard_bits;
        if self.hash != ShardHash::Identity || low.saturating_add(self.shard_bits) < total {
            return None;
        }
        let bits = grid.map(axis_bits);
        let mut boxed = [0u32; 3];
        let mut j = 0;
        for i in 0..bits.iter().copied().max().unwrap_or(0) {
            for d in 0..3 {
                if i < bits[d] {
                    if j < low {
                        boxed[d] += 1;
                    }
                    j += 1;
                }
            }
        }
        Some(std::array::from_fn(|d| {
            (1u64 << boxed[d]).min(grid[d].max(1))
        }))
    }
}

/// Where one chunk's bytes lie in a shard file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MinishardEntry {
    /// The chunk id.
    pub(crate) id: u64,
    /// Byte offset from the end of the shard index.
    pub(crate) start: u64,
    /// Byte length.
    pub(crate) size: u64,
}

/// Decodes a minishard index (already decompressed): 3·n little-endian u64 holding the
/// delta-coded chunk ids, the gaps before each chunk and the chunk sizes.
pub(crate) fn parse_minishard_index(
    bytes: &[u8],
) -> std::result::Result<Vec<MinishardEntry>, String> {
    if !bytes.len().is_multiple_of(24) {
        return Err(format!(
            "a minishard index of {} bytes; expected a multiple of 24",
            bytes.len()
        ));
    }
    let words: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
        .collect();
    let n = words.len() / 3;
    let mut out = Vec::with_capacity(n);
    let (mut id, mut end) = (0u64, 0u64);
    for i in 0..n {
        id = id.wrapping_add(words[i]);
        let start = end
            .checked_add(words[n + i])
            .ok_or("a minishard index offset overflows")?;
        let size = words[2 * n + i];
        end = start
            .checked_add(size)
            .ok_or("a minishard index chunk size overflows")?;
        out.push(MinishardEntry { id, start, size });
    }
    Ok(out)
}

/// Lays out one shard file from its chunks (id and final, already encoded bytes): the
/// shard index, then per minishard (in order) its chunks by id and its index.
pub(crate) fn build_shard(spec: &ShardingSpec, chunks: Vec<(u64, Vec<u8>)>) -> Vec<u8> {
    let mut minishards: BTreeMap<u64, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
    for (id, data) in chunks {
        minishards
            .entry(spec.locate(id).1)
            .or_default()
            .push((id, data));
    }
    let index_len = spec.index_bytes() as usize;
    let mut index = vec![0u8; index_len];
    let mut body: Vec<u8> = Vec::new();
    for (minishard, mut entries) in minishards {
        entries.sort_by_key(|e| e.0);
        let n = entries.len();
        let mut words = vec![0u64; 3 * n];
        // Each minishard's first gap counts from the end of the shard index.
        let (mut prev_id, mut prev_end) = (0u64, 0u64);
        for (i, (id, data)) in entries.iter().enumerate() {
            words[i] = id - prev_id;
            words[n + i] = body.len() as u64 - prev_end;
            words[2 * n + i] = data.len() as u64;
            body.extend_from_slice(data);
            prev_id = *id;
            prev_end = body.len() as u64;
        }
        let mut raw: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        if spec.minishard_index_gzip {
            raw = super::chunk::gzip(&raw);
        }
        let start = body.len() as u64;
        body.extend_from_slice(&raw);
        let at = 16 * minishard as usize;
        index[at..at + 8].copy_from_slice(&start.to_le_bytes());
        index[at + 8..at + 16].copy_from_slice(&(body.len() as u64).to_le_bytes());
    }
    index.extend_from_slice(&body);
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmurhash_matches_the_reference_vectors() {
        // Values of the reference implementation (Python mmh3.hash128, x64arch=False).
        let cases: [(&[u8], u32, [u32; 4]); 9] = [
            (b"", 0, [0, 0, 0, 0]),
            (b"", 1, [0x88c4adec, 0x54d201b9, 0x54d201b9, 0x54d201b9]),
            (b"a", 0, [0xa794933c, 0x5556b01b, 0x5556b01b, 0x5556b01b]),
            (b"abc", 0, [0x75cdc6d1, 0xa2b006a5, 0xa2b006a5, 0xa2b006a5]),
            (
                b"hello, world",
                0,
                [0x8b21605c, 0xb9b98a1e, 0x93273a83, 0xeb5957c7],
            ),
            (
                b"The quick brown fox jumps over the lazy dog",
                0,
                [0x2f1583c3, 0xecee2c67, 0x5d7bf66c, 0xe5e91d2c],
            ),
            (&[0; 8], 0, [0xe028ae41, 0x4772b084, 0x4772b084, 0x4772b084]),
            (
                &[1, 0, 0, 0, 0, 0, 0, 0],
                0,
                [0x16d4ce9a, 0xe8bd67d6, 0xe8bd67d6, 0xe8bd67d6],
            ),
            (
                &0x0123_4567_89ab_cdef_u64.to_le_bytes(),
                0,
                [0x4c109d93, 0x70803626, 0xcac796e8, 0xcac796e8],
            ),
        ];
        for (data, seed, want) in cases {
            assert_eq!(murmurhash3_x86_128(data, seed), want, "{data:?}");
        }
        let bytes: Vec<u8> = (0..31).collect();
        assert_eq!(
            murmurhash3_x86_128(&bytes, 0x9747_b28c),
            [0xd1b6ca35, 0xa850fc1f, 0x9ded0fa8, 0x6589342c]
        );
    }

    #[test]
    fn compressed_morton_codes_drop_exhausted_axes() {
        // Full interleave while every axis has bits: x0 y0 z0 x1 y1 z1 …
        assert_eq!(compressed_morton_code([1, 0, 0], [4, 4, 4]), 0b1);
        assert_eq!(compressed_morton_code([0, 1, 0], [4, 4, 4]), 0b10);
        assert_eq!(compressed_morton_code([0, 0, 1], [4, 4, 4]), 0b100);
        assert_eq!(compressed_morton_code([2, 0, 0], [4, 4, 4]), 0b1000);
        assert_eq!(compressed_morton_code([3, 3, 3], [4, 4, 4]), 0b111111);
        // x has 3 bits, y 1, z none: x0 y0 x1 x2.
        assert_eq!(compressed_morton_code([4, 0, 0], [8, 2, 1]), 0b1000);
        assert_eq!(compressed_morton_code([2, 1, 0], [8, 2, 1]), 0b0110);
        assert_eq!(compressed_morton_code([7, 1, 0], [8, 2, 1]), 0b1111);
        // A grid of 5 needs 3 bits, like 8.
        assert_eq!(compressed_morton_code([4, 0, 0], [5, 1, 1]), 4);
        assert_eq!(morton_bits([5, 1, 2]), 4);
        // Codes are distinct over a grid and dense for power-of-two sides.
        let grid = [4, 2, 8];
        let mut codes: Vec<u64> = (0..4)
            .flat_map(|x| (0..2).flat_map(move |y| (0..8).map(move |z| [x, y, z])))
            .map(|p| compressed_morton_code(p, grid))
            .collect();
        codes.sort_unstable();
        assert_eq!(codes, (0..64).collect::<Vec<_>>());
    }

    #[test]
    fn shard_names_and_locations() {
        let spec = ShardingSpec {
            preshift_bits: 1,
            hash: ShardHash::Identity,
            minishard_bits: 2,
            shard_bits: 5,
            minishard_index_gzip: false,
            data_gzip: false,
        };
        assert_eq!(spec.shard_file(3), "03.shard");
        assert_eq!(spec.locate(0b10_1101), (0b101, 0b10));
        let none = ShardingSpec {
            shard_bits: 0,
            ..spec
        };
        assert_eq!(none.shard_file(0), "0.shard");
    }

    #[test]
    fn automatic_shards_are_boxes_of_neighbours() {
        let grid = [10, 6, 3];
        let spec = ShardingSpec::for_volume(grid, 64 * 64 * 64 * 8, true);
        assert_eq!(
            spec.preshift_bits + spec.minishard_bits,
            7,
            "128 chunks of 2 MiB"
        );
        let sbox = spec.shard_box(grid).unwrap();
        for x in 0..grid[0] {
            for y in 0..grid[1] {
                for z in 0..grid[2] {
                    let (shard, _) = spec.locate(compressed_morton_code([x, y, z], grid));
                    let b = [x / sbox[0], y / sbox[1], z / sbox[2]];
                    let first = spec.locate(compressed_morton_code(
                        [b[0] * sbox[0], b[1] * sbox[1], b[2] * sbox[2]],
                        grid,
                    ));
                    assert_eq!(shard, first.0, "{x} {y} {z}");
                }
            }
        }
        let hashed = ShardingSpec {
            hash: ShardHash::Murmurhash3X86_128,
            ..spec
        };
        assert_eq!(hashed.shard_box(grid), None);
        let single = ShardingSpec::for_volume([1, 1, 1], 100, false);
        assert_eq!((single.shard_bits, single.minishard_bits), (0, 0));
    }

    #[test]
    fn built_shards_index_every_chunk() {
        let spec = ShardingSpec {
            preshift_bits: 0,
            hash: ShardHash::Murmurhash3X86_128,
            minishard_bits: 2,
            shard_bits: 0,
            minishard_index_gzip: false,
            data_gzip: false,
        };
        let chunks: Vec<(u64, Vec<u8>)> = (0..9)
            .map(|i| (i * 3, vec![i as u8; i as usize + 1]))
            .collect();
        let file = build_shard(&spec, chunks.clone());
        let data = &file[spec.index_bytes() as usize..];
        let mut found = 0;
        for m in 0..4usize {
            let s = u64::from_le_bytes(file[16 * m..16 * m + 8].try_into().unwrap()) as usize;
            let e = u64::from_le_bytes(file[16 * m + 8..16 * m + 16].try_into().unwrap()) as usize;
            for entry in parse_minishard_index(&data[s..e]).unwrap() {
                assert_eq!(spec.locate(entry.id).1, m as u64);
                let bytes = &data[entry.start as usize..(entry.start + entry.size) as usize];
                let want = &chunks.iter().find(|c| c.0 == entry.id).unwrap().1;
                assert_eq!(bytes, &want[..]);
                found += 1;
            }
        }
        assert_eq!(found, 9);
        assert!(parse_minishard_index(&[0; 23]).is_err());
        assert!(
            parse_minishard_index(&[0xff; 48]).is_err(),
            "offsets overflow"
        );
    }
}
