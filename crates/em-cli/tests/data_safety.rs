//! Never lose the user's data, command by command: outputs that alias inputs (under every
//! spelling), outputs over groups and arrays, reruns over existing outputs and training runs,
//! interrupted zarr commits, absurd sizes, every weight dtype, and the conventions that used
//! to give silently wrong results. Each case asserts a clear error (exit status 1, never a
//! panic, an abort or a hang) or a correct result, and that what the user had is unchanged.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{em, ok, steps_logged, tiny_train_config};
use em_core::AnyArray;
use ndarray::{Array3, Array4, ArrayD};
use proptest::prelude::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A clear refusal: status 1 (not a panic's 101 or a signal), no panic message, and a
/// message that says what is wrong.
fn refused(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "expected {needle:?} in: {err}"
    );
}

/// Every file below `path` (or `path` itself) with its bytes.
fn snapshot(path: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(p: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        if p.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(p).unwrap().flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                walk(&e.path(), out);
            }
        } else if let Ok(bytes) = std::fs::read(p) {
            out.insert(p.to_path_buf(), bytes);
        }
    }
    walk(path, &mut out);
    out
}

/// Small float32 affinities `(3, z, y, x)` with many components at threshold 0.5.
fn affinities(z: usize, y: usize, x: usize) -> AnyArray {
    let a = Array4::<f32>::from_shape_fn((3, z, y, x), |(c, z, y, x)| {
        let h = (c * 131 + z * 71 + y * 29 + x * 17) % 97;
        h as f32 / 96.0
    });
    AnyArray::from(a.into_dyn())
}

fn write_aff(path: &Path) {
    em_io::write(path, &affinities(4, 12, 12)).unwrap();
}

fn decode(aff: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["decode", "--affinities", s(aff), "--out", s(out), "--json"];
    args.extend(extra);
    em(&args)
}

fn synth(dir: &Path) -> PathBuf {
    let d = dir.join("d.zarr");
    ok(&em(&[
        "data",
        "synth",
        "--kind",
        "neurons",
        "--shape",
        "8,32,32",
        "--out",
        s(&d),
    ]));
    d
}

#[test]
fn an_output_into_a_zarr_group_adds_one_array_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let d = synth(dir.path());
    let aff = dir.path().join("aff.npy");
    write_aff(&aff);
    let before = snapshot(&d);
    refused(&decode(&aff, &d, &[]), "is a zarr group holding img, seg");
    refused(&decode(&aff, &d, &["--overwrite"]), "zarr group");
    assert_eq!(snapshot(&d), before, "the group is untouched");
    // Naming a new array adds it beside the others.
    ok(&decode(&aff, &d.join("pred"), &[]));
    let after = snapshot(&d);
    for (path, bytes) in &before {
        assert_eq!(after.get(path), Some(bytes), "{}", path.display());
    }
    assert!(d.join("skeletons.json").is_file());
    // Affinities inside the group: the group output contains them.
    em_io::write(d.join("aff"), &affinities(4, 12, 12)).unwrap();
    let before = snapshot(&d);
    refused(
        &decode(&d.join("aff"), &d, &["--overwrite"]),
        "contains the input",
    );
    assert_eq!(snapshot(&d), before);
}

#[test]
fn writing_below_an_array_is_refused_in_zarr_v2_and_v3() {
    let dir = tempfile::tempdir().unwrap();
    let aff = dir.path().join("aff.npy");
    write_aff(&aff);
    let labels = AnyArray::from(ArrayD::<u32>::zeros(vec![4, 12, 12]));
    let v3 = dir.path().join("v3.zarr/seg");
    em_io::write(&v3, &labels).unwrap();
    let v2 = dir.path().join("v2.zarr/seg");
    let vp = em_io::VolumePath::parse(&v2).unwrap();
    let options = em_io::ZarrOptions {
        version: Some(em_io::ZarrVersion::V2),
        ..Default::default()
    };
    em_io::write_zarr(&vp, &labels, &options).unwrap();
    for seg in [&v3, &v2] {
        let container = seg.parent().unwrap();
        let before = snapshot(container);
        for extra in [&[][..], &["--overwrite"], &["--block", "2,4,4"]] {
            refused(
                &decode(&aff, &seg.join("v2"), extra),
                "lies inside the zarr array",
            );
        }
        assert_eq!(snapshot(container), before);
        assert!(!seg.join(".zgroup").exists() && !seg.join("v2").exists());
    }
}

/// `path` spelled other ways that name the same file.
fn spellings(dir: &Path, name: &str) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let target = dir.join(name);
    let mut out = vec![
        target.clone(),
        dir.join("sub/..").join(name),
        dir.join(".").join(name),
    ];
    if cfg!(unix) && target.is_file() {
        let link = dir.join(format!("link-{name}"));
        let hard = dir.join(format!("hard-{name}"));
        #[cfg(unix)]
        {
            let _ = std::os::unix::fs::symlink(&target, &link);
            let _ = std::fs::hard_link(&target, &hard);
        }
        out.push(link);
        out.push(hard);
    }
    out
}

