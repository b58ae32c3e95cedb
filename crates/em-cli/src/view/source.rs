//! What `em view` serves for one volume: its own files (zarr arrays, OME-Zarr groups,
//! precomputed directories), or a zarr v2 array generated chunk by chunk from a volume
//! neuroglancer cannot read itself (npy, TIFF, HDF5, or zarr of a type it does not take).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use em_core::{AnyArray, ChunkedVolume, DType, Roi};
use em_io::{Format, VolumePath};
use serde_json::{json, Value};

use super::http::{content_type, file_reply, Reply};

/// The neuroglancer layer a volume feeds: segmentations need integer ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Intensities (`image` layer).
    Image,
    /// Segment ids (`segmentation` layer).
    Segmentation,
}

impl Role {
    /// The layer name, also the URL prefix `/data/<name>/`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Image => "image",
            Role::Segmentation => "segmentation",
        }
    }

    /// The argument as the usage line names it, for messages.
    fn arg(self) -> &'static str {
        match self {
            Role::Image => "IMAGE",
            Role::Segmentation => "SEGMENTATION",
        }
    }
}

/// Element types neuroglancer's zarr reader renders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NgType {
    /// `uint8`.
    U8,
    /// `int8`.
    I8,
    /// `uint16`.
    U16,
    /// `int16`.
    I16,
    /// `uint32`.
    U32,
    /// `int32`.
    I32,
    /// `uint64`.
    U64,
    /// `float32`.
    F32,
}

impl NgType {
    /// The zarr v2 dtype string (little-endian).
    fn zarr_v2(self) -> &'static str {
        match self {
            NgType::U8 => "|u1",
            NgType::I8 => "|i1",
            NgType::U16 => "<u2",
            NgType::I16 => "<i2",
            NgType::U32 => "<u4",
            NgType::I32 => "<i4",
            NgType::U64 => "<u8",
            NgType::F32 => "<f4",
        }
    }

    /// Bytes per element.
    fn size(self) -> usize {
        match self {
            NgType::U8 | NgType::I8 => 1,
            NgType::U16 | NgType::I16 => 2,
            NgType::U32 | NgType::I32 | NgType::F32 => 4,
            NgType::U64 => 8,
        }
    }

    /// The numpy name, for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            NgType::U8 => "uint8",
            NgType::I8 => "int8",
            NgType::U16 => "uint16",
            NgType::I16 => "int16",
            NgType::U32 => "uint32",
            NgType::I32 => "int32",
            NgType::U64 => "uint64",
            NgType::F32 => "float32",
        }
    }
}

/// The type a volume of `dtype` is shown as in `role`. Images keep the types neuroglancer
/// draws and become float32 otherwise (int64 and uint64 intensities are rare and its
/// default shader handles floats); segment ids become uint32 or uint64, with negative ids
/// (the "unknown" of PyTC/BANIS files) shown as background 0.
///
/// # Errors
/// Floating-point segmentations: segment ids must be integers.
pub(crate) fn ng_type(dtype: DType, role: Role) -> Result<NgType, String> {
    Ok(match (role, dtype) {
        (Role::Image, DType::Bool | DType::U8) => NgType::U8,
        (Role::Image, DType::I8) => NgType::I8,
        (Role::Image, DType::U16) => NgType::U16,
        (Role::Image, DType::I16) => NgType::I16,
        (Role::Image, DType::U32) => NgType::U32,
        (Role::Image, DType::I32) => NgType::I32,
        (Role::Image, _) => NgType::F32,
        (Role::Segmentation, DType::U64 | DType::I64) => NgType::U64,
        (Role::Segmentation, DType::F16 | DType::F32 | DType::F64) => {
            return Err(format!(
                "has dtype {dtype}; segment ids must be integers (threshold or decode it first)"
            ))
        }
        (Role::Segmentation, _) => NgType::U32,
    })
}

/// How a served volume is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A plain zarr array (v2 or v3), served as its files.
    ZarrArray {
        /// 2 or 3.
        version: u8,
    },
    /// An OME-Zarr multiscale group, served as its files.
    OmeZarr {
        /// 2 (OME-NGFF 0.4) or 3 (0.5).
        version: u8,
    },
    /// A neuroglancer precomputed directory, served as its files.
    Precomputed,
    /// A zarr v2 array generated on request.
    Virtual,
}

