//! `em view`'s server, spoken to over raw HTTP: what it serves (zarr files, generated zarr
//! chunks of npy volumes, skeletons, the client), byte ranges, CORS, the paths it refuses,
//! ports, and the neuroglancer state in the URL it prints.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use em_core::AnyArray;
use em_io::{Compression, VolumePath, ZarrOptions, ZarrVersion};
use ndarray::ArrayD;
use serde_json::{json, Value};

mod common;

use common::{start_view as start, start_view_with_path as start_with_path};

/// One HTTP exchange.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// Sends `METHOD TARGET` with extra header lines and reads the whole response.
fn request(port: u16, method: &str, target: &str, headers: &[&str]) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// A plain GET.
fn get(port: u16, target: &str) -> Response {
    request(port, "GET", target, &[])
}

/// Decodes `%XX` escapes.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let (mut out, mut i) = (Vec::new(), 0);
    while i < b.len() {
        if b[i] == b'%' {
            out.push(
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap(),
            );
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The neuroglancer state in a viewer URL.
fn state_of(url: &str) -> Value {
    let (_, fragment) = url.split_once("#!").expect("a #! fragment");
    serde_json::from_str(&percent_decode(fragment)).expect("the state is JSON")
}

/// The image of most tests: u8, shape (16, 40, 70) so that the generated 16×40×64 chunks
/// leave a padded edge chunk along x.
fn image_values() -> ArrayD<u8> {
    ArrayD::from_shape_fn(vec![16, 40, 70], |i| {
        ((i[0] * 7 + i[1] * 3 + i[2]) % 251) as u8
    })
}

/// Segment ids of most tests.
fn seg_values() -> ArrayD<u32> {
    ArrayD::from_shape_fn(vec![16, 40, 70], |i| {
        (i[0] / 4 * 100 + i[1] / 10 * 10 + i[2] / 20) as u32 + 1
    })
}

/// A directory that looks like a built client.
fn fake_client(dir: &Path) -> PathBuf {
    let c = dir.join("client");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("index.html"), "<html>client</html>").unwrap();
    std::fs::write(c.join("main.bundle.js"), "console.log(1)").unwrap();
    std::fs::write(c.join("main.css"), "body{}").unwrap();
    std::fs::write(c.join("x.wasm"), b"\0asm").unwrap();
    c
}

/// img.npy, an uncompressed zarr v2 segmentation with 8×20×35 chunks, a secret file beside
/// them and a symlink in the zarr pointing at it, and a client.
fn inputs(dir: &Path) -> (String, String, String) {
    let img = dir.join("img.npy");
    em_io::write(&img, &AnyArray::from(image_values())).unwrap();
    let seg = dir.join("seg.zarr");
    em_io::write_zarr(
        &VolumePath::parse(&seg).unwrap(),
        &AnyArray::from(seg_values()),
        &ZarrOptions {
            chunk_shape: Some(vec![8, 20, 35]),
            compression: Compression::None,
            version: Some(ZarrVersion::V2),
        },
    )
    .unwrap();
    std::fs::write(dir.join("secret.txt"), "TOP SECRET").unwrap();
    std::os::unix::fs::symlink(dir.join("secret.txt"), seg.join("escape")).unwrap();
    let client = fake_client(dir);
    let s = |p: &Path| p.to_string_lossy().into_owned();
    (s(&img), s(&seg), s(&client))
}

#[test]
fn serves_zarr_files_generated_chunks_and_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let (img, seg, client) = inputs(dir.path());
    let srv = start(&[&img, &seg, "--voxel-size", "40,4,4", "--client", &client]);
    let p = srv.port;

    // The npy image as a generated zarr v2 array.
    let zarray = get(p, "/data/image/.zarray");
    assert_eq!(zarray.status, 200);
    assert_eq!(zarray.header("Content-Type"), Some("application/json"));
    assert_eq!(
        zarray.json(),
        json!({"zarr_format": 2, "shape": [16, 40, 70], "chunks": [16, 40, 64], "dtype": "|u1",
               "compressor": null, "fill_value": 0, "order": "C", "filters": null,
               "dimension_separator": "."})
    );
    assert_eq!(
        get(p, "/data/image/.zattrs").json(),
        json!({"_ARRAY_DIMENSIONS": ["z", "y", "x"], "dimension_units": ["40 nm", "4 nm", "4 nm"]})
    );
    // The edge chunk along x: voxels 64..70, zero-padded to 64.
    let chunk = get(p, "/data/image/0.0.1");
    assert_eq!(chunk.status, 200);
    assert_eq!(
        chunk.header("Content-Type"),
        Some("application/octet-stream")
    );
    assert_eq!(chunk.header("Content-Length"), Some("40960"));
    let values = image_values();
    for z in 0..16 {
        for y in 0..40 {
            for x in 0..64 {
                let want = if 64 + x < 70 {
                    values[[z, y, 64 + x]]
                } else {
                    0
                };
                assert_eq!(
                    chunk.body[(z * 40 + y) * 64 + x],
                    want,
                    "voxel {z},{y},{}",
                    64 + x
                );
            }
        }
    }
    let first = get(p, "/data/image/0.0.0");
    assert_eq!(first.body[(3 * 40 + 5) * 64 + 7], values[[3, 5, 7]]);
    // Outside the chunk grid, or not a chunk key: missing.
    for target in [
        "/data/image/0.0.2",
        "/data/image/1.0.0",
        "/data/image/0.0",
        "/data/image/00.0.0",
    ] {
        assert_eq!(get(p, target).status, 404, "{target}");
    }

    // The zarr segmentation as its files; its attributes name the axes and units.
    let on_disk = std::fs::read(Path::new(&seg).join(".zarray")).unwrap();
    assert_eq!(get(p, "/data/segmentation/.zarray").body, on_disk);
    let attrs = get(p, "/data/segmentation/.zattrs").json();
    assert_eq!(attrs["_ARRAY_DIMENSIONS"], json!(["z", "y", "x"]));
    assert_eq!(attrs["dimension_units"], json!(["40 nm", "4 nm", "4 nm"]));
    let chunk = get(p, "/data/segmentation/1.1.1");
    assert_eq!(
        chunk.body,
        std::fs::read(Path::new(&seg).join("1.1.1")).unwrap()
    );
    let ids: Vec<u32> = chunk
        .body
        .chunks(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let segv = seg_values();
    assert_eq!(ids[(2 * 20 + 3) * 35 + 4], segv[[8 + 2, 20 + 3, 35 + 4]]);
    // A chunk never written (here: outside the grid) is a 404, which neuroglancer fills.
    assert_eq!(get(p, "/data/segmentation/9.9.9").status, 404);

    // Byte ranges.
    let len = chunk.body.len();
    let part = request(
        p,
        "GET",
        "/data/segmentation/1.1.1",
        &["Range: bytes=10-19"],
    );
    assert_eq!(part.status, 206);
    assert_eq!(part.body, chunk.body[10..20]);
    assert_eq!(
        part.header("Content-Range"),
        Some(format!("bytes 10-19/{len}").as_str())
    );
    assert_eq!(part.header("Content-Length"), Some("10"));
    let tail = request(p, "GET", "/data/segmentation/1.1.1", &["range: bytes=-6"]);
    assert_eq!(
        (tail.status, tail.body.as_slice()),
        (206, &chunk.body[len - 6..])
    );
    let open = request(p, "GET", "/data/image/0.0.0", &["Range: bytes=40950-"]);
    assert_eq!((open.status, open.body.len()), (206, 10));
    assert_eq!(open.body, first.body[40950..]);
    let beyond = request(
        p,
        "GET",
        "/data/segmentation/1.1.1",
        &[&format!("Range: bytes={len}-")],
    );
    assert_eq!(beyond.status, 416);
    assert_eq!(
        beyond.header("Content-Range"),
        Some(format!("bytes */{len}").as_str())
    );

    // HEAD: the GET's headers, no body.
    let head = request(p, "HEAD", "/data/segmentation/1.1.1", &[]);
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("Content-Length"),
        Some(len.to_string().as_str())
    );
    assert!(head.body.is_empty());

    // CORS on every response, preflight answered, other methods refused.
    for r in [&zarray, &part, &beyond, &head, &get(p, "/nothing")] {
        assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    }
    let pre = request(
        p,
        "OPTIONS",
        "/data/image/.zarray",
        &[
            "Origin: https://neuroglancer-demo.appspot.com",
            "Access-Control-Request-Method: GET",
        ],
    );
    assert_eq!(pre.status, 204);
    assert_eq!(pre.header("Access-Control-Allow-Origin"), Some("*"));
    assert!(pre
        .header("Access-Control-Allow-Methods")
        .unwrap()
        .contains("GET"));
    assert_eq!(request(p, "POST", "/data/image/.zarray", &[]).status, 405);

    // The client under /v/<token>/, with content types browsers insist on; the Python
    // client's event and state channels are plain 404s.
    let index = get(p, "/v/abc/");
    assert_eq!(
        (index.status, index.body.as_slice()),
        (200, b"<html>client</html>".as_slice())
    );
    assert!(index
        .header("Content-Type")
        .unwrap()
        .starts_with("text/html"));
    for (target, ty) in [
        ("/v/em/main.bundle.js", "text/javascript"),
        ("/v/em/main.css", "text/css"),
        ("/v/em/x.wasm", "application/wasm"),
    ] {
        assert!(
            get(p, target)
                .header("Content-Type")
                .unwrap()
                .starts_with(ty),
            "{target}"
        );
    }
    assert_eq!(get(p, "/events/em?c=1").status, 404);
    assert_eq!(get(p, "/state/em").status, 404);

    // The state: both layers, their sources on this server, x, y, z in metres, centred.
    let url = srv.info["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{p}/v/em/#!")),
        "{url}"
    );
    let st = state_of(url);
    assert_eq!(
        st["dimensions"],
        json!({"x": [4e-9, "m"], "y": [4e-9, "m"], "z": [4e-8, "m"]})
    );
    let dims: Vec<&String> = st["dimensions"].as_object().unwrap().keys().collect();
    assert_eq!(dims, ["x", "y", "z"]);
    assert_eq!(st["position"], json!([35.0, 20.0, 8.0]));
    let layers = st["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0]["type"], "image");
    assert_eq!(
        layers[0]["source"],
        format!("zarr2://http://127.0.0.1:{p}/data/image")
    );
    assert_eq!(layers[1]["type"], "segmentation");
    assert_eq!(layers[1]["name"], "segmentation");
    assert_eq!(
        layers[1]["source"],
        format!("zarr2://http://127.0.0.1:{p}/data/segmentation")
    );
    assert!(layers[1].get("segments").is_none(), "every segment shown");

    // One log line per request, with method, path and status.
    std::thread::sleep(Duration::from_millis(200));
    let log = srv.stderr.lock().unwrap().clone();
    assert!(log.contains("GET /data/image/0.0.1 200"), "{log}");
    assert!(log.contains("HEAD /data/segmentation/1.1.1 200"), "{log}");
    assert!(log.contains("GET /data/image/0.0.2 404"), "{log}");
}

