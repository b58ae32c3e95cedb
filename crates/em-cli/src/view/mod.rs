//! `em view`: serves an image, an optional segmentation and skeletons to neuroglancer
//! from 127.0.0.1 and prints the viewer's URL.
//!
//! zarr arrays, OME-Zarr groups and precomputed directories are served as their files;
//! npy, TIFF and HDF5 volumes (and zarr arrays of types neuroglancer does not read) as a
//! zarr v2 array generated chunk by chunk. Skeletons become a precomputed skeleton source
//! in a temporary directory. The client is `--client DIR`, else the one the `neuroglancer`
//! Python package ships, else the public app (which reads the data across origins).

mod http;
pub(crate) mod skeletons;
mod source;
mod state;

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use em_core::VoxelSize;
use serde_json::json;

use source::{Kind, Role, Source};

/// The first port tried when `--port` is not given.
const DEFAULT_PORT: u16 = 8000;

/// How many ports after [`DEFAULT_PORT`] are tried before giving up.
const PORT_TRIES: u16 = 100;

/// The public neuroglancer app, used when no client is available locally.
const PUBLIC_APP: &str = "https://neuroglancer-demo.appspot.com/";

/// The token in the client's path `/v/<token>/`: the Python package's build requires one
/// and accepts any.
const CLIENT_TOKEN: &str = "em";

/// Arguments of `em view`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The image: .npy, .tif, DIR.zarr[/array] (an array or an OME-Zarr group),
    /// FILE.h5/dataset or DIR.precomputed.
    image: PathBuf,
    /// A segmentation shown over the image (same formats; integer ids).
    segmentation: Option<PathBuf>,
    /// Skeletons to draw: skeleton JSON (positions in voxels of the image) or SWC files
    /// (a file or a directory of them, nm).
    #[arg(long)]
    skeletons: Option<PathBuf>,
    /// Port on 127.0.0.1 [default: 8000, or the next free port]; 0 picks any free port.
    #[arg(long)]
    port: Option<u16>,
    /// A built neuroglancer client (a directory with index.html) to serve [default: the
    /// client of the installed `neuroglancer` Python package, else the public app].
    #[arg(long)]
    client: Option<PathBuf>,
    /// Voxel size z,y,x in nm [default: the image's metadata, else 1,1,1].
    #[arg(long, value_parser = crate::voxel_size_arg)]
    voxel_size: Option<VoxelSize>,
    /// Print one JSON object (url, port, served paths) on stdout instead of the URL.
    #[arg(long)]
    json: bool,
    /// No log line per request on stderr.
    #[arg(long)]
    quiet: bool,
}

