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
use crate::dispatch::dispatch_dtype;
use crate::{IoError, Result};

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
    /// Data stored big-endian.
    pub big_endian: bool,
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
/// [`IoError::Corrupt`] for a bad header or a file shorter (or longer) than the header declares,
/// [`IoError::UnsupportedDType`] for element types other than bool, integers and floats.
pub fn read_npy_header(path: &Path) -> Result<NpyHeader> {
    let file = File::open(path).map_err(IoError::io(path))?;
    let file_len = file.metadata().map_err(IoError::io(path))?.len();
    let mut reader = BufReader::new(file);
    let header = Header::from_reader(&mut reader)
        .map_err(|e| IoError::corrupt(path, FORMAT, format!("bad header: {e}")))?;
    let data_offset = reader.stream_position().map_err(IoError::io(path))?;
    let descr = header.type_descriptor.to_string();
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let (dtype, big_endian) = parse_descr(descr).ok_or_else(|| {
        IoError::unsupported(
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
            IoError::corrupt(
                path,
                FORMAT,
                format!("shape {:?} is too large", header.shape),
            )
        })?;
    let available = file_len - data_offset.min(file_len);
    if available < bytes {
        return Err(IoError::corrupt(
            path,
            FORMAT,
            format!(
                "truncated: the header declares {dtype} data of shape {:?} ({bytes} bytes) but only {available} bytes follow it",
                header.shape
            ),
        ));
    }
    if available > bytes {
        return Err(IoError::corrupt(
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
        big_endian,
    })
}

/// Reads a `.npy` file of any supported element type, in C order.
///
/// Little-endian numeric data is read straight into the array's memory (one allocation,
/// one `read`); big-endian files and bool go through `ndarray-npy`'s element reader.
///
/// # Errors
/// See [`read_npy_header`]; also I/O errors.
pub fn read_npy(path: &Path) -> Result<AnyArray> {
    let header = read_npy_header(path)?;
    if !header.big_endian && cfg!(target_endian = "little") {
        let direct = dispatch_dtype!(no_bool, header.dtype,
            T => Some(AnyArray::from(read_native::<T>(path, &header)?)),
            DType::Bool => None,
        );
        if let Some(array) = direct {
            return Ok(array.into_standard_layout());
        }
    }
    let open = || {
        File::open(path)
            .map(BufReader::new)
            .map_err(IoError::io(path))
    };
    let bad = |e: ndarray_npy::ReadNpyError| IoError::corrupt(path, FORMAT, e.to_string());
    let array = dispatch_dtype!(no_f16, header.dtype,
        T => AnyArray::from(ArrayD::<T>::read_npy(open()?).map_err(bad)?),
        DType::F16 => read_big_endian_f16(path, &header)?,
    );
    Ok(array.into_standard_layout())
}

/// Reads the data block into a zeroed array of the header's shape; Fortran-ordered data is
/// read into the reversed shape and transposed (a view change, no copy).
fn read_native<T: bytemuck::Pod>(path: &Path, header: &NpyHeader) -> Result<ArrayD<T>> {
    let shape: Vec<usize> = if header.fortran_order {
        header.shape.iter().rev().copied().collect()
    } else {
        header.shape.clone()
    };
    let len = shape.iter().product();
    let mut array = ArrayD::from_shape_vec(shape, em_core::zeroed_vec::<T>(len))
        .map_err(|e| IoError::corrupt(path, FORMAT, e.to_string()))?;
    let mut file = File::open(path).map_err(IoError::io(path))?;
    file.seek(std::io::SeekFrom::Start(header.data_offset))
        .map_err(IoError::io(path))?;
    if let Some(data) = array.as_slice_mut() {
        file.read_exact(bytemuck::cast_slice_mut(data))
            .map_err(IoError::io(path))?;
    }
    if header.fortran_order {
        array = array.reversed_axes();
    }
    Ok(array)
}

/// ndarray-npy has no half precision: big-endian float16 is read and swapped here.
fn read_big_endian_f16(path: &Path, header: &NpyHeader) -> Result<AnyArray> {
    let bits = read_native::<u16>(path, header)?;
    Ok(bits.mapv(|b| f16::from_bits(u16::from_be(b))).into())
}

/// Writes an array as `.npy` (C order, little-endian), atomically.
///
/// # Errors
/// I/O errors; nothing is left at `path` on failure.
pub fn write_npy(path: &Path, array: &AnyArray) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    let bad = |e: ndarray_npy::WriteNpyError| {
        IoError::corrupt(path, FORMAT, format!("write failed: {e}"))
    };
    dispatch_dtype!(no_f16, array,
        AnyArray(a) => a.write_npy(file.writer()).map_err(bad)?,
        AnyArray::F16(a) => write_f16(&mut file, a)?,
        other => {
            return Err(IoError::unsupported(
                path,
                FORMAT,
                "writing",
                other.dtype().to_string(),
                "bool, (u)int8/16/32/64, float16/32/64",
            ))
        }
    );
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
    w.write_all(&out).map_err(IoError::io(&path))
}