#[test]
fn refuses_paths_outside_the_served_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let (img, seg, client) = inputs(dir.path());
    let srv = start(&[
        &img,
        &seg,
        "--voxel-size",
        "40,4,4",
        "--client",
        &client,
        "--quiet",
    ]);
    // The symlink exists and leads to a readable file: only the server's check stops it.
    assert!(Path::new(&seg).join("escape").is_file());
    for target in [
        "/data/segmentation/../../secret.txt",
        "/data/segmentation/../seg.zarr/.zarray",
        "/../secret.txt",
        "/data/segmentation/%2e%2e/%2e%2e/secret.txt",
        "/data/segmentation/%2E%2E%2Fsecret.txt",
        "/data/segmentation/..%2fsecret.txt",
        "/data/segmentation/%2Fetc%2Fpasswd",
        "/data/segmentation//etc/passwd",
        "//etc/passwd",
        "/v/em/..%5c..%5csecret.txt",
        "/data/segmentation\\..\\secret.txt",
        "/data/segmentation/./.zarray",
        "/data/segmentation/escape",
        "http://127.0.0.1/etc/passwd",
    ] {
        let r = get(srv.port, target);
        assert!(matches!(r.status, 403 | 404), "{target}: {}", r.status);
        assert!(
            !String::from_utf8_lossy(&r.body).contains("SECRET"),
            "{target}"
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains("root:"),
            "{target}"
        );
    }
    assert_eq!(get(srv.port, "/data/segmentation/escape").status, 403);
    assert_eq!(get(srv.port, "/data/segmentation/%2e%2e/x").status, 403);
    // Nothing but the prefixes is served.
    for target in [
        "/etc/passwd",
        "/secret.txt",
        "/data/other/.zarray",
        "/data/",
        "/",
    ] {
        assert_eq!(get(srv.port, target).status, 404, "{target}");
    }
    assert!(
        srv.stderr
            .lock()
            .unwrap()
            .lines()
            .all(|l| !l.starts_with("GET ")),
        "--quiet"
    );
}

