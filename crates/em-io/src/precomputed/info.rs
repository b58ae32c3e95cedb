//! The `info` document of a precomputed volume: parsed, checked field by field, and written
//! back. Its vectors keep the file's axis order, x, y, z (x fastest).

use std::path::Path;

use em_core::DType;
use serde_json::{json, Map, Value};

use super::shard::{ShardHash, ShardingSpec};
use super::FORMAT;
use crate::{IoError, Result};

/// What a precomputed layer holds: it tells neuroglancer how to show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerType {
    /// Intensities.
    Image,
    /// Object ids (uint32/uint64 labels).
    Segmentation,
}

impl LayerType {
    /// The name in `info`.
    pub fn name(self) -> &'static str {
        match self {
            LayerType::Image => "image",
            LayerType::Segmentation => "segmentation",
        }
    }
}

/// How a scale's chunks are encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encoding {
    /// Little-endian values, x fastest, then y, z and channel.
    Raw,
    /// neuroglancer's compressed_segmentation with blocks of `block_size` (x, y, z).
    CompressedSegmentation {
        /// Block sides x, y, z.
        block_size: [u64; 3],
    },
    /// An encoding this reader does not decode (`jpeg`, `png`, `compresso`, …).
    Other(String),
}

impl Encoding {
    /// The name in `info`.
    pub fn name(&self) -> &str {
        match self {
            Encoding::Raw => "raw",
            Encoding::CompressedSegmentation { .. } => "compressed_segmentation",
            Encoding::Other(name) => name,
        }
    }
}

/// One resolution level of a precomputed volume; vectors are x, y, z.
#[derive(Clone, Debug, PartialEq)]
pub struct Scale {
    /// The directory of its chunks, relative to the volume.
    pub key: String,
    /// Extent in voxels.
    pub size: [u64; 3],
    /// Position of the first voxel in the layer's global coordinates.
    pub voxel_offset: [i64; 3],
    /// Voxel size in nm.
    pub resolution: [f64; 3],
    /// The chunk shape (the first of `chunk_sizes`; the others describe the same chunks to
    /// clients that prefer other shapes and are ignored here).
    pub chunk_size: [u64; 3],
    /// Chunk encoding.
    pub encoding: Encoding,
    /// Sharded layout, if the chunks sit in `.shard` files.
    pub sharding: Option<ShardingSpec>,
}

impl Scale {
    /// Chunks along x, y, z.
    pub fn grid_shape(&self) -> [u64; 3] {
        std::array::from_fn(|i| self.size[i].div_ceil(self.chunk_size[i]))
    }
}

/// A parsed and checked precomputed `info` document.
#[derive(Clone, Debug, PartialEq)]
pub struct Info {
    /// Image or segmentation.
    pub layer_type: LayerType,
    /// Element type (`data_type`).
    pub data_type: DType,
    /// Channels per voxel.
    pub num_channels: u64,
    /// Resolution levels, finest first by convention.
    pub scales: Vec<Scale>,
    /// Other top-level keys (`mesh`, `skeletons`, `segment_properties`, …), kept as found.
    pub extra: Map<String, Value>,
}

/// Element types precomputed volumes hold, as `info` names them.
pub(crate) const SUPPORTED: &str = "uint8, int8, uint16, int16, uint32, int32, uint64, float32";

/// The `data_type` name of `dtype`, if precomputed can hold it.
pub(crate) fn dtype_name(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::U8 => "uint8",
        DType::I8 => "int8",
        DType::U16 => "uint16",
        DType::I16 => "int16",
        DType::U32 => "uint32",
        DType::I32 => "int32",
        DType::U64 => "uint64",
        DType::F32 => "float32",
        _ => return None,
    })
}

fn parse_dtype(name: &str) -> Option<DType> {
    [
        DType::U8,
        DType::I8,
        DType::U16,
        DType::I16,
        DType::U32,
        DType::I32,
        DType::U64,
        DType::F32,
    ]
    .into_iter()
    .find(|&d| dtype_name(d) == Some(name))
}

/// Field access that names the field (`scales[0].chunk_sizes`) in every error.
struct Fields<'a> {
    file: &'a Path,
}