#[test]
fn decode_refuses_its_input_as_output_under_every_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let aff = dir.path().join("a.npy");
    write_aff(&aff);
    let before = std::fs::read(&aff).unwrap();
    for out in spellings(dir.path(), "a.npy") {
        for extra in [&[][..], &["--block", "2,4,4"], &["--overwrite"]] {
            refused(&decode(&aff, &out, extra), "is the input");
        }
    }
    assert_eq!(std::fs::read(&aff).unwrap(), before);
    let z = dir.path().join("a.zarr/aff");
    em_io::write(&z, &affinities(4, 12, 12)).unwrap();
    let before = snapshot(&dir.path().join("a.zarr"));
    for extra in [&[][..], &["--block", "2,4,4"], &["--overwrite"]] {
        refused(&decode(&z, &z, extra), "is the input");
        refused(
            &decode(&z, &dir.path().join("a.zarr/sub/../aff"), extra),
            "",
        );
    }
    assert_eq!(snapshot(&dir.path().join("a.zarr")), before);
}

fn mednext_fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../em-models/tests/fixtures/mednext_s_k3_32.safetensors")
}

fn input_5d(path: &Path) {
    let x = ndarray::Array5::<f32>::from_shape_fn((1, 1, 16, 16, 16), |(_, _, z, y, x)| {
        ((z * 7 + y * 3 + x) % 5) as f32 - 2.0
    });
    em_io::write(path, &AnyArray::from(x.into_dyn())).unwrap();
}

#[test]
fn model_forward_and_import_refuse_their_inputs_as_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x.npy");
    input_5d(&x);
    let w = dir.path().join("w.safetensors");
    std::fs::copy(mednext_fixture(), &w).unwrap();
    let (x0, w0) = (std::fs::read(&x).unwrap(), std::fs::read(&w).unwrap());
    let forward = |out: &Path| {
        em(&[
            "model",
            "forward",
            "--weights",
            s(&w),
            "--input",
            s(&x),
            "--out",
            s(out),
        ])
    };
    for out in spellings(dir.path(), "x.npy") {
        refused(&forward(&out), "is the input");
    }
    refused(&forward(&w), "is the input");
    let o = em(&[
        "model",
        "import",
        "--from",
        s(&w),
        "--out",
        s(&w),
        "--partial",
        "--overwrite",
    ]);
    refused(&o, "is the input");
    assert_eq!(std::fs::read(&x).unwrap(), x0);
    assert_eq!(std::fs::read(&w).unwrap(), w0);
    // An existing output needs --overwrite.
    let y = dir.path().join("y.npy");
    std::fs::write(&y, b"mine").unwrap();
    refused(&forward(&y), "--overwrite");
    assert_eq!(std::fs::read(&y).unwrap(), b"mine");
}

/// A training config for the MedNeXt-S fixture (1 → 3 channels).
fn fixture_config(dir: &Path) -> PathBuf {
    let cfg = dir.join("s.toml");
    std::fs::write(
        &cfg,
        r#"
steps = 1
batch_size = 1
[model]
arch = "mednext"
size = "S"
in_channels = 1
out_channels = 3
[data]
patch = { patch = [16, 16, 16] }
[[data.sources]]
source = { kind = "synthetic", synth = "neurons", shape = [16, 32, 32] }
[targets]
kind = "affinities"
offsets = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
"#,
    )
    .unwrap();
    cfg
}

#[test]
fn infer_refuses_outputs_that_alias_its_inputs_or_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fixture_config(dir.path());
    let img = dir.path().join("in.npy");
    em_io::write(&img, &AnyArray::from(ArrayD::<u8>::zeros(vec![16, 16, 16]))).unwrap();
    let before = std::fs::read(&img).unwrap();
    let p = dir.path().join("p.npy");
    let w = mednext_fixture();
    let infer = |out: &Path, decode: Option<&Path>| {
        let mut args = vec![
            "infer",
            "--config",
            s(&cfg),
            "--weights",
            s(&w),
            "--input",
            s(&img),
            "--out",
            s(out),
        ];
        if let Some(d) = decode {
            args.extend(["--decode", s(d)]);
        }
        em(&args)
    };
    refused(&infer(&img, None), "is the input");
    refused(&infer(&p, Some(&img)), "is the input");
    refused(&infer(&p, Some(&p)), "is another output");
    refused(&infer(&cfg.with_extension("toml"), None), "is the input");
    assert_eq!(std::fs::read(&img).unwrap(), before);
    assert!(!p.exists());
}

