//! Pipelines and transforms: presets parse, shapes survive, labels stay aligned with the
//! image, seeds reproduce, probabilities are honoured, bad settings are refused early.

use em_augment::{AugmentError, Pipeline, Sample, PRESETS};
use ndarray::{Array3, Array4, Axis};

/// An image whose three channels are the z, y, x coordinates of each voxel, and a label
/// that numbers every voxel: after any geometric transform, the label says where a voxel
/// came from and the image must say (nearly) the same.
fn coordinate_sample(shape: [usize; 3]) -> Sample {
    let [z, y, x] = shape;
    let image = Array4::from_shape_fn((3, z, y, x), |(c, i, j, k)| [i, j, k][c] as f32);
    let label = Array3::from_shape_fn((z, y, x), |(i, j, k)| ((i * y + j) * x + k + 1) as u32);
    Sample::new(image)
        .with_label(label.clone())
        .with_mask(label.mapv(|v| (v % 2) as u8))
}

fn single(step: &str, anisotropic: bool) -> Pipeline {
    Pipeline::from_toml(
        &format!("anisotropic = {anisotropic}\n[[transforms]]\n{step}\np = 1.0\n"),
        "test",
    )
    .unwrap_or_else(|e| panic!("{step}: {e}"))
}

/// Largest gap between the coordinates the image carries and those the label points to.
fn misalignment(s: &Sample, shape: [usize; 3]) -> f32 {
    let [_, y, x] = shape;
    let mut worst = 0f32;
    for ((i, j, k), &l) in s.labels[0].indexed_iter() {
        let id = l as usize - 1;
        let from = [id / (y * x), id / x % y, id % x];
        for (c, &f) in from.iter().enumerate() {
            worst = worst.max((s.image[[c, i, j, k]] - f as f32).abs());
        }
        // The mask moved with the label.
        assert_eq!(s.masks[0][[i, j, k]], (l % 2) as u8);
    }
    worst
}

#[test]
fn geometric_transforms_move_labels_with_the_image() {
    let cube = [12, 12, 12];
    let slab = [6, 20, 20];
    let exact = [
        ("type = \"flip\"\naxes = [\"z\", \"x\"]", true, slab),
        ("type = \"rot90\"\nplane = [\"y\", \"x\"]", true, slab),
        ("type = \"rot90\"\nplane = [\"z\", \"y\"]", false, cube),
        (
            "type = \"rot90\"\nplane = [\"z\", \"x\"]",
            false,
            [6, 8, 10],
        ),
        ("type = \"permute\"", false, cube),
        (
            "type = \"slice_shift\"\naxes = [\"z\", \"y\", \"x\"]\nmax_shift = 4",
            false,
            cube,
        ),
    ];
    for (step, aniso, shape) in exact {
        let p = single(step, aniso);
        for seed in 0..12 {
            let mut s = coordinate_sample(shape);
            p.apply_seeded(&mut s, seed).unwrap();
            assert_eq!(misalignment(&s, shape), 0.0, "{step} seed {seed}");
        }
    }
    // Interpolating transforms: nearest for labels, linear for the image, so the two agree
    // to half a voxel per axis (coordinates are linear fields, reflection included).
    let interpolated = [
        (
            "type = \"affine\"\nrotation = [30.0, 0.0, 0.0]\nscale = 0.2\nshear = 0.2",
            true,
            slab,
        ),
        (
            "type = \"affine\"\nrotation = [180.0, 180.0, 180.0]\nscale = 0.2\nshear = 0.5",
            false,
            cube,
        ),
        (
            "type = \"elastic\"\nsigma = [2.0, 3.0]\nalpha = [50.0, 150.0]",
            true,
            slab,
        ),
        (
            "type = \"misalignment\"\ndisplacement = 4\nrotation = 10.0",
            true,
            slab,
        ),
    ];
    for (step, aniso, shape) in interpolated {
        let p = single(step, aniso);
        for seed in 0..8 {
            let mut s = coordinate_sample(shape);
            p.apply_seeded(&mut s, seed).unwrap();
            let err = misalignment(&s, shape);
            assert!(err <= 0.5 + 1e-3, "{step} seed {seed}: {err}");
        }
    }
}

