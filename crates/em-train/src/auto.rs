//! `"auto"` values in a training config, filled from an [`em_autoconf`] plan.
//!
//! [`TrainConfig::from_toml`] takes `"auto"` at the keys of [`AUTO_KEYS`] and notes them in
//! [`TrainConfig::auto`]; [`TrainConfig::resolve_auto`] plans on the probed hardware with the
//! model's measured memory model and writes the planned values in. Values the config gives
//! are never changed.

use em_autoconf::{Explicit, Hardware, ModelCost, Plan, Precision, Request};
use em_data::SourceConfig;

use crate::{Opener, Result, TrainConfig, TrainError};

/// Keys that may be `"auto"`, with the placeholder that stands in until the plan fills
/// them.
pub const AUTO_KEYS: &[&str] = &[
    "batch_size",
    "accumulate",
    "workers",
    "precision",
    "checkpointing",
    "optimizer.lr",
    "data.patch.patch",
];

fn placeholder(key: &str) -> toml::Value {
    match key {
        "precision" => toml::Value::String("f32".into()),
        "checkpointing" => toml::Value::Boolean(false),
        "optimizer.lr" => toml::Value::Float(1e-3),
        "data.patch.patch" => toml::Value::Array(vec![toml::Value::Integer(16); 3]),
        _ => toml::Value::Integer(1),
    }
}

/// Replaces `"auto"` at the keys of [`AUTO_KEYS`] by placeholders; returns those keys.
/// (Other keys with an `"auto"` of their own, such as `loss.pos_weight`, keep it.)
pub(crate) fn take_auto(table: &mut toml::Table) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for key in AUTO_KEYS {
        let parts: Vec<&str> = key.split('.').collect();
        let (last, parents) = parts.split_last().expect("keys are not empty");
        if let Some(node) = table_at(table, parents) {
            if node.get(*last).and_then(toml::Value::as_str) == Some("auto") {
                node.insert(last.to_string(), placeholder(key));
                found.push(key.to_string());
            }
        }
    }
    Ok(found)
}

fn table_at<'a>(t: &'a mut toml::Table, path: &[&str]) -> Option<&'a mut toml::Table> {
    match path.split_first() {
        None => Some(t),
        Some((first, rest)) => table_at(t.get_mut(*first)?.as_table_mut()?, rest),
    }
}

/// The model's memory cost for planning (MedNeXt only: the memory model is per
/// architecture).
///
/// # Errors
/// Another architecture, or a model that cannot be built.
pub fn model_cost(cfg: &TrainConfig) -> Result<ModelCost> {
    let m = cfg.model.mednext().ok_or_else(|| {
        TrainError::invalid(
            "model",
            "\"auto\" values need a MedNeXt model (the memory model is MedNeXt's)",
        )
    })?;
    // Counted, not built: an absurd width is priced, not allocated.
    let parameters = m
        .parameter_count()
        .and_then(|p| usize::try_from(p).ok())
        .unwrap_or(usize::MAX);
    let (saved, widest) = m.activation_floats_per_voxel();
    let (i, o) = cfg.model.channels();
    Ok(ModelCost {
        parameters,
        elements_per_voxel_cpu: saved + widest,
        elements_per_voxel_gpu: saved + widest + m.generic_norm_extra_floats_per_voxel(),
        // The measured share of the plain step's memory (docs/models.md: 54–70%), at its
        // worst.
        checkpoint_fraction: Some(0.7),
        divisor: 16,
        io_channels: i + o,
    })
}

/// Shape `(z, y, x)` of a source's image, and the bytes it takes when held in memory
/// (zarr and HDF5 are read chunk by chunk and count nothing).
fn source_shape(src: &SourceConfig, opener: Opener<'_>) -> Result<([usize; 3], u64)> {
    let (shape, in_memory) = match src {
        SourceConfig::Synthetic { shape, .. } => (*shape, true),
        other => {
            let v = other.open(opener)?;
            let s = v.image.shape();
            let s = [s[s.len() - 3], s[s.len() - 2], s[s.len() - 1]].map(|v| v as usize);
            let chunked = match other {
                SourceConfig::Nisb { .. } => true,
                SourceConfig::Volumes { image, .. } => {
                    let p = image.to_string_lossy();
                    p.contains(".zarr") || p.contains(".h5") || p.contains(".hdf5")
                }
                _ => false,
            };
            (s, !chunked)
        }
    };
    // float32 image and uint32 labels.
    let bytes = if in_memory {
        8 * shape.iter().map(|&s| s as u64).product::<u64>()
    } else {
        0
    };
    Ok((shape, bytes))
}