#[test]
fn slurm_commands_refuse_to_write_over_their_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(&job, "name = \"j\"\ncommand = [\"em\", \"plan\"]\n").unwrap();
    let before = std::fs::read(&job).unwrap();
    for out in spellings(dir.path(), "job.toml") {
        let o = em(&["slurm", "render", s(&job), "--out", s(&out), "--overwrite"]);
        refused(&o, "is the input");
    }
    assert_eq!(std::fs::read(&job).unwrap(), before);
    let aff = dir.path().join("a.zarr/aff");
    em_io::write(&aff, &affinities(4, 12, 12)).unwrap();
    let zarr_before = snapshot(&dir.path().join("a.zarr"));
    let work = dir.path().join("work");
    let slurm_decode = |out: &Path, work: &Path, block: &str| {
        em(&[
            "slurm",
            "decode",
            "--affinities",
            s(&aff),
            "--out",
            s(out),
            "--block",
            block,
            "--dir",
            s(work),
            "--dry-run",
        ])
    };
    refused(&slurm_decode(&aff, &work, "2,4,4"), "is the input");
    refused(
        &slurm_decode(&dir.path().join("a.zarr"), &work, "2,4,4"),
        "contains the input",
    );
    // A work directory of someone else's files is never cleared.
    let theirs = dir.path().join("theirs");
    std::fs::create_dir_all(theirs.join("blocks")).unwrap();
    std::fs::write(theirs.join("blocks/notes.txt"), "keep").unwrap();
    refused(
        &slurm_decode(&dir.path().join("seg.zarr"), &theirs, "2,4,4"),
        "not a distributed decode",
    );
    assert_eq!(
        std::fs::read_to_string(theirs.join("blocks/notes.txt")).unwrap(),
        "keep"
    );
    refused(
        &slurm_decode(&dir.path().join("seg.zarr"), &work, "100000,100000,100000"),
        "needs about",
    );
    assert_eq!(snapshot(&dir.path().join("a.zarr")), zarr_before);
    // A plan of our own may be written again.
    ok(&slurm_decode(&dir.path().join("seg.zarr"), &work, "2,4,4"));
    ok(&slurm_decode(&dir.path().join("seg.zarr"), &work, "2,4,4"));
}

