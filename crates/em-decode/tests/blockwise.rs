//! Blockwise decoding gives the in-memory result voxel for voxel, for any block shape.

mod common;

use common::{random_volumes, read_volume, volume};
use em_core::{
    AnyArray, ChunkedVolume, ChunkedVolumeExt, EdgeStorage, InMemoryVolume, NoProgress, Offset,
};
use em_decode::strategies::affinity_cases;
use em_decode::{decode, decode_blockwise, CcOptions, DecodeOptions, SmallObjectMode};
use ndarray::{Array3, Array4};
use proptest::prelude::*;

fn blockwise(
    aff: &Array4<f32>,
    params: &DecodeOptions,
    block: [u64; 3],
) -> (Array3<u32>, em_decode::DecodeSummary) {
    let (_, z, y, x) = aff.dim();
    let [fz, fy, fx] = params.scale;
    let out = InMemoryVolume::new(
        AnyArray::from(Array3::<u32>::zeros((z * fz, y * fy, x * fx)).into_dyn()),
        "labels",
    );
    let summary = decode_blockwise(&volume(aff), &out, params, block, &NoProgress).unwrap();
    (read_volume(&out), summary)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn equals_the_in_memory_decode(
        aff in random_volumes(),
        block in (1u64..5, 1u64..5, 1u64..5),
        destination in any::<bool>(),
        long_range in any::<bool>(),
        min_size in 0u64..5,
        threads in 1usize..4,
    ) {
        let storage = if destination { EdgeStorage::Destination } else { EdgeStorage::Source };
        let mut cc = CcOptions { storage, threads: Some(threads), ..CcOptions::default() };
        let mut block = [block.0, block.1, block.2];
        if long_range {
            cc.channels = vec![0, 1, 2, 3, 5];
            cc.offsets = Some(vec![
                Offset([1, 0, 0]), Offset([0, 1, 0]), Offset([0, 0, 1]),
                Offset([2, 0, 0]), Offset([0, -1, 2]),
            ]);
            block = [block[0].max(2), block[1], block[2].max(2)];
        }
        let params = DecodeOptions { cc, min_size, ..DecodeOptions::default() };
        let (want, memory) = em_decode::decode::<f32, u32>(aff.view(), &params).unwrap();
        let (got, summary) = blockwise(&aff, &params, block);
        prop_assert_eq!(&got, &want);
        // One summary, whichever way the decode ran: removed objects and NaN values counted
        // alike (the in-memory decode once reported 0 removed).
        prop_assert_eq!(
            (summary.components, summary.removed, summary.labelled_voxels, summary.non_finite),
            (memory.components, memory.removed, memory.labelled_voxels, memory.non_finite)
        );
        prop_assert_eq!(summary.labelled_voxels, want.iter().filter(|&&v| v != 0).count() as u64);
        let nans = params.cc.channels.iter()
            .map(|&c| aff.index_axis(ndarray::Axis(0), c).iter().filter(|v| v.is_nan()).count() as u64)
            .sum::<u64>();
        prop_assert_eq!(memory.non_finite, nans);
        if min_size <= 1 {
            prop_assert_eq!(memory.removed, 0);
        }
    }

    #[test]
    fn generated_cases_decode_to_their_segmentation(
        case in affinity_cases([6, 7, 7]),
        block in (1u64..6, 1u64..6, 1u64..6),
        scale in (1usize..3, 1usize..3, 1usize..3),
    ) {
        let params = DecodeOptions { cc: case.params.clone(), scale: [scale.0, scale.1, scale.2], ..DecodeOptions::default() };
        let (got, _) = blockwise(&case.affinities, &params, [block.0, block.1, block.2]);
        let (want, _) = decode::<f32, u32>(case.affinities.view(), &params).unwrap();
        prop_assert_eq!(&got, &want);
        let expected = em_decode::upscale(case.expected.view(), params.scale).unwrap();
        prop_assert_eq!(&got, &expected);
    }
}