#[test]
fn zarr_v3_metadata_int64_labels_and_skeletons() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A zarr v3 image (zstd) is served as its files, its zarr.json given axis names and units.
    let img = d.join("vol.zarr/raw");
    em_io::write(&img, &AnyArray::from(image_values())).unwrap();
    // int64 labels with -1 (unknown) and ids above 2^32 become uint64 chunks.
    let mut labels = ArrayD::from_shape_fn(vec![10, 20, 30], |i| (i[2] as i64) << 33);
    labels[[0, 0, 0]] = -1;
    let seg = d.join("labels.npy");
    em_io::write(&seg, &AnyArray::from(labels.clone())).unwrap();
    let skel = d.join("skeletons.json");
    std::fs::write(
        &skel,
        r#"{"nodes": [{"id": 1, "skeleton": 3, "position": [1, 2, 3]},
                      {"id": 2, "skeleton": 3, "position": [2, 2, 3]},
                      {"id": 7, "skeleton": 5, "position": [4, 10, 20], "position_nm": [100, 50, 60]}],
            "edges": [[1, 2]]}"#,
    )
    .unwrap();
    let client = fake_client(d);
    let srv = start(&[
        img.to_str().unwrap(),
        seg.to_str().unwrap(),
        "--skeletons",
        skel.to_str().unwrap(),
        "--client",
        client.to_str().unwrap(),
    ]);
    let p = srv.port;
    let log = srv.stderr.lock().unwrap().clone();
    assert!(
        log.contains(&format!(
            "warning: no voxel size in {}; using 1,1,1 nm (set --voxel-size)",
            img.display()
        )),
        "{log}"
    );
    assert!(
        log.contains("warning: IMAGE has shape [16, 40, 70] and SEGMENTATION [10, 20, 30]"),
        "{log}"
    );

    let meta = get(p, "/data/image/zarr.json").json();
    assert_eq!(meta["zarr_format"], 3);
    assert_eq!(meta["dimension_names"], json!(["z", "y", "x"]));
    assert_eq!(
        meta["attributes"]["dimension_units"],
        json!(["1 nm", "1 nm", "1 nm"])
    );
    let on_disk = std::fs::read(img.join("c/0/0/1")).unwrap();
    assert_eq!(get(p, "/data/image/c/0/0/1").body, on_disk);

    assert_eq!(get(p, "/data/segmentation/.zarray").json()["dtype"], "<u8");
    let chunk = get(p, "/data/segmentation/0.0.0").body;
    let ids: Vec<u64> = chunk
        .chunks(8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(ids.len(), 10 * 20 * 30);
    assert_eq!(ids[0], 0, "-1 shows as background");
    assert_eq!(ids[(3 * 20 + 4) * 30 + 29], 29u64 << 33);

    // Skeletons: a precomputed source, vertices at voxel centres in nm (x, y, z).
    let info = get(p, "/skeletons/info");
    assert_eq!(info.json()["@type"], "neuroglancer_skeletons");
    let s3 = get(p, "/skeletons/3").body;
    let words: Vec<u32> = s3
        .chunks(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(&words[..2], &[2, 1], "2 vertices, 1 edge");
    let vertices: Vec<f32> = words[2..8].iter().map(|w| f32::from_bits(*w)).collect();
    assert_eq!(vertices, [3.5, 2.5, 1.5, 3.5, 2.5, 2.5]);
    assert_eq!(&words[8..10], &[0, 1]);
    let s5 = get(p, "/skeletons/5").body;
    let v: Vec<f32> = s5[8..20]
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(v, [60.5, 50.5, 100.5]);

    let st = state_of(srv.info["url"].as_str().unwrap());
    assert_eq!(
        st["dimensions"],
        json!({"x": [1e-9, "m"], "y": [1e-9, "m"], "z": [1e-9, "m"]})
    );
    let layers = st["layers"].as_array().unwrap();
    assert_eq!(
        layers[0]["source"],
        format!("zarr3://http://127.0.0.1:{p}/data/image")
    );
    assert_eq!(
        layers[1]["source"],
        format!("zarr2://http://127.0.0.1:{p}/data/segmentation")
    );
    assert_eq!(layers[2]["name"], "skeletons");
    assert_eq!(
        layers[2]["source"],
        format!("precomputed://http://127.0.0.1:{p}/skeletons")
    );
    assert_eq!(layers[2]["segments"], json!(["3", "5"]));
    let served = srv.info["served"].as_array().unwrap();
    let prefixes: Vec<&str> = served
        .iter()
        .map(|s| s["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(
        prefixes,
        [
            "/data/image/",
            "/data/segmentation/",
            "/skeletons/",
            "/v/em/"
        ]
    );
}

#[test]
fn ome_zarr_groups_and_precomputed_directories_are_served_as_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ome = d.join("pyr.zarr");
    let level = VolumePath::parse(ome.join("s0")).unwrap();
    em_io::write_zarr(
        &level,
        &AnyArray::from(image_values()),
        &ZarrOptions {
            version: Some(ZarrVersion::V2),
            ..ZarrOptions::default()
        },
    )
    .unwrap();
    let attrs = json!({"multiscales": [{"version": "0.4", "axes": [
        {"name": "z", "type": "space", "unit": "nanometer"},
        {"name": "y", "type": "space", "unit": "nanometer"},
        {"name": "x", "type": "space", "unit": "nanometer"}],
        "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [40, 4, 4]}]}]}]});
    std::fs::write(ome.join(".zattrs"), attrs.to_string()).unwrap();
    // A precomputed segmentation: an info file and one chunk.
    let pre = d.join("seg.precomputed");
    std::fs::create_dir_all(pre.join("8_8_40")).unwrap();
    let info = json!({"@type": "neuroglancer_multiscale_volume", "type": "segmentation",
        "data_type": "uint32", "num_channels": 1, "scales": [{"key": "8_8_40", "size": [64, 32, 16],
        "resolution": [8, 8, 40], "voxel_offset": [10, 0, 0], "chunk_sizes": [[64, 32, 16]],
        "encoding": "raw"}]});
    std::fs::write(pre.join("info"), info.to_string()).unwrap();
    std::fs::write(
        pre.join("8_8_40/10-74_0-32_0-16"),
        vec![7u8; 64 * 32 * 16 * 4],
    )
    .unwrap();
    // A chunk stored gzipped as NAME.gz is served as NAME, decompressed.
    let chunk: Vec<u8> = (0..64 * 32 * 16 * 4).map(|i| (i % 251) as u8).collect();
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(pre.join("8_8_40/10-74_32-64_0-16.gz")).unwrap(),
        flate2::Compression::default(),
    );
    std::io::Write::write_all(&mut gz, &chunk).unwrap();
    gz.finish().unwrap();

    let srv = start(&[
        ome.to_str().unwrap(),
        pre.to_str().unwrap(),
        "--client",
        fake_client(d).to_str().unwrap(),
    ]);
    let p = srv.port;
    assert_eq!(
        get(p, "/data/image/.zattrs").json(),
        attrs,
        "OME metadata as stored"
    );
    assert_eq!(
        get(p, "/data/image/s0/.zarray").json()["shape"],
        json!([16, 40, 70])
    );
    assert_eq!(
        get(p, "/data/image/s0/0.0.0").body,
        std::fs::read(ome.join("s0/0.0.0")).unwrap()
    );
    assert_eq!(get(p, "/data/segmentation/info").json(), info);
    assert_eq!(
        get(p, "/data/segmentation/8_8_40/10-74_0-32_0-16")
            .body
            .len(),
        131072
    );
    assert_eq!(
        get(p, "/data/segmentation/8_8_40/10-74_32-64_0-16").body,
        chunk
    );
    let st = state_of(srv.info["url"].as_str().unwrap());
    let layers = st["layers"].as_array().unwrap();
    assert_eq!(
        layers[0]["source"],
        format!("zarr2://http://127.0.0.1:{p}/data/image")
    );
    assert_eq!(
        layers[1]["source"],
        format!("precomputed://http://127.0.0.1:{p}/data/segmentation")
    );
}

#[test]
fn precomputed_image_sets_the_dimensions_and_centre() {
    let dir = tempfile::tempdir().unwrap();
    let pre = dir.path().join("img.precomputed");
    std::fs::create_dir_all(&pre).unwrap();
    let info = json!({"@type": "neuroglancer_multiscale_volume", "type": "image",
        "data_type": "uint8", "num_channels": 1, "scales": [{"key": "s0", "size": [64, 32, 16],
        "resolution": [8, 6, 40], "voxel_offset": [10, 0, 2], "chunk_sizes": [[64, 32, 16]],
        "encoding": "raw"}]});
    std::fs::write(pre.join("info"), info.to_string()).unwrap();
    let srv = start(&[
        pre.to_str().unwrap(),
        "--client",
        fake_client(dir.path()).to_str().unwrap(),
    ]);
    let st = state_of(srv.info["url"].as_str().unwrap());
    assert_eq!(
        st["dimensions"],
        json!({"x": [8e-9, "m"], "y": [6e-9, "m"], "z": [4e-8, "m"]})
    );
    assert_eq!(st["position"], json!([42.0, 16.0, 10.0]));
    assert!(!srv.stderr.lock().unwrap().contains("no voxel size"));
}

#[test]
fn public_app_without_a_local_client() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _, _) = inputs(dir.path());
    // No python3 on PATH: no local client to find.
    let empty = dir.path().join("empty-path");
    std::fs::create_dir(&empty).unwrap();
    let srv = start_with_path(&[&img, "--voxel-size", "40,4,4"], empty.to_str());
    let url = srv.info["url"].as_str().unwrap();
    assert!(
        url.starts_with("https://neuroglancer-demo.appspot.com/#!"),
        "{url}"
    );
    let st = state_of(url);
    assert_eq!(
        st["layers"][0]["source"],
        format!("zarr2://http://127.0.0.1:{}/data/image", srv.port)
    );
    assert_eq!(srv.info["client"], Value::Null);
    assert_eq!(get(srv.port, "/v/em/").status, 404);
}

/// Waits for a child to exit (at most `secs`), killing it on timeout.
fn wait_exit(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("em view did not exit within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `em view ARGS` expecting it to fail at start-up; returns its stderr.
fn fails(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_em"))
        .arg("view")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, 60);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "em view {args:?} should fail");
    err
}

#[test]
fn start_up_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _, client) = inputs(dir.path());
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let err = fails(&[&img, "--port", &port, "--client", &client]);
    assert!(
        err.contains(&format!("port {port} on 127.0.0.1 is in use")),
        "{err}"
    );

    let missing = dir.path().join("nope.npy");
    let err = fails(&[missing.to_str().unwrap()]);
    assert!(err.contains("does not exist"), "{err}");
    let err = fails(&[&img, "--skeletons", "/nonexistent/sk.json"]);
    assert!(
        err.contains("--skeletons /nonexistent/sk.json does not exist"),
        "{err}"
    );
    let float_seg = dir.path().join("prob.npy");
    em_io::write(
        &float_seg,
        &AnyArray::from(ArrayD::<f32>::zeros(vec![2, 2, 2])),
    )
    .unwrap();
    let err = fails(&[&img, float_seg.to_str().unwrap()]);
    assert!(err.contains("segment ids must be integers"), "{err}");
    let flat = dir.path().join("flat.npy");
    em_io::write(&flat, &AnyArray::from(ArrayD::<u8>::zeros(vec![4, 4]))).unwrap();
    let err = fails(&[flat.to_str().unwrap()]);
    assert!(err.contains("3-D volumes"), "{err}");
    let err = fails(&[&img, "--client", dir.path().to_str().unwrap()]);
    assert!(err.contains("no index.html"), "{err}");
}