impl TrainConfig {
    /// The planner's request for this config: its model, its volumes, and the values it
    /// sets (everything not listed in [`TrainConfig::auto`]).
    ///
    /// # Errors
    /// A non-MedNeXt model, unreadable data sources.
    pub fn plan_request(&self, opener: Opener<'_>, gpu_backend: bool) -> Result<Request> {
        let mut shapes = Vec::new();
        let mut data_bytes = 0;
        for s in &self.data.sources {
            let (shape, bytes) = source_shape(&s.source, opener)?;
            shapes.push(shape);
            data_bytes += bytes;
        }
        let auto = |k: &str| self.auto.iter().any(|a| a == k);
        let given = |k: &str| !auto(k);
        let mut req = Request::new(model_cost(self)?, shapes);
        req.voxel_size = self.voxel_size;
        req.data_bytes = data_bytes;
        req.gpu_backend = gpu_backend;
        req.precisions = if gpu_backend {
            vec![Precision::F32, Precision::Bf16, Precision::F16]
        } else {
            vec![Precision::F32]
        };
        req.effective_batch = match (self.effective_batch, given("batch_size")) {
            (Some(e), _) => e,
            (None, true) => {
                self.batch_size
                    * if given("accumulate") {
                        self.accumulate
                    } else {
                        1
                    }
            }
            // PyTC's Lucchi batch on a GPU; on CPUs each sample costs seconds.
            (None, false) if gpu_backend => 4,
            (None, false) => 2,
        };
        req.explicit = Explicit {
            device: None,
            precision: given("precision").then_some(self.precision),
            patch: given("data.patch.patch").then_some(self.data.patch.patch),
            batch: given("batch_size").then_some(self.batch_size),
            accumulate: given("accumulate").then_some(self.accumulate),
            workers: given("workers").then_some(self.workers),
            lr: given("optimizer.lr").then_some(self.optimizer.lr),
            checkpointing: given("checkpointing").then_some(self.checkpointing),
        };
        Ok(req)
    }

    /// The plan for this config on `hw` (what `em plan --config` prints).
    ///
    /// # Errors
    /// As [`TrainConfig::plan_request`], and when nothing fits in memory.
    pub fn plan(&self, hw: &Hardware, opener: Opener<'_>, gpu_backend: bool) -> Result<Plan> {
        let req = self.plan_request(opener, gpu_backend)?;
        em_autoconf::plan(hw, &req).map_err(|e| TrainError::invalid("plan", e.to_string()))
    }

    /// Fills every `"auto"` value from `previous`, the resolved config of the same run (a
    /// resumed run keeps its first plan, whatever machine it resumes on).
    pub fn fill_auto_from(&mut self, previous: &TrainConfig) {
        for key in std::mem::take(&mut self.auto) {
            match key.as_str() {
                "batch_size" => self.batch_size = previous.batch_size,
                "accumulate" => self.accumulate = previous.accumulate,
                "workers" => self.workers = previous.workers,
                "precision" => self.precision = previous.precision,
                "checkpointing" => self.checkpointing = previous.checkpointing,
                "optimizer.lr" => self.optimizer.lr = previous.optimizer.lr,
                "data.patch.patch" => self.data.patch.patch = previous.data.patch.patch,
                _ => {}
            }
        }
    }

    /// Fills every `"auto"` value from the plan on `hw` and returns the plan; `None` when
    /// the config has no `"auto"` value.
    ///
    /// # Errors
    /// As [`TrainConfig::plan`], and a filled config that fails [`TrainConfig::validate`].
    pub fn resolve_auto(
        &mut self,
        hw: &Hardware,
        opener: Opener<'_>,
        gpu_backend: bool,
    ) -> Result<Option<Plan>> {
        if self.auto.is_empty() {
            return Ok(None);
        }
        let plan = self.plan(hw, opener, gpu_backend)?;
        let mut planned = self.clone();
        planned.batch_size = plan.batch.value;
        planned.accumulate = plan.accumulate.value;
        planned.workers = plan.workers.value;
        planned.precision = plan.precision.value;
        planned.checkpointing = plan.checkpointing.value;
        planned.optimizer.lr = plan.lr.value;
        planned.data.patch.patch = plan.patch.value;
        self.fill_auto_from(&planned);
        self.validate()?;
        Ok(Some(plan))
    }
}