/// One volume as `em view` serves it.
pub(crate) struct Source {
    /// The layer it feeds.
    pub(crate) role: Role,
    /// The path given on the command line.
    pub(crate) input: PathBuf,
    /// How it is served.
    pub(crate) kind: Kind,
    /// Shape `(z, y, x)` (of the finest scale).
    pub(crate) shape: [u64; 3],
    /// Voxel offset `(z, y, x)` (precomputed's `voxel_offset`; 0 elsewhere).
    pub(crate) offset: [i64; 3],
    /// The voxel size `(z, y, x)` in nm its metadata records, if any.
    pub(crate) metadata_voxel_size: Option<[f64; 3]>,
    /// A one-line description for the start-up message.
    pub(crate) describe: String,
    backing: Backing,
}

/// Where a source's bytes come from.
enum Backing {
    /// A directory served as stored (canonical path). `units`: for a plain zarr array, its
    /// metadata is served with dimension names `z, y, x` and these units, so that
    /// neuroglancer places it in the viewer's `x, y, z` nm space whatever names and units
    /// (often none) the file has.
    Files {
        /// The directory, canonical: requests are checked against it.
        root: PathBuf,
        /// Units of a plain array's rewritten metadata (`None`: files as stored).
        units: Option<[String; 3]>,
    },
    /// A volume encoded into uncompressed zarr v2 chunks on request.
    Virtual(Box<VirtualZarr>),
}

/// A volume presented as a zarr v2 array: `.zarray`, `.zattrs` and chunks `i.j.k`.
struct VirtualZarr {
    /// The volume read chunk by chunk.
    volume: Box<dyn ChunkedVolume>,
    /// The element type the chunks are encoded as.
    ty: NgType,
    /// What `true` becomes: 255 in images (white), 1 in segmentations (one segment).
    bool_value: f64,
    /// Shape `(z, y, x)`.
    shape: [u64; 3],
    /// Chunk shape `(z, y, x)`.
    chunk: [u64; 3],
    /// `dimension_units` of `.zattrs`, e.g. `"40 nm"`.
    units: [String; 3],
}

/// The side of generated chunks: neuroglancer fetches whole chunks, and 64³ is its usual
/// size (256 KiB of uint8) while staying small for thin volumes.
const VIRTUAL_CHUNK: u64 = 64;

/// Whether a path names a neuroglancer precomputed directory: `*.precomputed`, or a
/// directory with an `info` file that is not named as another format.
fn is_precomputed(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "precomputed")
        || (path.is_dir() && path.join("info").is_file() && VolumePath::parse(path).is_err())
}

/// Reads a JSON file.
fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// The three trailing axes of a shape as `(z, y, x)`.
fn zyx(shape: &[u64], input: &Path, role: Role) -> Result<[u64; 3]> {
    match shape {
        [z, y, x] => Ok([*z, *y, *x]),
        _ => bail!(
            "{} {} has shape {shape:?}; em view shows 3-D volumes (z, y, x)",
            role.arg(),
            input.display()
        ),
    }
}