#[test]
fn existing_outputs_need_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let aff = dir.path().join("aff.npy");
    write_aff(&aff);
    for name in ["seg.npy", "seg.tif", "out.zarr/seg", "root.zarr"] {
        let out = dir.path().join(name);
        ok(&decode(&aff, &out, &[]));
        let first = snapshot(&dir.path().join(name.split('/').next().unwrap()));
        refused(&decode(&aff, &out, &["--threshold", "0.7"]), "--overwrite");
        assert_eq!(
            snapshot(&dir.path().join(name.split('/').next().unwrap())),
            first
        );
        ok(&decode(&aff, &out, &["--threshold", "0.7", "--overwrite"]));
        let seg = em_io::read(&out).unwrap().into_typed::<u32>().unwrap();
        let want = em_decode::decode::<f32, u32>(
            affinities(4, 12, 12)
                .into_typed::<f32>()
                .unwrap()
                .into_dimensionality()
                .unwrap()
                .view(),
            &em_decode::DecodeOptions {
                cc: em_decode::CcOptions {
                    threshold: 0.7,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .unwrap()
        .0;
        assert_eq!(seg, want.into_dyn(), "{name}");
    }
    // A directory that is not an array is never replaced.
    let notes = dir.path().join("notes.zarr");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("thesis.tex"), "x").unwrap();
    refused(&decode(&aff, &notes, &["--overwrite"]), "not a zarr array");
    assert!(notes.join("thesis.tex").is_file());
    let synth_out = dir.path().join("aff.npy");
    let o = em(&[
        "data",
        "synth",
        "--kind",
        "mito",
        "--shape",
        "8,16,16",
        "--out",
        s(&synth_out),
    ]);
    refused(&o, "exists");
}

fn spawn_em(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_em"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for_steps(out: &Path, n: usize) {
    let t0 = Instant::now();
    while steps_logged(out).len() < n {
        assert!(t0.elapsed().as_secs() < 300, "no training steps logged");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sigterm(child: std::process::Child) -> Output {
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    child.wait_with_output().unwrap()
}

#[test]
fn a_second_training_in_a_run_directory_needs_resume_or_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_train_config(dir.path(), 2, false);
    let out = dir.path().join("run");
    ok(&em(&["train", s(&cfg), "--out", s(&out)]));
    let before = snapshot(&out);
    let o = em(&["train", s(&cfg), "--out", s(&out), "--set", "steps=1"]);
    refused(&o, "already holds a training run");
    refused(&o, "--resume");
    let after = snapshot(&out);
    let lock = out.join(".lock");
    let strip = |m: &BTreeMap<PathBuf, Vec<u8>>| {
        m.iter()
            .filter(|(p, _)| **p != lock)
            .map(|(p, b)| (p.clone(), b.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(strip(&after), strip(&before), "the run is untouched");
    // --overwrite starts again: only the new run's checkpoints remain.
    ok(&em(&[
        "train",
        s(&cfg),
        "--out",
        s(&out),
        "--set",
        "steps=1",
        "--overwrite",
    ]));
    let ckpts: Vec<String> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(ckpts, ["step-00000001"]);
    assert_eq!(steps_logged(&out), [1]);
    // Files that are not the run's are never deleted.
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let o = em(&["train", s(&cfg), "--out", s(&out), "--overwrite"]);
    refused(&o, "notes.txt");
    assert!(out.join("notes.txt").is_file() && out.join("model.safetensors").is_file());
}

#[test]
fn two_trainings_cannot_share_a_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_train_config(dir.path(), 100_000, false);
    let out = dir.path().join("run");
    let first = spawn_em(&["train", s(&cfg), "--out", s(&out)]);
    wait_for_steps(&out, 2);
    for extra in [&["--resume"][..], &["--overwrite"]] {
        let mut args = vec!["train", s(&cfg), "--out", s(&out)];
        args.extend(extra);
        refused(&em(&args), "in use by another");
    }
    let o = sigterm(first);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Logged steps are one run's, in order.
    let steps = steps_logged(&out);
    assert_eq!(steps, (1..=steps.len() as u64).collect::<Vec<_>>());
}

#[test]
fn the_resume_hint_and_resume_keep_the_overrides() {
    let dir = tempfile::tempdir().unwrap();
    // The file says 5 steps; the run was started for 100000 at another learning rate.
    let cfg = tiny_train_config(dir.path(), 5, false);
    let out = dir.path().join("run");
    let child = spawn_em(&[
        "train",
        s(&cfg),
        "--out",
        s(&out),
        "--set",
        "steps=100000",
        "--set",
        "optimizer.lr=2e-3",
    ]);
    wait_for_steps(&out, 2);
    let o = sigterm(child);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let stopped = ok(&o)["step"].as_u64().unwrap();
    let hint = err
        .lines()
        .find_map(|l| l.split("continue with: ").nth(1))
        .unwrap_or_else(|| panic!("no resume hint in {err}"));
    assert!(
        hint.contains("--set steps=100000") && hint.contains("--set optimizer.lr=2e-3"),
        "{hint}"
    );
    // Resuming with no overrides at all trains on towards step 100000, not 5.
    let child = spawn_em(&["train", s(&cfg), "--out", s(&out), "--resume"]);
    wait_for_steps(&out, stopped as usize + 3);
    let o = sigterm(child);
    let v = ok(&o);
    assert_eq!(v["stopped"], true, "{v}");
    assert!(v["step"].as_u64().unwrap() >= stopped + 3, "{v}");
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        config.contains("steps = 100000") && config.contains("lr = 0.002"),
        "{config}"
    );
}

/// This host's name as em-io writes it into staging names.
fn host() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if clean.is_empty() {
        "host".into()
    } else {
        clean
    }
}

#[test]
fn killing_a_zarr_replacement_never_loses_the_array() {
    let dir = tempfile::tempdir().unwrap();
    let aff = dir.path().join("aff.npy");
    em_io::write(&aff, &affinities(16, 96, 96)).unwrap();
    let group = dir.path().join("d.zarr");
    let target = group.join("seg");
    ok(&decode(&aff, &target, &["--threshold", "0.9"]));
    let old = em_io::read(&target).unwrap();
    let reference = dir.path().join("new.npy");
    let t0 = Instant::now();
    ok(&decode(&aff, &reference, &["--threshold", "0.3"]));
    let run_time = t0.elapsed();
    let new = em_io::read(&reference).unwrap();
    assert_ne!(old, new);
    let mut outcomes = (0, 0);
    for i in 0..24u32 {
        let child = spawn_em(&[
            "decode",
            "--affinities",
            s(&aff),
            "--out",
            s(&target),
            "--threshold",
            "0.3",
            "--overwrite",
        ]);
        std::thread::sleep(run_time * i / 16);
        let _ = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status();
        let _ = child.wait_with_output();
        let now = em_io::read(&target).unwrap_or_else(|e| panic!("kill {i}: {e}"));
        if now == old {
            outcomes.0 += 1;
        } else {
            assert_eq!(now, new, "kill {i}: neither the old nor the new array");
            outcomes.1 += 1;
        }
        // Put the old array back for the next round.
        if now != old {
            ok(&decode(
                &aff,
                &target,
                &["--threshold", "0.9", "--overwrite"],
            ));
        }
    }
    assert!(outcomes.0 > 0, "some kills came before the commit");
    // The next write in the group removes what killed writers staged.
    ok(&decode(&aff, &group.join("other"), &[]));
    let leftovers: Vec<String> = std::fs::read_dir(&group)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial-") || n.contains(".old-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn an_array_left_aside_by_a_killed_writer_is_put_back() {
    let dir = tempfile::tempdir().unwrap();
    let group = dir.path().join("d.zarr");
    let labels = AnyArray::from(Array3::<u32>::from_elem((2, 3, 4), 7).into_dyn());
    em_io::write(group.join("seg"), &labels).unwrap();
    // What a kill between "old array aside" and "new array in" leaves on a file system
    // without an atomic exchange: the array aside, its replacement staged.
    let dead = 4_194_305; // above any pid the kernel hands out
    let aside = group.join(format!(".seg.old-{}-{dead}-0", host()));
    std::fs::rename(group.join("seg"), &aside).unwrap();
    let staged = group.join(format!(".seg.partial-{}-{dead}-1", host()));
    std::fs::create_dir(&staged).unwrap();
    let v = ok(&em(&["info", s(&group.join("seg")), "--json"]));
    assert_eq!(v["max"], 7);
    assert_eq!(em_io::read(group.join("seg")).unwrap(), labels);
    assert!(!aside.exists() && !staged.exists());
}

/// The fixture's tensors re-encoded as `dtype` (F16, BF16, F64, I32), or with one NaN.
fn recode_fixture(dst: &Path, dtype: &str, nan: bool) {
    let bytes = std::fs::read(mednext_fixture()).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let mut out_header = serde_json::Map::new();
    let mut body = Vec::new();
    let mut names: Vec<&String> = header.keys().filter(|k| *k != "__metadata__").collect();
    names.sort();
    for name in names {
        let t = &header[name];
        let off: Vec<usize> = t["data_offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let mut values: Vec<f32> = data[off[0]..off[1]]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        if nan && name == "stem.weight" {
            values[0] = f32::NAN;
        }
        let start = body.len();
        for v in values {
            match dtype {
                "F16" => body.extend(half::f16::from_f32(v).to_le_bytes()),
                "BF16" => body.extend(half::bf16::from_f32(v).to_le_bytes()),
                "F64" => body.extend(f64::from(v).to_le_bytes()),
                "I32" => body.extend((v as i32).to_le_bytes()),
                _ => body.extend(v.to_le_bytes()),
            }
        }
        out_header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": t["shape"], "data_offsets": [start, body.len()]}),
        );
    }
    let mut head = serde_json::to_vec(&out_header).unwrap();
    while !head.len().is_multiple_of(8) {
        head.push(b' ');
    }
    let mut file = (head.len() as u64).to_le_bytes().to_vec();
    file.extend(head);
    file.extend(body);
    std::fs::write(dst, file).unwrap();
}

#[test]
fn integer_weights_are_refused_and_other_float_types_converted() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x.npy");
    input_5d(&x);
    let forward = |w: &Path, out: &Path| {
        em(&[
            "model",
            "forward",
            "--weights",
            s(w),
            "--input",
            s(&x),
            "--out",
            s(out),
        ])
    };
    let reference = dir.path().join("f32.npy");
    ok(&forward(&mednext_fixture(), &reference));
    let want = em_io::read(&reference)
        .unwrap()
        .into_typed::<f32>()
        .unwrap();
    let scale = want.iter().map(|v| v.abs()).sum::<f32>() / want.len() as f32;
    for (dtype, name, tolerance) in [
        ("F64", "float64", 0.0f32),
        ("F16", "float16", 0.02),
        ("BF16", "bfloat16", 0.1),
    ] {
        let w = dir.path().join(format!("{dtype}.safetensors"));
        recode_fixture(&w, dtype, false);
        let out = dir.path().join(format!("{dtype}.npy"));
        let o = forward(&w, &out);
        ok(&o);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("{name} tensors converted to float32")),
            "{err}"
        );
        let got = em_io::read(&out).unwrap().into_typed::<f32>().unwrap();
        let diff = got
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / want.len() as f32;
        assert!(
            diff <= tolerance * scale,
            "{dtype}: mean |diff| {diff} vs {scale}"
        );
    }
    let ints = dir.path().join("i32.safetensors");
    recode_fixture(&ints, "I32", false);
    refused(&forward(&ints, &dir.path().join("i.npy")), "is I32");
    let o = em(&[
        "model",
        "import",
        "--from",
        s(&ints),
        "--out",
        s(&dir.path().join("imported.safetensors")),
        "--partial",
    ]);
    refused(&o, "is I32");
    let cfg = fixture_config(dir.path());
    let img = dir.path().join("img.npy");
    em_io::write(&img, &AnyArray::from(ArrayD::<u8>::zeros(vec![16, 16, 16]))).unwrap();
    let o = em(&[
        "infer",
        "--config",
        s(&cfg),
        "--weights",
        s(&ints),
        "--input",
        s(&img),
        "--out",
        s(&dir.path().join("p.npy")),
    ]);
    refused(&o, "is I32");
    assert!(!dir.path().join("p.npy").exists() && !dir.path().join("i.npy").exists());
}

