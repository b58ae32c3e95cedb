//! Data configuration: sources from TOML, Lucchi's file layouts, NISB zarr, synthetic.

use std::path::Path;

use em_augment::rng_from_seed;
use em_core::{AnyArray, ChunkedVolume};
use em_data::{DataConfig, SourceConfig, Split};
use ndarray::Array3;

fn opener(p: &Path) -> Result<Box<dyn ChunkedVolume>, String> {
    em_io::open(p).map_err(|e| e.to_string())
}

#[test]
fn a_toml_mix_of_synthetic_and_lucchi_files_builds_and_samples() {
    let dir = tempfile::tempdir().unwrap();
    let img = Array3::<u8>::from_shape_fn((12, 40, 48), |(z, y, x)| ((z + y + x) % 200) as u8);
    let gt = Array3::<u8>::from_shape_fn(
        (12, 40, 48),
        |(_, y, x)| if y < 20 && x < 24 { 255 } else { 0 },
    );
    em_io::write(
        dir.path().join("training.tif"),
        &AnyArray::from(img.into_dyn()),
    )
    .unwrap();
    em_io::write(
        dir.path().join("training_groundtruth.tif"),
        &AnyArray::from(gt.into_dyn()),
    )
    .unwrap();
    let text = format!(
        r#"
mix = "weighted"
length = {{ fixed = 50 }}
patch = {{ patch = [8, 16, 16], context = [1, 2, 2] }}

[[sources]]
weight = 0.25
source = {{ kind = "synthetic", synth = "mito", shape = [12, 48, 48], seed = 3 }}

[[sources]]
weight = 0.75
name = "lucchi"
source = {{ kind = "lucchi", dir = "{}", split = "train" }}
"#,
        dir.path().display()
    );
    let cfg: DataConfig = toml::from_str(&text).unwrap();
    let ds = cfg.build(&opener).unwrap();
    assert_eq!(ds.len(), 50);
    assert!(
        ds.name().contains("lucchi") && ds.name().contains("synthetic-mito"),
        "{}",
        ds.name()
    );
    let mut rng = rng_from_seed(0);
    for i in 0..20 {
        let s = ds.sample(i, &mut rng).unwrap();
        assert_eq!(s.image.dim(), (1, 10, 20, 20));
        // Labels are 0/1 whichever source they came from (Lucchi's 255 binarised).
        assert!(s.labels[0].iter().all(|&l| l <= 1));
        assert!(s.image.iter().all(|&v| (0.0..=1.0).contains(&v)));
    }

    // Missing files name what was looked for; unknown keys are refused.
    let missing = SourceConfig::Lucchi {
        dir: dir.path().into(),
        split: Split::Test,
    };
    let e = missing.open(&opener).err().unwrap().to_string();
    assert!(
        e.contains("testing.tif") && e.contains("testing.h5/main"),
        "{e}"
    );
    let bad = text.replace("weight = 0.25", "wieght = 0.25");
    assert!(toml::from_str::<DataConfig>(&bad)
        .unwrap_err()
        .to_string()
        .contains("wieght"));
    let zero = text.replace("weight = 0.25", "weight = 0.0");
    let e = toml::from_str::<DataConfig>(&zero)
        .unwrap()
        .build(&opener)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("positive"), "{e}");
}

#[test]
fn nisb_layout_opens_img_and_seg() {
    let dir = tempfile::tempdir().unwrap();
    let z = dir.path().join("data.zarr");
    let img = Array3::<u8>::from_elem((8, 16, 16), 100);
    let seg = Array3::<u32>::from_shape_fn((8, 16, 16), |(_, y, _)| 1 + (y / 8) as u32);
    em_io::write(z.join("img"), &AnyArray::from(img.into_dyn())).unwrap();
    em_io::write(z.join("seg"), &AnyArray::from(seg.into_dyn())).unwrap();
    let v = SourceConfig::Nisb { path: z }.open(&opener).unwrap();
    assert_eq!(v.image.shape(), &[8, 16, 16]);
    assert_eq!(v.labels.unwrap().shape(), &[8, 16, 16]);
}
