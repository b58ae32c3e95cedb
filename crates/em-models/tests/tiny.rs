//! A second architecture (width 4, uneven blocks, non-cubic input) from MONAI: the same
//! weights as MONAI-named safetensors and as an original-named PyTorch `.pth` both
//! reproduce MONAI's output (fixtures from `tools/make_mednext_tiny_fixture.py`).

use std::path::PathBuf;

use burn::tensor::{Tensor, TensorData};
use em_models::{config_from_checkpoint, load_mednext, Cpu, KeyNaming, MedNeXtConfig};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

fn npy(name: &str) -> (Vec<f32>, Vec<usize>) {
    let a = em_io::read(dir().join(name))
        .unwrap()
        .into_typed::<f32>()
        .unwrap();
    (a.iter().copied().collect(), a.shape().to_vec())
}

#[test]
fn both_namings_and_formats_reproduce_monai() {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir().join("tiny.json")).unwrap()).unwrap();
    let config: MedNeXtConfig = serde_json::from_value(meta["config"].clone()).unwrap();
    let (input, shape) = npy("input.npy");
    let (want, out_shape) = npy("output.npy");
    let device = Default::default();
    for (file, naming) in [
        ("tiny_monai.safetensors", KeyNaming::Monai),
        ("tiny_original.pth", KeyNaming::Original),
    ] {
        let path = dir().join(file);
        let read = config_from_checkpoint(&path).unwrap();
        assert_eq!(
            (read.width, read.ratios, read.blocks),
            (config.width, config.ratios, config.blocks),
            "{file}"
        );
        let mut model = config.init::<Cpu>(&device).unwrap();
        let report = load_mednext(&mut model, &path, true).unwrap();
        assert_eq!(report.naming, naming);
        assert_eq!(
            report.applied as u64,
            meta["tensors"].as_u64().unwrap(),
            "{file}"
        );
        let x = Tensor::<Cpu, 5>::from_data(TensorData::new(input.clone(), shape.clone()), &device);
        let y = model.forward(x).unwrap();
        assert_eq!(y.dims().to_vec(), out_shape);
        let got: Vec<f32> = y.into_data().to_vec().unwrap();
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-4, "{file}: max abs difference {err}");
    }
}
