//! What candle leaves to us: an AdamW whose moments and step can be saved and restored
//! (candle-nn's cannot), gradient accumulation across micro-batches, clipping by global norm,
//! and warmup + cosine/linear learning-rate schedules.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use candle_nn::VarMap;

/// The trainable parameters of a `VarMap`, in name order (a stable order for saving state).
pub fn named_params(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock().expect("VarMap lock poisoned");
    let mut params: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
}

/// Gradients summed over the micro-batches of one optimizer step, aligned with the parameters.
pub struct Grads {
    sums: Vec<Option<Tensor>>,
    /// A factor every gradient is still to be multiplied by (clipping's), applied by the
    /// optimizer's fused step as it reads each gradient (a pass over all of them fewer), or by
    /// [`Grads::apply_scale`] before anything else reads them.
    scale: f64,
}

impl Grads {
    pub fn new(n: usize) -> Self {
        Self { sums: vec![None; n], scale: 1.0 }
    }

    /// Multiplies the gradients by the pending scale (as `g * factor` always did).
    fn apply_scale(&mut self) -> Result<()> {
        if self.scale != 1.0 {
            for g in self.sums.iter_mut().flatten() {
                *g = (&*g * self.scale)?;
            }
            self.scale = 1.0;
        }
        Ok(())
    }

    /// Adds one backward pass's gradients.
    pub fn add(&mut self, params: &[(String, Var)], store: &GradStore) -> Result<()> {
        self.apply_scale()?;
        for ((_, var), sum) in params.iter().zip(self.sums.iter_mut()) {
            if let Some(g) = store.get(var.as_tensor()) {
                // Detached: a gradient still links to the whole graph of its step, and the
                // moments computed from it would keep every step's graph alive.
                let g = g.detach();
                *sum = Some(match sum.take() {
                    Some(s) => (s + g)?,
                    None => g,
                });
            }
        }
        Ok(())
    }

    /// Sums the gradients over the ranks (see [`crate::dist`]): every parameter's gradient is
    /// flattened into ONE f32 buffer, followed by one flag per parameter (1 where this rank
    /// has a gradient for it), and the buffer is all-reduced once; a parameter then has a
    /// gradient when any rank had one, as it would in one process over the whole batch.
    /// Returns the bytes of the buffer. Nothing happens with one rank.
    pub fn all_reduce(&mut self, params: &[(String, Var)]) -> Result<usize> {
        if crate::dist::world().size == 1 {
            return Ok(0);
        }
        self.apply_scale()?;
        let sizes: Vec<usize> = params.iter().map(|(_, v)| v.elem_count()).collect();
        let total: usize = sizes.iter().sum();
        let mut flat = Vec::with_capacity(total + params.len());
        for (sum, &n) in self.sums.iter().zip(&sizes) {
            match sum {
                Some(g) => flat.extend(g.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?),
                None => flat.extend(std::iter::repeat_n(0f32, n)),
            }
        }
        flat.extend(self.sums.iter().map(|s| f32::from(u8::from(s.is_some()))));
        crate::dist::all_reduce_f32(&mut flat);
        let mut offset = 0;
        for (i, ((_, var), &n)) in params.iter().zip(&sizes).enumerate() {
            self.sums[i] = match flat[total + i] > 0.0 {
                true => Some(Tensor::from_slice(&flat[offset..offset + n], var.shape(), var.device())?.to_dtype(var.dtype())?),
                false => None,
            };
            offset += n;
        }
        Ok(flat.len() * 4)
    }

    /// The global L2 norm of all gradients (with the pending scale).
    pub fn norm(&self) -> Result<f64> {
        let mut total = 0f64;
        for g in self.sums.iter().flatten() {
            total += crate::ops::sum_squares(g)?;
        }
        Ok(total.sqrt() * self.scale.abs())
    }

