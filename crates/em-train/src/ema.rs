//! An exponential moving average of the weights, kept on the inner (non-autodiff) backend.

use std::collections::HashMap;

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;

use em_models::Model;

struct Collect<B: Backend> {
    params: HashMap<ParamId, Tensor<B, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<B::InnerBackend> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val().inner();
        let n = t.shape().num_elements();
        self.params.insert(param.id, t.reshape([n]));
    }
}

struct Blend<B: Backend> {
    params: HashMap<ParamId, Tensor<B, 1>>,
    decay: f64,
}

impl<B: Backend> ModuleMapper<B> for Blend<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, ema, mapper) = param.consume();
        let value = match self.params.remove(&id) {
            Some(current) => {
                let current = current.reshape(ema.shape());
                ema.mul_scalar(self.decay) + current.mul_scalar(1.0 - self.decay)
            }
            None => ema,
        };
        Param::from_mapped_value(id, value, mapper)
    }
}

/// `ema ← decay·ema + (1 − decay)·model`, parameter by parameter (matched by id).
pub(crate) fn update<B: AutodiffBackend>(
    ema: Model<B::InnerBackend>,
    model: &Model<B>,
    decay: f64,
) -> Model<B::InnerBackend> {
    let mut collect = Collect {
        params: HashMap::new(),
    };
    model.visit(&mut collect);
    ema.map(&mut Blend {
        params: collect.params,
        decay,
    })
}

/// A fresh EMA: the current weights without autodiff.
pub(crate) fn init<B: AutodiffBackend>(model: &Model<B>) -> Model<B::InnerBackend> {
    model.valid()
}
