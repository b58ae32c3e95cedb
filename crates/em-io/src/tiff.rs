//! Multi-page TIFF stacks (one page per z-section), as written by Fiji/ImageJ and tifffile.
//!
//! Reads 8/16/32/64-bit unsigned and signed integer and 32/64-bit float grayscale pages,
//! uncompressed or compressed with the codecs of the `tiff` crate (LZW, Deflate, PackBits …),
//! classic TIFF or BigTIFF. Pages of a stack must share size and type. A single page reads as
//! one section `(1, Y, X)`. Multi-channel (RGB) pages are refused rather than guessed at.

use std::fs::File;
use std::io::{BufReader, Seek, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use em_core::AnyArray;
use ndarray::{ArrayD, Axis};
use tiff::decoder::{Decoder, DecodingResult, Limits};
use tiff::encoder::{colortype, TiffEncoder, TiffKind};
use tiff::ColorType;

use crate::atomic::AtomicFile;
use crate::{IoError, Result};

const FORMAT: &str = "TIFF";
const SUPPORTED: &str = "uint8/16/32/64, int8/16/32/64, float32/64, bool (written as uint8)";

/// Reads a TIFF stack into a `(Z, Y, X)` array.
///
/// # Errors
/// [`IoError::Corrupt`] for damaged files, pages of different size or type, or limits exceeded;
/// [`IoError::UnsupportedDType`] for colour or half-float pages.
pub fn read_tiff(path: &Path) -> Result<AnyArray> {
    let file = File::open(path).map_err(IoError::io(path))?;
    let file_len = file.metadata().map_err(IoError::io(path))?.len();
    // The decoder is third-party code fed untrusted bytes: a panic inside it must become an
    // error for the caller, not take the caller down.
    match catch_unwind(AssertUnwindSafe(|| {
        read_pages(path, BufReader::new(file), file_len)
    })) {
        Ok(result) => result,
        Err(_) => Err(IoError::corrupt(
            path,
            FORMAT,
            "the decoder failed on malformed data",
        )),
    }
}

/// How many bytes one decoded page may take: generous for real data (compression rarely
/// exceeds 1000×) while a tiny file that claims a gigantic page fails fast.
fn page_limit(file_len: u64) -> usize {
    let limit = file_len.saturating_mul(1024).clamp(64 << 20, 16 << 30);
    usize::try_from(limit).unwrap_or(usize::MAX)
}

/// What a decoder error means to someone holding the file (the message already says
/// "not a valid TIFF file", so the crate's own "format error:" prefix is dropped).
fn reason(e: tiff::TiffError) -> String {
    match e {
        tiff::TiffError::FormatError(f) => f.to_string(),
        tiff::TiffError::UnsupportedError(u) => format!("unsupported: {u}"),
        tiff::TiffError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the file ends early (truncated?)".to_string()
        }
        tiff::TiffError::LimitsExceeded => {
            "a page is larger than this file's size makes plausible".to_string()
        }
        other => other.to_string(),
    }
}

fn read_pages<R: std::io::Read + Seek>(path: &Path, reader: R, file_len: u64) -> Result<AnyArray> {
    let bad = |e: tiff::TiffError| IoError::corrupt(path, FORMAT, reason(e));
    let mut limits = Limits::default();
    limits.decoding_buffer_size = page_limit(file_len);
    limits.intermediate_buffer_size = page_limit(file_len);
    let mut decoder = Decoder::new(reader).map_err(bad)?.with_limits(limits);
    let (width, height) = decoder.dimensions().map_err(bad)?;

    // First pass over the page directories only (cheap): count pages and check that they
    // form a stack, so that the whole volume is allocated once and each page decoded into
    // it, holding one page at a time.
    let mut depth = 0usize;
    loop {
        let dims = decoder.dimensions().map_err(bad)?;
        if dims != (width, height) {
            return Err(IoError::corrupt(
                path,
                FORMAT,
                format!(
                    "page {depth} is {}×{} pixels but page 0 is {width}×{height}; a stack needs pages of one size",
                    dims.0, dims.1
                ),
            ));
        }
        match decoder.colortype().map_err(bad)? {
            ColorType::Gray(_) => {}
            other => {
                return Err(IoError::unsupported(
                    path,
                    FORMAT,
                    "reading",
                    format!("{other:?} pages"),
                    "single-channel (grayscale) pages; convert colour stacks first",
                ))
            }
        }
        depth += 1;
        if !decoder.more_images() {
            break;
        }
        decoder.next_image().map_err(bad)?;
    }
    decoder.seek_to_image(0).map_err(bad)?;
    let plane = height as usize * width as usize;
    let first = decoder.read_image().map_err(bad)?;
    let shape = vec![depth, height as usize, width as usize];

    macro_rules! stack {
        ($variant:ident, $t:ty, $first:expr) => {{
            let bytes = (depth as u64)
                .saturating_mul(plane as u64)
                .saturating_mul(std::mem::size_of::<$t>() as u64);
            if bytes > file_len.saturating_mul(1024).max(1 << 30) {
                return Err(IoError::corrupt(
                    path,
                    FORMAT,
                    format!("{depth} pages of {width}×{height} pixels are implausibly large for a {file_len}-byte file"),
                ));
            }
            let mut all: Vec<$t> = em_core::zeroed_vec(depth * plane);
            let mut page = Some(DecodingResult::$variant($first));
            for z in 0..depth {
                let data = match page.take() {
                    Some(p) => p,
                    None => {
                        decoder.next_image().map_err(bad)?;
                        decoder.read_image().map_err(bad)?
                    }
                };
                let DecodingResult::$variant(v) = data else {
                    return Err(IoError::corrupt(path, FORMAT, format!("page {z} has another sample type than page 0")));
                };
                if v.len() != plane {
                    return Err(IoError::corrupt(
                        path,
                        FORMAT,
                        format!("page {z} holds {} samples, expected {plane}", v.len()),
                    ));
                }
                all[z * plane..(z + 1) * plane].copy_from_slice(&v);
            }
            AnyArray::from(
                ArrayD::<$t>::from_shape_vec(shape, all)
                    .map_err(|e| IoError::corrupt(path, FORMAT, e.to_string()))?,
            )
        }};
    }
    Ok(match first {
        DecodingResult::U8(v) => stack!(U8, u8, v),
        DecodingResult::U16(v) => stack!(U16, u16, v),
        DecodingResult::U32(v) => stack!(U32, u32, v),
        DecodingResult::U64(v) => stack!(U64, u64, v),
        DecodingResult::I8(v) => stack!(I8, i8, v),
        DecodingResult::I16(v) => stack!(I16, i16, v),
        DecodingResult::I32(v) => stack!(I32, i32, v),
        DecodingResult::I64(v) => stack!(I64, i64, v),
        DecodingResult::F32(v) => stack!(F32, f32, v),
        DecodingResult::F64(v) => stack!(F64, f64, v),
        _ => {
            return Err(IoError::unsupported(
                path,
                FORMAT,
                "reading",
                "this sample type",
                SUPPORTED,
            ))
        }
    })
}