impl Fields<'_> {
    fn bad(&self, field: &str, reason: impl std::fmt::Display) -> IoError {
        IoError::corrupt(self.file, FORMAT, format!("{field}: {reason}"))
    }

    fn get<'v>(&self, obj: &'v Map<String, Value>, name: &str, ctx: &str) -> Result<&'v Value> {
        obj.get(name)
            .ok_or_else(|| self.bad(&format!("{ctx}{name}"), "missing"))
    }

    fn string<'v>(&self, v: &'v Value, field: &str) -> Result<&'v str> {
        v.as_str()
            .ok_or_else(|| self.bad(field, format!("expected a string, found {v}")))
    }

    fn uint(&self, v: &Value, field: &str) -> Result<u64> {
        v.as_u64()
            .ok_or_else(|| self.bad(field, format!("expected a non-negative integer, found {v}")))
    }

    fn triple<T>(
        &self,
        v: &Value,
        field: &str,
        each: impl Fn(&Value) -> Option<T>,
        what: &str,
    ) -> Result<[T; 3]> {
        let items = v
            .as_array()
            .filter(|a| a.len() == 3)
            .ok_or_else(|| self.bad(field, format!("expected 3 {what} (x, y, z), found {v}")))?;
        let parsed: Option<Vec<T>> = items.iter().map(each).collect();
        let parsed = parsed
            .ok_or_else(|| self.bad(field, format!("expected 3 {what} (x, y, z), found {v}")))?;
        parsed
            .try_into()
            .map_err(|_| self.bad(field, "expected 3 values"))
    }

    fn positive_triple(&self, v: &Value, field: &str) -> Result<[u64; 3]> {
        let t = self.triple(v, field, Value::as_u64, "non-negative integers")?;
        if t.contains(&0) {
            return Err(self.bad(
                field,
                format!("{t:?} has a side of 0; sides must be positive"),
            ));
        }
        Ok(t)
    }
}

impl Info {
    /// Parses and checks `text`, the content of the `info` file `file` (named in errors).
    ///
    /// # Errors
    /// [`IoError::Corrupt`] naming the file and the field: not JSON, an unknown `@type`,
    /// `type` or `data_type`, a missing field, a size or chunk side of 0, sharding
    /// parameters out of range, compressed_segmentation on a type other than uint32/uint64.
    pub fn parse(file: &Path, text: &str) -> Result<Self> {
        let f = Fields { file };
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| IoError::corrupt(file, FORMAT, format!("not JSON: {e}")))?;
        let obj = doc
            .as_object()
            .ok_or_else(|| f.bad("info", "expected a JSON object"))?;
        if let Some(t) = obj.get("@type") {
            let t = f.string(t, "@type")?;
            if t != "neuroglancer_multiscale_volume" {
                return Err(f.bad(
                    "@type",
                    format!("{t:?} is not a volume; expected \"neuroglancer_multiscale_volume\""),
                ));
            }
        }
        let layer_type = match f.string(f.get(obj, "type", "")?, "type")? {
            "image" => LayerType::Image,
            "segmentation" => LayerType::Segmentation,
            other => {
                return Err(f.bad(
                    "type",
                    format!("{other:?}; expected \"image\" or \"segmentation\""),
                ))
            }
        };
        let dt = f.string(f.get(obj, "data_type", "")?, "data_type")?;
        let data_type = parse_dtype(dt)
            .ok_or_else(|| f.bad("data_type", format!("{dt:?}; supported: {SUPPORTED}")))?;
        let num_channels = f.uint(f.get(obj, "num_channels", "")?, "num_channels")?;
        if num_channels == 0 {
            return Err(f.bad("num_channels", "0; a volume has at least one channel"));
        }
        let scales_v = f
            .get(obj, "scales", "")?
            .as_array()
            .ok_or_else(|| f.bad("scales", "expected an array"))?;
        if scales_v.is_empty() {
            return Err(f.bad("scales", "empty; a volume has at least one scale"));
        }
        let scales = scales_v
            .iter()
            .enumerate()
            .map(|(i, s)| parse_scale(&f, s, i, data_type, num_channels))
            .collect::<Result<Vec<_>>>()?;
        for (i, s) in scales.iter().enumerate() {
            if scales[..i].iter().any(|o| o.key == s.key) {
                return Err(f.bad(
                    &format!("scales[{i}].key"),
                    format!("{:?} repeats an earlier scale's key", s.key),
                ));
            }
        }
        let extra = obj
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "@type" | "type" | "data_type" | "num_channels" | "scales"
                )
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Self {
            layer_type,
            data_type,
            num_channels,
            scales,
            extra,
        })
    }

    /// The document as JSON.
    pub fn to_json(&self) -> Value {
        let scales: Vec<Value> = self.scales.iter().map(scale_json).collect();
        let mut obj = Map::new();
        obj.insert("@type".into(), json!("neuroglancer_multiscale_volume"));
        obj.insert("type".into(), json!(self.layer_type.name()));
        obj.insert(
            "data_type".into(),
            json!(dtype_name(self.data_type).unwrap_or("uint8")),
        );
        obj.insert("num_channels".into(), json!(self.num_channels));
        obj.insert("scales".into(), Value::Array(scales));
        for (k, v) in &self.extra {
            obj.insert(k.clone(), v.clone());
        }
        Value::Object(obj)
    }

    /// The index of the scale whose key is `key`.
    pub fn scale_index(&self, key: &str) -> Option<usize> {
        let key = key.trim_matches('/');
        self.scales
            .iter()
            .position(|s| s.key.trim_matches('/') == key)
    }
}

