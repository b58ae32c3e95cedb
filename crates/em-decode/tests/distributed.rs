//! A decode split across processes — blocks labelled one at a time in any order, their
//! records serialised, then stitched — gives the in-memory labels voxel for voxel; and bad
//! records or working volumes are refused with a clear error.

mod common;

use common::{random_volumes, read_volume, volume};
use em_core::{ChunkedVolume, ChunkedVolumeExt, EdgeStorage, InMemoryVolume, NoProgress, Offset};
use em_decode::{
    block_count, decode, label_block, stitch_blocks, BlockJob, BlockRecord, CcOptions, DecodeError,
    DecodeOptions,
};
use ndarray::{Array3, Array4};
use proptest::prelude::*;

fn labels<L: em_core::Label>(shape: [usize; 3], chunk: [u64; 3], name: &str) -> InMemoryVolume {
    InMemoryVolume::new(
        L::into_any(
            Array3::<L>::from_elem((shape[0], shape[1], shape[2]), L::BACKGROUND).into_dyn(),
        ),
        name,
    )
    .with_chunk_shape(&chunk)
    .unwrap()
}

fn job<'a>(
    affinities: &'a dyn ChunkedVolume,
    local: &'a dyn ChunkedVolume,
    options: &'a DecodeOptions,
    block_shape: [u64; 3],
) -> BlockJob<'a> {
    BlockJob {
        affinities,
        local,
        options,
        block_shape,
    }
}

/// Labels every block in `order` (serialising each record), then stitches.
fn split_decode(
    aff: &Array4<f32>,
    params: &DecodeOptions,
    block: [u64; 3],
    order: &[u64],
) -> (Array3<u32>, em_decode::DecodeSummary) {
    let (_, z, y, x) = aff.dim();
    let [fz, fy, fx] = params.scale;
    let shape = [z * fz, y * fy, x * fx];
    let chunk = [0, 1, 2].map(|a| block[a] * params.scale[a] as u64);
    let input = volume(aff);
    let local = labels::<u32>(shape, chunk, "local");
    let out = labels::<u32>(shape, chunk, "labels");
    let n = block_count(&input, block).unwrap();
    let mut files: Vec<Option<Vec<u8>>> = vec![None; n as usize];
    for &p in order.iter().filter(|&&p| p < n) {
        let r = label_block(&job(&input, &local, params, block), p).unwrap();
        assert_eq!(r.position(), p);
        files[p as usize] = Some(r.to_bytes());
    }
    for p in 0..n {
        if files[p as usize].is_none() {
            let r = label_block(&job(&input, &local, params, block), p).unwrap();
            files[p as usize] = Some(r.to_bytes());
        }
    }
    let summary = stitch_blocks(
        &job(&input, &local, params, block),
        &out,
        &mut |p| BlockRecord::from_bytes(files[p as usize].as_deref().unwrap()),
        &NoProgress,
    )
    .unwrap();
    (read_volume(&out), summary)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn equals_the_in_memory_decode_in_any_task_order(
        aff in random_volumes(),
        block in (1u64..5, 1u64..5, 1u64..5),
        destination in any::<bool>(),
        long_range in any::<bool>(),
        min_size in 0u64..5,
        scale in prop_oneof![Just([1usize, 1, 1]), Just([1usize, 2, 2])],
        order in Just((0u64..400).collect::<Vec<_>>()).prop_shuffle(),
    ) {
        let storage = if destination { EdgeStorage::Destination } else { EdgeStorage::Source };
        let mut cc = CcOptions { storage, threads: Some(1), ..CcOptions::default() };
        let mut block = [block.0, block.1, block.2];
        if long_range {
            cc.channels = vec![0, 1, 2, 3, 5];
            cc.offsets = Some(vec![
                Offset([1, 0, 0]), Offset([0, 1, 0]), Offset([0, 0, 1]),
                Offset([2, 0, 0]), Offset([0, -1, 2]),
            ]);
            block = [block[0].max(2), block[1], block[2].max(2)];
        }
        let params = DecodeOptions { cc, min_size, scale, ..DecodeOptions::default() };
        let (want, k) = decode::<f32, u32>(aff.view(), &params).unwrap();
        let k = k.components;
        let (got, summary) = split_decode(&aff, &params, block, &order);
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(summary.components, k);
    }

    #[test]
    fn damaged_records_are_refused_not_panicked_on(cut in 0usize..200, flip in 0usize..200) {
        let mut aff = Array4::<f32>::from_elem((3, 4, 5, 6), 0.9);
        aff[[0, 2, 1, 1]] = 0.1;
        let input = volume(&aff);
        let local = labels::<u32>([4, 5, 6], [2, 5, 3], "local");
        let bytes = label_block(&job(&input, &local, &DecodeOptions::default(), [2, 5, 3]), 3)
            .unwrap()
            .to_bytes();
        prop_assert_eq!(BlockRecord::from_bytes(&bytes).unwrap().position(), 3);
        let cut = cut.min(bytes.len() - 1);
        prop_assert!(BlockRecord::from_bytes(&bytes[..cut]).is_err());
        let mut flipped = bytes.clone();
        let i = flip % bytes.len();
        flipped[i] ^= 0xff;
        // Either refused, or still a record that the stitcher checks (no panic either way).
        let _ = BlockRecord::from_bytes(&flipped);
    }
}