#[test]
fn every_preset_parses_fits_and_keeps_shapes() {
    for (name, _) in PRESETS {
        let p = Pipeline::load(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!p.description.is_empty(), "{name}");
        let shape = if p.anisotropic {
            [16, 64, 64]
        } else {
            [32, 32, 32]
        };
        p.check(shape).unwrap_or_else(|e| panic!("{name}: {e}"));
        for seed in 0..6 {
            let mut batch: Vec<Sample> = (0..2).map(|_| coordinate_sample(shape)).collect();
            p.apply_batch(&mut batch, seed).unwrap();
            for s in &batch {
                assert_eq!(s.shape(), shape, "{name}");
                assert_eq!(s.image.dim().0, 3);
                assert!(s.image.iter().all(|v| v.is_finite()), "{name} seed {seed}");
                s.check().unwrap();
            }
        }
    }
}

#[test]
fn seeds_reproduce_and_differ() {
    let p = Pipeline::load("heavy").unwrap();
    let shape = [16, 64, 64];
    let run = |seed| {
        let mut s = coordinate_sample(shape);
        let ran = p.apply_seeded(&mut s, seed).unwrap();
        (s, ran)
    };
    assert_eq!(run(7), run(7));
    let distinct = (0..8)
        .map(run)
        .map(|(s, _)| s.image.iter().map(|v| v.to_bits() as u64).sum::<u64>())
        .collect::<std::collections::BTreeSet<_>>();
    assert!(distinct.len() >= 7, "{distinct:?}");
}

/// Within four standard deviations of the binomial proportion.
fn assert_rate(fired: usize, n: usize, p: f64, what: &str) {
    let rate = fired as f64 / n as f64;
    let sd = (p * (1.0 - p) / n as f64).sqrt();
    assert!(
        (rate - p).abs() <= 4.0 * sd + 1e-9,
        "{what}: fired {rate:.3} of the time, p = {p}"
    );
}

#[test]
fn probabilities_are_honoured() {
    let steps = [
        "type = \"flip\"\naxes = [\"x\"]",
        "type = \"rot90\"",
        "type = \"intensity\"\nmultiply = [0.9, 1.1]",
        "type = \"noise\"\nstd = [0.0, 0.1]",
        "type = \"missing_section\"\nn = 1",
        "type = \"lost_section\"\nn = 1",
        "type = \"missing_parts\"\nratio = [0.1, 0.3]",
        "type = \"motion_blur\"\nkernel = 3",
        "type = \"out_of_focus\"\nsigma = [0.5, 1.0]",
        "type = \"cut_noise\"\nratio = [0.2, 0.4]\nscale = [0.05, 0.15]",
        "type = \"cut_blur\"\nratio = [0.2, 0.4]\nfactor = [2.0, 4.0]",
        "type = \"misalignment\"\ndisplacement = 2",
        "type = \"slice_drop\"\naxes = [\"z\"]\np_slice = 0.1",
        "type = \"elastic\"\nsigma = [1.0, 2.0]\nalpha = [5.0, 10.0]",
    ];
    let n = 1500;
    for (i, step) in steps.iter().enumerate() {
        let p = [0.1, 0.3, 0.5, 0.8][i % 4];
        let pipe =
            Pipeline::from_toml(&format!("[[transforms]]\n{step}\np = {p}\n"), "rate").unwrap();
        let mut fired = 0;
        for seed in 0..n {
            let mut s = Sample::new(Array4::from_elem((1, 4, 8, 8), 0.5));
            fired += pipe.apply_seeded(&mut s, seed as u64).unwrap().len();
        }
        assert_rate(fired, n, p, step);
    }
    // one_of fires with its own p and picks candidates by weight.
    let pipe = Pipeline::from_toml(
        "[[transforms]]\ntype = \"one_of\"\np = 0.6\n[[transforms.transforms]]\ntype = \"flip\"\nweight = 3.0\n[[transforms.transforms]]\ntype = \"noise\"\nstd = [0.1, 0.1]\n",
        "one_of",
    )
    .unwrap();
    let (mut flips, mut noises) = (0, 0);
    let n = 4000;
    for seed in 0..n {
        let mut s = Sample::new(Array4::from_elem((1, 2, 4, 4), 0.5));
        for name in pipe.apply_seeded(&mut s, seed as u64).unwrap() {
            match name {
                "flip" => flips += 1,
                "noise" => noises += 1,
                other => panic!("{other}"),
            }
        }
    }
    assert_rate(flips + noises, n, 0.6, "one_of");
    assert_rate(flips, n, 0.45, "one_of candidate weight 3 of 4");
}