fn scale_json(s: &Scale) -> Value {
    let mut obj = Map::new();
    obj.insert("key".into(), json!(s.key));
    obj.insert("size".into(), json!(s.size));
    obj.insert("voxel_offset".into(), json!(s.voxel_offset));
    obj.insert("resolution".into(), json!(s.resolution));
    obj.insert("chunk_sizes".into(), json!([s.chunk_size]));
    obj.insert("encoding".into(), json!(s.encoding.name()));
    if let Encoding::CompressedSegmentation { block_size } = &s.encoding {
        obj.insert(
            "compressed_segmentation_block_size".into(),
            json!(block_size),
        );
    }
    if let Some(sh) = &s.sharding {
        obj.insert("sharding".into(), sh.to_json());
    }
    Value::Object(obj)
}

fn parse_scale(
    f: &Fields<'_>,
    v: &Value,
    i: usize,
    data_type: DType,
    channels: u64,
) -> Result<Scale> {
    let ctx = format!("scales[{i}].");
    let field = |name: &str| format!("{ctx}{name}");
    let obj = v
        .as_object()
        .ok_or_else(|| f.bad(&format!("scales[{i}]"), "expected an object"))?;
    let key = f
        .string(f.get(obj, "key", &ctx)?, &field("key"))?
        .to_string();
    let bad_key = key.trim_matches('/').is_empty()
        || key.starts_with('/')
        || key.split('/').any(|p| p == ".." || p == ".")
        || key.contains(['\\', ':']);
    if bad_key {
        return Err(f.bad(
            &field("key"),
            format!("{key:?}; a scale key is a relative path inside the volume"),
        ));
    }
    let size = f.positive_triple(f.get(obj, "size", &ctx)?, &field("size"))?;
    let voxel_offset = match obj.get("voxel_offset") {
        None => [0; 3],
        Some(v) => f.triple(v, &field("voxel_offset"), Value::as_i64, "integers")?,
    };
    for a in 0..3 {
        let end = i64::try_from(size[a])
            .ok()
            .and_then(|s| voxel_offset[a].checked_add(s));
        if end.is_none() {
            return Err(f.bad(&field("size"), "voxel_offset + size overflows"));
        }
    }
    let total = size.iter().try_fold(
        channels.saturating_mul(data_type.size_bytes() as u64),
        |acc, &n| acc.checked_mul(n),
    );
    if total.is_none_or(|t| usize::try_from(t).is_err()) {
        return Err(f.bad(&field("size"), format!("{size:?} is too large to address")));
    }
    let resolution = f.triple(
        f.get(obj, "resolution", &ctx)?,
        &field("resolution"),
        Value::as_f64,
        "numbers",
    )?;
    if resolution.iter().any(|r| !r.is_finite() || *r <= 0.0) {
        return Err(f.bad(
            &field("resolution"),
            format!("{resolution:?}; voxel sizes must be positive"),
        ));
    }
    let chunk_sizes = f
        .get(obj, "chunk_sizes", &ctx)?
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            f.bad(
                &field("chunk_sizes"),
                "expected a non-empty array of [x, y, z]",
            )
        })?;
    let mut chunk_size = [0; 3];
    for (j, c) in chunk_sizes.iter().enumerate() {
        let cs = f.positive_triple(c, &field(&format!("chunk_sizes[{j}]")))?;
        if j == 0 {
            chunk_size = cs;
        }
    }
    let chunk_voxels = chunk_size.iter().try_fold(
        channels.saturating_mul(data_type.size_bytes() as u64),
        |a, &n| a.checked_mul(n),
    );
    if chunk_voxels.is_none_or(|n| n > 1 << 34) {
        return Err(f.bad(
            &field("chunk_sizes[0]"),
            format!("{chunk_size:?} makes chunks over 16 GiB"),
        ));
    }
    let encoding = match f.string(f.get(obj, "encoding", &ctx)?, &field("encoding"))? {
        "raw" => Encoding::Raw,
        "compressed_segmentation" => {
            if !matches!(data_type, DType::U32 | DType::U64) {
                return Err(f.bad(
                    &field("encoding"),
                    format!(
                        "compressed_segmentation holds uint32 or uint64 data, not {}",
                        data_type.name()
                    ),
                ));
            }
            let block_size = f.positive_triple(
                f.get(obj, "compressed_segmentation_block_size", &ctx)?,
                &field("compressed_segmentation_block_size"),
            )?;
            if block_size.iter().product::<u64>() > 1 << 24 {
                return Err(f.bad(
                    &field("compressed_segmentation_block_size"),
                    format!("{block_size:?} is too large (at most 2^24 voxels per block)"),
                ));
            }
            Encoding::CompressedSegmentation { block_size }
        }
        other => Encoding::Other(other.to_string()),
    };
    let sharding = match obj.get("sharding") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_sharding(f, v, &field("sharding"))?),
    };
    Ok(Scale {
        key,
        size,
        voxel_offset,
        resolution,
        chunk_size,
        encoding,
        sharding,
    })
}