/// Serves until SIGINT/SIGTERM, then returns.
///
/// # Errors
/// Missing or unservable inputs, unreadable skeletons, a port that cannot be bound.
pub(crate) fn run(args: &Args) -> Result<()> {
    check_paths(args)?;
    // Before anything slow: a signal during start-up then ends the run cleanly.
    let stop = stop_on_signals()?;
    let (image, segmentation, voxel_size) = open_volumes(args)?;
    let skeletons = match &args.skeletons {
        Some(path) => Some(skeletons::write_source(path, voxel_size)?),
        None => None,
    };
    let client = match &args.client {
        Some(dir) => Some(dir.clone()),
        None => python_client(),
    };
    let client = client
        .map(|c| {
            c.canonicalize()
                .with_context(|| format!("resolving {}", c.display()))
        })
        .transpose()?;

    let listener = bind(args.port)?;
    let port = listener.local_addr()?.port();
    let base = format!("http://127.0.0.1:{port}");
    let client_url = match &client {
        Some(_) => format!("{base}/v/{CLIENT_TOKEN}/"),
        None => PUBLIC_APP.to_string(),
    };
    let volumes: Vec<Source> = std::iter::once(image).chain(segmentation).collect();
    let skeleton_source = skeletons.as_ref().map(|sk| SkeletonSource {
        input: args.skeletons.clone().unwrap_or_default(),
        dir: &sk.path,
        ids: &sk.ids,
    });
    let (layers, mut served) = layers_and_listing(&base, &volumes, skeleton_source.as_ref());
    if let Some(dir) = &client {
        served.push(json!({
            "prefix": format!("/v/{CLIENT_TOKEN}/"),
            "path": dir,
            "served_as": "neuroglancer client",
        }));
    }
    let image = &volumes[0];
    let viewer_state = state::state(&state::StateSpec {
        voxel_size,
        centre: [0, 1, 2].map(|a| image.offset[a] as f64 + image.shape[a] as f64 / 2.0),
        shape: image.shape,
        layers,
    });
    let url = state::url(&client_url, &viewer_state);

    for s in &volumes {
        let name = s.role.name();
        eprintln!(
            "{name}: {} ({}) at {base}/data/{name}/",
            s.input.display(),
            s.describe
        );
    }
    if client.is_none() {
        eprintln!(
            "no local neuroglancer client (pip install neuroglancer, or --client DIR): the URL \
             opens the public app, which reads the data from {base}"
        );
    }
    eprintln!("serving on {base} (Ctrl-C to stop)");
    let mut stdout = std::io::stdout();
    if args.json {
        let out = json!({"url": url, "port": port, "client": client, "served": served});
        writeln!(stdout, "{out}")?;
    } else {
        writeln!(stdout, "{url}")?;
    }
    stdout.flush()?;

    let routes = Arc::new(http::Routes {
        sources: volumes,
        skeletons: skeletons
            .as_ref()
            .map(|sk| sk.path.canonicalize())
            .transpose()?,
        client,
        quiet: args.quiet,
    });
    let requests = http::serve(listener, routes, &stop);
    drop(skeletons);
    let _ = writeln!(
        std::io::stderr(),
        "em view: stopped after {requests} requests"
    );
    Ok(())
}

/// Refuses missing skeletons and a client directory that is not one, before any work.
fn check_paths(args: &Args) -> Result<()> {
    if let Some(s) = &args.skeletons {
        if !s.exists() {
            bail!("--skeletons {} does not exist", s.display());
        }
    }
    if let Some(c) = &args.client {
        if !c.join("index.html").is_file() {
            bail!(
                "--client {} is not a built neuroglancer client (no index.html in it)",
                c.display()
            );
        }
    }
    Ok(())
}

/// A flag set by SIGINT or SIGTERM; a second signal while stopping exits at once.
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())
            .context("installing signal handlers")?;
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    Ok(stop)
}

/// Opens the image and the segmentation and settles the viewer's voxel size. The
/// segmentation's generated or rewritten metadata takes `--voxel-size`, else its own, else
/// the image's.
fn open_volumes(args: &Args) -> Result<(Source, Option<Source>, [f64; 3])> {
    let flag = args.voxel_size.map(|v| v.zyx());
    let mut image = Source::open(&args.image, Role::Image)?;
    let voxel_size = image_voxel_size(&image, flag);
    image.set_voxel_size(voxel_size);
    let Some(path) = &args.segmentation else {
        return Ok((image, None, voxel_size));
    };
    let mut seg = Source::open(path, Role::Segmentation)?;
    seg.set_voxel_size(flag.or(seg.metadata_voxel_size).unwrap_or(voxel_size));
    // Not an error: a crop or a region of interest is often labelled in a smaller volume.
    if seg.shape != image.shape {
        eprintln!(
            "warning: IMAGE has shape {:?} and SEGMENTATION {:?} (z, y, x); neuroglancer \
             overlays them from the same corner",
            image.shape, seg.shape
        );
    }
    Ok((image, Some(seg), voxel_size))
}

/// The precomputed skeleton source made at start-up.
struct SkeletonSource<'a> {
    /// The skeleton file or directory given.
    input: PathBuf,
    /// The temporary directory holding the source.
    dir: &'a Path,
    /// The skeleton ids written.
    ids: &'a [u64],
}