impl Source {
    /// Inspects `input` and decides how to serve it.
    ///
    /// # Errors
    /// A missing or unreadable input, a volume that is not 3-D, a zarr group that is not
    /// OME-Zarr, a segmentation that does not hold integers.
    pub(crate) fn open(input: &Path, role: Role) -> Result<Self> {
        let what = format!("{} {}", role.arg(), input.display());
        if is_precomputed(input) {
            return Self::open_precomputed(input, role);
        }
        let vp = VolumePath::parse(input).with_context(|| {
            format!(
                "{what}: not a volume em view can serve (.npy, .tif, DIR.zarr[/array], \
                 FILE.h5/dataset, DIR.precomputed)"
            )
        })?;
        if !vp.container.exists() {
            bail!("{what} does not exist");
        }
        if vp.format == Format::Zarr {
            let dir = vp.display();
            if !dir.is_dir() {
                bail!("{what} does not exist");
            }
            if let Some(version) = ome_version(&dir)? {
                return Self::open_ome(input, &dir, version, role);
            }
        }
        let volume = em_io::open(input).with_context(|| format!("opening {what}"))?;
        let shape = zyx(volume.shape(), input, role)?;
        let ty = ng_type(volume.dtype(), role).map_err(|e| anyhow::anyhow!("{what} {e}"))?;
        let metadata_voxel_size = em_io::voxel_size(input)
            .with_context(|| format!("reading the voxel size of {what}"))?;
        if vp.format == Format::Zarr {
            let dir = vp.display();
            let version = if dir.join("zarr.json").is_file() {
                3
            } else {
                2
            };
            if native_zarr(&dir, version, volume.dtype(), ty)? {
                return Ok(Self {
                    role,
                    input: input.to_path_buf(),
                    kind: Kind::ZarrArray { version },
                    shape,
                    offset: [0; 3],
                    metadata_voxel_size,
                    describe: format!("zarr v{version} array, {} files", volume.dtype()),
                    backing: Backing::Files {
                        root: canonical(&dir)?,
                        units: None,
                    },
                });
            }
        }
        let describe = format!(
            "{}, {} served as {}",
            volume.describe(),
            volume.dtype(),
            ty.name()
        );
        let bool_value = if role == Role::Image { 255.0 } else { 1.0 };
        let chunk = shape.map(|s| s.clamp(1, VIRTUAL_CHUNK));
        Ok(Self {
            role,
            input: input.to_path_buf(),
            kind: Kind::Virtual,
            shape,
            offset: [0; 3],
            metadata_voxel_size,
            describe,
            backing: Backing::Virtual(Box::new(VirtualZarr {
                volume,
                ty,
                bool_value,
                shape,
                chunk,
                units: units([1.0; 3]),
            })),
        })
    }

