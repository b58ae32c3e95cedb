//! Sliding-window inference: grids, blend maps, exact reconstruction through an identity
//! model, and flip TTA that un-flips affinity channels.

use em_core::{AnyArray, ChunkedVolumeExt, InMemoryVolume, NoProgress};
use em_models::{sliding_window, Blend, ModelError, OutputActivation, SlidingWindowConfig};
use ndarray::{Array4, Array5, Axis};

fn vol(a: Array4<f32>) -> InMemoryVolume {
    InMemoryVolume::new(AnyArray::from(a.into_dyn()), "v")
}

fn run(
    input: &Array4<f32>,
    k: usize,
    settings: &SlidingWindowConfig,
    predict: &mut dyn FnMut(Array5<f32>) -> Result<Array5<f32>, ModelError>,
) -> Array4<f32> {
    let (_, z, y, x) = input.dim();
    let out = vol(Array4::zeros((k, z, y, x)))
        .with_chunk_shape(&[k as u64, 4, 8, 8])
        .unwrap();
    sliding_window(&vol(input.clone()), &out, settings, predict, &NoProgress).unwrap();
    out.read_all()
        .unwrap()
        .into_typed::<f32>()
        .unwrap()
        .into_dimensionality()
        .unwrap()
}

#[test]
fn grid_starts_and_blend_maps() {
    assert_eq!(
        SlidingWindowConfig::starts(100, 32, 0.5),
        vec![0, 16, 32, 48, 64, 68]
    );
    assert_eq!(SlidingWindowConfig::starts(64, 32, 0.5), vec![0, 16, 32]);
    assert_eq!(SlidingWindowConfig::starts(20, 32, 0.5), vec![0]);
    assert_eq!(SlidingWindowConfig::starts(32, 32, 0.0), vec![0]);
    let mut s = SlidingWindowConfig::new([4, 4, 6]);
    s.blend = Blend::DistanceToFace;
    let w = s.weights();
    assert_eq!(w[[0, 2, 3]], 1.0);
    assert_eq!(w[[1, 1, 2]], 2.0);
    for blend in [Blend::Gaussian, Blend::Bump, Blend::Constant] {
        s.blend = blend;
        let w = s.weights();
        assert!(w.iter().all(|&v| v > 0.0 && v <= 1.0 + 1e-6), "{blend:?}");
        // Symmetric about the centre.
        assert!((w[[0, 0, 0]] - w[[3, 3, 5]]).abs() < 1e-6);
    }
}

/// MONAI 1.6.1 `compute_importance_map(patch, mode="gaussian", sigma_scale=0.125)`
/// (`tools/make_blend_reference.py`).
#[test]
fn the_gaussian_blend_map_is_monais() {
    let cases: [([usize; 3], [usize; 3], f64); 9] = [
        ([6, 8, 10], [0, 0, 0], 0.001_000_000_047_497_451_3),
        ([6, 8, 10], [3, 4, 5], 0.652_318_537_235_26),
        ([6, 8, 10], [3, 0, 5], 0.001_616_935_944_184_661),
        ([6, 8, 10], [3, 4, 0], 0.001_083_864_597_603_678_7),
        ([6, 8, 10], [1, 2, 3], 0.021_386_401_727_795_6),
        ([64, 64, 64], [0, 0, 0], 0.001_000_000_047_497_451_3),
        ([64, 64, 64], [32, 32, 32], 0.994_157_791_137_695_3),
        ([64, 64, 64], [20, 31, 31], 0.354_477_852_582_931_5),
        ([64, 64, 64], [31, 12, 40], 0.029_097_314_924_001_694),
    ];
    for (window, [z, y, x], want) in cases {
        let w = SlidingWindowConfig::new(window).weights();
        let got = f64::from(w[[z, y, x]]);
        assert!(
            (got - want).abs() <= 1e-5 * want,
            "{window:?} at {:?}: {got} vs MONAI {want}",
            [z, y, x]
        );
    }
    // MONAI floors 58.1% of a 64³ window at 1e-3.
    let w = SlidingWindowConfig::new([64; 3]).weights();
    let floored = w.iter().filter(|&&v| v <= 1.0001e-3).count() as f64 / w.len() as f64;
    assert!((floored - 0.581_085).abs() < 1e-4, "{floored}");
}