#[test]
fn weights_with_nan_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x.npy");
    input_5d(&x);
    let w = dir.path().join("nan.safetensors");
    recode_fixture(&w, "F32", true);
    let out = dir.path().join("y.npy");
    let o = em(&[
        "model",
        "forward",
        "--weights",
        s(&w),
        "--input",
        s(&x),
        "--out",
        s(&out),
    ]);
    refused(&o, "NaN or infinite");
    refused(&o, "stem.weight");
    assert!(!out.exists());
}

/// A zarr array whose metadata claims `[3, 10⁶, 10⁶, 10⁶]`; one chunk holds data.
fn lying_zarr(dir: &Path) -> PathBuf {
    let path = dir.join("big.zarr/aff");
    let vp = em_io::VolumePath::parse(&path).unwrap();
    let small =
        Array4::<f32>::from_shape_fn((3, 8, 8, 8), |(c, z, y, x)| (c + z + y + x) as f32 / 24.0);
    let options = em_io::ZarrOptions {
        chunk_shape: Some(vec![3, 8, 8, 8]),
        ..Default::default()
    };
    em_io::write_zarr(&vp, &AnyArray::from(small.into_dyn()), &options).unwrap();
    let meta = path.join("zarr.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    doc["shape"] = serde_json::json!([3, 1_000_000, 1_000_000, 1_000_000]);
    std::fs::write(&meta, doc.to_string()).unwrap();
    path
}

#[test]
fn absurd_sizes_are_refused_with_the_estimate_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let aff = dir.path().join("aff.npy");
    write_aff(&aff);
    let synth = |shape: &str| {
        em(&[
            "data",
            "synth",
            "--kind",
            "mito",
            "--shape",
            shape,
            "--out",
            s(&dir.path().join("s.zarr")),
        ])
    };
    refused(&synth("18446744073709551615,2,2"), "needs about");
    refused(&synth("100000,100000,100000"), "needs about");
    assert!(!dir.path().join("s.zarr").exists());
    let seg = dir.path().join("seg.npy");
    refused(
        &decode(&aff, &seg, &["--scale", "1,4096,4096"]),
        "needs about",
    );
    refused(&decode(&lying_zarr(dir.path()), &seg, &[]), "is available");
    refused(&decode(&aff, &seg, &["--threads", "100000"]), "--threads");
    refused(&decode(&aff, &seg, &["--threads", "0"]), "--threads");
    assert!(!seg.exists());
    let cfg = tiny_train_config(dir.path(), 1, false);
    let out = dir.path().join("run");
    let o = em(&[
        "train",
        s(&cfg),
        "--out",
        s(&out),
        "--set",
        "model.width=100000",
    ]);
    refused(&o, "needs about");
    assert!(!out.exists(), "nothing is created before the checks");
    // A summary is counted, not built: any size is answered at once, and right.
    let v = ok(&em(&["model", "summary", "--kernel", "999", "--json"]));
    let k = 999u64;
    assert!(v["parameters"].as_u64().unwrap() > 32 * k * k * k);
    let v = ok(&em(&["model", "summary", "--in", "4000000000", "--json"]));
    assert!(v["parameters"].as_u64().unwrap() > 4_000_000_000 * 32);
    let o = em(&["model", "summary", "--kernel", "4"]);
    refused(&o, "odd");
}