#[test]
fn defects_mark_the_loss_mask_and_leave_labels() {
    let p = single(
        "type = \"missing_section\"\nn = 2\nfill = 0.0\nmask = true",
        true,
    );
    let mut s = Sample::new(Array4::from_elem((1, 8, 16, 16), 0.5))
        .with_label(Array3::from_elem((8, 16, 16), 3));
    p.apply_seeded(&mut s, 1).unwrap();
    let valid = s.valid.as_ref().expect("missing sections are masked");
    let dropped: Vec<usize> = (0..8)
        .filter(|&z| s.image.index_axis(Axis(1), z).iter().all(|&v| v == 0.0))
        .collect();
    assert_eq!(dropped.len(), 2);
    for z in 0..8 {
        let off = valid.index_axis(Axis(0), z).iter().all(|&v| v == 0);
        assert_eq!(off, dropped.contains(&z), "section {z}");
    }
    assert!(s.labels[0].iter().all(|&l| l == 3));
    // Without `mask` the loss mask is never created.
    let p = single("type = \"missing_section\"\nn = 2", true);
    let mut s = Sample::new(Array4::from_elem((1, 8, 16, 16), 0.5));
    p.apply_seeded(&mut s, 1).unwrap();
    assert!(s.valid.is_none());
}

#[test]
fn copy_paste_adds_an_object_and_mixup_blends_images() {
    let p = single("type = \"copy_paste\"", true);
    let mut label = Array3::<u32>::zeros((4, 32, 32));
    label.slice_mut(ndarray::s![1..3, 2..8, 2..8]).fill(5);
    let image = label.mapv(|v| if v == 5 { 0.9 } else { 0.1 });
    let mut s = Sample::new(image.insert_axis(Axis(0))).with_label(label);
    p.apply_seeded(&mut s, 3).unwrap();
    let pasted = s.labels[0].iter().filter(|&&l| l == 6).count();
    assert_eq!(pasted, 2 * 6 * 6, "the copy has the object's size");
    for ((z, y, x), &l) in s.labels[0].indexed_iter() {
        if l == 6 {
            assert_eq!(s.image[[0, z, y, x]], 0.9);
        }
    }

    let p = Pipeline::from_toml(
        "[[transforms]]\ntype = \"mixup\"\nalpha = [0.8, 0.8]\np = 1.0\n",
        "mixup",
    )
    .unwrap();
    let mut batch = vec![
        Sample::new(Array4::from_elem((1, 2, 4, 4), 1.0)),
        Sample::new(Array4::from_elem((1, 2, 4, 4), 0.0)),
    ];
    let ran = p.apply_batch(&mut batch, 0).unwrap();
    assert_eq!(ran, vec![vec!["mixup"], vec!["mixup"]]);
    assert!(batch[0].image.iter().all(|&v| (v - 0.8).abs() < 1e-6));
    assert!(batch[1].image.iter().all(|&v| (v - 0.2).abs() < 1e-6));
}