#[test]
fn identity_model_reconstructs_the_input_for_every_blend() {
    let input = Array4::from_shape_fn((2, 11, 19, 23), |(c, z, y, x)| {
        ((c * 7 + z * 3 + y * 5 + x) % 13) as f32 / 13.0
    });
    for blend in [
        Blend::Constant,
        Blend::Gaussian,
        Blend::Bump,
        Blend::DistanceToFace,
    ] {
        for window in [[4, 8, 8], [16, 32, 32]] {
            let settings = SlidingWindowConfig {
                window,
                overlap: [0.5, 0.25, 0.5],
                blend,
                activation: OutputActivation::None,
                flip_tta: false,
                rot90_tta: false,
                offsets: None,
                batch: 3,
            };
            let got = run(&input, 2, &settings, &mut |w| Ok(w));
            let err = got
                .iter()
                .zip(&input)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-5, "{blend:?} {window:?}: {err}");
        }
    }
}

/// A "model" that outputs +x affinities of a label image: 1 where a voxel and its +x
/// neighbour (inside the window) have the same label.
fn affinity_model(w: Array5<f32>) -> Result<Array5<f32>, ModelError> {
    let (n, _, z, y, x) = w.dim();
    Ok(Array5::from_shape_fn((n, 1, z, y, x), |(b, _, i, j, k)| {
        if k + 1 < x && w[[b, 0, i, j, k]] == w[[b, 0, i, j, k + 1]] {
            1.0
        } else {
            0.0
        }
    }))
}

#[test]
fn flip_tta_unflips_affinities() {
    let labels = Array4::from_shape_fn((1, 8, 8, 16), |(_, z, y, x)| {
        ((x / 3) * 10 + (y + z) / 5) as f32
    });
    let mut plain = SlidingWindowConfig::new([8, 8, 8]);
    plain.activation = OutputActivation::None;
    plain.blend = Blend::Constant;
    let want = run(&labels, 1, &plain, &mut affinity_model);
    let mut tta = plain.clone();
    tta.flip_tta = true;
    tta.offsets = Some(vec![[0, 0, 1]]);
    let got = run(&labels, 1, &tta, &mut affinity_model);
    let err = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-6, "un-flipped TTA differs by {err}");
    // Without the offsets the flipped passes land one voxel off.
    tta.offsets = None;
    let wrong = run(&labels, 1, &tta, &mut affinity_model);
    assert!(wrong.iter().zip(&want).any(|(a, b)| (a - b).abs() > 0.1));
    let _ = Axis(0);
}

/// Affinities of a label image for any offsets, from the window's raw buffer (so a window
/// whose layout does not match its logical order would be caught).
fn offsets_model(
    offsets: Vec<[i64; 3]>,
) -> impl FnMut(Array5<f32>) -> Result<Array5<f32>, ModelError> {
    move |w: Array5<f32>| {
        let (n, _, z, y, x) = w.dim();
        let raw = w
            .as_slice()
            .expect("windows arrive in standard layout")
            .to_vec();
        let at = |b: usize, i: usize, j: usize, k: usize| raw[((b * z + i) * y + j) * x + k];
        Ok(Array5::from_shape_fn(
            (n, offsets.len(), z, y, x),
            |(b, c, i, j, k)| {
                let [dz, dy, dx] = offsets[c];
                let (p, q, r) = (i as i64 + dz, j as i64 + dy, k as i64 + dx);
                let inside = (0..z as i64).contains(&p)
                    && (0..y as i64).contains(&q)
                    && (0..x as i64).contains(&r);
                f32::from(inside && at(b, i, j, k) == at(b, p as usize, q as usize, r as usize))
            },
        ))
    }
}