/// The state's layers and the `--json` listing of what is served, for the volumes and
/// skeletons under `base`.
fn layers_and_listing(
    base: &str,
    volumes: &[Source],
    skeletons: Option<&SkeletonSource<'_>>,
) -> (Vec<state::Layer>, Vec<serde_json::Value>) {
    let (mut layers, mut served) = (Vec::new(), Vec::new());
    for source in volumes {
        let name = source.role.name();
        let url = format!("{}://{base}/data/{name}", source.protocol());
        served.push(json!({
            "prefix": format!("/data/{name}/"),
            "path": source.input,
            "served_as": source.describe,
            "source": url,
        }));
        layers.push(state::Layer {
            name: name.to_string(),
            kind: name,
            source: url,
            segments: None,
        });
    }
    if let Some(sk) = skeletons {
        let url = format!("precomputed://{base}/skeletons");
        served.push(json!({
            "prefix": "/skeletons/",
            "path": sk.input,
            "served_as": format!("precomputed skeletons ({} skeletons)", sk.ids.len()),
            "served_from": sk.dir,
            "source": url,
        }));
        // Its own layer listing every id: skeleton ids are not the segmentation's ids,
        // and a layer draws skeletons only for the segments it lists.
        layers.push(state::Layer {
            name: "skeletons".into(),
            kind: "segmentation",
            source: url,
            segments: Some(sk.ids.to_vec()),
        });
    }
    (layers, served)
}

/// The viewer's voxel size `(z, y, x)` nm. OME-Zarr and precomputed volumes carry scales
/// neuroglancer applies itself, so theirs wins over `--voxel-size` (with a warning if they
/// differ); other volumes take `--voxel-size`, else their metadata, else 1 nm with a
/// warning.
fn image_voxel_size(image: &Source, flag: Option<[f64; 3]>) -> [f64; 3] {
    let own_scales = matches!(image.kind, Kind::OmeZarr { .. } | Kind::Precomputed);
    match (own_scales, image.metadata_voxel_size, flag) {
        (true, Some(meta), Some(flag)) => {
            if meta != flag {
                eprintln!(
                    "warning: IMAGE {} records voxel size {} nm, which neuroglancer uses; \
                     --voxel-size {} is ignored",
                    image.input.display(),
                    zyx_text(meta),
                    zyx_text(flag)
                );
            }
            meta
        }
        (true, Some(meta), None) => meta,
        (_, _, Some(flag)) => flag,
        (_, Some(meta), None) => meta,
        (_, None, None) => {
            crate::warn_no_voxel_size(&image.input);
            [1.0; 3]
        }
    }
}

/// `z,y,x` as the command line writes it.
fn zyx_text(v: [f64; 3]) -> String {
    format!("{},{},{}", v[0], v[1], v[2])
}

/// Binds 127.0.0.1 (never a public interface: the data would be readable from the
/// network). An explicit port must be free; without one, the first free port from 8000.
fn bind(port: Option<u16>) -> Result<TcpListener> {
    let in_use = |e: &std::io::Error| e.kind() == std::io::ErrorKind::AddrInUse;
    if let Some(port) = port {
        return TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map_err(|e| {
            if in_use(&e) {
                anyhow::anyhow!(
                    "port {port} on 127.0.0.1 is in use; choose another with --port, or leave \
                     --port out to use the next free port"
                )
            } else {
                anyhow::Error::new(e).context(format!("listening on 127.0.0.1:{port}"))
            }
        });
    }
    for port in DEFAULT_PORT..DEFAULT_PORT + PORT_TRIES {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            Ok(listener) => {
                if port != DEFAULT_PORT {
                    eprintln!("port {DEFAULT_PORT} is in use; serving on port {port}");
                }
                return Ok(listener);
            }
            Err(e) if in_use(&e) => continue,
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("listening on 127.0.0.1:{port}")))
            }
        }
    }
    bail!(
        "ports {DEFAULT_PORT}–{} on 127.0.0.1 are all in use; choose one with --port",
        DEFAULT_PORT + PORT_TRIES - 1
    )
}

/// The client shipped by the `neuroglancer` Python package, if it is installed.
fn python_client() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import neuroglancer, os; print(os.path.dirname(neuroglancer.__file__))",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let package = String::from_utf8(out.stdout).ok()?;
    let dir = Path::new(package.trim()).join("static").join("client");
    dir.join("index.html").is_file().then_some(dir)
}
