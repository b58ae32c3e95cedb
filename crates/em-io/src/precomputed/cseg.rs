//! neuroglancer's compressed_segmentation encoding of uint32/uint64 label chunks.
//!
//! A chunk holds, per channel, a grid of blocks (e.g. 8³). Each block stores the sorted
//! distinct values it holds (its lookup table of little-endian u32/u64) and, for every voxel,
//! the index into that table packed with 0, 1, 2, 4, 8, 16 or 32 bits. The data starts with
//! one u32 word per channel, the word offset of the channel's data; a channel starts with a
//! 64-bit header per block (24-bit lookup-table offset, 8-bit bit width, 32-bit offset of the
//! packed indices; offsets in 32-bit words from the channel's start). Positions run x
//! fastest, as in the volume: voxel (x, y, z) of channel c is element
//! `x + sx·(y + sy·(z + sz·c))`.
//!
//! The encoder lays blocks out as neuroglancer's reference encoder does (packed indices,
//! then the table unless an identical table was already written in the channel, which is
//! reused), so its output is byte for byte that of the reference. Padding voxels of partial
//! blocks at the upper edges take index 0.

use std::collections::HashMap;
use std::hash::Hash;

/// Why compressed_segmentation data cannot be decoded, or a chunk cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsegError(pub String);

impl std::fmt::Display for CsegError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CsegError {}

type CsegResult<T> = std::result::Result<T, CsegError>;

fn err<T>(msg: impl Into<String>) -> CsegResult<T> {
    Err(CsegError(msg.into()))
}

/// A label type compressed_segmentation holds: `u32` or `u64`.
pub trait CsegLabel: Copy + Ord + Hash + Default + Send + Sync + 'static {
    /// 32-bit words per value in a lookup table.
    const WORDS: usize;
    /// Appends the value's words, least significant first.
    fn push_words(self, out: &mut Vec<u32>);
    /// The value from its words, least significant first.
    fn from_words(words: &[u32]) -> Self;
}

impl CsegLabel for u32 {
    const WORDS: usize = 1;
    fn push_words(self, out: &mut Vec<u32>) {
        out.push(self);
    }
    fn from_words(words: &[u32]) -> Self {
        words[0]
    }
}

impl CsegLabel for u64 {
    const WORDS: usize = 2;
    fn push_words(self, out: &mut Vec<u32>) {
        out.push(self as u32);
        out.push((self >> 32) as u32);
    }
    fn from_words(words: &[u32]) -> Self {
        u64::from(words[0]) | (u64::from(words[1]) << 32)
    }
}

fn check_shape(size: [usize; 3], block: [usize; 3]) -> CsegResult<()> {
    if block.contains(&0) {
        return err(format!("block size {block:?} has a side of 0"));
    }
    if size.contains(&0) {
        return err(format!("chunk size {size:?} has a side of 0"));
    }
    Ok(())
}

/// The bit width for `n` distinct values: 0 for one, else the smallest of 1, 2, 4, 8, 16,
/// 32 that can index them all.
fn bit_width(n: usize) -> u32 {
    let mut bits = 0;
    if n > 1 {
        bits = 1;
        while (1usize << bits) < n {
            bits *= 2;
        }
    }
    bits
}

/// Encodes `values` (`channels` channels of `size` = x, y, z voxels each, x fastest) with
/// blocks of `block` (x, y, z).
///
/// # Errors
/// A side of 0, a length that does not match the shape, or a chunk too large for the
/// format's 24-bit table offsets.
pub fn encode<T: CsegLabel>(
    values: &[T],
    size: [usize; 3],
    channels: usize,
    block: [usize; 3],
) -> CsegResult<Vec<u8>> {
    check_shape(size, block)?;
    let per_channel = size[0] * size[1] * size[2];
    if values.len() != per_channel * channels {
        return err(format!(
            "{} values for {channels} channel(s) of {size:?} voxels",
            values.len()
        ));
    }
    let mut out: Vec<u32> = vec![0; channels];
    for c in 0..channels {
        out[c] = u32::try_from(out.len()).or_else(|_| err("chunk too large"))?;
        encode_channel(
            &values[c * per_channel..(c + 1) * per_channel],
            size,
            block,
            &mut out,
        )?;
    }
    Ok(out.iter().flat_map(|w| w.to_le_bytes()).collect())
}