#[test]
fn tune_refuses_endless_threshold_lists() {
    let dir = tempfile::tempdir().unwrap();
    let aff = dir.path().join("aff.npy");
    write_aff(&aff);
    let gt = dir.path().join("gt.npy");
    em_io::write(&gt, &AnyArray::from(ArrayD::<u32>::ones(vec![4, 12, 12]))).unwrap();
    let tune = |t: &str| {
        em(&[
            "tune",
            "--affinities",
            s(&aff),
            "--gt",
            s(&gt),
            "--thresholds",
            t,
            "--json",
        ])
    };
    refused(&tune("0:inf:0.1"), "finite");
    refused(&tune("0:1:1e-9"), "at most 1000");
    refused(&tune("0.5,nan"), "finite");
    let v = ok(&tune("0.1:0.9:0.2"));
    assert_eq!(v["results"].as_array().unwrap().len(), 5);
}

#[test]
fn info_on_a_zarr_with_a_lying_shape_reads_only_its_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let v = ok(&em(&["info", s(&lying_zarr(dir.path())), "--json"]));
    assert_eq!(
        v["shape"],
        serde_json::json!([3, 1_000_000, 1_000_000, 1_000_000])
    );
    assert!(
        (v["max"].as_f64().unwrap() - 23.0 / 24.0).abs() < 1e-6,
        "{v}"
    );
    assert_eq!(v["min"], 0.0);
    // One stored voxel is 0; every voxel outside the stored chunk is the fill value 0.
    let total: u64 = 3 * 1_000_000u64.pow(3);
    assert_eq!(v["zero_count"].as_u64(), Some(total - 3 * 512 + 1));
}

#[test]
fn info_prints_64_bit_ids_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ids.npy");
    let ids = ArrayD::from_shape_vec(vec![1, 1, 2], vec![(1u64 << 53) + 1, u64::MAX]).unwrap();
    em_io::write(&p, &AnyArray::from(ids)).unwrap();
    let o = em(&["info", s(&p), "--json"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("\"max\":18446744073709551615"), "{text}");
    assert!(text.contains("\"min\":9007199254740993"), "{text}");
}

