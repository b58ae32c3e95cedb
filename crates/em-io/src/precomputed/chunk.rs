//! Chunk geometry (the grid, file names, clipped edge chunks) and chunk encoding: raw
//! little-endian values or compressed_segmentation, optionally gzip-compressed.

use std::io::Read;

use em_core::Element;

use super::cseg;
use super::info::{Encoding, Scale};

/// The element types precomputed holds, with their little-endian byte form.
pub(crate) trait NgElement: Element + bytemuck::Pod {
    /// The value with its bytes swapped from little-endian to the host's order (a no-op
    /// on little-endian hosts).
    fn le_to_host(self) -> Self;

    /// compressed_segmentation of `values`, for the types that have it.
    fn cseg_encode(
        _values: &[Self],
        _size: [usize; 3],
        _channels: usize,
        _block: [usize; 3],
    ) -> Result<Vec<u8>, String> {
        Err("compressed_segmentation holds uint32 or uint64 data only".into())
    }

    /// Decodes compressed_segmentation, for the types that have it.
    fn cseg_decode(
        _bytes: &[u8],
        _size: [usize; 3],
        _channels: usize,
        _block: [usize; 3],
    ) -> Result<Vec<Self>, String> {
        Err("compressed_segmentation holds uint32 or uint64 data only".into())
    }
}

macro_rules! ng_int {
    ($($t:ty),*) => {$(
        impl NgElement for $t {
            fn le_to_host(self) -> Self {
                <$t>::from_le(self)
            }
        }
    )*};
}
ng_int!(u8, i8, u16, i16, i32);

macro_rules! ng_label {
    ($($t:ty),*) => {$(
        impl NgElement for $t {
            fn le_to_host(self) -> Self {
                <$t>::from_le(self)
            }
            fn cseg_encode(values: &[Self], size: [usize; 3], channels: usize, block: [usize; 3]) -> Result<Vec<u8>, String> {
                cseg::encode(values, size, channels, block).map_err(|e| e.0)
            }
            fn cseg_decode(bytes: &[u8], size: [usize; 3], channels: usize, block: [usize; 3]) -> Result<Vec<Self>, String> {
                cseg::decode(bytes, size, channels, block).map_err(|e| e.0)
            }
        }
    )*};
}
ng_label!(u32, u64);

impl NgElement for f32 {
    fn le_to_host(self) -> Self {
        f32::from_bits(u32::from_le(self.to_bits()))
    }
}

/// The chunk grid of a scale; positions are x, y, z and relative to the voxel offset.
#[derive(Clone, Debug)]
pub(crate) struct Grid {
    pub(crate) size: [u64; 3],
    pub(crate) chunk: [u64; 3],
    pub(crate) offset: [i64; 3],
}

impl Grid {
    pub(crate) fn of(scale: &Scale) -> Self {
        Self {
            size: scale.size,
            chunk: scale.chunk_size,
            offset: scale.voxel_offset,
        }
    }

    /// Chunks along x, y, z.
    pub(crate) fn shape(&self) -> [u64; 3] {
        std::array::from_fn(|i| self.size[i].div_ceil(self.chunk[i]))
    }

    /// The voxels chunk `pos` covers, clipped at the volume's upper edge: start and end.
    pub(crate) fn bounds(&self, pos: [u64; 3]) -> ([u64; 3], [u64; 3]) {
        let start: [u64; 3] = std::array::from_fn(|i| pos[i] * self.chunk[i]);
        let end = std::array::from_fn(|i| (start[i] + self.chunk[i]).min(self.size[i]));
        (start, end)
    }

    /// The chunk's file name in an unsharded scale: `x0-x1_y0-y1_z0-z1` in the layer's
    /// global coordinates.
    pub(crate) fn file_name(&self, pos: [u64; 3]) -> String {
        let (s, e) = self.bounds(pos);
        let g = |i: usize, v: u64| self.offset[i] + v as i64;
        format!(
            "{}-{}_{}-{}_{}-{}",
            g(0, s[0]),
            g(0, e[0]),
            g(1, s[1]),
            g(1, e[1]),
            g(2, s[2]),
            g(2, e[2])
        )
    }

