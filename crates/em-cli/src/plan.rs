//! `em plan`: what this process may use (CPUs, memory, GPUs, Slurm allocation) and, for a
//! training config, the values its `"auto"` keys would get, each with its reason.

use anyhow::Context;
use em_train::{TrainConfig, AUTO_KEYS};

/// Arguments of `em plan`.
#[derive(clap::Args, Debug)]
pub(crate) struct PlanArgs {
    /// A training config (path or preset name) whose "auto" values to plan; without it only
    /// the hardware is shown.
    #[arg(long)]
    config: Option<String>,
    /// Overrides of the config, `key=value` (repeatable).
    #[arg(long = "set")]
    set: Vec<String>,
    /// Plan every key that can be "auto", not only those the config leaves "auto".
    #[arg(long)]
    all: bool,
    /// Print one JSON object (`hardware`, and `plan` with a config) instead of text.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(a: &PlanArgs) -> anyhow::Result<()> {
    let hw = em_autoconf::probe();
    let plan = match &a.config {
        None => None,
        Some(c) => {
            let mut cfg = TrainConfig::load(c, &a.set)?;
            if a.all {
                cfg.auto = AUTO_KEYS.iter().map(|k| k.to_string()).collect();
            }
            // `em train --device auto` trains on a GPU where this build has CUDA.
            Some(
                cfg.plan(&hw, &em_train::open_volume, em_train::device::HAS_CUDA)
                    .with_context(|| format!("planning {c}"))?,
            )
        }
    };
    if a.json {
        let mut v = serde_json::json!({ "hardware": hw });
        if let Some(p) = &plan {
            v["plan"] = serde_json::to_value(p)?;
        }
        println!("{v}");
        return Ok(());
    }
    println!("CPUs      {} ({})", hw.cpus, hw.cpus_source);
    println!(
        "memory    {:.1} GiB ({}){}",
        hw.memory_bytes as f64 / f64::from(1u32 << 30),
        hw.memory_source,
        hw.machine_memory_bytes.map_or(String::new(), |t| format!(
            " of {:.1} GiB",
            t as f64 / f64::from(1u32 << 30)
        ))
    );
    if let Some(s) = &hw.slurm {
        println!(
            "slurm     job {} cpus/task {:?} memory {:?} gpus {:?}",
            s.job_id.as_deref().unwrap_or("-"),
            s.cpus_per_task,
            s.memory_bytes,
            s.gpus
        );
    }
    if hw.gpus.is_empty() {
        println!("GPUs      none ({})", hw.gpu_note.as_deref().unwrap_or("-"));
    }
    for g in &hw.gpus {
        println!(
            "GPU {}     {} {:.1} GiB, compute capability {}.{}",
            g.index,
            g.name,
            g.memory_bytes as f64 / f64::from(1u32 << 30),
            g.compute_capability.0,
            g.compute_capability.1
        );
    }
    if let Some(p) = plan {
        println!();
        for line in p.lines() {
            println!("{line}");
        }
    }
    Ok(())
}
