//! numpy `.npy` files through `ndarray-npy`, with the header checked against the file size
//! first so that a truncated or lying file is a clear error, never a huge allocation.

use std::fs::File;
use std::io::{BufReader, Read, Seek, Write};
use std::path::Path;

use em_core::{f16, AnyArray, DType};
use ndarray::ArrayD;
use ndarray_npy::npy::header::Header;
use ndarray_npy::{ReadNpyExt, WriteNpyExt};

use crate::atomic::AtomicFile;
use crate::{Error, Result};

const FORMAT: &str = "npy";

/// The element type, byte order and shape a `.npy` header declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: DType,
    /// Shape in C order.
    pub shape: Vec<usize>,
    /// Data stored in Fortran (column-major) order.
    pub fortran_order: bool,
    /// Bytes before the data.
    pub data_offset: u64,
}

fn parse_descr(descr: &str) -> Option<(DType, bool)> {
    let (order, code) = descr.split_at(descr.len().min(1));
    let big_endian = match order {
        "<" | "|" | "=" => false,
        ">" => true,
        _ => return None,
    };
    let dtype = match code {
        "b1" => DType::Bool,
        "u1" => DType::U8,
        "u2" => DType::U16,
        "u4" => DType::U32,
        "u8" => DType::U64,
        "i1" => DType::I8,
        "i2" => DType::I16,
        "i4" => DType::I32,
        "i8" => DType::I64,
        "f2" => DType::F16,
        "f4" => DType::F32,
        "f8" => DType::F64,
        _ => return None,
    };
    Some((dtype, big_endian))
}

/// Reads and checks a `.npy` header without reading the data.
///
/// # Errors
/// [`Error::Corrupt`] for a bad header or a file shorter (or longer) than the header declares,
/// [`Error::UnsupportedDType`] for element types other than bool, integers and floats.
pub fn read_npy_header(path: &Path) -> Result<NpyHeader> {
    let file = File::open(path).map_err(Error::io(path))?;
    let file_len = file.metadata().map_err(Error::io(path))?.len();
    let mut reader = BufReader::new(file);
    let header = Header::from_reader(&mut reader)
        .map_err(|e| Error::corrupt(path, FORMAT, format!("bad header: {e}")))?;
    let data_offset = reader.stream_position().map_err(Error::io(path))?;
    let descr = header.type_descriptor.to_string();
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let (dtype, _) = parse_descr(descr).ok_or_else(|| {
        Error::unsupported(
            path,
            FORMAT,
            "reading",
            descr.to_string(),
            "bool, (u)int8/16/32/64, float16/32/64",
        )
    })?;
    let bytes = header
        .shape
        .iter()
        .try_fold(dtype.size_bytes() as u64, |acc, &n| {
            acc.checked_mul(n as u64)
        })
        .ok_or_else(|| {
            Error::corrupt(
                path,
                FORMAT,
                format!("shape {:?} is too large", header.shape),
            )
        })?;
    let available = file_len - data_offset.min(file_len);
    if available < bytes {
        return Err(Error::corrupt(
            path,
            FORMAT,
            format!(
                "truncated: the header declares {dtype} data of shape {:?} ({bytes} bytes) but only {available} bytes follow it",
                header.shape
            ),
        ));
    }
    if available > bytes {
        return Err(Error::corrupt(
            path,
            FORMAT,
            format!(
                "{} unexpected bytes after the data of shape {:?}",
                available - bytes,
                header.shape
            ),
        ));
    }
    Ok(NpyHeader {
        dtype,
        shape: header.shape,
        fortran_order: header.layout.is_fortran(),
        data_offset,
    })
}

/// Reads a `.npy` file of any supported element type, in C order.
///
/// # Errors
/// See [`read_npy_header`]; also I/O errors.
pub fn read_npy(path: &Path) -> Result<AnyArray> {
    let header = read_npy_header(path)?;
    let open = || {
        File::open(path)
            .map(BufReader::new)
            .map_err(Error::io(path))
    };
    let bad = |e: ndarray_npy::ReadNpyError| Error::corrupt(path, FORMAT, e.to_string());
    macro_rules! typed {
        ($t:ty) => {
            AnyArray::from(ArrayD::<$t>::read_npy(open()?).map_err(bad)?)
        };
    }
    let array = match header.dtype {
        DType::Bool => typed!(bool),
        DType::U8 => typed!(u8),
        DType::U16 => typed!(u16),
        DType::U32 => typed!(u32),
        DType::U64 => typed!(u64),
        DType::I8 => typed!(i8),
        DType::I16 => typed!(i16),
        DType::I32 => typed!(i32),
        DType::I64 => typed!(i64),
        DType::F32 => typed!(f32),
        DType::F64 => typed!(f64),
        DType::F16 => read_f16(path, &header)?,
    };
    Ok(array.into_standard_layout())
}

