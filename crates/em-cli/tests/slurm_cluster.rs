//! `em slurm` against a real Slurm (a one-node cluster on this machine: `bash tools/slurm-up`,
//! as root). Ignored by default; run with
//! `cargo test --release -p em-cli --test slurm_cluster -- --ignored`.
//!
//! A job array, a dependency chain, a training chain with a 1-minute time limit that
//! checkpoints, resubmits itself and finishes, a distributed decode with a cancelled array
//! task that the final job resubmits, and its result equal to the in-memory decode.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{em, ok};

/// A scratch directory the Slurm daemons (root) can reach; kept on failure for the logs.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("em-slurm-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn job_file(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, format!("name = \"{name}\"\n{body}")).unwrap();
    p
}

/// Job states of `ids` (tasks expanded) from `em slurm status --json`.
fn states(ids: &[&str]) -> Vec<(String, String)> {
    let mut args = vec!["slurm", "status", "--json"];
    args.extend_from_slice(ids);
    let o = em(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["id"].as_str().unwrap().to_string(),
                v["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const ACTIVE: [&str; 4] = ["PENDING", "RUNNING", "CONFIGURING", "COMPLETING"];

/// Waits until `done` holds, failing after `limit` with the logs of `dir`.
fn wait_for(what: &str, dir: &Path, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            let mut logs = String::new();
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "out") {
                    logs += &format!(
                        "--- {}\n{}\n",
                        p.display(),
                        std::fs::read_to_string(&p).unwrap_or_default()
                    );
                }
            }
            panic!("{what}: not done after {limit:?}\n{logs}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Whether a job of this name is pending or running.
fn queued(name: &str) -> bool {
    let o = Command::new("squeue")
        .args(["-h", "-n", name, "-o", "%i"])
        .output()
        .unwrap();
    !String::from_utf8_lossy(&o.stdout).trim().is_empty()
}

fn all_finished(ids: &[&str]) -> bool {
    states(ids)
        .iter()
        .all(|(_, s)| !ACTIVE.contains(&s.as_str()))
}

#[test]
#[ignore = "needs a running Slurm: bash tools/slurm-up"]
fn an_array_job_runs_every_task() {
    let dir = scratch("array");
    let job = job_file(
        &dir,
        "array",
        &format!(
            "command = [\"bash\", \"-c\", \"echo task $SLURM_ARRAY_TASK_ID > {}/task-{{task}}.txt\"]\n\
             workdir = {:?}\n[slurm]\narray = \"0-3\"\ntime = \"2\"\noutput = \"{}/%x-%A_%a.out\"\n",
            dir.display(),
            dir.display().to_string(),
            dir.display()
        ),
    );
    let v = ok(&em(&[
        "slurm",
        "submit",
        job.to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
    ]));
    let id = v["job_id"].as_str().unwrap().to_string();
    let manifest = dir.join("manifest.json");
    wait_for("array", &dir, Duration::from_secs(120), || {
        all_finished(&[manifest.to_str().unwrap()])
    });
    let finished = states(&[&id]);
    assert_eq!(finished.len(), 4, "{finished:?}");
    assert!(
        finished.iter().all(|(_, s)| s == "COMPLETED"),
        "{finished:?}"
    );
    for t in 0..4 {
        let text = std::fs::read_to_string(dir.join(format!("task-{t}.txt"))).unwrap();
        assert_eq!(text.trim(), format!("task {t}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs a running Slurm: bash tools/slurm-up"]
fn a_dependency_chain_runs_in_order() {
    let dir = scratch("chain");
    let out = dir.join("order.txt");
    let first = job_file(
        &dir,
        "first",
        &format!(
            "command = [\"bash\", \"-c\", \"sleep 3; echo first >> {0}\"]\n[slurm]\ntime = \"2\"\noutput = \"{1}/%x-%j.out\"\n",
            out.display(),
            dir.display()
        ),
    );
    let second = job_file(
        &dir,
        "second",
        &format!(
            "command = [\"bash\", \"-c\", \"grep -q first {0} && echo second >> {0}\"]\n[slurm]\ntime = \"2\"\noutput = \"{1}/%x-%j.out\"\n",
            out.display(),
            dir.display()
        ),
    );
    let d = dir.to_str().unwrap();
    let a = ok(&em(&[
        "slurm",
        "submit",
        first.to_str().unwrap(),
        "--dir",
        d,
    ]));
    let a = a["job_id"].as_str().unwrap().to_string();
    let b = ok(&em(&[
        "slurm",
        "submit",
        second.to_str().unwrap(),
        "--dir",
        d,
        "--set",
        &format!("slurm.dependency=[\"afterok:{a}\"]"),
    ]));
    let b = b["job_id"].as_str().unwrap().to_string();
    wait_for("chain", &dir, Duration::from_secs(120), || {
        all_finished(&[&a, &b])
    });
    assert_eq!(
        states(&[&a, &b])
            .into_iter()
            .map(|(_, s)| s)
            .collect::<Vec<_>>(),
        ["COMPLETED", "COMPLETED"]
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "first\nsecond\n");
    // sbatch refusing a job: its own message comes through, and nothing is recorded.
    let o = em(&[
        "slurm",
        "submit",
        second.to_str().unwrap(),
        "--dir",
        d,
        "--set",
        "slurm.partition=\"nosuch\"",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("`sbatch --parsable") && err.contains("partition"),
        "{err}"
    );
    // The manifest lists both, in order.
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["jobs"].as_array().map(Vec::len), Some(2));
    assert_eq!(m["jobs"][0]["name"], "first");
    assert_eq!(m["jobs"][1]["job_id"], b.as_str());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tiny training whose run outlasts a 1-minute time limit: Slurm signals the batch shell,
/// which resubmits the next link and passes the signal to `em train`, which checkpoints and
/// exits; the next link resumes, and the chain ends with every step done.
#[test]
#[ignore = "needs a running Slurm: bash tools/slurm-up"]
fn a_training_chain_resumes_past_its_time_limit() {
    let dir = scratch("resubmit");
    let config = dir.join("training.toml");
    std::fs::write(&config, TINY_TRAINING).unwrap();
    // Enough steps for about 75 s of training in this build (debug or release), so that
    // the first link is signalled (20 to 50 s into a 1-minute job) before it finishes.
    let probe = Command::new(env!("CARGO_BIN_EXE_em"))
        .args(["train", config.to_str().unwrap(), "--out"])
        .arg(dir.join("probe"))
        .args(["--set", "steps=8"])
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    let per_step = ok(&probe)["seconds"].as_f64().unwrap() / 8.0;
    let steps = ((75.0 / per_step).ceil() as u64).max(20);
    std::fs::write(
        &config,
        TINY_TRAINING.replace("steps = 600", &format!("steps = {steps}")),
    )
    .unwrap();
    let run = dir.join("run");
    let job = job_file(
        &dir,
        "tiny",
        &format!(
            "command = [\"em\", \"train\", {:?}, \"--out\", {:?}]\n\
             environment = {{ RAYON_NUM_THREADS = \"1\" }}\n\
             [slurm]\ntime = \"1\"\noutput = \"{}/%x.out\"\n\
             [resubmit]\nsignal_seconds = 10\nmax_chain = 6\n",
            config.display().to_string(),
            run.display().to_string(),
            dir.display()
        ),
    );
    ok(&em(&[
        "slurm",
        "submit",
        job.to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
    ]));
    let weights = run.join("model.safetensors");
    let start = Instant::now();
    wait_for("training chain", &dir, Duration::from_secs(400), || {
        // Done, or no link of the chain left in the queue (then the asserts below say why).
        weights.exists() || (start.elapsed() > Duration::from_secs(15) && !queued("tiny"))
    });
    let log = std::fs::read_to_string(dir.join("tiny.out")).unwrap();
    assert!(log.contains("near its time limit"), "{log}");
    assert!(log.contains("the next link is job"), "{log}");
    assert!(log.contains("resumed from"), "{log}");
    // Every step is logged once in the final metrics (a resumed run rewrites what came after
    // its checkpoint), up to the last one.
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let logged: Vec<u64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "step")
        .filter_map(|v| v["step"].as_u64())
        .collect();
    assert_eq!(logged.last(), Some(&steps), "{log}");
    assert!(logged.windows(2).all(|w| w[0] < w[1]), "{logged:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

const TINY_TRAINING: &str = r#"
seed = 1
steps = 600
batch_size = 2
workers = 1
augment = "light"
log_every = 10

[model]
arch = "mednext_custom"
in_channels = 1
out_channels = 1
width = 4
kernel_size = 3
ratios = [2, 2, 2, 2, 2, 2, 2, 2, 2]
blocks = [1, 1, 1, 1, 1, 1, 1, 1, 1]

[data]
patch = { patch = [16, 64, 64], epoch_len = 64 }

[[data.sources]]
source = { kind = "synthetic", synth = "mito", shape = [16, 96, 96], seed = 2 }

[targets]
kind = "foreground"

[optimizer]
lr = 3e-3
warmup = 4

[checkpoint]
every = 1000
keep = 2
"#;

/// A distributed decode on the cluster: one array task is cancelled, the final job finds
/// its blocks missing and resubmits it, and the result equals `em decode` in memory.
#[test]
#[ignore = "needs a running Slurm: bash tools/slurm-up"]
fn a_distributed_decode_retries_a_killed_task_and_equals_the_in_memory_decode() {
    let dir = scratch("decode");
    // BANIS's reference affinities, through zarr as a cluster would store them.
    let aff = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../em-decode/tests/fixtures/c1_32_aff_fwd.npy");
    let aff_zarr = dir.join("aff.zarr");
    let a = em_io::read(&aff).unwrap();
    em_io::write(&aff_zarr, &a).unwrap();
    let want = dir.join("want.zarr");
    ok(&em(&[
        "decode",
        "--affinities",
        aff_zarr.to_str().unwrap(),
        "--out",
        want.to_str().unwrap(),
        "--min-size",
        "100",
        "--json",
    ]));
    let work = dir.join("work");
    let out = dir.join("seg.zarr");
    let resources = job_file(&dir, "dec", "command = [\"em\"]\n[slurm]\ntime = \"3\"\n");
    let v = ok(&em(&[
        "slurm",
        "decode",
        "--affinities",
        aff_zarr.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--block",
        "8,16,16",
        "--tasks",
        "4",
        "--max-running",
        "1",
        "--min-size",
        "100",
        "--dir",
        work.to_str().unwrap(),
        "--job",
        resources.to_str().unwrap(),
    ]));
    let tasks = v["tasks_job"].as_str().unwrap().to_string();
    // Tasks run one at a time: task 3 is still pending when it is cancelled (Slurm then
    // forgets it; the final job finds its blocks missing and submits it again).
    let victim = format!("{tasks}_3");
    let o = Command::new("scancel").arg(&victim).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_for(
        "distributed decode",
        &work,
        Duration::from_secs(240),
        || out.exists(),
    );
    let logs: String = std::fs::read_dir(&work)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "out"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(logs.contains("\"resubmitted_tasks\":[3]"), "{logs}");
    let got = em_io::read(&out).unwrap();
    let want = em_io::read(&want).unwrap();
    assert_eq!(got, want);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Prediction, labelling and stitching as three dependent jobs: the segmentation equals
/// the in-memory decode of the affinities the prediction tasks wrote.
#[test]
#[ignore = "needs a running Slurm: bash tools/slurm-up"]
fn a_predicted_decode_runs_as_dependent_array_jobs() {
    let dir = scratch("predict");
    let d = |p: &str| dir.join(p).to_str().unwrap().to_string();
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
    std::fs::write(dir.join("tiny.toml"), common::TINY_AFFINITIES).unwrap();
    ok(&em(&["train", &d("tiny.toml"), "--out", &d("run")]));
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
        "--set",
        "slurm.time=\"5\"",
    ]));
    assert!(v["predict_job"].is_string(), "{v}");
    let out = dir.join("seg.zarr");
    wait_for(
        "predicted decode",
        &dir.join("work"),
        Duration::from_secs(240),
        || out.exists(),
    );
    ok(&em(&[
        "decode",
        "--affinities",
        &d("aff.zarr"),
        "--out",
        &d("want.zarr"),
    ]));
    assert_eq!(
        em_io::read(&out).unwrap(),
        em_io::read(d("want.zarr")).unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
