//! Patch datasets, mixtures and the loader.

use std::sync::Arc;

use em_augment::{rng_from_seed, AugmentRng, Pipeline, Sample};
use em_core::{AnyArray, ChunkedVolume, InMemoryVolume};
use em_data::{
    grid_starts, DataError, Dataset, GridDataset, LengthPolicy, Loader, LoaderOptions, MixMode,
    PatchConfig, PatchDataset, TargetSpec, WeightedConcatDataset,
};
use ndarray::{s, Array3, Array4};

fn vol<T>(a: ndarray::Array<T, ndarray::IxDyn>) -> Arc<dyn ChunkedVolume>
where
    AnyArray: From<ndarray::Array<T, ndarray::IxDyn>>,
{
    Arc::new(InMemoryVolume::new(AnyArray::from(a), "test"))
}

/// Image value = linear index / 10⁴; labels in 4³ blocks, one region unknown (−1).
fn volumes(shape: [usize; 3]) -> (Array3<f32>, Array3<i64>) {
    let [z, y, x] = shape;
    let img = Array3::from_shape_fn((z, y, x), |(a, b, c)| ((a * y + b) * x + c) as f32 / 1e4);
    let mut lab = Array3::from_shape_fn((z, y, x), |(a, b, c)| {
        (1 + (a / 4) * 100 + (b / 4) * 10 + c / 4) as i64
    });
    lab.slice_mut(s![0..2, 0..3, 0..3]).fill(-1);
    (img, lab)
}

fn dataset(shape: [usize; 3], settings: PatchConfig) -> PatchDataset {
    let (img, lab) = volumes(shape);
    PatchDataset::new(
        "blocks",
        vol(img.into_dyn()),
        Some(vol(lab.into_dyn())),
        None,
        settings,
    )
    .unwrap()
}

#[test]
fn crops_read_the_right_region_with_context_and_padding() {
    let shape = [10, 14, 16];
    let (img, lab) = volumes(shape);
    let mut st = PatchConfig::new([4, 6, 6]);
    st.context = [1, 2, 2];
    st.padding = [2, 2, 2];
    let ds = dataset(shape, st);
    // Inside: the read region is the patch grown by the context.
    let s = ds.crop([3, 4, 5]).unwrap();
    assert_eq!(s.image.dim(), (1, 6, 10, 10));
    assert_eq!(
        s.image.slice(s![0, .., .., ..]),
        img.slice(s![2..8, 2..12, 3..13])
    );
    let want = lab.slice(s![2..8, 2..12, 3..13]).mapv(|v| v.max(0) as u32);
    assert_eq!(s.labels[0], want);
    assert!(s.valid.as_ref().unwrap().iter().all(|&v| v == 1));
    // At the corner: outside is zero and invalid, unknown labels are invalid, not background.
    let s = ds.crop([-2, -2, -2]).unwrap();
    let v = s.valid.as_ref().unwrap();
    assert_eq!(v[[0, 0, 0]], 0);
    assert_eq!(s.image[[0, 0, 0, 0]], 0.0);
    assert_eq!(v[[3, 4, 4]], 0, "label −1 at volume (0, 0, 0)");
    assert_eq!(s.labels[0][[3, 4, 4]], 0);
    assert_eq!(v[[5, 9, 9]], 1);
    assert_eq!(s.image[[0, 5, 9, 9]], img[[2, 5, 5]]);
}

#[test]
fn bad_volumes_and_settings_are_clear_errors() {
    let (img, lab) = volumes([10, 14, 16]);
    let short = lab.slice(s![.., .., 0..15]).to_owned();
    let e = PatchDataset::new(
        "x",
        vol(img.clone().into_dyn()),
        Some(vol(short.into_dyn())),
        None,
        PatchConfig::new([4, 4, 4]),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("[10, 14, 15]") && e.contains("[10, 14, 16]"),
        "{e}"
    );
    let e = PatchDataset::new(
        "x",
        vol(img.clone().into_dyn()),
        None,
        None,
        PatchConfig::new([12, 4, 4]),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("smaller than the patch"), "{e}");
    let mut st = PatchConfig::new([4, 4, 4]);
    st.min_foreground = 1.5;
    assert!(PatchDataset::new("x", vol(img.into_dyn()), None, None, st).is_err());
}

