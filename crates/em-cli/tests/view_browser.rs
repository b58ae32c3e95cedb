//! `em view` in a real browser: headless Chromium (software WebGL) loads the neuroglancer
//! client from `em view`, which serves a synthetic image (npy, as generated zarr chunks), its
//! segmentation (zarr v3 files) and skeletons; `tools/ngshot.py` takes the screenshot.
//! Needs `chromium`, and the `neuroglancer` and `websocket-client` Python packages, hence
//! `#[ignore]`: run with `cargo test -p em-cli --test view_browser -- --ignored`. With
//! `EM_VIEW_SCREENSHOT=PATH` the screenshot is also copied to PATH (the docs picture is
//! `docs/images/em-view.png`).

mod common;

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{start_view, ViewServer};

/// Starts `em view ARGS --json --port 0` with the installed neuroglancer client.
fn serve(args: &[&str]) -> ViewServer {
    let server = start_view(args);
    assert!(
        server.info["client"].is_string(),
        "no local neuroglancer client (pip install neuroglancer): {}",
        server.info
    );
    server
}

/// Screenshots `url` with tools/ngshot.py into `out`.
fn screenshot(url: &str, out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/ngshot.py");
    let t = Instant::now();
    let o = Command::new("python3")
        .arg(&script)
        .args([url, out.to_str().unwrap(), "--timeout", "60"])
        .output()
        .expect("python3 runs");
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!("{}(screenshot in {:.1} s)", err, t.elapsed().as_secs_f64());
    assert!(o.status.success(), "ngshot failed: {err}");
}

/// Pixels whose channels spread by at least 60 (segment colours; grey image and black
/// background have none), and the image's size.
fn strongly_coloured(png_path: &Path) -> (usize, (u32, u32)) {
    let file = std::fs::File::open(png_path).unwrap();
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "a colour screenshot ({:?})", info.color_type);
    let count = buf[..info.buffer_size()]
        .chunks(channels)
        .filter(|p| {
            let (lo, hi) = (p[..3].iter().min().unwrap(), p[..3].iter().max().unwrap());
            hi - lo >= 60
        })
        .count();
    (count, (info.width, info.height))
}

#[test]
#[ignore = "needs chromium and the neuroglancer and websocket-client Python packages"]
fn neuroglancer_renders_the_segmentation_and_skeletons() {
    let start = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("n.zarr");
    let o = Command::new(env!("CARGO_BIN_EXE_em"))
        .args([
            "data",
            "synth",
            "--kind",
            "neurons",
            "--shape",
            "32,128,128",
            "--out",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The image as npy: served as generated zarr chunks; the segmentation stays zarr v3.
    let image = d.join("img.npy");
    em_io::write(&image, &em_io::read(data.join("img")).unwrap()).unwrap();
    let seg = data.join("seg");
    let skeletons = data.join("skeletons.json");
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();

    let with_seg = serve(&[
        &s(&image),
        &s(&seg),
        "--skeletons",
        &s(&skeletons),
        "--voxel-size",
        "40,4,4",
    ]);
    let shot = d.join("with_segmentation.png");
    screenshot(with_seg.info["url"].as_str().unwrap(), &shot);
    let (coloured, size) = strongly_coloured(&shot);
    eprintln!("with the segmentation: {coloured} strongly coloured pixels of {size:?}");
    assert_eq!(size, (1200, 900));
    assert!(coloured > 20_000, "{coloured} strongly coloured pixels");
    let log = with_seg.stderr.lock().unwrap().clone();
    let chunk_requests = log
        .lines()
        .filter(|l| l.starts_with("GET /data/segmentation/c/") && l.ends_with(" 200"))
        .count();
    assert!(
        chunk_requests > 0,
        "no segmentation chunk was fetched:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("GET /data/image/0.") && l.ends_with(" 200")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("GET /skeletons/") && l.ends_with(" 200")),
        "{log}"
    );
    if let Ok(dest) = std::env::var("EM_VIEW_SCREENSHOT") {
        std::fs::copy(&shot, &dest).unwrap();
        eprintln!("copied the screenshot to {dest}");
    }
    drop(with_seg);

    // The same image alone: grey, almost nothing strongly coloured.
    let alone = serve(&[&s(&image), "--voxel-size", "40,4,4"]);
    let shot = d.join("image_only.png");
    screenshot(alone.info["url"].as_str().unwrap(), &shot);
    let (coloured, _) = strongly_coloured(&shot);
    eprintln!("image only: {coloured} strongly coloured pixels");
    assert!(
        coloured < 2_000,
        "{coloured} strongly coloured pixels without a segmentation"
    );
    eprintln!("browser test: {:.1} s", start.elapsed().as_secs_f64());
}
