mod common;

use em_decode::{mutex_watershed, MwsOptions};
use ndarray::{Array3, Array4};

/// Throwaway timing (removed before handing over).
#[test]
#[ignore]
fn tmp_timing() {
    let aff: Array4<f32> = em_io::read("/tmp/mwst/aff.npy").unwrap().into_typed::<f32>().unwrap().into_dimensionality().unwrap();
    let threads: usize = std::env::var("MWS_THREADS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let opts = MwsOptions { threads: Some(threads), ..MwsOptions::default() };
    let t = std::time::Instant::now();
    let (seg, summary) = mutex_watershed::<f32, u32>(aff.view(), &opts, None).unwrap();
    let dt = t.elapsed();
    eprintln!("ours: {:.3} s {:?} peak rss {:?}", dt.as_secs_f64(), summary, em_core::peak_rss_bytes());
    let mw: Array3<u64> = em_io::read("/tmp/mwst/mw.npy").unwrap().into_typed::<u64>().unwrap().into_dimensionality().unwrap();
    // partition compare, mwatershed zeros as singletons
    let mut map = std::collections::HashMap::new();
    let mut rev = std::collections::HashMap::new();
    let mut bad = 0;
    for (i, (&a, &b)) in seg.iter().zip(mw.iter()).enumerate() {
        let b = if b == 0 { u64::MAX - i as u64 } else { b };
        if *map.entry(a).or_insert(b) != b { bad += 1; }
        if *rev.entry(b).or_insert(a) != a { bad += 1; }
    }
    eprintln!("mismatches {bad}");
    assert_eq!(bad, 0);
}