#[test]
fn rejection_sampling_honours_thresholds_or_says_why() {
    // Labels only in one corner: crops with ≥ 50% foreground exist but are rare.
    let (img, _) = volumes([8, 32, 32]);
    let mut lab = Array3::<i64>::zeros((8, 32, 32));
    lab.slice_mut(s![.., 0..12, 0..12]).fill(3);
    let mut st = PatchConfig::new([8, 8, 8]);
    st.min_foreground = 0.5;
    st.tries = 400;
    let ds = PatchDataset::new(
        "corner",
        vol(img.clone().into_dyn()),
        Some(vol(lab.clone().into_dyn())),
        None,
        st.clone(),
    )
    .unwrap();
    let mut rng = rng_from_seed(1);
    for i in 0..20 {
        let smp = ds.sample(i, &mut rng).unwrap();
        let fg = smp.labels[0].iter().filter(|&&v| v != 0).count() as f32 / 512.0;
        assert!(fg >= 0.5, "{fg}");
    }
    st.min_foreground = 0.99;
    st.tries = 5;
    let lab2 = Array3::<i64>::zeros(lab.dim());
    let ds = PatchDataset::new(
        "empty",
        vol(img.into_dyn()),
        Some(vol(lab2.into_dyn())),
        None,
        st,
    )
    .unwrap();
    let e = ds.sample(0, &mut rng).unwrap_err();
    assert!(matches!(e, DataError::Rejected { tries: 5, .. }), "{e}");
}

#[test]
fn grids_cover_the_volume() {
    let starts = grid_starts([10, 20, 7], [4, 8, 8], [1, 2, 0]);
    let mut covered = Array3::<u8>::zeros((10, 20, 7));
    for s in &starts {
        let [a, b, c] = s.map(|v| v as usize);
        covered
            .slice_mut(s![
                a..(a + 4).min(10),
                b..(b + 8).min(20),
                c..(c + 8).min(7)
            ])
            .fill(1);
    }
    assert!(covered.iter().all(|&v| v == 1));
    let g = GridDataset::new(
        dataset([10, 20, 16], PatchConfig::new([4, 8, 8])),
        [0, 0, 0],
    );
    assert_eq!(g.len(), 3 * 3 * 2);
    let mut rng = rng_from_seed(0);
    assert_eq!(
        g.sample(1, &mut rng).unwrap(),
        g.sample(1, &mut rng_from_seed(9)).unwrap()
    );
}

/// A dataset of constant images (value = its id) of a given length.
struct Const(f32, usize, String);

impl Dataset for Const {
    fn len(&self) -> usize {
        self.1
    }
    fn sample(&self, _i: usize, _rng: &mut AugmentRng) -> em_data::Result<Sample> {
        Ok(Sample::new(Array4::from_elem((1, 4, 4, 4), self.0))
            .with_label(Array3::from_elem((4, 4, 4), 1)))
    }
    fn name(&self) -> &str {
        &self.2
    }
}

fn consts(lens: &[usize]) -> Vec<Arc<dyn Dataset>> {
    lens.iter()
        .enumerate()
        .map(|(i, &n)| Arc::new(Const(i as f32, n, format!("d{i}"))) as Arc<dyn Dataset>)
        .collect()
}

#[test]
fn mixtures_draw_in_proportion() {
    let n = 100_000;
    let check = |mix: &WeightedConcatDataset, want: &[f64], rng_seed: u64| {
        let mut counts = vec![0usize; want.len()];
        let mut rng = rng_from_seed(rng_seed);
        for i in 0..n {
            counts[mix.pick(i, &mut rng).0] += 1;
        }
        for (c, w) in counts.iter().zip(want) {
            let sd = (w * (1.0 - w) / n as f64).sqrt();
            let rate = *c as f64 / n as f64;
            assert!(
                (rate - w).abs() < 4.0 * sd + 1e-3,
                "rate {rate} for weight {w}"
            );
        }
        counts
    };
    let mix = WeightedConcatDataset::new(
        consts(&[10, 20, 30]),
        &[2.0, 3.0, 5.0],
        MixMode::Weighted,
        LengthPolicy::Min,
    )
    .unwrap();
    assert_eq!(mix.len(), 10);
    assert_eq!(mix.weights(), &[0.2, 0.3, 0.5]);
    check(&mix, &[0.2, 0.3, 0.5], 7);
    let sized = WeightedConcatDataset::new(
        consts(&[10, 30]),
        &[],
        MixMode::SizeProportional,
        LengthPolicy::Sum,
    )
    .unwrap();
    assert_eq!(sized.len(), 40);
    check(&sized, &[0.25, 0.75], 8);
    // Stratified: every window of 100 consecutive samples is within 3 of its share.
    let rr = WeightedConcatDataset::new(
        consts(&[5, 5]),
        &[0.3, 0.7],
        MixMode::RoundRobin,
        LengthPolicy::Fixed(77),
    )
    .unwrap();
    assert_eq!(rr.len(), 77);
    let mut rng = rng_from_seed(0);
    let picks: Vec<usize> = (0..10_000).map(|i| rr.pick(i, &mut rng).0).collect();
    for w in picks.windows(100).step_by(37) {
        let ones = w.iter().filter(|&&p| p == 1).count();
        assert!((67..=73).contains(&ones), "{ones} of 100");
    }
    // Samples come from the picked source.
    let s = mix.sample(0, &mut rng_from_seed(3)).unwrap();
    assert!([0.0, 1.0, 2.0].contains(&s.image[[0, 0, 0, 0]]));
    // Bad weights and lengths.
    for (w, what) in [
        (vec![1.0, 0.0, 1.0], "0"),
        (vec![1.0, -2.0, 1.0], "-2"),
        (vec![1.0, f64::NAN, 1.0], "NaN"),
    ] {
        let e = WeightedConcatDataset::new(
            consts(&[1, 1, 1]),
            &w,
            MixMode::Weighted,
            LengthPolicy::Min,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("positive") && e.contains(what), "{e}");
    }
    assert!(WeightedConcatDataset::new(
        consts(&[1, 1]),
        &[1.0],
        MixMode::Weighted,
        LengthPolicy::Min
    )
    .is_err());
    assert!(WeightedConcatDataset::new(
        consts(&[1]),
        &[1.0],
        MixMode::Weighted,
        LengthPolicy::Fixed(0)
    )
    .is_err());
    assert!(WeightedConcatDataset::new(
        consts(&[0, 1]),
        &[1.0, 1.0],
        MixMode::Weighted,
        LengthPolicy::Min
    )
    .is_err());
}

