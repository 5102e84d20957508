//! Every parameter of the reward model receives a gradient, and backprop agrees with finite
//! differences on a tiny model: the guard against candle's fused ops silently dropping gradients.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rewardlab_trainer::gpt2::{Config, RewardModel};
use rewardlab_trainer::loss::ranking_loss;

/// Three right-padded sequences of one ranking, and the loss of ranking them 1, 3, 2.
fn loss_of(model: &RewardModel, device: &Device) -> candle_core::Result<Tensor> {
    let ids = Tensor::new(&[[1u32, 5, 9, 3, 0], [2, 7, 7, 0, 0], [4, 4, 8, 6, 11]], device)?;
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], device)?;
    let rewards = model.forward(&ids, &mask)?;
    ranking_loss(&rewards, &[1, 3, 2], 0.0, 0.01)
}

fn tiny(dtype: DType) -> (VarMap, RewardModel) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
    let model = RewardModel::new(&Config::tiny(16), vb).unwrap();
    (varmap, model)
}

#[test]
fn every_parameter_receives_a_non_zero_gradient() {
    let (varmap, model) = tiny(DType::F32);
    let loss = loss_of(&model, &Device::Cpu).unwrap();
    let grads = loss.backward().unwrap();
    let vars = varmap.data().lock().unwrap();
    assert_eq!(vars.len(), 2 + 12 * 2 + 2 + 1, "wte, wpe, 12 per block, ln_f, score");
    for (name, var) in vars.iter() {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name} got no gradient"));
        let size: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(size > 0.0, "{name} got an all-zero gradient");
    }
    for name in ["transformer.wte.weight", "transformer.h.1.attn.c_attn.weight", "transformer.h.0.mlp.c_proj.bias", "transformer.ln_f.weight", "score.weight"] {
        assert!(vars.contains_key(name), "Hugging Face name {name} is missing");
    }
}

#[test]
fn backprop_agrees_with_finite_differences() {
    let (varmap, model) = tiny(DType::F64);
    let loss = loss_of(&model, &Device::Cpu).unwrap();
    let grads = loss.backward().unwrap();
    let vars = varmap.data().lock().unwrap();
    let eps = 1e-5;
    let mut checked = 0;
    for name in ["transformer.h.0.ln_1.weight", "transformer.h.1.attn.c_attn.weight", "transformer.h.0.mlp.c_fc.bias", "transformer.wpe.weight", "score.weight"]
    {
        let var: &Var = &vars[name];
        let analytic: Vec<f64> = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let original = var.as_tensor().copy().unwrap();
        let values: Vec<f64> = original.flatten_all().unwrap().to_vec1().unwrap();
        for index in [0, values.len() / 3, values.len() - 1] {
            let at = |delta: f64| {
                let mut v = values.clone();
                v[index] += delta;
                var.set(&Tensor::from_vec(v, original.shape(), &Device::Cpu).unwrap()).unwrap();
                loss_of(&model, &Device::Cpu).unwrap().to_scalar::<f64>().unwrap()
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            var.set(&original).unwrap();
            let tolerance = 1e-6 + 1e-4 * numeric.abs().max(analytic[index].abs());
            assert!((numeric - analytic[index]).abs() < tolerance, "{name}[{index}]: numeric {numeric} vs backprop {}", analytic[index]);
            checked += 1;
        }
    }
    assert_eq!(checked, 15);
}

#[test]
fn padding_does_not_change_a_reward() {
    let (_varmap, model) = tiny(DType::F32);
    let short = model.forward(&Tensor::new(&[[3u32, 1, 4]], &Device::Cpu).unwrap(), &Tensor::new(&[[1u32, 1, 1]], &Device::Cpu).unwrap()).unwrap();
    let padded = model.forward(&Tensor::new(&[[3u32, 1, 4, 0, 0]], &Device::Cpu).unwrap(), &Tensor::new(&[[1u32, 1, 1, 0, 0]], &Device::Cpu).unwrap()).unwrap();
    let (a, b): (Vec<f32>, Vec<f32>) = (short.to_vec1().unwrap(), padded.to_vec1().unwrap());
    assert!((a[0] - b[0]).abs() < 1e-5, "{a:?} vs {b:?}");
}