fn encode_channel<T: CsegLabel>(
    values: &[T],
    size: [usize; 3],
    block: [usize; 3],
    out: &mut Vec<u32>,
) -> CsegResult<()> {
    let base = out.len();
    let grid: [usize; 3] = std::array::from_fn(|i| size[i].div_ceil(block[i]));
    let num_blocks = grid[0] * grid[1] * grid[2];
    let block_voxels = block[0] * block[1] * block[2];
    out.resize(base + 2 * num_blocks, 0);
    let mut tables: HashMap<Vec<T>, u32> = HashMap::new();
    let mut table: Vec<T> = Vec::with_capacity(block_voxels);
    for gz in 0..grid[2] {
        for gy in 0..grid[1] {
            for gx in 0..grid[0] {
                let origin = [gx * block[0], gy * block[1], gz * block[2]];
                let actual: [usize; 3] = std::array::from_fn(|i| block[i].min(size[i] - origin[i]));
                let voxel = |x: usize, y: usize, z: usize| {
                    values[origin[0] + x + size[0] * (origin[1] + y + size[1] * (origin[2] + z))]
                };
                table.clear();
                for z in 0..actual[2] {
                    for y in 0..actual[1] {
                        for x in 0..actual[0] {
                            let v = voxel(x, y, z);
                            if table.last() != Some(&v) {
                                table.push(v);
                            }
                        }
                    }
                }
                table.sort_unstable();
                table.dedup();
                let bits = bit_width(table.len());
                let packed_words = (bits as usize * block_voxels).div_ceil(32);
                let values_offset = out.len() - base;
                let reused = tables.get(&table).copied();
                let table_offset = match reused {
                    Some(o) => o as usize,
                    None => values_offset + packed_words,
                };
                if table_offset >= 1 << 24 || values_offset > u32::MAX as usize {
                    return err(
                        "chunk too large for compressed_segmentation (lookup-table offsets are 24-bit); use smaller chunks",
                    );
                }
                out.resize(out.len() + packed_words, 0);
                if bits > 0 {
                    let packed = &mut out[base + values_offset..];
                    let mut last: Option<(T, u32)> = None;
                    for z in 0..actual[2] {
                        for y in 0..actual[1] {
                            for x in 0..actual[0] {
                                let v = voxel(x, y, z);
                                let index = match last {
                                    Some((lv, li)) if lv == v => li,
                                    _ => {
                                        let i = table.binary_search(&v).unwrap_or(0) as u32;
                                        last = Some((v, i));
                                        i
                                    }
                                };
                                let bit = bits as usize * (x + block[0] * (y + block[1] * z));
                                packed[bit / 32] |= index << (bit % 32);
                            }
                        }
                    }
                }
                if reused.is_none() {
                    for &v in &table {
                        v.push_words(out);
                    }
                    tables.insert(table.clone(), table_offset as u32);
                }
                let b = base + 2 * (gx + grid[0] * (gy + grid[1] * gz));
                out[b] = table_offset as u32 | (bits << 24);
                out[b + 1] = values_offset as u32;
            }
        }
    }
    Ok(())
}

/// Decodes compressed_segmentation `bytes` of `channels` channels of `size` (x, y, z)
/// voxels encoded with blocks of `block`; values come out x fastest, channel slowest.
///
/// # Errors
/// Every offset, bit width and table index is checked against the data: a length that is
/// not whole 32-bit words, a channel or block header out of range, a bit width other than
/// 0, 1, 2, 4, 8, 16, 32, packed values or a table entry past the end.
pub fn decode<T: CsegLabel>(
    bytes: &[u8],
    size: [usize; 3],
    channels: usize,
    block: [usize; 3],
) -> CsegResult<Vec<T>> {
    check_shape(size, block)?;
    if !bytes.len().is_multiple_of(4) {
        return err(format!(
            "{} bytes is not a whole number of 32-bit words",
            bytes.len()
        ));
    }
    let words: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if words.len() < channels {
        return err(format!(
            "{} bytes cannot hold the offsets of {channels} channel(s)",
            bytes.len()
        ));
    }
    let per_channel = size[0] * size[1] * size[2];
    let mut out = vec![T::default(); per_channel * channels];
    for c in 0..channels {
        decode_channel(
            &words,
            words[c] as usize,
            size,
            block,
            &mut out[c * per_channel..(c + 1) * per_channel],
        )
        .map_err(|e| CsegError(format!("channel {c}: {e}")))?;
    }
    Ok(out)
}

