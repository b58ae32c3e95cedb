//! Instance decoding from foreground / contour / distance maps against PyTorch
//! Connectomics' own decoders (fixtures from `tools/make_instance_fixtures.py`: PyTC master
//! with mahotas for `Flood::Unmasked`, PyTC 1.0 and the v2.0 decoders with scikit-image's
//! masked watershed for `Flood::Masked`), plus invariants of the watershed on random inputs
//! and refusals of bad input.
//!
//! Labels are compared voxel for voxel after renumbering PyTC's output 1..K by first
//! appearance (PyTC keeps its seed ids with gaps; ours are renumbered): the partition and
//! the numbering convention, exactly.

mod common;

use std::collections::VecDeque;

use common::{fixture_json, read_fixture};
use em_decode::{
    contour_instances, distance_instances, instances_from_channels, ContourOptions, DecodeError,
    DistanceOptions, Flood, SmallObjectMode,
};
use ndarray::{Array3, Array4, Axis};
use proptest::prelude::*;

fn load_f32(name: &str) -> Array3<f32> {
    read_fixture(&format!("instances/{name}"))
}

fn load_labels(name: &str) -> Array3<u32> {
    let path = format!("instances/{name}");
    match em_io::read(common::fixture(&path))
        .unwrap()
        .into_typed::<u8>()
    {
        Ok(a) => a.into_dimensionality().unwrap().mapv(u32::from),
        Err(_) => read_fixture::<u16, _>(&path).mapv(u32::from),
    }
}

#[test]
fn matches_pytc_decoders() {
    let manifest = fixture_json("instances/manifest.json");
    let mut checked = 0;
    let mut per_decoder = std::collections::BTreeMap::<String, usize>::new();
    for case in manifest["cases"].as_array().unwrap() {
        let fg = load_f32(case["foreground"].as_str().unwrap());
        let contour = load_f32(case["contour"].as_str().unwrap());
        let distance = load_f32(case["distance"].as_str().unwrap());
        for run in case["runs"].as_array().unwrap() {
            let decoder = run["decoder"].as_str().unwrap();
            let options = run["options"].clone();
            let (got, summary) = match decoder {
                "distance" | "distance-map" => {
                    let o: DistanceOptions = serde_json::from_value(options).unwrap();
                    let map = if decoder == "distance" {
                        &fg
                    } else {
                        &distance
                    };
                    distance_instances::<u32>(map.view(), &o).unwrap()
                }
                "contour" | "contour+distance" => {
                    let o: ContourOptions = serde_json::from_value(options).unwrap();
                    let d = (decoder == "contour+distance").then(|| distance.view());
                    contour_instances::<u32>(fg.view(), contour.view(), d, &o).unwrap()
                }
                other => panic!("unknown decoder {other}"),
            };
            let want = load_labels(run["expected"].as_str().unwrap());
            assert!(
                got == want,
                "{} / {}: {} voxels differ",
                case["name"],
                run["pytc"],
                got.iter().zip(&want).filter(|(a, b)| a != b).count()
            );
            assert_eq!(summary.instances, run["instances"].as_u64().unwrap());
            *per_decoder.entry(decoder.to_string()).or_default() += 1;
            checked += 1;
        }
    }
    assert!(
        checked >= 200,
        "only {checked} runs checked: {per_decoder:?}"
    );
}

#[test]
fn channels_equal_separate_maps() {
    let manifest = fixture_json("instances/manifest.json");
    let case = &manifest["cases"][0];
    let maps: Vec<Array3<f32>> = ["foreground", "contour", "distance"]
        .iter()
        .map(|k| load_f32(case[*k].as_str().unwrap()))
        .collect();
    let views: Vec<_> = maps.iter().map(|m| m.view()).collect();
    let stacked: Array4<f32> = ndarray::stack(Axis(0), &views).unwrap();
    let o = ContourOptions::default();
    let (a, _) = instances_from_channels::<u32>(stacked.view(), &o).unwrap();
    let (b, _) = contour_instances::<u32>(views[0], views[1], Some(views[2]), &o).unwrap();
    assert_eq!(a, b);
    let two = stacked.slice(ndarray::s![..2, .., .., ..]);
    let (a, _) = instances_from_channels::<u64>(two, &o).unwrap();
    let (b, _) = contour_instances::<u64>(views[0], views[1], None, &o).unwrap();
    assert_eq!(a, b);
}