    /// An OME-Zarr group: its files as they are (neuroglancer reads the multiscale
    /// metadata); the finest scale gives the shape.
    fn open_ome(input: &Path, dir: &Path, version: u8, role: Role) -> Result<Self> {
        let what = format!("{} {}", role.arg(), input.display());
        let attrs = if version == 3 {
            read_json(&dir.join("zarr.json"))?["attributes"]["ome"].clone()
        } else {
            read_json(&dir.join(".zattrs"))?
        };
        let multiscale = &attrs["multiscales"][0];
        let Some(level0) = multiscale["datasets"][0]["path"].as_str() else {
            bail!("{what}: OME-Zarr metadata names no dataset (multiscales[0].datasets[0].path)");
        };
        let volume = em_io::open(dir.join(level0))
            .with_context(|| format!("opening scale {level0} of {what}"))?;
        let full = volume.shape();
        let shape = zyx(&full[full.len().saturating_sub(3)..], input, role)?;
        let ty = ng_type(volume.dtype(), role).map_err(|e| anyhow::anyhow!("{what} {e}"))?;
        if !native_dtype(volume.dtype(), ty) {
            bail!(
                "{what} holds {}, which neuroglancer does not read from a multiscale group; \
                 name one scale ({}/{level0}) to have it converted, or convert the pyramid",
                volume.dtype(),
                input.display()
            );
        }
        let names: Vec<(String, String)> = multiscale["axes"]
            .as_array()
            .map(|axes| {
                axes.iter()
                    .filter(|a| a["type"].as_str().is_none_or(|t| t == "space"))
                    .map(|a| {
                        let name = a["name"].as_str().or(a.as_str()).unwrap_or("");
                        let unit = a["unit"].as_str().unwrap_or("");
                        (name.to_string(), unit.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut spatial: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
        spatial.sort_unstable();
        if spatial != ["x", "y", "z"] || names.iter().any(|(_, u)| u.is_empty()) {
            eprintln!(
                "warning: the spatial axes of {what} are {names:?}, not x, y, z with a length \
                 unit; neuroglancer may not line it up with the viewer's x, y, z (nm)"
            );
        }
        Ok(Self {
            role,
            input: input.to_path_buf(),
            kind: Kind::OmeZarr { version },
            shape,
            offset: [0; 3],
            metadata_voxel_size: em_io::voxel_size(input)
                .with_context(|| format!("reading the voxel size of {what}"))?,
            describe: format!("OME-Zarr (zarr v{version}) group, {} files", volume.dtype()),
            backing: Backing::Files {
                root: canonical(dir)?,
                units: None,
            },
        })
    }

    /// A precomputed directory: `info` gives the finest scale's size, offset and
    /// resolution (x, y, z).
    fn open_precomputed(input: &Path, role: Role) -> Result<Self> {
        let what = format!("{} {}", role.arg(), input.display());
        if !input.is_dir() {
            bail!("{what} does not exist (a precomputed volume is a directory with an info file)");
        }
        let info_path = input.join("info");
        if !info_path.is_file() {
            bail!("{what} has no info file; it is not a neuroglancer precomputed volume");
        }
        // Read through em-io, which checks the info file: a volume neuroglancer would
        // reject is refused here, with the field named.
        let vp = VolumePath {
            format: Format::Precomputed,
            container: input.to_path_buf(),
            key: None,
        };
        let volume = em_io::precomputed::PrecomputedVolume::open(&vp)
            .with_context(|| format!("opening {what}"))?;
        let full = volume.shape();
        let shape = zyx(&full[full.len().saturating_sub(3)..], input, role)?;
        Ok(Self {
            role,
            input: input.to_path_buf(),
            kind: Kind::Precomputed,
            shape,
            offset: volume.voxel_offset(),
            metadata_voxel_size: Some(volume.resolution_nm()),
            describe: format!("neuroglancer precomputed {}, files", volume.dtype()),
            backing: Backing::Files {
                root: canonical(input)?,
                units: None,
            },
        })
    }

    /// Sets the voxel size `(z, y, x)` nm that generated and rewritten metadata carries
    /// (files with their own multiscale or precomputed scales keep theirs).
    pub(crate) fn set_voxel_size(&mut self, voxel_size: [f64; 3]) {
        match &mut self.backing {
            Backing::Virtual(v) => v.units = units(voxel_size),
            Backing::Files { units: u, .. } => {
                if matches!(self.kind, Kind::ZarrArray { .. }) {
                    *u = Some(units(voxel_size));
                }
            }
        }
    }

    /// The neuroglancer data source URL scheme.
    pub(crate) fn protocol(&self) -> &'static str {
        match self.kind {
            Kind::ZarrArray { version: 3 } | Kind::OmeZarr { version: 3 } => "zarr3",
            Kind::Precomputed => "precomputed",
            _ => "zarr2",
        }
    }

    /// The answer to a request for `rest` (decoded, checked path segments) below this
    /// source's prefix.
    pub(crate) fn reply(&self, rest: &[String]) -> Reply {
        match &self.backing {
            Backing::Files { root, units } => {
                if let (Some(units), [name]) = (units, rest) {
                    if let Some(body) = rewritten_metadata(root, name, units) {
                        return body;
                    }
                }
                file_reply(root, rest)
            }
            Backing::Virtual(v) => v.reply(rest),
        }
    }
}

/// The canonical form of a served directory: requests are checked against it.
fn canonical(dir: &Path) -> Result<PathBuf> {
    dir.canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))
}

/// `"40 nm"`-style units, the form neuroglancer reads from `dimension_units`.
fn units(voxel_size: [f64; 3]) -> [String; 3] {
    voxel_size.map(|v| format!("{v} nm"))
}

/// The zarr version of an OME-Zarr group at `dir`, or `None` if it is not one.
///
/// # Errors
/// A zarr group without multiscale metadata: neuroglancer would find nothing to show.
fn ome_version(dir: &Path) -> Result<Option<u8>> {
    let v3 = dir.join("zarr.json");
    if v3.is_file() {
        let meta = read_json(&v3)?;
        if meta["node_type"] == "group" {
            let attrs = &meta["attributes"];
            if attrs["ome"]["multiscales"].is_array() {
                return Ok(Some(3));
            }
            bail!(
                "{} is a zarr group without OME-Zarr multiscale metadata; name an array in it \
                 (e.g. {}/raw)",
                dir.display(),
                dir.display()
            );
        }
        return Ok(None);
    }
    if dir.join(".zarray").is_file() {
        return Ok(None);
    }
    let attrs = dir.join(".zattrs");
    if attrs.is_file() && read_json(&attrs)?["multiscales"].is_array() {
        return Ok(Some(2));
    }
    if dir.join(".zgroup").is_file() {
        bail!(
            "{} is a zarr group without OME-Zarr multiscale metadata; name an array in it \
             (e.g. {}/raw)",
            dir.display(),
            dir.display()
        );
    }
    Ok(None)
}

/// Whether neuroglancer reads `dtype` unconverted as `ty`.
fn native_dtype(dtype: DType, ty: NgType) -> bool {
    matches!(
        (dtype, ty),
        (DType::U8, NgType::U8)
            | (DType::I8, NgType::I8)
            | (DType::U16, NgType::U16)
            | (DType::I16, NgType::I16)
            | (DType::U32, NgType::U32)
            | (DType::I32, NgType::I32)
            | (DType::U64, NgType::U64)
            | (DType::F32, NgType::F32)
    )
}

/// Whether neuroglancer can read the zarr array at `dir` from its files: a type it takes
/// as is, and codecs it implements. Anything else is served converted.
fn native_zarr(dir: &Path, version: u8, dtype: DType, ty: NgType) -> Result<bool> {
    if !native_dtype(dtype, ty) {
        return Ok(false);
    }
    if version == 2 {
        let meta = read_json(&dir.join(".zarray"))?;
        let compressor_ok = match &meta["compressor"] {
            Value::Null => true,
            c => matches!(c["id"].as_str(), Some("blosc" | "gzip" | "zlib" | "zstd")),
        };
        let filters_ok =
            meta["filters"].is_null() || meta["filters"].as_array().is_some_and(|f| f.is_empty());
        let order_ok = meta["order"].as_str().is_none_or(|o| o == "C");
        return Ok(compressor_ok && filters_ok && order_ok);
    }
    let meta = read_json(&dir.join("zarr.json"))?;
    Ok(codecs_supported(&meta["codecs"]))
}

/// Whether every codec of a zarr v3 codec list (sharding's inner lists included) is one
/// neuroglancer implements.
fn codecs_supported(codecs: &Value) -> bool {
    let Some(list) = codecs.as_array() else {
        return false;
    };
    list.iter().all(|c| match c["name"].as_str() {
        Some("bytes" | "blosc" | "gzip" | "zstd" | "crc32c" | "transpose") => true,
        Some("sharding_indexed") => {
            codecs_supported(&c["configuration"]["codecs"])
                && codecs_supported(&c["configuration"]["index_codecs"])
        }
        _ => false,
    })
}

/// The metadata of a plain zarr array with dimension names `z, y, x` and `units`, or `None`
/// when `name` is not its attribute/metadata file.
fn rewritten_metadata(root: &Path, name: &str, units: &[String; 3]) -> Option<Reply> {
    let names = json!(["z", "y", "x"]);
    let body = match name {
        ".zattrs" if !root.join("zarr.json").is_file() => {
            let mut attrs = read_json(&root.join(".zattrs")).unwrap_or_else(|_| json!({}));
            if !attrs.is_object() {
                attrs = json!({});
            }
            attrs["_ARRAY_DIMENSIONS"] = names;
            attrs["dimension_units"] = json!(units);
            attrs
        }
        "zarr.json" => {
            let mut meta = match read_json(&root.join("zarr.json")) {
                Ok(m) if m.is_object() => m,
                _ => return None,
            };
            meta["dimension_names"] = names;
            if !meta["attributes"].is_object() {
                meta["attributes"] = json!({});
            }
            meta["attributes"]["dimension_units"] = json!(units);
            meta
        }
        _ => return None,
    };
    Some(json_reply(&body))
}

/// A JSON document as a response body.
fn json_reply(v: &Value) -> Reply {
    Reply::Body {
        bytes: serde_json::to_vec_pretty(v).unwrap_or_default(),
        content_type: content_type(Path::new("x.json")),
    }
}

impl VirtualZarr {
    /// `.zarray`, `.zattrs`, a chunk, or 404.
    fn reply(&self, rest: &[String]) -> Reply {
        let [name] = rest else {
            return Reply::not_found();
        };
        match name.as_str() {
            ".zarray" => json_reply(&json!({
                "zarr_format": 2,
                "shape": self.shape,
                "chunks": self.chunk,
                "dtype": self.ty.zarr_v2(),
                "compressor": null,
                "fill_value": 0,
                "order": "C",
                "filters": null,
                "dimension_separator": ".",
            })),
            ".zattrs" => json_reply(&json!({
                "_ARRAY_DIMENSIONS": ["z", "y", "x"],
                "dimension_units": self.units,
            })),
            key => match self.chunk_index(key) {
                Some(index) => match self.chunk_bytes(index) {
                    Ok(bytes) => Reply::Body {
                        bytes,
                        content_type: "application/octet-stream",
                    },
                    Err(e) => Reply::Status(500, format!("reading chunk {key}: {e:#}")),
                },
                None => Reply::not_found(),
            },
        }
    }

    /// The grid index of a chunk key `i.j.k`, if it names a chunk of the array.
    fn chunk_index(&self, key: &str) -> Option<[u64; 3]> {
        let parts: Vec<&str> = key.split('.').collect();
        let [a, b, c] = parts.as_slice() else {
            return None;
        };
        let mut index = [0u64; 3];
        for (axis, p) in [a, b, c].into_iter().enumerate() {
            // Digits only: "+1" or "01" would name the same chunk under another key.
            if p.is_empty()
                || !p.bytes().all(|b| b.is_ascii_digit())
                || (p.len() > 1 && p.starts_with('0'))
            {
                return None;
            }
            let i: u64 = p.parse().ok()?;
            if i >= self.shape[axis].div_ceil(self.chunk[axis]) {
                return None;
            }
            index[axis] = i;
        }
        Some(index)
    }

    /// One chunk, C-order little-endian, padded to the full chunk shape at the volume's
    /// far edges as zarr v2 requires.
    fn chunk_bytes(&self, index: [u64; 3]) -> Result<Vec<u8>> {
        let start: Vec<u64> = (0..3).map(|a| index[a] * self.chunk[a]).collect();
        let size: Vec<u64> = (0..3)
            .map(|a| self.chunk[a].min(self.shape[a] - start[a]))
            .collect();
        let roi = Roi::new(start, size.clone())?;
        let data = self.volume.read_roi(&roi)?.into_standard_layout();
        let packed = encode(&data, self.ty, self.bool_value);
        let size = [size[0] as usize, size[1] as usize, size[2] as usize];
        let chunk = self.chunk.map(|c| c as usize);
        Ok(pad(packed, size, chunk, self.ty.size()))
    }
}

/// The elements of `data` in C order as `ty`, little-endian. Conversions saturate
/// (negative ids become 0); 64-bit ids are copied exactly.
pub(crate) fn encode(data: &AnyArray, ty: NgType, bool_value: f64) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * ty.size());
    macro_rules! through_f64 {
        ($a:expr, $f:expr) => {
            for v in $a.iter() {
                push_as(&mut out, $f(*v), ty);
            }
        };
    }
    // Types neuroglancer reads as they are are copied without a round trip through f64.
    macro_rules! native {
        ($a:expr) => {
            $a.iter().for_each(|v| out.extend(v.to_le_bytes()))
        };
    }
    match (data, ty) {
        (AnyArray::U8(a), NgType::U8) => native!(a),
        (AnyArray::I8(a), NgType::I8) => native!(a),
        (AnyArray::U16(a), NgType::U16) => native!(a),
        (AnyArray::I16(a), NgType::I16) => native!(a),
        (AnyArray::U32(a), NgType::U32) => native!(a),
        (AnyArray::I32(a), NgType::I32) => native!(a),
        (AnyArray::F32(a), NgType::F32) => native!(a),
        (AnyArray::U64(a), NgType::U64) => native!(a),
        (AnyArray::I64(a), NgType::U64) => a
            .iter()
            .for_each(|v| out.extend(((*v).max(0) as u64).to_le_bytes())),
        (AnyArray::Bool(a), _) => through_f64!(a, |v: bool| if v { bool_value } else { 0.0 }),
        (AnyArray::U8(a), _) => through_f64!(a, f64::from),
        (AnyArray::U16(a), _) => through_f64!(a, f64::from),
        (AnyArray::U32(a), _) => through_f64!(a, f64::from),
        (AnyArray::U64(a), _) => through_f64!(a, |v: u64| v as f64),
        (AnyArray::I8(a), _) => through_f64!(a, f64::from),
        (AnyArray::I16(a), _) => through_f64!(a, f64::from),
        (AnyArray::I32(a), _) => through_f64!(a, f64::from),
        (AnyArray::I64(a), _) => through_f64!(a, |v: i64| v as f64),
        (AnyArray::F16(a), _) => through_f64!(a, |v: em_core::f16| f64::from(v)),
        (AnyArray::F32(a), _) => through_f64!(a, f64::from),
        (AnyArray::F64(a), _) => through_f64!(a, |v: f64| v),
        _ => {}
    }
    out
}