fn decode_channel<T: CsegLabel>(
    words: &[u32],
    base: usize,
    size: [usize; 3],
    block: [usize; 3],
    out: &mut [T],
) -> CsegResult<()> {
    let grid: [usize; 3] = std::array::from_fn(|i| size[i].div_ceil(block[i]));
    let num_blocks = grid[0] * grid[1] * grid[2];
    let block_voxels = block[0] * block[1] * block[2];
    if base
        .checked_add(2 * num_blocks)
        .is_none_or(|end| end > words.len())
    {
        return err(format!(
            "the headers of {num_blocks} blocks at word {base} run past the end ({} words)",
            words.len()
        ));
    }
    for gz in 0..grid[2] {
        for gy in 0..grid[1] {
            for gx in 0..grid[0] {
                let b = base + 2 * (gx + grid[0] * (gy + grid[1] * gz));
                let table_start = base + (words[b] & 0x00ff_ffff) as usize;
                let bits = words[b] >> 24;
                if !matches!(bits, 0 | 1 | 2 | 4 | 8 | 16 | 32) {
                    return err(format!(
                        "block ({gx}, {gy}, {gz}) has bit width {bits}; allowed 0, 1, 2, 4, 8, 16, 32"
                    ));
                }
                let values_start = base + words[b + 1] as usize;
                let packed_words = (bits as usize * block_voxels).div_ceil(32);
                if values_start + packed_words > words.len() {
                    return err(format!(
                        "block ({gx}, {gy}, {gz}): packed values at word {values_start} run past the end ({} words)",
                        words.len()
                    ));
                }
                let mask = if bits == 32 {
                    u32::MAX
                } else {
                    (1u32 << bits) - 1
                };
                let origin = [gx * block[0], gy * block[1], gz * block[2]];
                let actual: [usize; 3] = std::array::from_fn(|i| block[i].min(size[i] - origin[i]));
                for z in 0..actual[2] {
                    for y in 0..actual[1] {
                        for x in 0..actual[0] {
                            let index = if bits == 0 {
                                0
                            } else {
                                let bit = bits as usize * (x + block[0] * (y + block[1] * z));
                                (words[values_start + bit / 32] >> (bit % 32)) & mask
                            };
                            let at = table_start + index as usize * T::WORDS;
                            let Some(entry) = words.get(at..at + T::WORDS) else {
                                return err(format!(
                                    "block ({gx}, {gy}, {gz}): lookup-table entry {index} at word {at} lies past the end ({} words)",
                                    words.len()
                                ));
                            };
                            out[origin[0]
                                + x
                                + size[0] * (origin[1] + y + size[1] * (origin[2] + z))] =
                                T::from_words(entry);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_chunk_encodes_as_the_format_describes() {
        // 2×2×1 voxels, one 2×2×1 block, values 5 and 7: header, 1-bit indices, table.
        let bytes = encode(&[5u32, 7, 7, 5], [2, 2, 1], 1, [2, 2, 1]).unwrap();
        let words: Vec<u32> = bytes
            .chunks(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(words, vec![1, 3 | (1 << 24), 2, 0b0110, 5, 7]);
        assert_eq!(
            decode::<u32>(&bytes, [2, 2, 1], 1, [2, 2, 1]).unwrap(),
            vec![5, 7, 7, 5]
        );
    }

    #[test]
    fn identical_tables_are_written_once() {
        // Two blocks holding the same two values share a table.
        let v: Vec<u64> = (0..8)
            .map(|i| if i % 2 == 0 { 1 << 40 } else { 3 })
            .collect();
        let bytes = encode(&v, [4, 2, 1], 1, [2, 2, 1]).unwrap();
        let words = bytes.len() / 4;
        // channel offset, 2 headers, 1 packed word each, one table of two u64.
        assert_eq!(words, 1 + 4 + 2 + 4);
        assert_eq!(decode::<u64>(&bytes, [4, 2, 1], 1, [2, 2, 1]).unwrap(), v);
    }

    #[test]
    fn partial_blocks_and_channels_round_trip() {
        let size = [5, 3, 7];
        let n = 5 * 3 * 7;
        let v: Vec<u32> = (0..2 * n as u32).map(|i| (i * 7919) % 13).collect();
        let bytes = encode(&v, size, 2, [4, 2, 3]).unwrap();
        assert_eq!(decode::<u32>(&bytes, size, 2, [4, 2, 3]).unwrap(), v);
    }

    #[test]
    fn corrupt_data_is_an_error() {
        let bytes = encode(&[1u32, 2, 3, 4], [2, 2, 1], 1, [2, 2, 1]).unwrap();
        let dec = |b: &[u8]| decode::<u32>(b, [2, 2, 1], 1, [2, 2, 1]);
        assert!(dec(&bytes[..bytes.len() - 1]).is_err(), "not whole words");
        assert!(dec(&bytes[..bytes.len() - 4]).is_err(), "table cut short");
        let mut bad_bits = bytes.clone();
        bad_bits[7] = 3;
        assert!(dec(&bad_bits).unwrap_err().0.contains("bit width 3"));
        let mut bad_offset = bytes.clone();
        bad_offset[0] = 200;
        assert!(dec(&bad_offset).is_err());
        let mut bad_values = bytes;
        bad_values[8] = 250;
        assert!(dec(&bad_values).is_err());
        assert!(dec(&[]).is_err());
    }
}