#[test]
fn u64_output_and_f16_u8_inputs_agree() {
    let case = em_decode::strategies::case(
        ndarray::Array3::from_shape_fn((5, 9, 11), |(z, y, x)| {
            ((z / 2) * 100 + (y / 3) * 10 + x / 4) as u32
        }),
        EdgeStorage::Source,
        0.5,
        7,
    );
    let params = DecodeOptions {
        cc: case.params.clone(),
        ..DecodeOptions::default()
    };
    let (want, _) = blockwise(&case.affinities, &params, [2, 4, 3]);
    // u8 affinities: v/255 > 0.5, same on/off pattern after scaling (NaN → 0 is off).
    let as_u8 = case.affinities.mapv(|v| {
        if v.is_nan() {
            0
        } else {
            (v * 255.0).round().clamp(0.0, 255.0) as u8
        }
    });
    let on_same = case
        .affinities
        .iter()
        .zip(&as_u8)
        .all(|(&f, &u)| (f > 0.5) == (f32::from(u) / 255.0 > 0.5));
    let out64 = InMemoryVolume::new(
        AnyArray::from(Array3::<u64>::zeros(want.dim()).into_dyn()),
        "labels",
    );
    let aff8 = InMemoryVolume::new(AnyArray::from(as_u8.into_dyn()), "affinities");
    decode_blockwise(&aff8, &out64, &params, [3, 3, 3], &NoProgress).unwrap();
    let got: Vec<u64> = out64
        .read_all()
        .unwrap()
        .into_typed::<u64>()
        .unwrap()
        .into_iter()
        .collect();
    if on_same {
        assert!(got
            .iter()
            .zip(want.iter())
            .all(|(a, b)| *a == u64::from(*b)));
    }
    let half = case.affinities.mapv(em_core::f16::from_f32);
    let aff16 = InMemoryVolume::new(AnyArray::from(half.into_dyn()), "affinities");
    let out = InMemoryVolume::new(
        AnyArray::from(Array3::<u32>::zeros(want.dim()).into_dyn()),
        "labels",
    );
    decode_blockwise(&aff16, &out, &params, [4, 2, 5], &NoProgress).unwrap();
    let got16: Array3<u32> = read_volume(&out);
    assert_eq!(got16, want);
}

#[test]
fn zarr_volumes_block_by_block() {
    let dir = tempfile::tempdir().unwrap();
    let case = em_decode::strategies::case(
        ndarray::Array3::from_shape_fn((12, 20, 24), |(z, y, x)| {
            ((z / 5) * 100 + (y / 6) * 10 + x / 7 + 1) as u32
        }),
        EdgeStorage::Destination,
        0.3,
        11,
    );
    let aff_path = dir.path().join("aff.zarr");
    let options = em_io::ZarrOptions {
        chunk_shape: Some(vec![3, 4, 8, 8]),
        ..Default::default()
    };
    em_io::write_zarr(
        &em_io::VolumePath::parse(&aff_path).unwrap(),
        &AnyArray::from(case.affinities.clone().into_dyn()),
        &options,
    )
    .unwrap();
    let aff = em_io::open(&aff_path).unwrap();
    let seg_path = em_io::VolumePath::parse(dir.path().join("seg.zarr/labels")).unwrap();
    let writer = em_io::ZarrWriter::create(
        &seg_path,
        &[12, 20, 24],
        em_core::DType::U32,
        &em_io::ZarrOptions {
            chunk_shape: Some(vec![4, 8, 8]),
            ..Default::default()
        },
    )
    .unwrap();
    let params = DecodeOptions {
        cc: case.params.clone(),
        min_size: 30,
        small_mode: SmallObjectMode::Background,
        ..DecodeOptions::default()
    };
    let summary = decode_blockwise(
        aff.as_ref(),
        writer.volume(),
        &params,
        [4, 8, 8],
        &NoProgress,
    )
    .unwrap();
    let written = writer.commit().unwrap();
    let got: Array3<u32> = read_volume(&written);
    let (want, k) = decode::<f32, u32>(case.affinities.view(), &params).unwrap();
    let k = k.components;
    assert_eq!(got, want);
    assert_eq!(summary.components, k);
    assert!(summary.removed > 0, "some objects are below 30 voxels");
    assert_eq!(summary.blocks, 3 * 3 * 3);
}