/// Appends `v` as `ty` (Rust's `as` casts saturate and send NaN to 0).
fn push_as(out: &mut Vec<u8>, v: f64, ty: NgType) {
    match ty {
        NgType::U8 => out.push(v as u8),
        NgType::I8 => out.extend((v as i8).to_le_bytes()),
        NgType::U16 => out.extend((v as u16).to_le_bytes()),
        NgType::I16 => out.extend((v as i16).to_le_bytes()),
        NgType::U32 => out.extend((v as u32).to_le_bytes()),
        NgType::I32 => out.extend((v as i32).to_le_bytes()),
        NgType::U64 => out.extend((v as u64).to_le_bytes()),
        NgType::F32 => out.extend((v as f32).to_le_bytes()),
    }
}

/// Places a `size` block of `element`-byte values at the origin of a zero-filled `chunk`.
fn pad(packed: Vec<u8>, size: [usize; 3], chunk: [usize; 3], element: usize) -> Vec<u8> {
    if size == chunk {
        return packed;
    }
    let mut out = vec![0u8; chunk.iter().product::<usize>() * element];
    let row = size[2] * element;
    for z in 0..size[0] {
        for y in 0..size[1] {
            let src = (z * size[1] + y) * size[2] * element;
            let dst = (z * chunk[1] + y) * chunk[2] * element;
            out[dst..dst + row].copy_from_slice(&packed[src..src + row]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ArrayD;

    #[test]
    fn pads_edge_chunks_at_the_far_side() {
        let packed = vec![1u8, 2, 3, 4];
        let out = pad(packed, [1, 2, 2], [1, 3, 3], 1);
        assert_eq!(out, vec![1, 2, 0, 3, 4, 0, 0, 0, 0]);
    }

    #[test]
    fn converts_ids_and_intensities() {
        let ids = AnyArray::I64(ArrayD::from_shape_vec(vec![3], vec![-1, 5, 1 << 40]).unwrap());
        let bytes = encode(&ids, NgType::U64, 1.0);
        let back: Vec<u64> = bytes
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(back, vec![0, 5, 1 << 40]);
        let mask = AnyArray::Bool(ArrayD::from_shape_vec(vec![2], vec![true, false]).unwrap());
        assert_eq!(encode(&mask, NgType::U8, 255.0), vec![255, 0]);
        let f = AnyArray::F64(ArrayD::from_shape_vec(vec![1], vec![0.5]).unwrap());
        assert_eq!(encode(&f, NgType::F32, 1.0), 0.5f32.to_le_bytes().to_vec());
        assert_eq!(ng_type(DType::I16, Role::Segmentation), Ok(NgType::U32));
        assert!(ng_type(DType::F32, Role::Segmentation).is_err());
        assert_eq!(ng_type(DType::F64, Role::Image), Ok(NgType::F32));
    }
}
