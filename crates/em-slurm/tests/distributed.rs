//! A distributed decode run entirely through the library, as the array tasks and the
//! final job would run it, without Slurm: the segmentation equals the in-memory decode.

use std::path::Path;

use em_core::{AnyArray, NoProgress};
use em_decode::{DecodeOptions, TaskReport};
use em_slurm::{
    decode_stitch, decode_task, prepare_decode, DecodeJobOptions, DecodeJobPlan, JobConfig,
    StitchOutcome,
};
use ndarray::Array4;

fn affinities() -> Array4<f32> {
    Array4::from_shape_fn((3, 8, 12, 10), |(c, z, y, x)| {
        let h = (c * 131 + z * 31 + y * 7 + x) as u64;
        ((h.wrapping_mul(2654435761) >> 8) % 1000) as f32 / 1000.0
    })
}

fn options(dir: &Path) -> DecodeJobOptions {
    DecodeJobOptions {
        affinities: dir.join("aff.npy"),
        out: dir.join("seg.zarr"),
        dir: dir.join("work"),
        block: [4, 6, 4],
        tasks: 3,
        decode: DecodeOptions {
            min_size: 3,
            ..DecodeOptions::default()
        },
        waterz: None,
        label_u64: false,
        job: JobConfig::from_toml("name = \"decode\"\ncommand = [\"em\"]", Path::new("-")).unwrap(),
        max_running: Some(2),
        retries: 2,
        overwrite: false,
        em: None,
    }
}

#[test]
fn tasks_then_stitch_equal_the_in_memory_decode() {
    let dir = tempfile::tempdir().unwrap();
    let aff = affinities();
    em_io::write(
        dir.path().join("aff.npy"),
        &AnyArray::from(aff.clone().into_dyn()),
    )
    .unwrap();
    let opts = options(dir.path());
    let prepared = prepare_decode(&opts, None).unwrap();
    assert_eq!((prepared.blocks, prepared.tasks), (2 * 2 * 3, 3));
    let script = std::fs::read_to_string(&prepared.task_script).unwrap();
    assert!(script.contains("#SBATCH --array=0-2%2"), "{script}");
    assert!(script.contains("decode-task"), "{script}");
    let plan = DecodeJobPlan::load(&prepared.plan).unwrap();
    // Block 0 was labelled while preparing; the others are missing.
    assert_eq!(plan.decode.missing(), (1..12).collect::<Vec<_>>());

    // Too early: the final job names the tasks whose blocks are missing.
    let e = decode_stitch(&prepared.plan, true, 0, &NoProgress).unwrap_err();
    assert!(
        e.to_string()
            .contains("11 of 12 blocks are not labelled (tasks 0,1,2)"),
        "{e}"
    );
    let mut reports: Vec<TaskReport> = [2, 0, 1]
        .iter()
        .map(|&t| decode_task(&prepared.plan, t).unwrap())
        .collect();
    reports.sort_by_key(|r| r.task);
    assert_eq!(reports.iter().map(|r| r.done).sum::<u64>(), 11);
    assert_eq!(reports[0].already_done, 1);
    assert!(decode_task(&prepared.plan, 3).is_err());

    let outcome = decode_stitch(&prepared.plan, true, 0, &NoProgress).unwrap();
    let StitchOutcome::Finished { summary, .. } = outcome else {
        panic!("expected the segmentation, got {outcome:?}");
    };
    let (want, memory) = em_decode::decode::<f32, u32>(aff.view(), &opts.decode).unwrap();
    assert_eq!(summary.components, memory.components);
    let got = em_io::read(&opts.out).unwrap();
    assert_eq!(got, AnyArray::from(want.into_dyn()));
}