#[test]
fn mismatched_records_and_volumes_get_clear_errors() {
    let aff = Array4::<f32>::from_elem((3, 4, 4, 4), 0.9);
    let input = volume(&aff);
    let params = DecodeOptions::default();
    let local = labels::<u32>([4, 4, 4], [2, 2, 2], "local");
    let out = labels::<u32>([4, 4, 4], [2, 2, 2], "labels");
    assert_eq!(block_count(&input, [2, 2, 2]).unwrap(), 8);

    // Chunks that straddle blocks: concurrent tasks would share them.
    let coarse = labels::<u32>([4, 4, 4], [4, 4, 4], "coarse");
    let e = label_block(&job(&input, &coarse, &params, [2, 2, 2]), 0).unwrap_err();
    assert!(e.to_string().contains("do not cover whole"), "{e}");
    // A working volume of the wrong type, a position past the end.
    let wide = labels::<u64>([4, 4, 4], [2, 2, 2], "wide");
    let e = label_block(&job(&input, &wide, &params, [2, 2, 2]), 0).unwrap_err();
    assert!(e.to_string().contains("uint32"), "{e}");
    let e = label_block(&job(&input, &local, &params, [2, 2, 2]), 8).unwrap_err();
    assert!(e.to_string().contains("8 blocks"), "{e}");

    // Records of another block layout or position.
    let records: Vec<BlockRecord> = (0..8)
        .map(|p| label_block(&job(&input, &local, &params, [2, 2, 2]), p).unwrap())
        .collect();
    let other = label_block(&job(&input, &local, &params, [2, 2, 4]), 0).unwrap();
    let e = stitch_blocks(
        &job(&input, &local, &params, [2, 2, 2]),
        &out,
        &mut |p| {
            Ok(if p == 0 {
                other.clone()
            } else {
                records[p as usize].clone()
            })
        },
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("label the blocks again"), "{e}");
    let e = stitch_blocks(
        &job(&input, &local, &params, [2, 2, 2]),
        &out,
        &mut |p| Ok(records[(p as usize + 1) % 8].clone()),
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("block 1's"), "{e}");
    // A missing record stops the stitch with the caller's error.
    let e = stitch_blocks(
        &job(&input, &local, &params, [2, 2, 2]),
        &out,
        &mut |p| {
            if p == 5 {
                Err(DecodeError::InvalidParameter {
                    name: "block record",
                    reason: "block 5 missing".into(),
                })
            } else {
                Ok(records[p as usize].clone())
            }
        },
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("block 5 missing"), "{e}");

    // Not a record at all.
    let e = BlockRecord::from_bytes(b"hello").unwrap_err();
    assert!(
        e.to_string().contains("truncated") || e.to_string().contains("magic"),
        "{e}"
    );

    // All present: the whole volume is one object.
    let s = stitch_blocks(
        &job(&input, &local, &params, [2, 2, 2]),
        &out,
        &mut |p| Ok(records[p as usize].clone()),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(s.components, 1);
    assert_eq!(s.labelled_voxels, 64);
}

/// The plan's tasks, run in any order and again after they finished, then its stitch, give
/// the in-memory labels; the records are files that a second run skips.
#[test]
fn a_plan_run_task_by_task_equals_the_in_memory_decode() {
    use em_decode::DistributedPlan;
    let aff = Array4::from_shape_fn((3, 6, 7, 5), |(c, z, y, x)| {
        (((c * 7 + z * 5 + y * 3 + x) * 2654435761usize) % 1000) as f32 / 1000.0
    });
    let dir = tempfile::tempdir().unwrap();
    let options = DecodeOptions {
        min_size: 2,
        ..DecodeOptions::default()
    };
    let block = [2u64, 3, 2];
    let input = volume(&aff);
    let plan = DistributedPlan {
        affinities: "aff".into(),
        out: "out".into(),
        local: "local".into(),
        records: dir.path().to_path_buf(),
        block,
        blocks: block_count(&input, block).unwrap(),
        tasks: 4,
        options: options.clone(),
        label_u64: false,
        waterz: None,
    };
    let local = labels::<u32>([6, 7, 5], block, "local");
    let out = labels::<u32>([6, 7, 5], block, "labels");
    assert_eq!(plan.missing().len() as u64, plan.blocks);
    assert_eq!(plan.tasks_with(&plan.missing()), vec![0, 1, 2, 3]);
    for task in [3, 1, 0, 2] {
        let r = plan.run_task(&input, &local, task).unwrap();
        assert_eq!(r.done, plan.blocks_of(task).count() as u64);
    }
    assert!(plan.missing().is_empty());
    let again = plan.run_task(&input, &local, 2).unwrap();
    assert_eq!(
        (again.done, again.already_done),
        (0, plan.blocks_of(2).count() as u64)
    );
    let e = plan.run_task(&input, &local, 4).unwrap_err();
    assert!(e.to_string().contains("tasks 0..4"), "{e}");

    let saved = dir.path().join("plan.json");
    std::fs::write(&saved, plan.to_json()).unwrap();
    let plan = DistributedPlan::load(&saved).unwrap();
    let summary = plan.stitch(&input, &local, &out, &NoProgress).unwrap();
    let (want, memory) = decode::<f32, u32>(aff.view(), &options).unwrap();
    let got = out.read_all().unwrap().into_typed::<u32>().unwrap();
    assert_eq!(got, want.into_dyn());
    assert_eq!(summary.components, memory.components);

    // A lost record stops the stitch, naming the file.
    std::fs::remove_file(plan.record_path(3)).unwrap();
    assert_eq!(plan.missing(), vec![3]);
    let e = plan.stitch(&input, &local, &out, &NoProgress).unwrap_err();
    assert!(e.to_string().contains("block-00000003.rec"), "{e}");
}