#[test]
fn in_memory_decode_reports_removed_objects_like_blockwise() {
    let dir = tempfile::tempdir().unwrap();
    let aff = dir.path().join("aff.npy");
    em_io::write(&aff, &affinities(8, 24, 24)).unwrap();
    let a = ok(&decode(
        &aff,
        &dir.path().join("a.npy"),
        &["--min-size", "6"],
    ));
    let b = ok(&decode(
        &aff,
        &dir.path().join("b.npy"),
        &["--min-size", "6", "--block", "4,8,8"],
    ));
    assert!(a["removed"].as_u64().unwrap() > 0, "{a}");
    for key in [
        "components",
        "removed",
        "labelled_voxels",
        "non_finite_affinities",
    ] {
        assert_eq!(a[key], b[key], "{key}");
    }
    // NaN affinities are counted and said to be off.
    let mut nan = affinities(4, 12, 12).into_typed::<f32>().unwrap();
    nan[[0, 1, 1, 1]] = f32::NAN;
    nan[[2, 3, 3, 3]] = f32::INFINITY;
    let nan_path = dir.path().join("nan.npy");
    em_io::write(&nan_path, &AnyArray::from(nan)).unwrap();
    let o = decode(&nan_path, &dir.path().join("n.npy"), &[]);
    assert_eq!(ok(&o)["non_finite_affinities"], 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("2 affinity values are NaN or infinite"));
}

#[test]
fn evaluate_refuses_bad_iou_thresholds_and_leaves_unknown_voxels_out() {
    let dir = tempfile::tempdir().unwrap();
    // Ground truth: two objects, and a slab of unknown (−1) where the prediction has
    // foreground; the prediction is right everywhere else.
    let gt = Array3::<i32>::from_shape_fn((4, 8, 8), |(z, y, _)| match (z, y) {
        (3, _) => -1,
        (_, y) if y < 4 => 1,
        _ => 2,
    });
    let pred = Array3::<u32>::from_shape_fn((4, 8, 8), |(z, y, _)| match (z, y) {
        (3, _) => 9,
        (_, y) if y < 4 => 1,
        _ => 2,
    });
    let (g, p) = (dir.path().join("gt.npy"), dir.path().join("pred.npy"));
    em_io::write(&g, &AnyArray::from(gt.into_dyn())).unwrap();
    em_io::write(&p, &AnyArray::from(pred.into_dyn())).unwrap();
    let o = em(&["evaluate", "--gt", s(&g), "--pred", s(&p), "--json"]);
    let v = ok(&o);
    assert_eq!(v["iou"], 1.0, "{v}");
    assert_eq!(v["instance_f1"], 1.0, "{v}");
    assert_eq!(v["unknown_voxels"], 64);
    assert!(String::from_utf8_lossy(&o.stderr).contains("64 ground-truth voxels are -1"));
    for bad in ["nan", "2", "-1", "1"] {
        let o = em(&[
            "evaluate",
            "--gt",
            s(&g),
            "--pred",
            s(&p),
            &format!("--iou-threshold={bad}"),
        ]);
        assert_eq!(o.status.code(), Some(2), "clap refuses {bad}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("[0, 1)"));
    }
}

#[test]
fn skeleton_conventions_are_reported_and_unusable_skeletons_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pred = dir.path().join("pred.npy");
    let segments = Array3::<u32>::from_shape_fn((4, 8, 8), |(z, _, _)| if z < 2 { 1 } else { 2 });
    em_io::write(&pred, &AnyArray::from(segments.into_dyn())).unwrap();
    let write = |name: &str, skeletons: [u64; 2], nm: Option<f64>| {
        let p = dir.path().join(name);
        let node = |id: u64, sk: u64, z: f64| {
            let mut n = serde_json::json!({"id": id, "skeleton": sk, "position": [z, 1.0, 1.0]});
            if let Some(v) = nm {
                n["position_nm"] = serde_json::json!([v * z, 0.0, 0.0]);
            }
            n
        };
        let doc = serde_json::json!({
            "nodes": [node(0, skeletons[0], 0.0), node(1, skeletons[0], 1.0),
                      node(2, skeletons[1], 2.0), node(3, skeletons[1], 3.0)],
            "edges": [[0, 1], [2, 3]],
        });
        std::fs::write(&p, doc.to_string()).unwrap();
        p
    };
    let run = |sk: &Path| {
        em(&[
            "evaluate-skeletons",
            "--skeletons",
            s(sk),
            "--pred",
            s(&pred),
            "--json",
        ])
    };
    let o = run(&write("mixed.json", [0, 1], None));
    let v = ok(&o);
    assert_eq!(v["unlabelled_nodes"], 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("2 skeleton nodes belong to skeleton 0"));
    refused(
        &run(&write("zero.json", [0, 0], None)),
        "number skeletons from 1",
    );
    refused(&run(&write("huge.json", [1, 2], Some(1e200))), "too large");
    let v = ok(&run(&write("fine.json", [1, 2], None)));
    assert_eq!(v["unlabelled_nodes"], 0);
    assert_eq!(v["nerl"], 1.0);
}