#[test]
fn bad_requests_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    em_io::write(
        dir.path().join("aff.npy"),
        &AnyArray::from(affinities().into_dyn()),
    )
    .unwrap();
    // Not zarr.
    let mut opts = options(dir.path());
    opts.out = dir.path().join("seg.npy");
    let e = prepare_decode(&opts, None).unwrap_err();
    assert!(
        e.to_string().contains("distributed decoding writes zarr"),
        "{e}"
    );
    // A work directory holding someone else's files.
    let mut opts = options(dir.path());
    std::fs::create_dir_all(&opts.dir).unwrap();
    std::fs::write(opts.dir.join("notes.txt"), "keep").unwrap();
    let e = prepare_decode(&opts, None).unwrap_err();
    assert!(e.to_string().contains("not a distributed decode"), "{e}");
    assert_eq!(
        std::fs::read_to_string(opts.dir.join("notes.txt")).unwrap(),
        "keep"
    );
    // The output over the input.
    opts.dir = dir.path().join("work2");
    opts.out = dir.path().join("aff.npy");
    assert!(prepare_decode(&opts, None).is_err());
    // A block too large for memory.
    let mut opts = options(dir.path());
    opts.dir = dir.path().join("work3");
    opts.block = [1 << 20, 1 << 20, 1 << 20];
    let e = prepare_decode(&opts, None).unwrap_err();
    assert!(e.to_string().contains("needs about"), "{e}");
    assert!(!opts.out.exists() && !opts.dir.join("plan.json").exists());
}

#[test]
fn waterz_tasks_then_stitch_equal_the_blockwise_agglomeration() {
    use em_decode::waterz::{agglomerate_blockwise, watershed_fragments, WaterzOptions};
    use em_decode::WaterzPlan;

    let dir = tempfile::tempdir().unwrap();
    let aff = affinities();
    em_io::write(
        dir.path().join("aff.npy"),
        &AnyArray::from(aff.clone().into_dyn()),
    )
    .unwrap();
    let waterz = WaterzOptions {
        thresholds: vec![0.6, 0.3],
        ..WaterzOptions::default()
    };
    // Once from the blockwise watershed, once from given (whole-volume) fragments.
    let frags = watershed_fragments(aff.view(), &waterz).unwrap();
    em_io::write(
        dir.path().join("frags.npy"),
        &AnyArray::from(frags.into_dyn()),
    )
    .unwrap();
    for given in [false, true] {
        let mut opts = options(dir.path());
        opts.dir = dir.path().join(format!("work-{given}"));
        opts.out = dir.path().join(format!("seg-{given}-{{threshold}}.zarr"));
        opts.waterz = Some(WaterzPlan {
            options: waterz.clone(),
            halo: 2,
            fragments: given.then(|| dir.path().join("frags.npy")),
            merge_history: Some(dir.path().join(format!("history-{given}.json"))),
            region_graph: None,
        });
        let prepared = prepare_decode(&opts, None).unwrap();
        for t in 0..prepared.tasks {
            decode_task(&prepared.plan, t).unwrap();
        }
        let outcome = decode_stitch(&prepared.plan, true, 0, &NoProgress).unwrap();
        let StitchOutcome::FinishedWaterz { outputs, summary } = outcome else {
            panic!("expected the segmentations, got {outcome:?}");
        };
        assert_eq!(outputs.len(), 2);
        assert_eq!(summary.thresholds.len(), 2);
        let history: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join(format!("history-{given}.json"))).unwrap(),
        )
        .unwrap();
        // The same blocks in one process.
        let input = em_core::InMemoryVolume::new(AnyArray::from(aff.clone().into_dyn()), "aff");
        let frag_volume = em_core::InMemoryVolume::new(
            em_io::read(dir.path().join("frags.npy")).unwrap(),
            "frags",
        );
        let fragments: Option<&dyn em_core::ChunkedVolume> =
            given.then_some(&frag_volume as &dyn em_core::ChunkedVolume);
        let mut i = 0;
        agglomerate_blockwise(
            &input,
            fragments,
            &waterz,
            opts.block,
            2,
            &NoProgress,
            |t| {
                let out = em_core::InMemoryVolume::new(
                    AnyArray::from(ndarray::ArrayD::<u32>::zeros(vec![8, 12, 10])),
                    "out",
                );
                t.write::<u32>(&out)?;
                assert_eq!(
                    em_io::read(&outputs[i]).unwrap(),
                    out.into_inner(),
                    "{given} {i}"
                );
                assert_eq!(
                    history[i]["merges"].as_array().unwrap().len(),
                    t.merges.len(),
                    "{given} {i}"
                );
                i += 1;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(i, 2);
    }
}