// ---------------------------------------------------------------------------------------
// Invariants on random inputs
// ---------------------------------------------------------------------------------------

/// A random map of up to 5×7×7 voxels with values from a few levels (plateaus) and NaN.
fn maps() -> impl Strategy<Value = Array3<f32>> {
    (1usize..6, 1usize..8, 1usize..8).prop_flat_map(|(z, y, x)| {
        prop::collection::vec(
            prop_oneof![
                6 => (0u8..=8).prop_map(|k| f32::from(k) / 8.0),
                1 => Just(f32::NAN),
            ],
            z * y * x,
        )
        .prop_map(move |v| Array3::from_shape_vec((z, y, x), v).unwrap())
    })
}

/// `v > t` (false for NaN), the decoders' foreground test.
fn above(v: f32, t: f32) -> bool {
    v > t
}

/// 26-connected components of `map > t`, a slow reference (breadth-first search).
fn reference_seeds(map: &Array3<f32>, t: f32) -> Array3<u32> {
    let (nz, ny, nx) = map.dim();
    let mut out = Array3::<u32>::zeros(map.dim());
    let mut next = 0;
    for (idx, &v) in map.indexed_iter() {
        if !above(v, t) || out[idx] != 0 {
            continue;
        }
        next += 1;
        out[idx] = next;
        let mut queue = VecDeque::from([idx]);
        while let Some((z, y, x)) = queue.pop_front() {
            for dz in -1i64..=1 {
                for dy in -1i64..=1 {
                    for dx in -1i64..=1 {
                        let (qz, qy, qx) = (z as i64 + dz, y as i64 + dy, x as i64 + dx);
                        if qz < 0 || qy < 0 || qx < 0 {
                            continue;
                        }
                        let q = (qz as usize, qy as usize, qx as usize);
                        if q.0 >= nz || q.1 >= ny || q.2 >= nx {
                            continue;
                        }
                        if above(map[q], t) && out[q] == 0 {
                            out[q] = next;
                            queue.push_back(q);
                        }
                    }
                }
            }
        }
    }
    out
}

type Idx = (usize, usize, usize);

