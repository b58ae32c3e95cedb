//! The TOML format is the contract with users' preset files: every shipped preset survives
//! a round trip through serialization unchanged (settings and seeded output), defaults are
//! what an omitted key means, and unknown transform names are refused with the known ones.

use em_augment::transforms::{
    Affine, CopyPaste, Flip, Intensity, LostSection, MissingSection, Permute, Rot90,
};
use em_augment::{AugmentError, Pipeline, Sample, Transform};
use ndarray::{Array3, Array4};

/// Every `type` name, in declaration order.
const NAMES: [&str; 20] = [
    "flip",
    "rot90",
    "permute",
    "affine",
    "elastic",
    "intensity",
    "noise",
    "misalignment",
    "missing_section",
    "lost_section",
    "missing_parts",
    "motion_blur",
    "out_of_focus",
    "cut_noise",
    "cut_blur",
    "slice_drop",
    "slice_shift",
    "mixup",
    "copy_paste",
    "one_of",
];

/// The preset files on disk, not only those `PRESETS` embeds, so that a new file is
/// covered without being registered.
fn preset_files() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../presets/augment");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable preset");
            (p.display().to_string(), text)
        })
        .collect();
    files.sort();
    assert!(files.len() >= 7, "{files:?}");
    files
}

/// A small batch with an image that varies everywhere and labels with several objects
/// (copy-paste needs some), the size the largest preset kernels fit.
fn batch(anisotropic: bool) -> Vec<Sample> {
    let (z, y, x) = if anisotropic {
        (8, 64, 64)
    } else {
        (16, 16, 16)
    };
    (0..2)
        .map(|i| {
            let image = Array4::from_shape_fn((1, z, y, x), |(_, k, j, l)| {
                ((k * 31 + j * 17 + l * 7 + i * 5) % 101) as f32 / 100.0
            });
            let label = Array3::from_shape_fn((z, y, x), |(k, j, l)| {
                (1 + k / 4 * 16 + j / 8 * 4 + l / 8) as u32
            });
            Sample::new(image)
                .with_label(label.clone())
                .with_mask(label.mapv(|v| (v % 2) as u8))
        })
        .collect()
}

#[test]
fn every_preset_round_trips_through_toml() {
    for (path, text) in preset_files() {
        let parsed = Pipeline::from_toml(&text, &path).unwrap_or_else(|e| panic!("{e}"));
        let written = toml::to_string(&parsed).unwrap_or_else(|e| panic!("{path}: {e}"));
        let again = Pipeline::from_toml(&written, &path)
            .unwrap_or_else(|e| panic!("{path} as written:\n{written}\n{e}"));
        assert_eq!(again, parsed, "{path} as written:\n{written}");

        for seed in [0, 7, 12_345] {
            let (mut a, mut b) = (batch(parsed.anisotropic), batch(parsed.anisotropic));
            let ran_a = parsed.apply_batch(&mut a, seed).unwrap();
            let ran_b = again.apply_batch(&mut b, seed).unwrap();
            assert_eq!(ran_a, ran_b, "{path} seed {seed}");
            assert_eq!(a, b, "{path} seed {seed}");
        }
    }
}

#[test]
fn transform_names_are_the_toml_type() {
    let mut seen = std::collections::BTreeSet::new();
    for (path, text) in preset_files() {
        let p = Pipeline::from_toml(&text, &path).unwrap();
        let mut all: Vec<&Transform> = Vec::new();
        for step in &p.transforms {
            all.push(&step.transform);
            // The patterns `em augment` matches on, to list candidates and skip mixup.
            match &step.transform {
                Transform::OneOf { transforms } => {
                    all.extend(transforms.iter().map(|c| &c.transform));
                }
                Transform::Mixup { .. } => assert_eq!(step.transform.name(), "mixup"),
                _ => {}
            }
        }
        for t in all {
            let table: toml::Table = toml::from_str(&toml::to_string(t).unwrap()).unwrap();
            assert_eq!(table["type"].as_str(), Some(t.name()), "{path}: {t:?}");
            seen.insert(t.name());
        }
    }
    // The presets between them use every transform, so each name was checked.
    assert_eq!(seen, NAMES.into_iter().collect());
}

#[test]
fn omitted_settings_take_the_defaults() {
    let only_type = |name: &str| -> Transform {
        let p = Pipeline::from_toml(
            &format!("anisotropic = false\n[[transforms]]\ntype = \"{name}\"\n"),
            "defaults",
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        p.transforms[0].transform.clone()
    };
    assert_eq!(only_type("flip"), Transform::Flip(Flip::default()));
    assert_eq!(only_type("rot90"), Transform::Rot90(Rot90::default()));
    assert_eq!(only_type("permute"), Transform::Permute(Permute::default()));
    assert_eq!(only_type("affine"), Transform::Affine(Affine::default()));
    assert_eq!(
        only_type("intensity"),
        Transform::Intensity(Intensity::default())
    );
    assert_eq!(
        only_type("missing_section"),
        Transform::MissingSection(MissingSection::default())
    );
    assert_eq!(
        only_type("lost_section"),
        Transform::LostSection(LostSection::default())
    );
    assert_eq!(
        only_type("copy_paste"),
        Transform::CopyPaste(CopyPaste::default())
    );
    assert_eq!(
        Pipeline::from_toml("", "empty").unwrap(),
        Pipeline::default()
    );
    // Settings without a default stay required.
    let e = Pipeline::from_toml("[[transforms]]\ntype = \"slice_shift\"\n", "required")
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing field `max_shift`"), "{e}");
}

#[test]
fn unknown_transform_names_list_the_known_ones() {
    for text in [
        "[[transforms]]\ntype = \"blurr\"\n",
        "[[transforms]]\ntype = \"one_of\"\n[[transforms.transforms]]\ntype = \"blurr\"\n",
    ] {
        let err = Pipeline::from_toml(text, "typo").unwrap_err();
        assert!(matches!(err, AugmentError::Parse { .. }), "{err:?}");
        let e = err.to_string();
        let known = NAMES.map(|n| format!("`{n}`")).join(", ");
        assert!(e.contains("unknown variant `blurr`"), "{e}");
        assert!(e.contains(&format!("expected one of {known}")), "{e}");
    }
}

/// A pipeline built in code skips `load`'s checks: an empty `one_of` is an error when it
/// fires, not a panic (it once panicked on its random draw).
#[test]
fn pipelines_built_in_code_are_checked_when_applied() {
    let pipeline = Pipeline {
        transforms: vec![em_augment::Step {
            p: 1.0,
            transform: Transform::OneOf {
                transforms: Vec::new(),
            },
        }],
        ..Pipeline::default()
    };
    let mut sample = Sample::new(Array4::<f32>::zeros((1, 4, 8, 8)));
    let e = pipeline.apply_seeded(&mut sample, 1).unwrap_err();
    assert!(e.to_string().contains("no candidates"), "{e}");
}