fn loader_cfg(workers: usize) -> LoaderOptions {
    LoaderOptions {
        batch_size: 2,
        workers,
        prefetch: 2,
        seed: 11,
        augment: Some(Arc::new(Pipeline::load("light").unwrap())),
        targets: TargetSpec::Affinities {
            offsets: em_core::AffinityOffsets::banis(),
            storage: em_core::EdgeStorage::Source,
        },
        context: [1, 2, 2],
        batches: Some(5),
    }
}

#[test]
fn loader_batches_are_the_same_for_any_worker_count() {
    let mut st = PatchConfig::new([4, 8, 8]);
    st.context = [1, 2, 2];
    let ds: Arc<dyn Dataset> = Arc::new(dataset([12, 24, 24], st));
    let run = |w| {
        Loader::new(ds.clone(), loader_cfg(w), 3)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    };
    let a = run(0);
    assert_eq!(a.len(), 5);
    assert_eq!(a[0].image.dim(), (2, 1, 4, 8, 8));
    assert_eq!(a[0].target.dim(), (2, 6, 4, 8, 8));
    assert_eq!(a[0].mask.dim(), (2, 6, 4, 8, 8));
    assert!(a.iter().enumerate().all(|(i, b)| b.index == i));
    assert_eq!(run(1), a);
    assert_eq!(run(3), a);
    // Another epoch draws other patches.
    let other = Loader::new(ds.clone(), loader_cfg(2), 4)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_ne!(other.image, a[0].image);
    // Dropping a loader mid-epoch returns at once (workers blocked on a full queue stop).
    let mut l = Loader::new(ds, loader_cfg(2), 0).unwrap();
    l.next().unwrap().unwrap();
    drop(l);
}

/// Fails or panics on a chosen sample.
struct Faulty(usize, bool);

impl Dataset for Faulty {
    fn len(&self) -> usize {
        100
    }
    fn sample(&self, i: usize, _rng: &mut AugmentRng) -> em_data::Result<Sample> {
        if i == self.0 {
            if self.1 {
                panic!("corrupt chunk in sample {i}");
            }
            return Err(DataError::InvalidParameter {
                name: "faulty".into(),
                reason: format!("cannot read sample {i}"),
            });
        }
        Ok(Sample::new(Array4::zeros((1, 4, 8, 8))).with_label(Array3::ones((4, 8, 8))))
    }
    fn name(&self) -> &str {
        "faulty"
    }
}

#[test]
fn loader_errors_and_panics_reach_the_caller() {
    let mut cfg = loader_cfg(2);
    cfg.augment = None;
    cfg.context = [0, 0, 0];
    cfg.batches = Some(10);
    let out: Vec<_> = Loader::new(Arc::new(Faulty(7, false)), cfg.clone(), 0)
        .unwrap()
        .collect();
    let err = out
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("an error")
        .to_string();
    assert!(err.contains("cannot read sample 7"), "{err}");
    assert!(out.len() <= 10);
    let out: Vec<_> = Loader::new(Arc::new(Faulty(5, true)), cfg, 0)
        .unwrap()
        .collect();
    let err = out
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("the panic")
        .to_string();
    assert!(
        err.contains("panicked") && err.contains("corrupt chunk in sample 5"),
        "{err}"
    );
}