/// Voxels reached from the seeds by 6-connected steps `from → to` with `step(to, from)`.
fn flood_from_seeds(seeds: &Array3<u32>, step: impl Fn(Idx, Idx) -> bool) -> Array3<bool> {
    let (nz, ny, nx) = seeds.dim();
    let mut seen = seeds.mapv(|s| s != 0);
    let mut queue: VecDeque<Idx> = seeds
        .indexed_iter()
        .filter(|(_, &s)| s != 0)
        .map(|(i, _)| i)
        .collect();
    while let Some((z, y, x)) = queue.pop_front() {
        let cand = [
            (z.wrapping_sub(1), y, x),
            (z + 1, y, x),
            (z, y.wrapping_sub(1), x),
            (z, y + 1, x),
            (z, y, x.wrapping_sub(1)),
            (z, y, x + 1),
        ];
        for q in cand {
            if q.0 < nz && q.1 < ny && q.2 < nx && !seen[q] && step(q, (z, y, x)) {
                seen[q] = true;
                queue.push_back(q);
            }
        }
    }
    seen
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Masked flood: every seed voxel keeps its seed's label, every labelled voxel is
    /// foreground and 6-connected to a seed of its label through voxels of that label,
    /// background and NaN voxels are 0, and every foreground voxel 6-connected to a seed
    /// through foreground is labelled.
    #[test]
    fn masked_watershed_invariants(map in maps(), ts in 3u8..=8, tf in 0u8..=2) {
        let (ts, tf) = (f32::from(ts) / 8.0 - 0.01, f32::from(tf) / 8.0);
        let o = DistanceOptions {
            seed_threshold: ts,
            foreground_threshold: tf,
            min_seed_size: 0,
            min_instance_size: 0,
            flood: Flood::Masked,
            ..DistanceOptions::default()
        };
        let (out, summary) = distance_instances::<u32>(map.view(), &o).unwrap();
        let seeds = reference_seeds(&map, ts);
        prop_assert_eq!(summary.seeds, u64::from(seeds.iter().copied().max().unwrap_or(0)));
        // Seeds keep one label each, distinct between seeds.
        let mut seed_label = std::collections::HashMap::new();
        for (idx, &s) in seeds.indexed_iter() {
            if s != 0 {
                prop_assert!(out[idx] != 0);
                let l = *seed_label.entry(s).or_insert(out[idx]);
                prop_assert_eq!(l, out[idx]);
            }
        }
        let distinct: std::collections::HashSet<_> = seed_label.values().collect();
        prop_assert_eq!(distinct.len(), seed_label.len());
        // Labelled voxels are foreground; background and NaN are 0.
        for (idx, &l) in out.indexed_iter() {
            if !above(map[idx], tf) { prop_assert_eq!(l, 0); }
        }
        // Each labelled voxel is reached from a seed through voxels of its own label
        // (6-connectivity), and every foreground voxel reachable from a seed through the
        // foreground is labelled.
        let own = flood_from_seeds(&seeds, |a, b| out[a] != 0 && out[a] == out[b]);
        let fg = flood_from_seeds(&seeds, |a, _| map[a] > tf);
        for (idx, &l) in out.indexed_iter() {
            prop_assert_eq!(l != 0, own[idx], "voxel {:?} label {}", idx, l);
            prop_assert_eq!(l != 0, fg[idx], "voxel {:?} label {}", idx, l);
        }
    }

    /// The unmasked flood never labels background or NaN voxels and keeps seed labels.
    #[test]
    fn unmasked_watershed_keeps_seeds(map in maps()) {
        let o = DistanceOptions {
            seed_threshold: 0.7,
            foreground_threshold: 0.3,
            min_seed_size: 0,
            min_instance_size: 0,
            flood: Flood::Unmasked,
            ..DistanceOptions::default()
        };
        let (out, _) = distance_instances::<u64>(map.view(), &o).unwrap();
        let seeds = reference_seeds(&map, 0.7);
        for (idx, &l) in out.indexed_iter() {
            if !above(map[idx], 0.3) { prop_assert_eq!(l, 0); }
            if seeds[idx] != 0 { prop_assert!(l != 0); }
        }
    }

    /// Removing small instances and seeds leaves no instance below the size.
    #[test]
    fn no_small_instances_left(map in maps(), min in 1u64..20) {
        let o = DistanceOptions {
            seed_threshold: 0.5,
            foreground_threshold: 0.2,
            min_seed_size: 2,
            min_instance_size: min,
            small_object_mode: SmallObjectMode::Background,
            ..DistanceOptions::default()
        };
        let (out, summary) = distance_instances::<u32>(map.view(), &o).unwrap();
        let mut sizes = std::collections::HashMap::<u32, u64>::new();
        for &l in out.iter().filter(|&&l| l != 0) { *sizes.entry(l).or_default() += 1; }
        prop_assert_eq!(sizes.len() as u64, summary.instances);
        prop_assert!(sizes.values().all(|&s| s >= min));
        prop_assert_eq!(out.iter().copied().max().unwrap_or(0) as u64, summary.instances);
    }
}

// ---------------------------------------------------------------------------------------
// Ties and bad input
// ---------------------------------------------------------------------------------------

#[test]
fn plateau_splits_between_seeds_by_age() {
    // A flat line of 7 voxels with seeds at both ends: each seed takes the 3 nearest.
    let mut map = Array3::<f32>::from_elem((1, 1, 7), 0.6);
    map[[0, 0, 0]] = 0.9;
    map[[0, 0, 6]] = 0.9;
    let o = DistanceOptions {
        seed_threshold: 0.8,
        foreground_threshold: 0.5,
        min_seed_size: 0,
        min_instance_size: 0,
        ..DistanceOptions::default()
    };
    let (out, s) = distance_instances::<u32>(map.view(), &o).unwrap();
    assert_eq!(out.as_slice().unwrap(), &[1, 1, 1, 1, 2, 2, 2]);
    assert_eq!((s.seeds, s.instances, s.removed), (2, 2, 0));
}

fn small() -> Array3<f32> {
    Array3::from_shape_fn((2, 3, 4), |(z, y, x)| ((z + y + x) as f32) / 8.0)
}

fn invalid(r: em_decode::Result<(Array3<u32>, em_decode::InstanceSummary)>) -> &'static str {
    match r {
        Err(DecodeError::InvalidParameter { name, .. }) => name,
        other => panic!("expected InvalidParameter, got {other:?}"),
    }
}