#[test]
fn trainings_that_cannot_learn_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("aff.toml");
    std::fs::write(&cfg, common::TINY_AFFINITIES).unwrap();
    let out = dir.path().join("run");
    for (set, needle) in [
        ("targets.offsets=[[0, 0, 100]]", "reaches beyond a sample"),
        ("loss.bce=-1", "loss.bce"),
        ("loss.bce=nan", "loss.bce"),
        ("data.sources=[{weight = -1, source = { kind = \"synthetic\", synth = \"neurons\", shape = [16, 64, 64] }}]", "weight -1"),
        ("data.sources=[{weight = nan, source = { kind = \"synthetic\", synth = \"neurons\", shape = [16, 64, 64] }}]", "weight NaN"),
    ] {
        let o = em(&["train", s(&cfg), "--out", s(&out), "--set", set]);
        refused(&o, needle);
    }
    assert!(!out.exists());
}

#[test]
fn infer_clamps_a_window_larger_than_the_volume() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_train_config(dir.path(), 1, false);
    let run = dir.path().join("run");
    ok(&em(&["train", s(&cfg), "--out", s(&run)]));
    let img = dir.path().join("img.npy");
    em_io::write(
        &img,
        &AnyArray::from(Array3::<u8>::from_elem((20, 40, 36), 100).into_dyn()),
    )
    .unwrap();
    let mut outputs = Vec::new();
    for (i, window) in ["16,16,16", "64,64,64", "1600000000,1600000000,1600000000"]
        .iter()
        .enumerate()
    {
        let out = dir.path().join(format!("p{i}.npy"));
        let v = ok(&em(&[
            "infer",
            "--run",
            s(&run),
            "--input",
            s(&img),
            "--out",
            s(&out),
            "--window",
            window,
        ]));
        if i > 0 {
            assert_eq!(v["window"], serde_json::json!([32, 48, 48]), "{window}");
        }
        outputs.push(em_io::read(&out).unwrap());
    }
    assert_eq!(outputs[1], outputs[2], "a clamped window predicts the same");
    let o = em(&[
        "infer",
        "--run",
        s(&run),
        "--input",
        s(&img),
        "--out",
        s(&dir.path().join("bad.npy")),
        "--window",
        "20,20,20",
    ]);
    refused(&o, "multiple of [16, 16, 16]");
}

/// How a random command line names its output relative to its input.
#[derive(Clone, Copy, Debug)]
enum Alias {
    Same,
    DotSlash,
    ParentDir,
    Symlink,
    Hardlink,
    /// The zarr container holding the input array.
    Container,
    /// Below the input array.
    Inside,
}

fn alias() -> impl Strategy<Value = Alias> {
    prop_oneof![
        Just(Alias::Same),
        Just(Alias::DotSlash),
        Just(Alias::ParentDir),
        Just(Alias::Symlink),
        Just(Alias::Hardlink),
        Just(Alias::Container),
        Just(Alias::Inside),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any command line whose output aliases its input is refused and leaves the input as
    /// it was.
    #[test]
    fn outputs_that_alias_inputs_are_always_refused(
        command in 0usize..4,
        zarr in any::<bool>(),
        how in alias(),
        overwrite in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        let zarr = zarr || matches!(how, Alias::Container | Alias::Inside);
        let input = if zarr { d.join("a.zarr/aff") } else { d.join("a.npy") };
        em_io::write(&input, &affinities(4, 12, 12)).unwrap();
        let name = input.strip_prefix(d).unwrap().to_path_buf();
        let out = match how {
            Alias::Same => input.clone(),
            Alias::DotSlash => d.join(".").join(&name),
            Alias::ParentDir => d.join("sub/..").join(&name),
            Alias::Symlink | Alias::Hardlink => {
                let target = if zarr { d.join("a.zarr") } else { input.clone() };
                let link = d.join(if zarr { "l.zarr" } else { "l.npy" });
                #[cfg(unix)]
                {
                    if matches!(how, Alias::Hardlink) && !zarr {
                        std::fs::hard_link(&target, &link).unwrap();
                    } else {
                        std::os::unix::fs::symlink(&target, &link).unwrap();
                    }
                }
                if zarr { link.join("aff") } else { link }
            }
            Alias::Container => d.join("a.zarr"),
            Alias::Inside => input.join("x"),
        };
        let before = snapshot(&d.join(name.components().next().unwrap()));
        let flag = if overwrite { "--overwrite" } else { "--threshold=0.5" };
        let o = match command {
            0 => decode(&input, &out, &[flag]),
            1 => decode(&input, &out, &["--block", "2,4,4", flag]),
            2 => em(&["slurm", "decode", "--affinities", s(&input), "--out", s(&out),
                      "--block", "2,4,4", "--dir", s(&d.join("work")), "--dry-run"]),
            _ => {
                let cfg = fixture_config(d);
                em(&["infer", "--config", s(&cfg), "--weights", s(&mednext_fixture()),
                     "--input", s(&input), "--out", s(&out), flag])
            }
        };
        let err = String::from_utf8_lossy(&o.stderr);
        prop_assert_eq!(o.status.code(), Some(1), "{}", err);
        prop_assert!(!err.contains("panicked"), "{}", err);
        prop_assert_eq!(snapshot(&d.join(name.components().next().unwrap())), before);
    }
}