    /// Scales every gradient so the global norm is at most `max_norm` (PyTorch's
    /// `clip_grad_norm_`: factor `max_norm / (norm + 1e-6)` when it is below 1). Returns the
    /// norm before clipping.
    pub fn clip(&mut self, max_norm: f64) -> Result<f64> {
        self.apply_scale()?;
        let norm = self.norm()?;
        let factor = max_norm / (norm + 1e-6);
        if max_norm > 0.0 && factor < 1.0 {
            // Applied as the optimizer reads each gradient (see `scale`).
            self.scale = factor;
        }
        Ok(norm)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// PyTorch's and Hugging Face `Trainer`'s defaults (weight decay 0, as in TRL).
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// AdamW exactly as `torch.optim.AdamW` computes it (decoupled weight decay, bias-corrected
/// moments, `eps` added after the square root).
pub struct AdamW {
    params: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: u64,
    cfg: AdamWConfig,
}

impl AdamW {
    pub fn new(params: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        let m = params.iter().map(|(_, p)| p.as_tensor().zeros_like()).collect::<Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(Self { params, m, v, step: 0, cfg })
    }

    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    pub fn step(&mut self, grads: &Grads, lr: f64) -> Result<()> {
        self.step += 1;
        let c = self.cfg;
        let t = self.step as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let h =
            crate::ops::AdamWStep { lr, beta1: c.beta1, beta2: c.beta2, eps: c.eps, weight_decay: c.weight_decay, bias1, bias2_sqrt, grad_scale: grads.scale };
        for (i, (_, var)) in self.params.iter().enumerate() {
            let Some(g) = &grads.sums[i] else { continue };
            // One pass per parameter on the CPU (the new θ, m and v side by side).
            if let Some(packed) = crate::ops::adamw_update(var.as_tensor(), &self.m[i], &self.v[i], g, h)? {
                var.set(&packed.get(0)?)?;
                self.m[i] = packed.get(1)?;
                self.v[i] = packed.get(2)?;
                continue;
            }
            let scaled;
            let g = if grads.scale != 1.0 {
                scaled = (g * grads.scale)?;
                &scaled
            } else {
                g
            };
            let m = ((&self.m[i] * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let theta = var.as_tensor();
            let decayed = if c.weight_decay > 0.0 { (theta * (1.0 - lr * c.weight_decay))? } else { theta.clone() };
            let denom = ((v.sqrt()? / bias2_sqrt)? + c.eps)?;
            let update = ((&m / denom)? * (lr / bias1))?;
            var.set(&(decayed - update)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Writes the moments (`m.NAME`, `v.NAME`) to a safetensors file; the step goes in the
    /// checkpoint's state.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            tensors.insert(format!("m.{name}"), self.m[i].clone());
            tensors.insert(format!("v.{name}"), self.v[i].clone());
        }
        candle_core::safetensors::save(&tensors, path)
    }

    pub fn load(&mut self, path: &Path, step: u64) -> Result<()> {
        let mut tensors = candle_core::safetensors::load(path, self.params[0].1.device())?;
        for (i, (name, var)) in self.params.iter().enumerate() {
            for (prefix, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let t =
                    tensors.remove(&format!("{prefix}.{name}")).ok_or_else(|| candle_core::Error::Msg(format!("optimizer state has no {prefix}.{name}")))?;
                if t.shape() != var.shape() {
                    candle_core::bail!("optimizer state {prefix}.{name} has shape {:?}, the model {:?}", t.shape(), var.shape())
                }
                *slot = t;
            }
        }
        self.step = step;
        Ok(())
    }
}

pub use rewardlab_protocol::Schedule;

/// The learning rate for optimizer step `step` (0-based) of `total`: linear warmup over
/// `warmup` steps to `peak`, then cosine or linear decay to 0 (Hugging Face's schedules).
pub fn learning_rate(schedule: Schedule, peak: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    match schedule {
        Schedule::Cosine => peak * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos()),
        Schedule::Linear => peak * (1.0 - progress).max(0.0),
        Schedule::Constant => peak,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// Two AdamW steps on f(x) = sum(x²) from x = [1, -2, 3], lr 0.1, weight decay 0.01,
    /// against PyTorch:
    /// ```python
    /// x = torch.tensor([1., -2., 3.], requires_grad=True)
    /// opt = torch.optim.AdamW([x], lr=0.1, weight_decay=0.01)
    /// for _ in range(2):
    ///     opt.zero_grad(); (x ** 2).sum().backward(); opt.step()
    /// print(x)  # tensor([ 0.7985, -1.7963,  2.7942])
    /// ```
    #[test]
    fn adamw_matches_pytorch() {
        let varmap = VarMap::new();
        let x = varmap.get(3, "x", candle_nn::Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
        let params = named_params(&varmap);
        params[0].1.set(&Tensor::new(&[1f32, -2., 3.], &Device::Cpu).unwrap()).unwrap();
        let cfg = AdamWConfig { weight_decay: 0.01, ..Default::default() };
        let mut opt = AdamW::new(params.clone(), cfg).unwrap();
        for _ in 0..2 {
            let mut grads = Grads::new(params.len());
            grads.add(&params, &x.sqr().unwrap().sum_all().unwrap().backward().unwrap()).unwrap();
            opt.step(&grads, 0.1).unwrap();
        }
        let got: Vec<f32> = params[0].1.as_tensor().to_vec1().unwrap();
        for (g, want) in got.iter().zip([0.7985f32, -1.7963, 2.7942]) {
            assert!((g - want).abs() < 1e-4, "{got:?}");
        }
    }

    #[test]
    fn clipping_bounds_the_global_norm_and_schedules_warm_up_then_decay() {
        let varmap = VarMap::new();
        let x = varmap.get(2, "x", candle_nn::Init::Const(3.0), DType::F32, &Device::Cpu).unwrap();
        let params = named_params(&varmap);
        let mut grads = Grads::new(1);
        grads.add(&params, &(x.sqr().unwrap().sum_all().unwrap()).backward().unwrap()).unwrap();
        let before = grads.clip(1.0).unwrap();
        assert!((before - (72f64).sqrt()).abs() < 1e-4, "{before}");
        assert!((grads.norm().unwrap() - 1.0).abs() < 1e-4);
        assert_eq!(learning_rate(Schedule::Cosine, 1.0, 0, 10, 110), 0.1);
        assert_eq!(learning_rate(Schedule::Cosine, 1.0, 10, 10, 110), 1.0);
        assert!((learning_rate(Schedule::Cosine, 1.0, 60, 10, 110) - 0.5).abs() < 1e-12);
        assert!((learning_rate(Schedule::Linear, 1.0, 60, 10, 110) - 0.5).abs() < 1e-12);
        assert!(learning_rate(Schedule::Cosine, 1.0, 109, 10, 110) < 0.001);
    }
}
