//! A decode split across processes — blocks labelled one at a time in any order, their
//! records serialised, then stitched — gives the in-memory labels voxel for voxel; and bad
//! records or working volumes are refused with a clear error.

use em_core::{AnyArray, ChunkedVolumeExt, EdgeStorage, InMemoryVolume, NoProgress, Offset};
use em_decode::{
    block_count, decode, label_block, stitch_blocks, BlockRecord, CcOptions, DecodeError,
    DecodeOptions,
};
use ndarray::{Array3, Array4};
use proptest::prelude::*;

fn volume(aff: &Array4<f32>) -> InMemoryVolume {
    InMemoryVolume::new(AnyArray::from(aff.clone().into_dyn()), "affinities")
}

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
        let r = label_block(&input, &local, params, block, p).unwrap();
        assert_eq!(r.position(), p);
        files[p as usize] = Some(r.to_bytes());
    }
    for p in 0..n {
        if files[p as usize].is_none() {
            let r = label_block(&input, &local, params, block, p).unwrap();
            files[p as usize] = Some(r.to_bytes());
        }
    }
    let summary = stitch_blocks(
        &input,
        &local,
        &out,
        params,
        block,
        &mut |p| BlockRecord::from_bytes(files[p as usize].as_deref().unwrap()),
        &NoProgress,
    )
    .unwrap();
    let seg = out
        .read_all()
        .unwrap()
        .into_typed::<u32>()
        .unwrap()
        .into_dimensionality()
        .unwrap();
    (seg, summary)
}

fn random_volumes() -> impl Strategy<Value = Array4<f32>> {
    (1usize..7, 1usize..7, 1usize..8).prop_flat_map(|(z, y, x)| {
        prop::collection::vec(
            prop_oneof![4 => Just(0.1f32), 3 => Just(0.9f32), 1 => Just(f32::NAN)],
            6 * z * y * x,
        )
        .prop_map(move |v| Array4::from_shape_vec((6, z, y, x), v).unwrap())
    })
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
        let bytes = label_block(&input, &local, &DecodeOptions::default(), [2, 5, 3], 3)
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
    let e = label_block(&input, &coarse, &params, [2, 2, 2], 0).unwrap_err();
    assert!(e.to_string().contains("do not cover whole"), "{e}");
    // A working volume of the wrong type, a position past the end.
    let wide = labels::<u64>([4, 4, 4], [2, 2, 2], "wide");
    let e = label_block(&input, &wide, &params, [2, 2, 2], 0).unwrap_err();
    assert!(e.to_string().contains("uint32"), "{e}");
    let e = label_block(&input, &local, &params, [2, 2, 2], 8).unwrap_err();
    assert!(e.to_string().contains("8 blocks"), "{e}");

    // Records of another block layout or position.
    let records: Vec<BlockRecord> = (0..8)
        .map(|p| label_block(&input, &local, &params, [2, 2, 2], p).unwrap())
        .collect();
    let other = label_block(&input, &local, &params, [2, 2, 4], 0).unwrap();
    let e = stitch_blocks(
        &input,
        &local,
        &out,
        &params,
        [2, 2, 2],
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
        &input,
        &local,
        &out,
        &params,
        [2, 2, 2],
        &mut |p| Ok(records[(p as usize + 1) % 8].clone()),
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("block 1's"), "{e}");
    // A missing record stops the stitch with the caller's error.
    let e = stitch_blocks(
        &input,
        &local,
        &out,
        &params,
        [2, 2, 2],
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
        &input,
        &local,
        &out,
        &params,
        [2, 2, 2],
        &mut |p| Ok(records[p as usize].clone()),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(s.components, 1);
    assert_eq!(s.labelled_voxels, 64);
}