#[test]
fn bad_requests_are_clear_errors() {
    let aff = Array4::<f32>::zeros((3, 4, 4, 4));
    let vol = volume(&aff);
    let out = InMemoryVolume::new(
        AnyArray::from(Array3::<u32>::zeros((4, 4, 5)).into_dyn()),
        "labels",
    );
    let e = decode_blockwise(
        &vol,
        &out,
        &DecodeOptions::default(),
        [2, 2, 2],
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("needs [4, 4, 4]"), "{e}");
    let out = InMemoryVolume::new(
        AnyArray::from(Array3::<u32>::zeros((4, 4, 4)).into_dyn()),
        "labels",
    );
    let e = decode_blockwise(
        &vol,
        &out,
        &DecodeOptions::default(),
        [0, 2, 2],
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("block shape"), "{e}");
    let neighbor = DecodeOptions {
        min_size: 3,
        small_mode: SmallObjectMode::Background2d,
        ..DecodeOptions::default()
    };
    let e = decode_blockwise(&vol, &out, &neighbor, [2, 2, 2], &NoProgress).unwrap_err();
    assert!(e.to_string().contains("needs the whole volume"), "{e}");
    let long = DecodeOptions {
        cc: CcOptions {
            channels: vec![0, 1, 2],
            offsets: Some(vec![
                Offset([3, 0, 0]),
                Offset([0, 1, 0]),
                Offset([0, 0, 1]),
            ]),
            ..CcOptions::default()
        },
        ..DecodeOptions::default()
    };
    let e = decode_blockwise(&vol, &out, &long, [2, 2, 2], &NoProgress).unwrap_err();
    assert!(e.to_string().contains("reach [3, 1, 1]"), "{e}");
    let labels_in = InMemoryVolume::new(
        AnyArray::from(ndarray::Array4::<i32>::zeros((3, 4, 4, 4)).into_dyn()),
        "ints",
    );
    let e = decode_blockwise(
        &labels_in,
        &out,
        &DecodeOptions::default(),
        [2, 2, 2],
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("int32"), "{e}");
    let out_f = InMemoryVolume::new(
        AnyArray::from(Array3::<f32>::zeros((4, 4, 4)).into_dyn()),
        "floats",
    );
    let e = decode_blockwise(
        &vol,
        &out_f,
        &DecodeOptions::default(),
        [2, 2, 2],
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("uint32 or uint64"), "{e}");
    // Fewer channels than selected.
    let two = InMemoryVolume::new(
        AnyArray::from(Array4::<f32>::zeros((2, 4, 4, 4)).into_dyn()),
        "two",
    );
    let e = decode_blockwise(
        &two,
        &out,
        &DecodeOptions::default(),
        [2, 2, 2],
        &NoProgress,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("channel 2 selected but the affinities have 2"),
        "{e}"
    );
    let _ = out.shape();
}

#[test]
fn empty_volumes_decode_to_nothing() {
    let aff = Array4::<f32>::zeros((3, 0, 4, 4));
    let out = InMemoryVolume::new(
        AnyArray::from(Array3::<u32>::zeros((0, 4, 4)).into_dyn()),
        "labels",
    );
    let s = decode_blockwise(
        &volume(&aff),
        &out,
        &DecodeOptions::default(),
        [2, 2, 2],
        &NoProgress,
    )
    .unwrap();
    assert_eq!((s.components, s.voxels), (0, 0));
}
