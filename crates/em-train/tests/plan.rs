//! `"auto"` values filled from plans for described machines (no real GPU needed), with the
//! real presets' models and the measured MedNeXt memory model.

use std::collections::BTreeMap;
use std::path::Path;

use em_autoconf::{probe_from, Device, Gpu, Hardware, Precision, Sources};
use em_core::ChunkedVolume;
use em_train::{TrainConfig, AUTO_KEYS};

fn opener(p: &Path) -> Result<Box<dyn ChunkedVolume>, String> {
    em_io::open(p).map_err(|e| e.to_string())
}

/// A preset with every plannable key "auto" and synthetic data in place of its files.
fn all_auto(preset: &str, extra: &[&str]) -> TrainConfig {
    let mut set: Vec<String> = AUTO_KEYS.iter().map(|k| format!("{k}=\"auto\"")).collect();
    set.push(
        "data.sources=[{ source = { kind = \"synthetic\", synth = \"neurons\", shape = [160, 1024, 1024] } }]"
            .into(),
    );
    set.extend(extra.iter().map(|s| s.to_string()));
    let cfg = TrainConfig::load(preset, &set).unwrap();
    assert_eq!(cfg.auto.len(), AUTO_KEYS.len());
    cfg
}

fn gpu(name: &str, gib: u64, cc: (u32, u32)) -> Gpu {
    Gpu::described(name, gib << 30, cc)
}

const GIB: f64 = (1u64 << 30) as f64;

#[test]
fn a_laptop_cpu_gets_a_small_float32_plan_within_its_memory() {
    let hw = Hardware::described(8, 16 << 30, vec![]);
    let mut cfg = all_auto("lucchi_cpu", &[]);
    let plan = cfg.resolve_auto(&hw, &opener, false).unwrap().unwrap();
    assert_eq!(plan.device.value, Device::Cpu);
    assert_eq!(cfg.precision, Precision::F32);
    assert!(cfg.data.patch.patch.iter().all(|s| s % 16 == 0 && *s <= 64));
    assert!(cfg.batch_size * cfg.accumulate >= 2 && cfg.workers == 1);
    assert!((plan.step_bytes as f64) < 0.85 * 16.0 * GIB);
    // Filled in: nothing is left "auto", and the written config holds numbers.
    assert!(cfg.auto.is_empty());
    let text = toml::to_string(&cfg).unwrap();
    assert!(!text.contains("auto\""), "{text}");
    assert_eq!(TrainConfig::from_toml(&text, &[]).unwrap(), cfg);
}

#[test]
fn a_24_gib_gpu_and_an_80_gib_gpu_get_plans_that_fit_them() {
    // BANIS-S: MedNeXt-S, six affinities, effective batch 8.
    let mut plans = Vec::new();
    for (name, gib) in [
        ("NVIDIA GeForce RTX 3090", 24),
        ("NVIDIA A100-SXM4-80GB", 80),
    ] {
        let hw = Hardware::described(16, 64 << 30, vec![gpu(name, gib, (8, 6))]);
        let mut cfg = all_auto("banis_s", &["effective_batch=8"]);
        let plan = cfg.resolve_auto(&hw, &opener, true).unwrap().unwrap();
        assert_eq!(plan.device.value, Device::Gpu);
        // Compute capability 8.6 has bfloat16 tensor cores: mixed precision in bf16.
        assert_eq!(cfg.precision, Precision::Bf16);
        assert!(
            plan.precision.reason.contains("bfloat16"),
            "{}",
            plan.precision.reason
        );
        assert!(cfg.data.patch.patch.iter().all(|s| s % 16 == 0));
        assert!((plan.step_bytes as f64) <= 0.85 * gib as f64 * GIB);
        assert!(cfg.batch_size * cfg.accumulate >= 8);
        assert!((2..=8).contains(&cfg.workers));
        println!("{name}:\n  {}", plan.lines().join("\n  "));
        plans.push((
            cfg.data.patch.patch,
            cfg.batch_size,
            cfg.accumulate,
            plan.step_bytes,
        ));
    }
    let (small, large) = (&plans[0], &plans[1]);
    // The bigger card holds the full 128³ patch and more of the batch per step.
    assert_eq!(large.0, [128, 128, 128]);
    assert!(large.1 >= small.1 && large.2 <= small.2, "{plans:?}");
    assert!(large.3 > small.3);
}

#[test]
fn a_slurm_allocation_of_4_cpus_is_planned_within_the_allocation() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("proc")).unwrap();
    std::fs::write(
        root.path().join("proc/meminfo"),
        "MemTotal: 528000000 kB\nMemAvailable: 500000000 kB\n",
    )
    .unwrap();
    let env = BTreeMap::from(
        [
            ("SLURM_JOB_ID", "77"),
            ("SLURM_CPUS_PER_TASK", "4"),
            ("SLURM_MEM_PER_NODE", "8000"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let hw = probe_from(&Sources {
        root: root.path().to_path_buf(),
        env,
        affinity: Some(128),
        gpus: Err("no NVML".into()),
    });
    assert_eq!((hw.cpus, hw.memory_bytes), (4, 8000 << 20));
    let mut cfg = all_auto("neurons_cpu", &[]);
    let plan = cfg.resolve_auto(&hw, &opener, false).unwrap().unwrap();
    assert_eq!(plan.device.value, Device::Cpu);
    assert_eq!(cfg.workers, 1);
    // The 160×1024×1024 volume (1.25 GiB in memory as float32 image and uint32 labels)
    // comes out of the allocation before the step's share.
    let data = 160.0 * 1024.0 * 1024.0 * 8.0;
    assert!((plan.budget_bytes as f64) < 0.85 * ((8000u64 << 20) as f64 - data));
    assert!(plan.step_bytes <= plan.budget_bytes);
}

#[test]
fn explicit_values_are_kept_and_only_auto_keys_change() {
    let hw = Hardware::described(8, 16 << 30, vec![]);
    let mut cfg = TrainConfig::load("lucchi_cpu", &["batch_size=\"auto\"".into()]).unwrap();
    let before = cfg.clone();
    let plan = cfg.resolve_auto(&hw, &opener, false).unwrap().unwrap();
    assert!(plan.patch.explicit && plan.lr.explicit && !plan.batch.explicit);
    assert_eq!(cfg.data.patch.patch, before.data.patch.patch);
    assert_eq!(cfg.optimizer.lr, before.optimizer.lr);
    assert_eq!(cfg.batch_size, plan.batch.value);
    // No "auto": nothing to do.
    let mut plain = TrainConfig::load("lucchi_cpu", &[]).unwrap();
    assert!(plain.resolve_auto(&hw, &opener, false).unwrap().is_none());
}

#[test]
fn auto_values_fail_clearly_where_they_cannot_be_planned() {
    let hw = Hardware::described(8, 16 << 30, vec![]);
    // A model without a memory model.
    let mut cfg = TrainConfig::load(
        "lucchi_cpu",
        &[
            "batch_size=\"auto\"".into(),
            "model={ arch = \"rsunet\", in_channels = 1, out_channels = 1 }".into(),
        ],
    )
    .unwrap();
    let e = cfg
        .resolve_auto(&hw, &opener, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("MedNeXt"), "{e}");
    // Half precision is refused for CPU training.
    let e = TrainConfig::load("lucchi_cpu", &["precision=\"bf16\"".into()])
        .unwrap()
        .plan(&hw, &opener, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not supported"), "{e}");
}