#[test]
fn bad_settings_are_refused_when_loaded() {
    let err = |toml: &str| Pipeline::from_toml(toml, "bad").unwrap_err().to_string();
    let e = err("[[transforms]]\ntype = \"flip\"\np = 1.5\n");
    assert!(e.contains("p = 1.5") && e.contains("[0, 1]"), "{e}");
    let e = err("[[transforms]]\ntype = \"blurr\"\n");
    assert!(e.contains("blurr") && e.contains("motion_blur"), "{e}");
    let e = err("[[transforms]]\ntype = \"noise\"\nstd = [0.0, 0.1]\nsdt = 1\n");
    assert!(e.contains("sdt"), "{e}");
    let e = err("[[transforms]]\ntype = \"noise\"\nstd = [0.2, 0.1]\n");
    assert!(e.contains("lo ≤ hi"), "{e}");
    let e = err("[[transforms]]\ntype = \"rot90\"\nplane = [\"z\", \"x\"]\n");
    assert!(e.contains("anisotropic"), "{e}");
    let e = err("[[transforms]]\ntype = \"permute\"\n");
    assert!(e.contains("anisotropic"), "{e}");
    let e = err(
        "[[transforms]]\ntype = \"one_of\"\n[[transforms.transforms]]\ntype = \"flip\"\np = 0.5\n",
    );
    assert!(e.contains("weight"), "{e}");
    let e = err("flavour = 1\n");
    assert!(e.contains("flavour"), "{e}");
    assert!(matches!(
        Pipeline::load("realistik"),
        Err(AugmentError::UnknownPreset { .. })
    ));
    let e = Pipeline::load("realistik").unwrap_err().to_string();
    assert!(e.contains("realistic") && e.contains("banis"), "{e}");

    // Patch-dependent checks: kernels larger than the section, sections on 2-D patches.
    let p = single("type = \"motion_blur\"\nkernel = 31", true);
    let e = p.check([8, 16, 16]).unwrap_err().to_string();
    assert!(e.contains("kernel 31") && e.contains("16 × 16"), "{e}");
    let p = single("type = \"missing_section\"", true);
    let e = p.check([1, 64, 64]).unwrap_err().to_string();
    assert!(e.contains("2-D"), "{e}");
    // A sample that does not fit is an error at apply time, never a panic.
    let mut s = Sample::new(Array4::zeros((1, 1, 64, 64)));
    assert!(p.apply_seeded(&mut s, 0).is_err());
    let mut s = Sample::new(Array4::zeros((1, 4, 8, 8))).with_label(Array3::zeros((4, 8, 9)));
    let e = Pipeline::load("light")
        .unwrap()
        .apply_seeded(&mut s, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("label 0") && e.contains("[4, 8, 9]"), "{e}");
    let p = single("type = \"copy_paste\"", true);
    let mut s = Sample::new(Array4::zeros((1, 4, 8, 8)));
    assert!(p.apply_seeded(&mut s, 0).is_err());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    /// Flips, quarter turns and permutations only rearrange voxels: every value survives
    /// exactly once, in the image and in the labels.
    #[test]
    fn axis_transforms_rearrange_without_loss(
        z in 1usize..7, y in 1usize..9, x in 1usize..9, seed in 0u64..1000, iso in proptest::bool::ANY,
    ) {
        let shape = if iso { [z, z, z] } else { [z, y, x] };
        let steps = if iso {
            "anisotropic = false\n[[transforms]]\ntype = \"permute\"\np = 0.7\n[[transforms]]\ntype = \"rot90\"\nplane = [\"z\", \"y\"]\np = 0.7\n[[transforms]]\ntype = \"flip\"\naxes = [\"x\"]\np = 0.5\n[[transforms]]\ntype = \"rot90\"\nplane = [\"x\", \"z\"]\np = 0.7\n"
        } else {
            "[[transforms]]\ntype = \"flip\"\naxes = [\"z\", \"y\"]\np = 0.5\n[[transforms]]\ntype = \"rot90\"\np = 0.7\n[[transforms]]\ntype = \"flip\"\naxes = [\"x\"]\np = 0.5\n"
        };
        let p = Pipeline::from_toml(steps, "prop").unwrap();
        let mut s = coordinate_sample(shape);
        p.apply_seeded(&mut s, seed).unwrap();
        let mut ids: Vec<u32> = s.labels[0].iter().copied().collect();
        ids.sort_unstable();
        let n = shape.iter().product::<usize>() as u32;
        proptest::prop_assert_eq!(ids, (1..=n).collect::<Vec<_>>());
        proptest::prop_assert_eq!(misalignment(&s, shape), 0.0);
    }
}