#[test]
fn bad_input_is_refused() {
    let m = small();
    let other = Array3::<f32>::zeros((2, 3, 5));
    let c = ContourOptions::default();
    assert_eq!(
        invalid(contour_instances(m.view(), other.view(), None, &c)),
        "contour"
    );
    assert_eq!(
        invalid(contour_instances(
            m.view(),
            m.view(),
            Some(other.view()),
            &c
        )),
        "distance"
    );
    let bad = |o: ContourOptions| invalid(contour_instances(m.view(), m.view(), None, &o));
    assert_eq!(
        bad(ContourOptions {
            seed_threshold: 1.5,
            ..c.clone()
        }),
        "seed_threshold"
    );
    assert_eq!(
        bad(ContourOptions {
            seed_threshold: f32::NAN,
            ..c.clone()
        }),
        "seed_threshold"
    );
    assert_eq!(
        bad(ContourOptions {
            foreground_threshold: -0.1,
            ..c.clone()
        }),
        "foreground_threshold"
    );
    assert_eq!(
        bad(ContourOptions {
            seed_threshold: 0.5,
            foreground_threshold: 0.6,
            ..c.clone()
        }),
        "seed_threshold"
    );
    assert_eq!(
        bad(ContourOptions {
            seed_contour_threshold: 0.9,
            foreground_contour_threshold: 0.5,
            ..c.clone()
        }),
        "seed_contour_threshold"
    );
    assert_eq!(
        bad(ContourOptions {
            seed_distance_threshold: 2.0,
            ..c.clone()
        }),
        "seed_distance_threshold"
    );
    assert_eq!(
        bad(ContourOptions {
            seed_distance_threshold: -0.5,
            ..c.clone()
        }),
        "seed_distance_threshold"
    );
    assert_eq!(
        bad(ContourOptions {
            connectivity: 4,
            ..c.clone()
        }),
        "connectivity"
    );
    let d = DistanceOptions::default();
    let badd = |o: DistanceOptions| invalid(distance_instances(m.view(), &o));
    assert_eq!(
        badd(DistanceOptions {
            seed_threshold: -1.5,
            ..d.clone()
        }),
        "seed_threshold"
    );
    assert_eq!(
        badd(DistanceOptions {
            foreground_threshold: 0.9,
            ..d.clone()
        }),
        "seed_threshold"
    );
    let four = Array4::<f32>::zeros((4, 2, 3, 4));
    assert_eq!(
        invalid(instances_from_channels(four.view(), &c)),
        "channels"
    );
    // Unknown option names are refused when deserialising.
    assert!(serde_json::from_str::<ContourOptions>(r#"{"seed_thresh": 0.5}"#).is_err());
    assert_eq!(
        serde_json::from_str::<DistanceOptions>("{}").unwrap(),
        DistanceOptions::default()
    );
}

#[test]
fn nan_and_empty_inputs_do_not_panic() {
    let nan = Array3::<f32>::from_elem((3, 4, 5), f32::NAN);
    for flood in [Flood::Masked, Flood::Unmasked] {
        let o = ContourOptions {
            flood,
            ..ContourOptions::default()
        };
        let (out, s) =
            contour_instances::<u32>(nan.view(), nan.view(), Some(nan.view()), &o).unwrap();
        assert!(out.iter().all(|&l| l == 0));
        assert_eq!((s.instances, s.seeds), (0, 0));
    }
    let empty = Array3::<f32>::zeros((0, 4, 5));
    let (out, _) = distance_instances::<u32>(empty.view(), &DistanceOptions::default()).unwrap();
    assert_eq!(out.dim(), (0, 4, 5));
    // NaN inside an object: that voxel is background, the rest decodes.
    let mut m = Array3::<f32>::from_elem((1, 3, 3), 0.95);
    m[[0, 1, 1]] = f32::NAN;
    let o = DistanceOptions {
        min_seed_size: 0,
        min_instance_size: 0,
        ..DistanceOptions::default()
    };
    let (out, _) = distance_instances::<u32>(m.view(), &o).unwrap();
    assert_eq!(out[[0, 1, 1]], 0);
    assert_eq!(out.iter().filter(|&&l| l == 1).count(), 8);
}
