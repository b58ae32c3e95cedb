//! MedNeXt against the reference: parameter counts of every size/kernel/head combination in
//! both conventions, and MONAI's forward pass on the shared 32³ fixture.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use em_models::{load_mednext, Cpu, KeyNaming, MedNeXtConfig, MedNeXtSize, Variant};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// One f32 tensor of a safetensors file, read from its header offsets.
fn read_tensor(path: &Path, name: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    let t = &header[name];
    assert_eq!(t["dtype"], "F32");
    let shape = t["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let off = t["data_offsets"].as_array().unwrap();
    let (a, b) = (
        8 + len + off[0].as_u64().unwrap() as usize,
        8 + len + off[1].as_u64().unwrap() as usize,
    );
    let data = bytes[a..b]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (data, shape)
}

#[test]
fn parameter_counts_match_monai_and_the_original() {
    let counts: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("mednext_counts.json")).unwrap())
            .unwrap();
    let device = Default::default();
    let mut checked = 0;
    for row in counts["monai"].as_array().unwrap() {
        let size: MedNeXtSize = row["variant"].as_str().unwrap().parse().unwrap();
        let k = row["k"].as_u64().unwrap() as usize;
        let out = row["out"].as_u64().unwrap() as usize;
        let ds = row["ds"].as_bool().unwrap();
        for (variant, key) in [
            (Variant::Monai, "params"),
            (Variant::Original, "orig_params_without_dummy"),
        ] {
            let config = MedNeXtConfig::size(size, k, 1, out)
                .with_deep_supervision(ds)
                .with_variant(variant);
            let model = config.init::<Cpu>(&device).unwrap();
            assert_eq!(
                model.num_params() as u64,
                row[key].as_u64().unwrap(),
                "{size:?} k{k} out{out} ds{ds} {variant:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 40, "{checked}");
}

#[test]
fn monai_fixture_forward_within_1e4() {
    let path = fixtures().join("mednext_s_k3_32.safetensors");
    let device = Default::default();
    let mut model = MedNeXtConfig::size(MedNeXtSize::S, 3, 1, 3)
        .init::<Cpu>(&device)
        .unwrap();
    let report = load_mednext(&mut model, &path, false).unwrap();
    assert_eq!(report.naming, KeyNaming::Monai);
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let mut unused = report.unused.clone();
    unused.sort();
    assert_eq!(unused, vec!["test.input", "test.output"]);
    // Strict loading refuses the extra tensors and names them.
    let mut again = MedNeXtConfig::size(MedNeXtSize::S, 3, 1, 3)
        .init::<Cpu>(&device)
        .unwrap();
    let e = load_mednext(&mut again, &path, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("test.input"), "{e}");

    let (input, shape) = read_tensor(&path, "test.input");
    let (want, out_shape) = read_tensor(&path, "test.output");
    let x = Tensor::<Cpu, 5>::from_data(TensorData::new(input, shape), &device);
    let y = model.forward(x).unwrap();
    assert_eq!(y.dims().to_vec(), out_shape);
    let got: Vec<f32> = y.into_data().to_vec().unwrap();
    let max_abs = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max_abs < 1e-4, "max abs difference {max_abs}");
}

#[test]
fn wrong_checkpoints_and_inputs_are_clear_errors() {
    let path = fixtures().join("mednext_s_k3_32.safetensors");
    let device = Default::default();
    // A B-sized model cannot take S weights: mismatched shapes are named.
    let mut b = MedNeXtConfig::size(MedNeXtSize::B, 3, 1, 3)
        .init::<Cpu>(&device)
        .unwrap();
    let e = load_mednext(&mut b, &path, true).unwrap_err().to_string();
    assert!(e.contains("does not match"), "{e}");
    let model = MedNeXtConfig::size(MedNeXtSize::S, 3, 1, 3)
        .init::<Cpu>(&device)
        .unwrap();
    let e = model
        .forward(Tensor::zeros([1, 1, 24, 32, 32], &device))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[1, 1, 24, 32, 32]") && e.contains("multiples of 16"),
        "{e}"
    );
    let e = model
        .forward(Tensor::zeros([1, 2, 16, 16, 16], &device))
        .unwrap_err()
        .to_string();
    assert!(e.contains("(N, 1, Z, Y, X)"), "{e}");
    assert!(MedNeXtConfig::size(MedNeXtSize::S, 4, 1, 3)
        .init::<Cpu>(&device)
        .unwrap_err()
        .to_string()
        .contains("even"));
    assert!("XL"
        .parse::<MedNeXtSize>()
        .unwrap_err()
        .to_string()
        .contains("S, B, M, L"));
}