fn parse_sharding(f: &Fields<'_>, v: &Value, ctx: &str) -> Result<ShardingSpec> {
    let obj = v
        .as_object()
        .ok_or_else(|| f.bad(ctx, "expected an object"))?;
    let c = format!("{ctx}.");
    let t = f.string(f.get(obj, "@type", &c)?, &format!("{c}@type"))?;
    if t != "neuroglancer_uint64_sharded_v1" {
        return Err(f.bad(
            &format!("{c}@type"),
            format!("{t:?}; expected \"neuroglancer_uint64_sharded_v1\""),
        ));
    }
    let bits = |name: &str, max: u64| -> Result<u32> {
        let n = f.uint(f.get(obj, name, &c)?, &format!("{c}{name}"))?;
        if n > max {
            return Err(f.bad(&format!("{c}{name}"), format!("{n}; allowed 0..={max}")));
        }
        Ok(n as u32)
    };
    let preshift_bits = bits("preshift_bits", 64)?;
    let minishard_bits = bits("minishard_bits", 32)?;
    let shard_bits = bits("shard_bits", 64)?;
    if preshift_bits + minishard_bits + shard_bits > 64 {
        return Err(f.bad(
            ctx,
            "preshift_bits + minishard_bits + shard_bits exceeds 64",
        ));
    }
    let hash = match f.string(f.get(obj, "hash", &c)?, &format!("{c}hash"))? {
        "identity" => ShardHash::Identity,
        "murmurhash3_x86_128" => ShardHash::Murmurhash3X86_128,
        other => {
            return Err(f.bad(
                &format!("{c}hash"),
                format!("{other:?}; expected \"identity\" or \"murmurhash3_x86_128\""),
            ))
        }
    };
    let gzip = |name: &str| -> Result<bool> {
        match obj.get(name) {
            None => Ok(false),
            Some(v) => match f.string(v, &format!("{c}{name}"))? {
                "raw" => Ok(false),
                "gzip" => Ok(true),
                other => Err(f.bad(
                    &format!("{c}{name}"),
                    format!("{other:?}; expected \"raw\" or \"gzip\""),
                )),
            },
        }
    };
    Ok(ShardingSpec {
        preshift_bits,
        hash,
        minishard_bits,
        shard_bits,
        minishard_index_gzip: gzip("minishard_index_encoding")?,
        data_gzip: gzip("data_encoding")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Info> {
        Info::parse(Path::new("v.precomputed/info"), text)
    }

    const GOOD: &str = r#"{"@type":"neuroglancer_multiscale_volume","type":"segmentation",
        "data_type":"uint64","num_channels":1,"mesh":"mesh","scales":[{"key":"8_8_8",
        "size":[10,20,30],"voxel_offset":[1,2,3],"resolution":[8,8,8],
        "chunk_sizes":[[4,4,4]],"encoding":"compressed_segmentation",
        "compressed_segmentation_block_size":[8,8,8],
        "sharding":{"@type":"neuroglancer_uint64_sharded_v1","preshift_bits":1,
        "hash":"murmurhash3_x86_128","minishard_bits":2,"shard_bits":3,
        "data_encoding":"gzip"}}]}"#;

    #[test]
    fn parses_and_writes_back_the_same_document() {
        let info = parse(GOOD).unwrap();
        assert_eq!(info.data_type, DType::U64);
        let s = &info.scales[0];
        assert_eq!(
            (s.size, s.voxel_offset, s.chunk_size),
            ([10, 20, 30], [1, 2, 3], [4, 4, 4])
        );
        assert_eq!(s.grid_shape(), [3, 5, 8]);
        let sh = s.sharding.unwrap();
        assert!(sh.data_gzip && !sh.minishard_index_gzip);
        let again = parse(&info.to_json().to_string()).unwrap();
        assert_eq!(again, info);
        assert_eq!(info.extra["mesh"], "mesh");
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (
                r#""@type":"neuroglancer_multiscale_volume""#,
                r#""@type":"neuroglancer_skeletons""#,
                "@type",
            ),
            (r#""type":"segmentation""#, r#""type":"mesh""#, "type"),
            (
                r#""data_type":"uint64""#,
                r#""data_type":"float64""#,
                "data_type",
            ),
            (
                r#""chunk_sizes":[[4,4,4]]"#,
                r#""chunk_sizes":[[4,0,4]]"#,
                "scales[0].chunk_sizes[0]",
            ),
            (
                r#""size":[10,20,30]"#,
                r#""size":[10,20]"#,
                "scales[0].size",
            ),
            (
                r#""resolution":[8,8,8]"#,
                r#""resolution":[8,-1,8]"#,
                "scales[0].resolution",
            ),
            (r#""key":"8_8_8","#, "", "scales[0].key: missing"),
            (
                r#""shard_bits":3"#,
                r#""shard_bits":63"#,
                "scales[0].sharding",
            ),
            (
                r#""hash":"murmurhash3_x86_128""#,
                r#""hash":"md5""#,
                "scales[0].sharding.hash",
            ),
            (
                r#""data_type":"uint64""#,
                r#""data_type":"uint8""#,
                "scales[0].encoding",
            ),
            (r#""key":"8_8_8""#, r#""key":"../x""#, "scales[0].key"),
        ];
        for (from, to, field) in cases {
            let text = GOOD.replace(from, to);
            assert_ne!(text, GOOD, "{from}");
            let e = parse(&text).unwrap_err().to_string();
            assert!(
                e.contains(field) && e.contains("v.precomputed/info"),
                "{field}: {e}"
            );
        }
        assert!(parse("[1]").is_err());
        assert!(parse("{").is_err());
    }
}
