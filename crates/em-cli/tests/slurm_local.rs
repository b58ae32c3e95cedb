//! `em slurm` without a cluster: scripts rendered and written, clear errors where Slurm's
//! commands are missing, and a distributed decode run by hand (tasks in any order, one
//! rerun, then the stitch) that reproduces BANIS's reference segmentation.
//! The same against a real Slurm: `tests/slurm_cluster.rs`.

use std::path::{Path, PathBuf};

mod common;
use common::{em, em_with_path, fixture, ok};

fn write_job(dir: &Path) -> PathBuf {
    let job = dir.join("job.toml");
    std::fs::write(
        &job,
        "name = \"train\"\ncommand = [\"em\", \"train\", \"lucchi_cpu\", \"--out\", \"runs/{name}\"]\n\
         [slurm]\ntime = \"00:10:00\"\ncpus = 2\n[resubmit]\nsignal_seconds = 60\n",
    )
    .unwrap();
    job
}

#[test]
fn render_and_dry_run_write_scripts_that_run_this_em() {
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(dir.path());
    let o = em(&[
        "slurm",
        "render",
        job.to_str().unwrap(),
        "--set",
        "slurm.cpus=4",
    ]);
    assert!(o.status.success());
    let script = String::from_utf8_lossy(&o.stdout);
    assert!(script.contains("#SBATCH --cpus-per-task=4"), "{script}");
    assert!(script.contains("#SBATCH --signal=B:USR1@60"), "{script}");
    // `em` is this very binary, so jobs run the build that submitted them.
    assert!(script.contains(env!("CARGO_BIN_EXE_em")), "{script}");

    let out = dir.path().join("scripts");
    let o = em(&[
        "slurm",
        "submit",
        job.to_str().unwrap(),
        "--dir",
        out.to_str().unwrap(),
        "--dry-run",
    ]);
    let v = ok(&o);
    let written = PathBuf::from(v["script"].as_str().unwrap());
    assert_eq!(
        written,
        std::path::absolute(out.join("train.sbatch")).unwrap()
    );
    let text = std::fs::read_to_string(&written).unwrap();
    // The chain resubmits the stored script, not Slurm's temporary copy.
    assert!(
        text.contains(&format!(
            "--export=ALL,EM_CHAIN=$((EM_CHAIN + 1)) {}",
            written.display()
        )),
        "{text}"
    );

    // A sweep's dry run lists one job per point.
    let sweep = dir.path().join("sweep.toml");
    std::fs::write(
        &sweep,
        "job = \"job.toml\"\n[parameters]\nseed = [1, 2, 3]\n",
    )
    .unwrap();
    let o = em(&[
        "slurm",
        "sweep",
        sweep.to_str().unwrap(),
        "--dir",
        out.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["name"], "train-seed=3");
    assert!(out.join("train-seed=3.sbatch").is_file());
    assert!(
        !out.join("manifest.json").exists(),
        "a dry run submits nothing"
    );
}

#[test]
fn missing_slurm_commands_and_bad_configs_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let job = write_job(dir.path());
    let empty = dir.path().join("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    let o = em_with_path(
        &[
            "slurm",
            "submit",
            job.to_str().unwrap(),
            "--dir",
            dir.path().join("s").to_str().unwrap(),
        ],
        Some(empty.to_str().unwrap()),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("`sbatch` was not found"), "{err}");
    let o = em_with_path(&["slurm", "status", "12"], Some(empty.to_str().unwrap()));
    assert!(String::from_utf8_lossy(&o.stderr).contains("`squeue` was not found"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\ncommand = [\"em\"]\n[slurm]\ntime = \"2 hours\"\n",
    )
    .unwrap();
    let o = em(&["slurm", "render", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid slurm.time"));
    let o = em(&[
        "slurm",
        "render",
        dir.path().join("none.toml").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("none.toml"));
    let o = em(&["slurm", "status", "not-a-job"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn a_decode_split_into_tasks_equals_banis() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let out = dir.path().join("seg.zarr");
    let work_s = work.to_str().unwrap();
    let o = em(&[
        "slurm",
        "decode",
        "--affinities",
        &fixture("c1_32_aff_fwd.npy"),
        "--out",
        out.to_str().unwrap(),
        "--block",
        "16,16,8",
        "--tasks",
        "5",
        "--min-size",
        "500",
        "--dir",
        work_s,
        "--dry-run",
    ]);
    let v = ok(&o);
    assert_eq!(v["blocks"], 16);
    assert_eq!(v["tasks"], 5);
    let plan = work.join("plan.json");
    let plan_s = plan.to_str().unwrap();
    assert!(!out.exists(), "nothing is written before the stitch");
    // Stitching too early fails and names the missing tasks.
    let o = em(&["slurm", "decode-stitch", plan_s, "--no-resubmit"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("15 of 16 blocks are not labelled (tasks 0,1,2,3,4)"),
        "{err}"
    );
    // Tasks in any order; a rerun skips finished blocks.
    for t in [3, 0, 4, 1, 2] {
        let v = ok(&em(&[
            "slurm",
            "decode-task",
            plan_s,
            "--task",
            &t.to_string(),
        ]));
        assert_eq!(v["task"], t);
    }
    let v = ok(&em(&["slurm", "decode-task", plan_s, "--task", "2"]));
    assert_eq!(v["labelled"], 0);
    assert!(v["already_done"].as_u64().unwrap() > 0);
    let o = em(&["slurm", "decode-task", plan_s, "--task", "5"]);
    assert_eq!(o.status.code(), Some(1));

    let v = ok(&em(&["slurm", "decode-stitch", plan_s, "--no-resubmit"]));
    assert_eq!(v["components"], 26);
    assert_eq!(v["labelled_voxels"], 32 * 32 * 32 - 5350);
    let got = em_io::read(&out).unwrap();
    let want = em_io::read(fixture("c1_32_seg_thr0.5_min500.npy")).unwrap();
    assert_eq!(got, want);

    // Outputs other than zarr and a bad block shape are refused before any work.
    let o = em(&[
        "slurm",
        "decode",
        "--affinities",
        &fixture("c1_32_aff_fwd.npy"),
        "--out",
        dir.path().join("seg.npy").to_str().unwrap(),
        "--block",
        "8,8,8",
        "--dry-run",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("distributed decoding writes zarr"));
}

#[test]
fn a_waterz_decode_split_into_tasks_equals_the_blockwise_decode() {
    let dir = tempfile::tempdir().unwrap();
    let aff = fixture("waterz/cells_lownoise_affs.npy");
    let work = dir.path().join("work");
    let plan = work.join("plan.json");
    let common = [
        "--affinities",
        aff.as_str(),
        "--method",
        "waterz",
        "--thresholds",
        "0.3,0.6",
        "--storage",
        "destination",
        "--block",
        "3,9,9",
        "--halo",
        "4",
    ];
    let distributed = dir.path().join("dist_{threshold}.zarr");
    let mut args = vec!["slurm", "decode", "--out", distributed.to_str().unwrap()];
    args.extend(common);
    args.extend(["--tasks", "3", "--dir", work.to_str().unwrap(), "--dry-run"]);
    let v = ok(&em(&args));
    assert_eq!(v["blocks"], 2 * 2 * 2);
    for t in ["2", "0", "1"] {
        ok(&em(&[
            "slurm",
            "decode-task",
            plan.to_str().unwrap(),
            "--task",
            t,
        ]));
    }
    let v = ok(&em(&[
        "slurm",
        "decode-stitch",
        plan.to_str().unwrap(),
        "--no-resubmit",
    ]));
    assert_eq!(v["outputs"].as_array().unwrap().len(), 2, "{v}");
    let local = dir.path().join("local_{threshold}.zarr");
    let mut args = vec!["decode", "--out", local.to_str().unwrap(), "--json"];
    args.extend(common);
    ok(&em(&args));
    for t in ["0.3", "0.6"] {
        let a = em_io::read(dir.path().join(format!("dist_{t}.zarr"))).unwrap();
        let b = em_io::read(dir.path().join(format!("local_{t}.zarr"))).unwrap();
        assert_eq!(a, b, "threshold {t}");
    }
    // Several thresholds need {threshold} in the output.
    let w2 = dir.path().join("w2");
    let mut args = vec!["slurm", "decode", "--out", "one.zarr"];
    args.extend(common);
    args.extend(["--dir", w2.to_str().unwrap(), "--dry-run"]);
    let o = em(&args);
    assert!(String::from_utf8_lossy(&o.stderr).contains("{threshold}"));
}

/// Prediction block by block, then the decode: tasks run by hand as the array jobs would.
/// The segmentation equals the in-memory decode of the affinities the tasks predicted, and
/// those are close to `em infer` on the whole volume (windows differ only near blocks).
#[test]
fn a_predicted_then_decoded_volume_equals_decoding_its_affinities() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).to_str().unwrap().to_string();
    ok(&em(&[
        "data",
        "synth",
        "--kind",
        "neurons",
        "--shape",
        "16,48,48",
        "--seed",
        "3",
        "--out",
        &d("img.zarr"),
    ]));
    let config = dir.path().join("tiny.toml");
    std::fs::write(&config, common::TINY_AFFINITIES).unwrap();
    ok(&em(&[
        "train",
        config.to_str().unwrap(),
        "--out",
        &d("run"),
    ]));
    let v = ok(&em(&[
        "slurm",
        "decode",
        "--run",
        &d("run"),
        "--image",
        &d("img.zarr/img"),
        "--affinities",
        &d("aff.zarr"),
        "--out",
        &d("seg.zarr"),
        "--block",
        "8,16,16",
        "--tasks",
        "3",
        "--dir",
        &d("work"),
        "--dry-run",
    ]));
    assert_eq!(v["blocks"], 18);
    assert!(v["predict_script"]
        .as_str()
        .unwrap()
        .ends_with("decode-predict.sbatch"));
    let plan = d("work/plan.json");
    // Labelling before every block is predicted is refused.
    let o = em(&["slurm", "decode-task", &plan, "--task", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not predicted yet"));
    let o = em(&["slurm", "decode-stitch", &plan, "--no-resubmit"]);
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("18 blocks are not predicted (prediction tasks 0,1,2)"));
    for t in ["2", "0", "1"] {
        let v = ok(&em(&["slurm", "predict-task", &plan, "--task", t]));
        assert_eq!(v["predicted"], 6);
    }
    for t in ["1", "2", "0"] {
        ok(&em(&["slurm", "decode-task", &plan, "--task", t]));
    }
    ok(&em(&["slurm", "decode-stitch", &plan, "--no-resubmit"]));
    ok(&em(&[
        "decode",
        "--affinities",
        &d("aff.zarr"),
        "--out",
        &d("want.zarr"),
    ]));
    assert_eq!(
        em_io::read(d("seg.zarr")).unwrap(),
        em_io::read(d("want.zarr")).unwrap()
    );
    // Against the whole-volume prediction: the same model, windows placed differently.
    ok(&em(&[
        "infer",
        "--run",
        &d("run"),
        "--input",
        &d("img.zarr/img"),
        "--out",
        &d("whole.npy"),
    ]));
    let a = em_io::read(d("aff.zarr"))
        .unwrap()
        .into_typed::<f32>()
        .unwrap();
    let b = em_io::read(d("whole.npy"))
        .unwrap()
        .into_typed::<f32>()
        .unwrap();
    assert_eq!(a.shape(), [3, 16, 48, 48]);
    let mean_diff = a
        .iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .sum::<f32>()
        / a.len() as f32;
    assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(mean_diff < 0.05, "mean |blockwise − whole| = {mean_diff}");
}
