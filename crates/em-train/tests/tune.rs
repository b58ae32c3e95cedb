//! Threshold tuning through the library: the threshold that reproduces the ground truth
//! wins, and requests without anything to score against are refused.

use em_core::{AnyArray, NoProgress, VoxelSize};
use em_decode::CcOptions;
use em_train::{tune_thresholds, TuneOptions};
use ndarray::{Array3, Array4};

#[test]
fn the_threshold_that_reproduces_the_ground_truth_wins() {
    let dir = tempfile::tempdir().unwrap();
    // Two objects side by side along x: affinities 0.8 inside each, 0.2 across the border.
    let (z, y, x) = (3, 4, 8);
    let gt = Array3::from_shape_fn((z, y, x), |(_, _, i)| if i < 4 { 1u32 } else { 2 });
    let aff = Array4::from_shape_fn((3, z, y, x), |(c, k, j, i)| {
        let other = match c {
            0 => (k + 1 < z).then(|| gt[[k + 1, j, i]]),
            1 => (j + 1 < y).then(|| gt[[k, j + 1, i]]),
            _ => (i + 1 < x).then(|| gt[[k, j, i + 1]]),
        };
        match other {
            Some(o) if o == gt[[k, j, i]] => 0.8f32,
            _ => 0.2,
        }
    });
    let aff_path = dir.path().join("aff.npy");
    let gt_path = dir.path().join("gt.npy");
    em_io::write(&aff_path, &AnyArray::from(aff.into_dyn())).unwrap();
    em_io::write(&gt_path, &AnyArray::from(gt.into_dyn())).unwrap();
    let mut opts = TuneOptions {
        affinities: aff_path,
        skeletons: None,
        gt: Some(gt_path),
        thresholds: vec![0.1, 0.5, 0.9],
        cc: CcOptions::default(),
        voxel_size: VoxelSize::new([1.0, 1.0, 1.0]).unwrap(),
    };
    let report = tune_thresholds(&opts, &NoProgress).unwrap();
    assert_eq!(report.criterion, "voi");
    let components: Vec<u64> = report.rows.iter().map(|r| r.components).collect();
    // 0.1 merges the two, 0.5 separates them, 0.9 leaves every voxel unlabelled.
    assert_eq!(components, vec![1, 2, 0]);
    let best = report.best_row().unwrap();
    assert_eq!(best.threshold, 0.5);
    assert_eq!(best.voxel.as_ref().unwrap().voi, 0.0);

    opts.gt = None;
    let e = tune_thresholds(&opts, &NoProgress).unwrap_err();
    assert!(e.to_string().contains("ground truth"), "{e}");
    opts.gt = Some(dir.path().join("gt.npy"));
    opts.thresholds = vec![f32::NAN];
    assert!(tune_thresholds(&opts, &NoProgress).is_err());
}
