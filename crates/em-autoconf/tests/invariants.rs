//! Plans on arbitrary described machines: whatever the hardware and volumes, a plan either
//! says clearly that nothing fits or stays within the memory it was given.

use em_autoconf::{plan, AutoconfError, Device, Explicit, Gpu, Hardware, ModelCost, Request};
use proptest::prelude::*;

fn model(elements: f64, parameters: usize) -> ModelCost {
    ModelCost {
        parameters,
        elements_per_voxel_cpu: elements,
        elements_per_voxel_gpu: elements * 1.2,
        checkpoint_fraction: None,
        divisor: 16,
        io_channels: 2,
    }
}

fn gpu(gib: u64, cc: (u32, u32)) -> Gpu {
    Gpu::described(&format!("described {gib} GiB"), gib << 30, cc)
}

proptest! {
    #[test]
    fn plans_never_exceed_the_memory_they_were_given(
        cpus in 1usize..129,
        host_gib in 1u64..513,
        gpu_gib in prop::option::of(4u64..142),
        elements in 20.0f64..2000.0,
        parameters in 10_000usize..100_000_000,
        vol in (16usize..300, 16usize..2000, 16usize..2000),
        vz in 1.0f64..10.0,
        effective in 1usize..17,
    ) {
        let gpus = gpu_gib.map(|g| vec![gpu(g, (8, 0))]).unwrap_or_default();
        let hw = Hardware::described(cpus, host_gib << 30, gpus);
        let mut req = Request::new(model(elements, parameters), vec![[vol.0, vol.1, vol.2]]);
        req.voxel_size = [vz, 1.0, 1.0];
        req.gpu_backend = true;
        req.effective_batch = effective;
        match plan(&hw, &req) {
            Ok(p) => {
                prop_assert!(p.step_bytes <= p.budget_bytes, "{:?}", p.lines());
                let memory = match p.device.value {
                    Device::Gpu => gpu_gib.unwrap() << 30,
                    Device::Cpu => host_gib << 30,
                };
                prop_assert!(p.budget_bytes as f64 <= 0.85 * memory as f64 + 1.0);
                prop_assert!(p.patch.value.iter().all(|s| s % 16 == 0 && *s >= 16));
                prop_assert!((0..3).all(|i| p.patch.value[i] <= [vol.0, vol.1, vol.2][i]));
                prop_assert!(p.batch.value >= 1 && p.workers.value >= 1);
                prop_assert!(p.batch.value * p.accumulate.value >= effective);
                prop_assert!(p.workers.value <= cpus.max(1));
                prop_assert!(p.warnings.is_empty(), "{:?}", p.warnings);
            }
            Err(AutoconfError::DoesNotFit(m)) => prop_assert!(m.contains("GiB"), "{m}"),
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}

#[test]
fn explicit_values_win_and_an_impossible_gpu_request_is_refused() {
    let hw = Hardware::described(8, 32 << 30, vec![]);
    let mut req = Request::new(model(300.0, 5_000_000), vec![[100, 500, 500]]);
    req.explicit = Explicit {
        batch: Some(3),
        lr: Some(5e-4),
        workers: Some(6),
        ..Explicit::default()
    };
    let p = plan(&hw, &req).unwrap();
    assert_eq!((p.batch.value, p.lr.value, p.workers.value), (3, 5e-4, 6));
    assert!(p.batch.explicit && p.lr.explicit && !p.patch.explicit);
    // Accumulation still reaches the effective batch (4) from the given batch.
    assert_eq!(p.accumulate.value, 2);

    req.explicit.device = Some(Device::Gpu);
    let e = plan(&hw, &req).unwrap_err().to_string();
    assert!(e.contains("no GPU backend"), "{e}");
    req.gpu_backend = true;
    let e = plan(&hw, &req).unwrap_err().to_string();
    assert!(e.contains("no GPU is visible"), "{e}");
}

#[test]
fn too_little_memory_and_too_thin_volumes_are_clear_errors() {
    let hw = Hardware::described(4, 1 << 30, vec![]);
    let req = Request::new(model(5000.0, 60_000_000), vec![[64, 512, 512]]);
    let e = plan(&hw, &req).unwrap_err();
    assert!(matches!(e, AutoconfError::DoesNotFit(_)), "{e}");
    let req = Request::new(model(100.0, 1000), vec![[8, 512, 512]]);
    let e = plan(&Hardware::described(4, 16 << 30, vec![]), &req).unwrap_err();
    assert!(e.to_string().contains("thinner than 16"), "{e}");
}

#[test]
fn an_explicit_patch_over_budget_is_kept_with_a_warning() {
    let hw = Hardware::described(4, 4 << 30, vec![]);
    let mut req = Request::new(model(400.0, 1_000_000), vec![[64, 256, 256]]);
    req.explicit.patch = Some([128, 128, 128]);
    req.explicit.batch = Some(8);
    let p = plan(&hw, &req).unwrap();
    assert_eq!(p.patch.value, [128, 128, 128]);
    assert!(p
        .warnings
        .iter()
        .any(|w| w.contains("larger than the smallest")));
    assert!(p.warnings.iter().any(|w| w.contains("batch 8")));
}

#[test]
fn checkpointing_is_chosen_only_when_nothing_fits_without_it() {
    let mut m = model(1000.0, 1_000_000);
    m.checkpoint_fraction = Some(0.6);
    // 16³ × 1 needs 16 MB + 4096 × 1000 × 4 B ≈ 32 MB of activations: give it room for
    // the checkpointed step only.
    let need = m.step_bytes(Device::Cpu, em_autoconf::Precision::F32, [16; 3], 1, false);
    let with = m.step_bytes(Device::Cpu, em_autoconf::Precision::F32, [16; 3], 1, true);
    assert!(with < need);
    let memory = ((with + need) / 2) as f64 / 0.85 + f64::from(256u32 << 20);
    let hw = Hardware::described(4, memory as u64, vec![]);
    let p = plan(&hw, &Request::new(m.clone(), vec![[16, 16, 16]])).unwrap();
    assert!(
        p.checkpointing.value && !p.checkpointing.explicit,
        "{:?}",
        p.lines()
    );
    assert!(p.step_bytes <= p.budget_bytes);
    // With room to spare, no recomputation.
    let hw = Hardware::described(4, 8 << 30, vec![]);
    let p = plan(&hw, &Request::new(m, vec![[16, 16, 16]])).unwrap();
    assert!(!p.checkpointing.value);
}
