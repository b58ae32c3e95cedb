//! Job configs render to scripts bash accepts, with every option in place; bad configs get
//! errors that name the key; sweeps expand to distinct, named jobs. The scripts are checked
//! with `bash -n` and, for the resubmit trap, run under a fake `sbatch`.

use std::path::Path;
use std::process::Command;

use em_slurm::{JobConfig, RenderOptions, SlurmError, SweepConfig};
use proptest::prelude::*;

fn job(text: &str) -> Result<JobConfig, SlurmError> {
    JobConfig::from_toml(text, Path::new("job.toml"))
}

fn bash_accepts(script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.sbatch");
    std::fs::write(&path, script).unwrap();
    let out = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "bash -n: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_option_becomes_a_directive() {
    let j = job(r#"
        name = "lucchi"
        command = ["em", "train", "lucchi", "--out", "runs/{name}", "--set", "note=it's {job}"]
        workdir = "/data/my runs"
        modules = ["cuda/12.4"]
        setup = ["source ~/venv/bin/activate"]
        environment = { RAYON_NUM_THREADS = "8", NOTE = "a b'c" }
        [slurm]
        partition = "gpu"
        time = "1-02:00:00"
        cpus = 8
        memory = "32G"
        gpus = 2
        gpu_type = "a100"
        dependency = ["afterok:12", "afterany:13:14"]
        account = "lab"
        qos = "normal"
        constraint = "a100"
        extra = ["--exclusive"]
    "#)
    .unwrap();
    let s = j
        .render(&RenderOptions {
            em: Some("/opt/em/bin/em".into()),
            ..RenderOptions::default()
        })
        .unwrap();
    for want in [
        "#!/bin/bash\n",
        "#SBATCH --job-name=lucchi\n",
        "#SBATCH --partition=gpu\n",
        "#SBATCH --time=1-02:00:00\n",
        "#SBATCH --cpus-per-task=8\n",
        "#SBATCH --mem=32G\n",
        "#SBATCH --gres=gpu:a100:2\n",
        "#SBATCH --dependency=afterok:12,afterany:13:14\n",
        "#SBATCH --account=lab\n",
        "#SBATCH --qos=normal\n",
        "#SBATCH --constraint=a100\n",
        "#SBATCH --output=slurm-%x-%j.out\n",
        "#SBATCH --exclusive\n",
        "module load cuda/12.4\n",
        "export NOTE='a b'\\''c'\n",
        "export RAYON_NUM_THREADS=8\n",
        "cd '/data/my runs' || exit 1\n",
        "source ~/venv/bin/activate\n",
        "cmd=(/opt/em/bin/em train lucchi --out runs/lucchi --set 'note=it'\\''s '\"${SLURM_JOB_ID}\")",
        "exec \"${cmd[@]}\"\n",
    ] {
        assert!(s.contains(want), "missing {want:?} in\n{s}");
    }
    assert!(!s.contains("--signal"), "no resubmit asked: {s}");
    bash_accepts(&s);
}

#[test]
fn arrays_name_their_logs_per_task() {
    let s = job(r#"
        name = "blocks"
        command = ["em", "info", "part-{task}.zarr"]
        [slurm]
        array = "0-9%2"
    "#)
    .unwrap()
    .render(&RenderOptions::default())
    .unwrap();
    assert!(s.contains("#SBATCH --array=0-9%2\n"), "{s}");
    assert!(s.contains("#SBATCH --output=slurm-%x-%A_%a.out\n"), "{s}");
    assert!(
        s.contains("cmd=(em info part-\"${SLURM_ARRAY_TASK_ID}\".zarr)"),
        "{s}"
    );
    bash_accepts(&s);
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        ("name = \"a b\"\ncommand = [\"em\"]", "name"),
        ("name = \"a\"\ncommand = []", "command"),
        (
            "name = \"a\"\ncommand = [\"em\"]\n[slurm]\ntime = \"2h\"",
            "slurm.time",
        ),
        (
            "name = \"a\"\ncommand = [\"em\"]\n[slurm]\ntime = \"1:75:00\"",
            "slurm.time",
        ),
        (
            "name = \"a\"\ncommand = [\"em\"]\n[slurm]\ntime = \"0\"",
            "slurm.time",
        ),
        (
            "name = \"a\"\ncommand = [\"em\"]\n[slurm]\nmemory = \"32GB\"",
            "slurm.memory",
        ),
        (
            "name = \"a\"\ncommand = [\"em\"]\n[slurm]\ncpus = 0",
            "slurm.cpus",
        ),
        (
            "name = \"a\"\ncommand = [\"em\"]\n[slurm]\ngpu_type = \"a100\"",
            "slurm.gpu_type",
        ),
        (
            "name = \"a\"\ncommand = [\"em\"]\n[slurm]\narray = \"all\"",
            "slurm.array",
        ),
        (
            "name = \"a\"\ncommand = [\"em\"]\n[slurm]\ndependency = [\"after 12\"]",
            "slurm.dependency",
        ),
        (
            "name = \"a\"\ncommand = [\"em\"]\n[slurm]\npartition = \"a b\"",
            "slurm.partition",
        ),
        (
            "name = \"a\"\ncommand = [\"em\"]\n[slurm]\nextra = [\"exclusive\"]",
            "slurm.extra",
        ),
        (
            "name = \"a\"\ncommand = [\"em\"]\nenvironment = { \"1X\" = \"v\" }",
            "environment.1X",
        ),
        ("name = \"a\"\ncommand = [\"em\", \"{nme}\"]", "command"),
        ("name = \"a\"\ncommand = [\"em\", \"{name\"]", "command"),
        (
            "name = \"a\"\ncommand = [\"em\"]\n[slurm]\narray = \"0-3\"\n[resubmit]",
            "resubmit",
        ),
        (
            "name = \"a\"\ncommand = [\"em\"]\n[resubmit]\nsignal_seconds = 0",
            "resubmit.signal_seconds",
        ),
    ];
    for (text, key) in cases {
        match job(text) {
            Err(SlurmError::InvalidParameter { name: k, reason }) => {
                assert_eq!(k, key, "{text}: {reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("{text}: expected an invalid {key}, got {other:?}"),
        }
    }
    // Unknown keys and syntax errors name the file.
    for text in [
        "name = \"a\"\ncommand = [\"em\"]\npartition = \"gpu\"",
        "name = ",
    ] {
        let e = job(text).unwrap_err();
        assert!(matches!(e, SlurmError::Parse { .. }), "{e:?}");
        assert!(e.to_string().starts_with("job.toml: "), "{e}");
    }
}

#[test]
fn times_slurm_accepts_are_accepted() {
    for t in [
        "30",
        "10:00",
        "02:00:00",
        "1-0",
        "1-12",
        "1-12:30",
        "7-00:00:00",
        "UNLIMITED",
    ] {
        let text = format!("name = \"a\"\ncommand = [\"em\"]\n[slurm]\ntime = \"{t}\"");
        assert!(job(&text).is_ok(), "{t}");
    }
}

#[test]
fn overrides_reach_nested_keys_and_are_checked() {
    let base = job("name = \"a\"\ncommand = [\"em\", \"plan\"]").unwrap();
    let j = base
        .with_overrides(&[
            "slurm.time=\"00:05:00\"".into(),
            "slurm.cpus=4".into(),
            "name=b".into(),
            "resubmit.max_chain=3".into(),
        ])
        .unwrap();
    assert_eq!(j.slurm.time.as_deref(), Some("00:05:00"));
    assert_eq!(j.slurm.cpus, Some(4));
    assert_eq!(j.name, "b");
    assert_eq!(j.resubmit.as_ref().map(|r| r.max_chain), Some(3));
    assert_eq!(j.resubmit.as_ref().map(|r| r.signal_seconds), Some(300));
    assert!(base.with_overrides(&["slurm.cpus=0".into()]).is_err());
    assert!(base.with_overrides(&["slurm.gpus=\"two\"".into()]).is_err());
    assert!(base.with_overrides(&["nonsense".into()]).is_err());
    assert!(base.with_overrides(&["slurm.nope=1".into()]).is_err());
}

/// Runs a rendered resubmitting script outside Slurm, with a fake `sbatch` on PATH and a
/// command that waits for USR1: the trap resubmits once with the dependency and the next
/// link number, passes the signal on, and the script exits with the command's status.
#[test]
fn the_resubmit_trap_resubmits_once_and_forwards_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let log = dir.path().join("sbatch.log");
    std::fs::write(
        bin.join("sbatch"),
        format!(
            "#!/bin/bash\necho \"$@ EM_CHAIN_NEXT=${{EM_CHAIN}}\" >> {}\necho 4242\n",
            log.display()
        ),
    )
    .unwrap();
    let worker = dir.path().join("worker.sh");
    std::fs::write(
        &worker,
        "#!/bin/bash\necho \"args: $*\" > \"$1\"\ntrap 'echo checkpointed >> \"$1\"; exit 0' USR1\nwhile true; do sleep 0.1; done\n",
    )
    .unwrap();
    for f in [bin.join("sbatch"), worker.clone()] {
        let mut p = std::fs::metadata(&f).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
        std::fs::set_permissions(&f, p).unwrap();
    }
    let marker = dir.path().join("worker.out");
    let j = job(&format!(
        "name = \"chain\"\ncommand = [{:?}, {:?}]\n[resubmit]\nsignal_seconds = 60\nmax_chain = 2\n",
        worker.display().to_string(),
        marker.display().to_string()
    ))
    .unwrap();
    let script_path = dir.path().join("chain.sbatch");
    let s = j
        .render(&RenderOptions {
            script_path: Some(script_path.clone()),
            ..RenderOptions::default()
        })
        .unwrap();
    assert!(
        s.contains("#SBATCH --signal=B:USR1@60\n") && s.contains("#SBATCH --open-mode=append\n")
    );
    bash_accepts(&s);
    std::fs::write(&script_path, &s).unwrap();
    for (chain, resubmits) in [(0, true), (2, false)] {
        let _ = std::fs::remove_file(&log);
        let _ = std::fs::remove_file(&marker);
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = Command::new("bash")
            .arg(&script_path)
            .env("PATH", path)
            .env("SLURM_JOB_ID", "77")
            .env("EM_CHAIN", chain.to_string())
            .spawn()
            .unwrap();
        // Wait for the worker to start, then signal the batch shell as Slurm would.
        for _ in 0..100 {
            if marker.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-USR1", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        assert!(status.success(), "chain {chain}: {status}");
        let worker_out = std::fs::read_to_string(&marker).unwrap();
        assert!(worker_out.contains("checkpointed"), "{worker_out}");
        // From the second link on the command gets --resume.
        assert_eq!(worker_out.contains("--resume"), chain > 0, "{worker_out}");
        let submitted = std::fs::read_to_string(&log).unwrap_or_default();
        if resubmits {
            assert!(
                submitted.contains("--dependency=afterany:77")
                    && submitted.contains("--export=ALL,EM_CHAIN=1")
                    && submitted.contains(&script_path.display().to_string()),
                "{submitted}"
            );
        } else {
            assert!(
                submitted.is_empty(),
                "chain limit reached, yet: {submitted}"
            );
        }
    }
}

#[test]
fn sweeps_expand_to_named_jobs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("job.toml"),
        "name = \"lucchi\"\ncommand = [\"em\", \"train\", \"lucchi\", \"--out\", \"runs/{name}\"]\n",
    )
    .unwrap();
    let sweep_path = dir.path().join("sweep.toml");
    std::fs::write(
        &sweep_path,
        "job = \"job.toml\"\n[parameters]\n\"optimizer.lr\" = [1e-3, 3e-3]\nbatch_size = [2, 4, 8]\nmodel = [\"mednext_cpu\"]\n",
    )
    .unwrap();
    let (sweep, base) = SweepConfig::load(&sweep_path).unwrap();
    let points = sweep.expand(&base).unwrap();
    assert_eq!(points.len(), 6);
    let names: Vec<&str> = points.iter().map(|p| p.job.name.as_str()).collect();
    assert_eq!(names[0], "lucchi-batch_size=2-model=mednext_cpu-lr=0.001");
    assert_eq!(names[5], "lucchi-batch_size=8-model=mednext_cpu-lr=0.003");
    let first = &points[0].job.command;
    assert_eq!(
        first[first.len() - 6..],
        [
            "--set",
            "batch_size=2",
            "--set",
            "model=mednext_cpu",
            "--set",
            "optimizer.lr=0.001"
        ]
    );
    let s = points[0].job.render(&RenderOptions::default()).unwrap();
    assert!(
        s.contains("--out runs/lucchi-batch_size=2-model=mednext_cpu-lr=0.001"),
        "{s}"
    );
    bash_accepts(&s);

    // Zip pairs values; unequal lists, empty lists and duplicate names are refused.
    let mut zip = sweep.clone();
    zip.mode = em_slurm::SweepMode::Zip;
    assert!(zip
        .expand(&base)
        .unwrap_err()
        .to_string()
        .contains("equal length"));
    zip.parameters.remove("batch_size");
    zip.parameters.remove("model");
    assert_eq!(zip.expand(&base).unwrap().len(), 2);
    zip.parameters.insert("seed".into(), vec![]);
    assert!(zip
        .expand(&base)
        .unwrap_err()
        .to_string()
        .contains("empty list"));
    let mut dup = sweep.clone();
    dup.parameters.clear();
    dup.parameters
        .insert("note".into(), vec!["a b".into(), "a_b".into()]);
    assert!(dup
        .expand(&base)
        .unwrap_err()
        .to_string()
        .contains("both named"));
}

proptest! {
    /// Any environment value and command word survives quoting: bash reads back exactly
    /// the text of the config.
    #[test]
    fn quoting_round_trips_through_bash(word in "[ -~\t]{0,24}", value in "[ -~]{0,24}") {
        prop_assume!(!word.contains('{') && !word.contains('}'));
        let mut j = job("name = \"q\"\ncommand = [\"printf\", \"%s\\\\n\"]\nsetup = [\"printenv V\"]").unwrap();
        j.command.push(word.clone());
        j.environment.insert("V".into(), value.clone());
        let s = j.render(&RenderOptions::default()).unwrap();
        let out = Command::new("bash").arg("-c").arg(&s).output().unwrap();
        prop_assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        prop_assert_eq!(text, format!("{value}\n{word}\n"));
    }
}