#[test]
fn default_port_moves_on_when_taken() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _, client) = inputs(dir.path());
    // Held here, or by someone else: either way em view cannot have it.
    let _hold = TcpListener::bind("127.0.0.1:8000");
    let mut child = Command::new(env!("CARGO_BIN_EXE_em"))
        .args([
            "view",
            &img,
            "--voxel-size",
            "40,4,4",
            "--client",
            &client,
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info: Value = serde_json::from_str(&line).unwrap();
    let port = info["port"].as_u64().unwrap();
    assert!((8001..8100).contains(&port), "{port}");
    assert_eq!(get(port as u16, "/data/image/.zarray").status, 200);
    // SIGTERM: stop serving, exit 0 with a message.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(wait_exit(&mut child, 30).success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains(&format!("port 8000 is in use; serving on port {port}")),
        "{err}"
    );
    assert!(err.contains("em view: stopped"), "{err}");
}

#[test]
fn sigint_removes_the_skeleton_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (img, _, client) = inputs(dir.path());
    let swc = dir.path().join("swc");
    std::fs::create_dir(&swc).unwrap();
    std::fs::write(swc.join("a.swc"), "1 0 4 4 40 1 -1\n2 0 8 4 40 1 1\n").unwrap();
    let mut srv = start(&[
        &img,
        "--skeletons",
        swc.to_str().unwrap(),
        "--voxel-size",
        "40,4,4",
        "--client",
        &client,
    ]);
    let tmp = PathBuf::from(srv.info["served"][1]["served_from"].as_str().unwrap());
    assert!(tmp.join("info").is_file());
    let v = get(srv.port, "/skeletons/1").body;
    let first: Vec<f32> = v[8..20]
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(first, [6.0, 6.0, 60.0], "SWC nm plus half a voxel");
    let status = Command::new("kill")
        .args(["-INT", &srv.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(wait_exit(&mut srv.child, 30).success());
    let temp = tmp.parent().unwrap();
    assert!(!temp.exists(), "{} left behind", temp.display());
}
