//! Threshold tuning through the library: the threshold that reproduces the ground truth
//! wins, and requests without anything to score against are refused.

use em_core::EdgeStorage;
use em_core::{AnyArray, NoProgress, VoxelSize};
use em_decode::waterz::WaterzOptions;
use em_decode::{CcOptions, MwsOptions};
use em_train::{tune_thresholds, TuneMethod, TuneOptions};
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
        method: TuneMethod::Cc(CcOptions::default()),
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

    // waterz on the same affinities (stored at the source voxel): below 0.8 = 1 − 0.2 the
    // two objects stay apart, above it they merge.
    opts.thresholds = vec![0.9, 0.5];
    opts.method = TuneMethod::Waterz(WaterzOptions {
        storage: EdgeStorage::Source,
        ..WaterzOptions::default()
    });
    let report = tune_thresholds(&opts, &NoProgress).unwrap();
    let components: Vec<u64> = report.rows.iter().map(|r| r.components).collect();
    assert_eq!(components, vec![1, 2], "rows in the order given");
    assert_eq!(report.best_row().unwrap().threshold, 0.5);

    // Mutex watershed with the unit offsets attractive and one repulsive x-offset of 1:
    // a large bias makes every attractive edge win (one segment), none keeps them apart.
    let mut aff6 = Array4::<f32>::zeros((4, 3, 4, 8));
    let aff = em_io::read(&opts.affinities)
        .unwrap()
        .into_typed::<f32>()
        .unwrap();
    for c in 0..3 {
        aff6.index_axis_mut(ndarray::Axis(0), c)
            .assign(&aff.index_axis(ndarray::Axis(0), c));
    }
    aff6.index_axis_mut(ndarray::Axis(0), 3)
        .assign(&aff.index_axis(ndarray::Axis(0), 2));
    let path = dir.path().join("aff4.npy");
    em_io::write(&path, &AnyArray::from(aff6.into_dyn())).unwrap();
    opts.affinities = path;
    opts.thresholds = vec![0.0, 1.0];
    opts.method = TuneMethod::Mws(MwsOptions {
        offsets: vec![[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]],
        attractive: 3,
        ..MwsOptions::default()
    });
    let report = tune_thresholds(&opts, &NoProgress).unwrap();
    let components: Vec<u64> = report.rows.iter().map(|r| r.components).collect();
    assert_eq!(components, vec![2, 1]);
    assert_eq!(report.best_row().unwrap().threshold, 0.0);
}