    /// Chunks that intersect the voxels `start..end` (x, y, z), x fastest.
    pub(crate) fn chunks_in(&self, start: [u64; 3], end: [u64; 3]) -> Vec<[u64; 3]> {
        let lo: [u64; 3] = std::array::from_fn(|i| start[i] / self.chunk[i]);
        let hi: [u64; 3] = std::array::from_fn(|i| end[i].div_ceil(self.chunk[i]));
        let mut out = Vec::new();
        for z in lo[2]..hi[2] {
            for y in lo[1]..hi[1] {
                for x in lo[0]..hi[0] {
                    out.push([x, y, z]);
                }
            }
        }
        out
    }
}

/// Values from little-endian bytes (whose length the caller has checked).
pub(crate) fn from_le_bytes<T: NgElement>(bytes: &[u8]) -> Vec<T> {
    let v: Vec<T> = bytemuck::pod_collect_to_vec(bytes);
    if cfg!(target_endian = "little") {
        v
    } else {
        v.into_iter().map(T::le_to_host).collect()
    }
}

/// Values as little-endian bytes.
pub(crate) fn to_le_bytes<T: NgElement>(values: &[T]) -> Vec<u8> {
    if cfg!(target_endian = "little") {
        bytemuck::cast_slice(values).to_vec()
    } else {
        let swapped: Vec<T> = values.iter().map(|v| v.le_to_host()).collect();
        bytemuck::cast_slice(&swapped).to_vec()
    }
}

/// Encodes one chunk of `channels` × `size` (x, y, z) values, x fastest.
pub(crate) fn encode<T: NgElement>(
    values: &[T],
    size: [u64; 3],
    channels: u64,
    encoding: &Encoding,
) -> Result<Vec<u8>, String> {
    match encoding {
        Encoding::Raw => Ok(to_le_bytes(values)),
        Encoding::CompressedSegmentation { block_size } => T::cseg_encode(
            values,
            size.map(|n| n as usize),
            channels as usize,
            block_size.map(|n| n as usize),
        ),
        Encoding::Other(name) => Err(format!("the {name:?} encoding is not supported")),
    }
}

/// Decodes one chunk of `channels` × `size` (x, y, z) values from bytes already
/// decompressed.
pub(crate) fn decode<T: NgElement>(
    bytes: &[u8],
    size: [u64; 3],
    channels: u64,
    encoding: &Encoding,
) -> Result<Vec<T>, String> {
    match encoding {
        Encoding::Raw => {
            let want = raw_len::<T>(size, channels);
            if bytes.len() as u64 != want {
                return Err(format!(
                    "{} bytes; a raw chunk of {}×{}×{} voxels × {channels} channel(s) of {} holds {want}",
                    bytes.len(),
                    size[0],
                    size[1],
                    size[2],
                    T::DTYPE.name()
                ));
            }
            Ok(from_le_bytes(bytes))
        }
        Encoding::CompressedSegmentation { block_size } => T::cseg_decode(
            bytes,
            size.map(|n| n as usize),
            channels as usize,
            block_size.map(|n| n as usize),
        )
        .map_err(|e| format!("corrupt compressed_segmentation data: {e}")),
        Encoding::Other(name) => Err(format!(
            "the {name:?} encoding is not supported (raw and compressed_segmentation are)"
        )),
    }
}

/// Bytes of a raw chunk.
pub(crate) fn raw_len<T: NgElement>(size: [u64; 3], channels: u64) -> u64 {
    size.iter().product::<u64>() * channels * std::mem::size_of::<T>() as u64
}

/// Whether `bytes` starts with the gzip magic number.
pub(crate) fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Decompresses gzip data of at most `limit` bytes (more is an error: a chunk never
/// decompresses to more than its raw size, so larger output is corrupt or hostile).
pub(crate) fn gunzip(bytes: &[u8], limit: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| format!("corrupt gzip data: {e}"))?;
    if out.len() as u64 > limit {
        return Err(format!("gzip data decompresses to over {limit} bytes"));
    }
    Ok(out)
}

/// gzip at the default level.
pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::default(),
    );
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// The most bytes a chunk's encoded form may take: compressed_segmentation of random
/// data can exceed the raw size (headers and tables), never by more than this.
pub(crate) fn encoded_limit(raw: u64) -> u64 {
    raw.saturating_mul(3).saturating_add(1 << 16)
}