#[test]
fn rot90_and_flip_tta_return_each_affinity_to_its_channel() {
    let labels = Array4::from_shape_fn((1, 8, 12, 12), |(_, z, y, x)| {
        ((x / 3) * 10 + (y / 4) * 3 + z / 5) as f32
    });
    let offsets = vec![[0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 3], [0, 3, 0]];
    let mut plain = SlidingWindowConfig::new([8, 12, 12]);
    plain.activation = OutputActivation::None;
    plain.blend = Blend::Constant;
    let want = run(&labels, 5, &plain, &mut offsets_model(offsets.clone()));
    let mut tta = plain.clone();
    tta.rot90_tta = true;
    tta.flip_tta = true;
    tta.offsets = Some(offsets.clone());
    let got = run(&labels, 5, &tta, &mut offsets_model(offsets.clone()));
    let err = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-6, "16-fold TTA differs by {err}");
    // Treating the channels as plain images puts y affinities in x channels.
    tta.offsets = None;
    let wrong = run(&labels, 5, &tta, &mut offsets_model(offsets.clone()));
    assert!(wrong.iter().zip(&want).any(|(a, b)| (a - b).abs() > 0.1));

    // An offset without its transposed partner, or a non-square window, is refused.
    let input = vol(labels.clone());
    let out = vol(Array4::zeros((1, 8, 12, 12)));
    let mut lone = plain.clone();
    lone.rot90_tta = true;
    lone.offsets = Some(vec![[0, 0, 1]]);
    let e = sliding_window(
        &input,
        &out,
        &lone,
        &mut offsets_model(vec![[0, 0, 1]]),
        &NoProgress,
    )
    .unwrap_err();
    assert!(e.to_string().contains("[0, 1, 0]"), "{e}");
    let mut oblong = SlidingWindowConfig::new([8, 8, 12]);
    oblong.rot90_tta = true;
    let e = sliding_window(&input, &out, &oblong, &mut |w| Ok(w), &NoProgress).unwrap_err();
    assert!(e.to_string().contains("equal y and x"), "{e}");
}

#[test]
fn batched_windows_give_the_same_prediction() {
    // Several windows per row and z slab, with a last window snapped to the far edge.
    let labels = Array4::from_shape_fn((1, 13, 20, 22), |(_, z, y, x)| {
        ((x / 3) * 10 + (y / 4) * 3 + z / 5) as f32 + 0.25 * ((x * 7 + y * 3 + z) % 5) as f32
    });
    let offsets = vec![[0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 3], [0, 3, 0]];
    let mut base = SlidingWindowConfig::new([8, 8, 8]);
    base.offsets = Some(offsets.clone());
    for (flip, rot) in [(false, false), (true, false), (true, true)] {
        let mut settings = base.clone();
        (settings.flip_tta, settings.rot90_tta) = (flip, rot);
        let want = run(&labels, 5, &settings, &mut offsets_model(offsets.clone()));
        for batch in [2, 3, 8, 17, 64] {
            settings.batch = batch;
            let mut largest = 0;
            let mut model = offsets_model(offsets.clone());
            let mut counting = |w: Array5<f32>| {
                largest = largest.max(w.dim().0);
                model(w)
            };
            let got = run(&labels, 5, &settings, &mut counting);
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                err < 1e-6,
                "batch {batch}, flip {flip}, rot90 {rot}: differs by {err}"
            );
            assert!(
                largest <= batch && largest > 1,
                "batch {batch}: passes of {largest}"
            );
        }
    }
    let mut zero = base.clone();
    zero.batch = 0;
    let out = vol(Array4::zeros((5, 13, 20, 22)));
    let e = sliding_window(&vol(labels), &out, &zero, &mut |w| Ok(w), &NoProgress).unwrap_err();
    assert!(e.to_string().contains("batch"), "{e}");
}

#[test]
fn bad_settings_and_shapes_are_errors() {
    let input = vol(Array4::zeros((1, 4, 4, 4)));
    let out = vol(Array4::zeros((1, 4, 4, 5)));
    let s = SlidingWindowConfig::new([4, 4, 4]);
    assert!(sliding_window(&input, &out, &s, &mut |w| Ok(w), &NoProgress).is_err());
    let out = vol(Array4::zeros((1, 4, 4, 4)));
    let mut bad = s.clone();
    bad.overlap = [1.0, 0.5, 0.5];
    assert!(sliding_window(&input, &out, &bad, &mut |w| Ok(w), &NoProgress).is_err());
    let mut wrong_k = s;
    wrong_k.activation = OutputActivation::Sigmoid;
    let out2 = vol(Array4::zeros((2, 4, 4, 4)));
    let e = sliding_window(&input, &out2, &wrong_k, &mut |w| Ok(w), &NoProgress).unwrap_err();
    assert!(e.to_string().contains("(1, 2"), "{e}");
}