/// Writes a `(Z, Y, X)` array as a multi-page TIFF (a `(Y, X)` array as one page),
/// uncompressed, BigTIFF when over 3.5 GiB; atomically.
///
/// # Errors
/// [`IoError::UnsupportedDType`] for float16, [`IoError::Volume`] for other dimensionalities.
pub fn write_tiff(path: &Path, array: &AnyArray) -> Result<()> {
    let (depth, height, width) = match *array.shape() {
        [y, x] => (1, y, x),
        [z, y, x] => (z, y, x),
        _ => {
            return Err(IoError::Volume {
                path: path.into(),
                source: em_core::CoreError::DimensionMismatch {
                    what: "a TIFF stack (Z, Y, X)".into(),
                    expected: 3,
                    got: array.ndim(),
                },
            })
        }
    };
    let (Ok(w), Ok(h)) = (u32::try_from(width), u32::try_from(height)) else {
        return Err(IoError::corrupt(
            path,
            FORMAT,
            "a page side exceeds 2^32 pixels",
        ));
    };
    let big = array.len() * array.dtype().size_bytes() > (7 << 29);
    let mut file = AtomicFile::create(path)?;
    if big {
        let enc = TiffEncoder::new_big(file.writer())
            .map_err(|e| IoError::corrupt(path, FORMAT, e.to_string()))?;
        write_pages(path, enc, array, depth, w, h)?;
    } else {
        let enc = TiffEncoder::new(file.writer())
            .map_err(|e| IoError::corrupt(path, FORMAT, e.to_string()))?;
        write_pages(path, enc, array, depth, w, h)?;
    }
    file.flush().map_err(IoError::io(path))?;
    file.commit()
}

fn write_pages<W: Write + Seek, K: TiffKind>(
    path: &Path,
    mut enc: TiffEncoder<W, K>,
    array: &AnyArray,
    depth: usize,
    w: u32,
    h: u32,
) -> Result<()> {
    let bad = |e: tiff::TiffError| IoError::corrupt(path, FORMAT, format!("write failed: {e}"));
    let shape = [depth, h as usize, w as usize];
    macro_rules! pages {
        ($a:expr, $ct:ty) => {{
            let a = $a
                .to_shape(shape.to_vec())
                .map_err(|e| IoError::corrupt(path, FORMAT, e.to_string()))?;
            for page in a.axis_iter(Axis(0)) {
                let page = page.as_standard_layout();
                let data = page.as_slice().unwrap_or_default();
                enc.write_image::<$ct>(w, h, data).map_err(bad)?;
            }
        }};
    }
    match array {
        AnyArray::Bool(a) => {
            let bytes = a.mapv(u8::from);
            pages!(bytes, colortype::Gray8)
        }
        AnyArray::U8(a) => pages!(a, colortype::Gray8),
        AnyArray::U16(a) => pages!(a, colortype::Gray16),
        AnyArray::U32(a) => pages!(a, colortype::Gray32),
        AnyArray::U64(a) => pages!(a, colortype::Gray64),
        AnyArray::I8(a) => pages!(a, colortype::GrayI8),
        AnyArray::I16(a) => pages!(a, colortype::GrayI16),
        AnyArray::I32(a) => pages!(a, colortype::GrayI32),
        AnyArray::I64(a) => pages!(a, colortype::GrayI64),
        AnyArray::F32(a) => pages!(a, colortype::Gray32Float),
        AnyArray::F64(a) => pages!(a, colortype::Gray64Float),
        other => {
            return Err(IoError::unsupported(
                path,
                FORMAT,
                "writing",
                other.dtype().to_string(),
                SUPPORTED,
            ))
        }
    }
    Ok(())
}
