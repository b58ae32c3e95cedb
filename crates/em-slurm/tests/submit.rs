//! Submitting into a directory (dry runs need no Slurm) and naming jobs by manifest or id.

use std::collections::BTreeMap;
use std::path::Path;

use em_slurm::{job_ids, submit_to_dir, JobConfig, Manifest, ManifestEntry, SubmitOptions};

#[test]
fn a_dry_run_writes_the_script_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("job.toml");
    std::fs::write(&source, "name = \"j\"\ncommand = [\"em\", \"plan\"]\n").unwrap();
    let job = JobConfig::load(&source).unwrap();
    let opts = SubmitOptions {
        source: source.clone(),
        dir: dir.path().join("jobs"),
        dry_run: true,
        ..SubmitOptions::default()
    };
    let entry = submit_to_dir(&job, &opts).unwrap();
    assert!(entry.job_id.is_empty());
    assert!(entry.script.ends_with("jobs/j.sbatch"));
    let script = std::fs::read_to_string(&entry.script).unwrap();
    assert!(script.starts_with("#!"), "{script}");
    assert!(!opts.dir.join("manifest.json").exists());
    // The job config itself is never the script.
    let own = SubmitOptions {
        source: dir.path().join("j.sbatch"),
        dir: dir.path().to_path_buf(),
        dry_run: true,
        ..SubmitOptions::default()
    };
    std::fs::write(&own.source, "keep").unwrap();
    assert!(submit_to_dir(&job, &own).is_err());
    assert_eq!(std::fs::read_to_string(&own.source).unwrap(), "keep");
}

#[test]
fn jobs_are_named_by_manifest_or_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.json");
    Manifest {
        jobs: vec![ManifestEntry {
            name: "train".into(),
            job_id: "41".into(),
            script: "train.sbatch".into(),
            parameters: BTreeMap::new(),
        }],
    }
    .save(&path)
    .unwrap();
    let what = [path.display().to_string(), "7".into(), "8_2".into()];
    let (ids, names) = job_ids(&what).unwrap();
    assert_eq!(ids, vec!["41", "7", "8_2"]);
    assert_eq!(names.get("41").map(String::as_str), Some("train"));
    let e = job_ids(&["seven".into()]).unwrap_err();
    assert!(
        e.to_string()
            .contains("neither a manifest file nor a job id"),
        "{e}"
    );
    let e = job_ids(&[Path::new("/no/such.json").display().to_string()]).unwrap_err();
    assert!(e.to_string().contains("lists no jobs"), "{e}");
}