/// ndarray-npy has no half-precision support; the layout is simple enough to read directly.
fn read_f16(path: &Path, header: &NpyHeader) -> Result<AnyArray> {
    let descr_big_endian = {
        let mut f = open_at(path, 0)?;
        let h =
            Header::from_reader(&mut f).map_err(|e| Error::corrupt(path, FORMAT, e.to_string()))?;
        h.type_descriptor.to_string().contains('>')
    };
    let mut f = open_at(path, header.data_offset)?;
    let n: usize = header.shape.iter().product();
    let mut raw = vec![0u8; n * 2];
    f.read_exact(&mut raw).map_err(Error::io(path))?;
    let values: Vec<f16> = raw
        .chunks_exact(2)
        .map(|b| {
            let bits = if descr_big_endian {
                u16::from_be_bytes([b[0], b[1]])
            } else {
                u16::from_le_bytes([b[0], b[1]])
            };
            f16::from_bits(bits)
        })
        .collect();
    let array = if header.fortran_order {
        let rev: Vec<usize> = header.shape.iter().rev().copied().collect();
        ArrayD::from_shape_vec(rev, values).map(|a| a.reversed_axes())
    } else {
        ArrayD::from_shape_vec(header.shape.clone(), values)
    }
    .map_err(|e| Error::corrupt(path, FORMAT, e.to_string()))?;
    Ok(array.into())
}

fn open_at(path: &Path, offset: u64) -> Result<BufReader<File>> {
    let mut f = File::open(path).map_err(Error::io(path))?;
    f.seek(std::io::SeekFrom::Start(offset))
        .map_err(Error::io(path))?;
    Ok(BufReader::new(f))
}

/// Writes an array as `.npy` (C order, little-endian), atomically.
///
/// # Errors
/// I/O errors; nothing is left at `path` on failure.
pub fn write_npy(path: &Path, array: &AnyArray) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    let bad =
        |e: ndarray_npy::WriteNpyError| Error::corrupt(path, FORMAT, format!("write failed: {e}"));
    match array {
        AnyArray::Bool(a) => a.write_npy(file.writer()).map_err(bad)?,
        AnyArray::U8(a) => a.write_npy(file.writer()).map_err(bad)?,
        AnyArray::U16(a) => a.write_npy(file.writer()).map_err(bad)?,
        AnyArray::U32(a) => a.write_npy(file.writer()).map_err(bad)?,
        AnyArray::U64(a) => a.write_npy(file.writer()).map_err(bad)?,
        AnyArray::I8(a) => a.write_npy(file.writer()).map_err(bad)?,
        AnyArray::I16(a) => a.write_npy(file.writer()).map_err(bad)?,
        AnyArray::I32(a) => a.write_npy(file.writer()).map_err(bad)?,
        AnyArray::I64(a) => a.write_npy(file.writer()).map_err(bad)?,
        AnyArray::F32(a) => a.write_npy(file.writer()).map_err(bad)?,
        AnyArray::F64(a) => a.write_npy(file.writer()).map_err(bad)?,
        AnyArray::F16(a) => write_f16(&mut file, a)?,
        other => {
            return Err(Error::unsupported(
                path,
                FORMAT,
                "writing",
                other.dtype().to_string(),
                "bool, (u)int8/16/32/64, float16/32/64",
            ))
        }
    }
    file.commit()
}

fn write_f16(file: &mut AtomicFile, a: &ArrayD<f16>) -> Result<()> {
    let shape = match a.shape() {
        [n] => format!("({n},)"),
        s => format!(
            "({})",
            s.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!("{{'descr': '<f2', 'fortran_order': False, 'shape': {shape}, }}");
    // Version 1.0: magic (6) + version (2) + length (2) + dict, padded with spaces to a
    // multiple of 64 and ended by a newline.
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let path = file.path().to_path_buf();
    let w = file.writer();
    let mut out = Vec::with_capacity(10 + dict.len() + a.len() * 2);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    for v in a.as_standard_layout().iter() {
        out.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    w.write_all(&out).map_err(Error::io(&path))
}
