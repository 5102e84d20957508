//! Fused CPU kernels with backward passes: softmax, causal attention, layer norm, GELU, bias
//! add and (with the `openblas` feature) matrix products. candle's own fused softmax and norms
//! have no backward pass (gradients silently stop there); its differentiable forms are chains
//! of small ops, each a pass over memory and a node in the graph. These run one pass forward and
//! one backward, parallel over rows (or over batch × head). On other devices, and for dtypes
//! other than f32/f64, the differentiable tensor-op forms are used.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use num_traits::Float;
use rayon::prelude::*;

/// Rows shorter than this are processed in chunks of several per task.
const MIN_PAR: usize = 4096;

fn rows_per_task(d: usize) -> usize {
    MIN_PAR.div_ceil(d.max(1))
}

fn contiguous_slice<'a, T: candle_core::WithDType>(s: &'a [T], l: &Layout) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("fused op: input is not contiguous"),
    }
}

/// The element types the fused kernels run on.
#[cfg(feature = "openblas")]
trait Real: Float + Send + Sync + Exp + crate::blas::Gemm + 'static {}
#[cfg(not(feature = "openblas"))]
trait Real: Float + Send + Sync + Exp + 'static {}
impl Real for f32 {}
impl Real for f64 {}

/// eˣ as the kernels compute it: in f32 a branch-free polynomial the compiler vectorises (libm's
/// `expf` is a call per element and took a twentieth of a step in GELU and softmax), within
/// 2 ulp of the exact value (`fast_exp_is_within_two_ulp_of_exp`); in f64 libm's `exp`,
/// so the f64 kernels still match the tensor-op forms to 1e-10.
pub trait Exp: Copy {
    fn exp_k(self) -> Self;
}

impl Exp for f64 {
    #[inline(always)]
    fn exp_k(self) -> f64 {
        self.exp()
    }
}

impl Exp for f32 {
    /// Cephes' `expf`: eˣ = 2ⁿ·eʳ with n = round(x·log₂e) and r = x − n·ln 2 (ln 2 in two
    /// parts, so r is exact), eʳ by a degree-7 polynomial on |r| ≤ ln 2 / 2. Below −87.33
    /// (where eˣ leaves the normal floats) it returns 0; above 88.37 it returns e^88.37 ≈
    /// 2.4·10³⁸ (eˣ overflows at 88.72); NaN stays NaN.
    #[inline(always)]
    fn exp_k(self) -> f32 {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        // Adding 1.5·2²³ rounds to an integer, which then sits in the low mantissa bits.
        const MAGIC: f32 = 12_582_912.0;
        let x = self.clamp(-87.336_55, 88.376_26);
        let shifted = x * LOG2E + MAGIC;
        let n = shifted - MAGIC;
        let r = x - n * LN2_HI - n * LN2_LO;
        let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 0.5;
        let er = p * r * r + r + 1.0;
        let k = (shifted.to_bits() as i32).wrapping_sub(0x4B40_0000);
        let scale = f32::from_bits((k.wrapping_add(127) << 23) as u32);
        if self < -87.336_55 {
            0.0
        } else {
            er * scale
        }
    }
}

/// A kernel over contiguous inputs that are all f32 or all f64: the one place that matches
/// candle's storage types, so each op writes its arithmetic once, generically.
trait Kernel {
    const NAME: &'static str;
    fn run<T: Real>(&self, xs: &[&[T]], ls: &[&Layout]) -> Result<(Vec<T>, Shape)>;
}

fn dispatch<K: Kernel>(k: &K, inputs: &[(&CpuStorage, &Layout)]) -> Result<(CpuStorage, Shape)> {
    let ls: Vec<&Layout> = inputs.iter().map(|(_, l)| *l).collect();
    let f32s: Option<Vec<&[f32]>> = inputs
        .iter()
        .map(|(s, l)| match s {
            CpuStorage::F32(v) => contiguous_slice(v, l).ok(),
            _ => None,
        })
        .collect();
    if let Some(xs) = f32s {
        let (out, shape) = k.run(&xs, &ls)?;
        return Ok((CpuStorage::F32(out), shape));
    }
    let f64s: Option<Vec<&[f64]>> = inputs
        .iter()
        .map(|(s, l)| match s {
            CpuStorage::F64(v) => contiguous_slice(v, l).ok(),
            _ => None,
        })
        .collect();
    if let Some(xs) = f64s {
        let (out, shape) = k.run(&xs, &ls)?;
        return Ok((CpuStorage::F64(out), shape));
    }
    candle_core::bail!("{}: the inputs must be contiguous and all f32 or all f64", K::NAME)
}

/// The CPU storage of a tensor a kernel holds besides its arguments (a mask, a gradient).
#[cfg(feature = "openblas")]
fn held(t: &Tensor) -> Result<(std::sync::RwLockReadGuard<'_, candle_core::Storage>, &Layout)> {
    let (s, l) = t.storage_and_layout();
    if !matches!(&*s, candle_core::Storage::Cpu(_)) {
        candle_core::bail!("fused op: a held tensor is not on the CPU")
    }
    Ok((s, l))
}

#[cfg(feature = "openblas")]
fn cpu(s: &candle_core::Storage) -> &CpuStorage {
    match s {
        candle_core::Storage::Cpu(c) => c,
        _ => unreachable!("checked by `held`"),
    }
}

fn last_dim(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1)
}

fn use_fused(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// Softmax over the last dimension, differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !use_fused(x) {
        return candle_nn::ops::softmax(x, D::Minus1);
    }
    x.contiguous()?.apply_op1(Softmax)
}

struct Softmax;

fn softmax_rows<T: Float + Exp + Send + Sync>(x: &[T], d: usize) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(d * rows_per_task(d)).zip(x.par_chunks(d * rows_per_task(d))).for_each(|(o, x)| {
        crate::simd::best(
            #[inline(always)]
            || {
                for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                    let max = x.iter().fold(T::neg_infinity(), |m, &v| m.max(v));
                    let mut sum = T::zero();
                    for (o, &v) in o.iter_mut().zip(x) {
                        *o = (v - max).exp_k();
                        sum = sum + *o;
                    }
                    let inv = T::one() / sum;
                    o.iter_mut().for_each(|v| *v = *v * inv);
                }
            },
        )
    });
    out
}

impl Kernel for Softmax {
    const NAME: &'static str = "rl-softmax";
    fn run<T: Real>(&self, xs: &[&[T]], ls: &[&Layout]) -> Result<(Vec<T>, Shape)> {
        Ok((softmax_rows(xs[0], last_dim(ls[0])), ls[0].shape().clone()))
    }
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch(self, &[(s, l)])
    }

    /// dx = y ⊙ (g − Σ g ⊙ y), per row.
    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&g.contiguous()?, &SoftmaxBwd)?))
    }
}

struct SoftmaxBwd;

fn softmax_bwd_rows<T: Float + Send + Sync>(y: &[T], g: &[T], d: usize) -> Vec<T> {
    let mut out = vec![T::zero(); y.len()];
    let chunk = d * rows_per_task(d);
    out.par_chunks_mut(chunk).zip(y.par_chunks(chunk).zip(g.par_chunks(chunk))).for_each(|(o, (y, g))| {
        crate::simd::best(
            #[inline(always)]
            || {
                for ((o, y), g) in o.chunks_mut(d).zip(y.chunks(d)).zip(g.chunks(d)) {
                    let dot = lane_dot(y, g);
                    for ((o, &y), &g) in o.iter_mut().zip(y).zip(g) {
                        *o = y * (g - dot);
                    }
                }
            },
        )
    });
    out
}

impl Kernel for SoftmaxBwd {
    const NAME: &'static str = "rl-softmax-bwd";
    fn run<T: Real>(&self, xs: &[&[T]], ls: &[&Layout]) -> Result<(Vec<T>, Shape)> {
        Ok((softmax_bwd_rows(xs[0], xs[1], last_dim(ls[0])), ls[0].shape().clone()))
    }
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch(self, &[(s1, l1), (s2, l2)])
    }
}

/// `a · b` for 2-D `a` `[m, k]` and `b` `[k, n]`, differentiable: through OpenBLAS on the CPU
/// when built with the `openblas` feature, else candle's matmul.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul_t(a, b, false, false)
}

/// `a · bᵀ` for `a` `[m, k]` and `b` `[n, k]` (an LM head over the token embeddings).
pub fn matmul_bt(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul_t(a, b, false, true)
}

fn matmul_t(a: &Tensor, b: &Tensor, ta: bool, tb: bool) -> Result<Tensor> {
    #[cfg(feature = "openblas")]
    if use_fused(a) && a.dtype() == b.dtype() {
        return a.contiguous()?.apply_op2(&b.contiguous()?, Matmul { ta, tb });
    }
    let a = if ta { a.t()? } else { a.clone() };
    let b = if tb { b.t()? } else { b.clone() };
    a.matmul(&b)
}

/// `op(a) · op(b)` with `op` a transpose where `ta` / `tb` say, both stored row-major.
#[cfg(feature = "openblas")]
struct Matmul {
    ta: bool,
    tb: bool,
}

#[cfg(feature = "openblas")]
impl Kernel for Matmul {
    const NAME: &'static str = "rl-blas-matmul";
    fn run<T: Real>(&self, xs: &[&[T]], ls: &[&Layout]) -> Result<(Vec<T>, Shape)> {
        let ((ra, ca), (rb, cb)) = (ls[0].shape().dims2()?, ls[1].shape().dims2()?);
        let (m, k) = if self.ta { (ca, ra) } else { (ra, ca) };
        let (k2, n) = if self.tb { (cb, rb) } else { (rb, cb) };
        if k != k2 {
            candle_core::bail!("rl-blas-matmul: {m}×{k} · {k2}×{n}")
        }
        Ok((T::gemm_new(self.ta, self.tb, m, n, k, xs[0], xs[1]), Shape::from((m, n))))
    }
}

#[cfg(feature = "openblas")]
impl CustomOp2 for Matmul {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch(self, &[(s1, l1), (s2, l2)])
    }

    /// With C = op(A)·op(B) and G = dC: dA = G·op(B)ᵀ (stored transposed when `ta`), dB =
    /// op(A)ᵀ·G (likewise), each again one product.
    fn bwd(&self, a: &Tensor, b: &Tensor, _c: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let (ta, tb) = (self.ta, self.tb);
        let da = if ta { b.apply_op2_no_bwd(&g, &Matmul { ta: tb, tb: true })? } else { g.apply_op2_no_bwd(b, &Matmul { ta: false, tb: !tb })? };
        let db = if tb { g.apply_op2_no_bwd(a, &Matmul { ta: true, tb: ta })? } else { a.apply_op2_no_bwd(&g, &Matmul { ta: !ta, tb: false })? };
        Ok((Some(da), Some(db)))
    }
}

/// Hugging Face's `Conv1D` in one node: `x · w + b` for `x` `[.., in]`, `w` `[in, out]` and
/// `b` `[out]` → `[.., out]`, differentiable in all three. One node instead of a reshape, a
/// product, a bias add and a reshape: backward, each of those would zero a gradient buffer the
/// size of its output and add into it.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "openblas")]
    if use_fused(x) && x.dtype() == w.dtype() && x.dtype() == b.dtype() {
        return x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, Linear);
    }
    let dims = x.dims();
    let n_in = dims[dims.len() - 1];
    let mut out_dims = dims.to_vec();
    *out_dims.last_mut().expect("at least one dimension") = w.dim(1)?;
    add_bias(&matmul(&x.reshape((x.elem_count() / n_in, n_in))?, w)?, b)?.reshape(out_dims)
}

#[cfg(feature = "openblas")]
struct Linear;

/// (rows, in, out) of a `linear` call, checked.
#[cfg(feature = "openblas")]
fn linear_dims(x: &Layout, w: &Layout, b: &Layout) -> Result<(usize, usize, usize)> {
    let (n_in, n_out) = w.shape().dims2()?;
    if last_dim(x) != n_in || b.dims() != [n_out] || x.dims().is_empty() {
        candle_core::bail!("rl-linear: x {:?} · w {:?} + b {:?}", x.dims(), w.dims(), b.dims())
    }
    Ok((x.shape().elem_count() / n_in, n_in, n_out))
}

#[cfg(feature = "openblas")]
impl Kernel for Linear {
    const NAME: &'static str = "rl-linear";
    fn run<T: Real>(&self, xs: &[&[T]], ls: &[&Layout]) -> Result<(Vec<T>, Shape)> {
        let (_, n_in, n_out) = linear_dims(ls[0], ls[1], ls[2])?;
        let c = linear_rows(xs[0], xs[1], xs[2], None);
        debug_assert_eq!(c.len(), xs[0].len() / n_in * n_out);
        let mut dims = ls[0].dims().to_vec();
        *dims.last_mut().expect("checked non-empty") = n_out;
        Ok((c, Shape::from(dims)))
    }
}

#[cfg(feature = "openblas")]
impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch(self, &[(s1, l1), (s2, l2), (s3, l3)])
    }

    /// dx = g·wᵀ, dw = xᵀ·g, db = the column sums of g (rows in a fixed order).
    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n_in, n_out) = w.dims2()?;
        let rows = x.elem_count() / n_in;
        let g = g.contiguous()?.reshape((rows, n_out))?;
        let x2 = x.reshape((rows, n_in))?;
        let dx = g.apply_op2_no_bwd(w, &Matmul { ta: false, tb: true })?.reshape(x.shape())?;
        let dw = x2.apply_op2_no_bwd(&g, &Matmul { ta: true, tb: false })?;
        let db = g.apply_op1_no_bwd(&ColumnSums { n: n_out })?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// Causal self-attention in one node, straight from the `c_attn` projection: `qkv`
/// `[b, t, 3·d]` (queries, keys, values side by side, each `n_head` heads of `d / n_head`) and
/// a key mask `[b, t]` → softmax(q·kᵀ·scale, causal and padding masked)·v with the heads joined
/// again, `[b, t, d]`, differentiable in `qkv`. Splitting the heads inside the kernel spares the
/// graph three narrows, reshapes, transposes and copies each way (each a pass over memory
/// and, backward, a zeroed gradient and a sum). The probabilities are recomputed in the
/// backward pass rather than kept (as flash attention does), and every (batch, head) runs as a
/// task of its own with OpenBLAS products. `None` when the fused kernels do not serve `qkv`.
pub fn qkv_attention(qkv: &Tensor, key_mask: &Tensor, n_head: usize, scale: f64) -> Result<Option<Tensor>> {
    #[cfg(feature = "openblas")]
    if use_fused(qkv) {
        let op = Attention { mask: key_mask.to_dtype(qkv.dtype())?.contiguous()?, n_head, scale };
        return Ok(Some(qkv.contiguous()?.apply_op1(op)?));
    }
    let _ = (qkv, key_mask, n_head, scale);
    Ok(None)
}

#[cfg(feature = "openblas")]
struct Attention {
    mask: Tensor,
    n_head: usize,
    scale: f64,
}

/// Row `i` of causal attention probabilities, in place: `row` holds the raw scores of query
/// `i`; key j counts if j ≤ i and `keys[j]` is non-zero. The row becomes softmax(score·scale)
/// over those keys and 0 elsewhere (all 0 when no key counts: a padding query). The max and
/// the sum run in 8 lanes (a fixed order, so the same bits on any thread), which lets the
/// compiler vectorise them with the exponentials.
#[inline(always)]
fn causal_softmax_row<T: Float + Exp>(row: &mut [T], keys: &[T], i: usize, scale: T) {
    let (seen, rest) = row.split_at_mut(i + 1);
    rest.iter_mut().for_each(|v| *v = T::zero());
    let keys = &keys[..i + 1];
    let mut lanes = [T::neg_infinity(); 8];
    let (body, tail) = (seen.len() / 8 * 8, seen.len() % 8);
    // `a > b` rather than `max`, whose NaN rules keep the compiler from vectorising it.
    let bigger = |a: T, b: T| if a > b { a } else { b };
    for (c, k) in seen[..body].chunks_exact(8).zip(keys.chunks_exact(8)) {
        for l in 0..8 {
            let v = if k[l] != T::zero() { c[l] * scale } else { T::neg_infinity() };
            lanes[l] = bigger(v, lanes[l]);
        }
    }
    for l in 0..tail {
        if keys[body + l] != T::zero() {
            lanes[l] = bigger(seen[body + l] * scale, lanes[l]);
        }
    }
    let max = lanes.iter().fold(T::neg_infinity(), |m, &v| bigger(v, m));
    if max == T::neg_infinity() {
        seen.iter_mut().for_each(|v| *v = T::zero());
        return;
    }
    for (v, &key) in seen.iter_mut().zip(keys) {
        let e = (*v * scale - max).exp_k();
        *v = if key != T::zero() { e } else { T::zero() };
    }
    let inv = T::one() / lane_sum(seen);
    seen.iter_mut().for_each(|v| *v = *v * inv);
}

/// Σ f(x) in 8 lanes, as [`lane_sum`].
#[inline(always)]
fn lane_sum_by<T: Float>(x: &[T], f: impl Fn(T) -> T) -> T {
    let mut lanes = [T::zero(); 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            lanes[l] = lanes[l] + f(c[l]);
        }
    }
    for (l, &v) in chunks.remainder().iter().enumerate() {
        lanes[l] = lanes[l] + f(v);
    }
    lanes.iter().fold(T::zero(), |a, &v| a + v)
}

/// Σ aᵢ·bᵢ in 8 lanes, as [`lane_sum`].
#[inline(always)]
fn lane_dot<T: Float>(a: &[T], b: &[T]) -> T {
    let mut lanes = [T::zero(); 8];
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (mut ca, mut cb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            lanes[l] = lanes[l] + x[l] * y[l];
        }
    }
    for (l, (&x, &y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
        lanes[l] = lanes[l] + x * y;
    }
    lanes.iter().fold(T::zero(), |a, &v| a + v)
}

/// Σ x in 8 lanes (element j into lane j mod 8), the lanes then added in order: a fixed
/// order the compiler can vectorise (a plain running sum must be added one by one).
#[inline(always)]
fn lane_sum<T: Float>(x: &[T]) -> T {
    let mut lanes = [T::zero(); 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            lanes[l] = lanes[l] + c[l];
        }
    }
    for (l, &v) in chunks.remainder().iter().enumerate() {
        lanes[l] = lanes[l] + v;
    }
    lanes.iter().fold(T::zero(), |a, &v| a + v)
}

/// Probabilities `p` (t×t) of one (batch, head): q·kᵀ·scale, masked, softmax by row.
#[cfg(feature = "openblas")]
#[inline(always)]
fn attention_probs<T: Float + Exp + crate::blas::Gemm>(q: View<T>, k: View<T>, keys: &[T], scale: T) -> Vec<T> {
    let t = q.rows;
    let mut p = crate::blas::gemm_views(false, q, true, k);
    for (i, row) in p.chunks_mut(t).enumerate() {
        causal_softmax_row(row, keys, i, scale);
    }
    p
}

#[cfg(feature = "openblas")]
use crate::blas::View;

/// The shape of an attention call: batch, positions, heads, head size.
#[cfg(feature = "openblas")]
#[derive(Clone, Copy)]
struct Heads {
    b: usize,
    t: usize,
    h: usize,
    hd: usize,
}

#[cfg(feature = "openblas")]
impl Heads {
    fn d(&self) -> usize {
        self.h * self.hd
    }

    /// Head `hh` of part `part` (0 q, 1 k, 2 v; `parts` side by side per row) of batch row
    /// `bi` in `x` `[b, t, parts·d]`, as a `[t, hd]` view (read in place by BLAS).
    fn view<'a, T>(&self, x: &'a [T], parts: usize, part: usize, bi: usize, hh: usize) -> View<'a, T> {
        let w = parts * self.d();
        View { data: x, offset: bi * self.t * w + part * self.d() + hh * self.hd, rows: self.t, cols: self.hd, ld: w }
    }

    /// Joins per-head results into `out` `[b, t, parts·d]`: `heads[bi·h + hh][part]` is
    /// `[t, hd]`.
    fn join<T: Float + Send + Sync>(&self, heads: &[Vec<Vec<T>>], parts: usize) -> Vec<T> {
        let (hd, h, t) = (self.hd, self.h, self.t);
        // Row (bi, i) is, part by part and head by head, row i of each head's result.
        crate::simd::concat_rows(self.b * t, parts * self.d(), 1, parts * h, |row, j| {
            let (bi, i, part, hh) = (row / t, row % t, j / h, j % h);
            &heads[bi * h + hh][part][i * hd..(i + 1) * hd]
        })
    }
}

#[cfg(feature = "openblas")]
fn attention_fwd<T: Float + Exp + crate::blas::Gemm>(qkv: &[T], mask: &[T], s: Heads, scale: T) -> Vec<T> {
    let t = s.t;
    // One task per (batch, head), reading its queries, keys and values in place; then the
    // heads are joined.
    let heads: Vec<Vec<Vec<T>>> = (0..s.b * s.h)
        .into_par_iter()
        .map(|bh| {
            crate::simd::best(
                #[inline(always)]
                || {
                    let (bi, hh) = (bh / s.h, bh % s.h);
                    let keys = &mask[bi * t..(bi + 1) * t];
                    let p = attention_probs(s.view(qkv, 3, 0, bi, hh), s.view(qkv, 3, 1, bi, hh), keys, scale);
                    vec![crate::blas::gemm_views(false, View::dense(&p, t, t), false, s.view(qkv, 3, 2, bi, hh))]
                },
            )
        })
        .collect();
    s.join(&heads, 1)
}

/// Gradients of one (batch, head), given dO: dV = pᵀ·dO, dP = dO·vᵀ,
/// dS = p ⊙ (dP − rowsum(dP ⊙ p))·scale, dQ = dS·k, dK = dSᵀ·q. Returns d(qkv) `[b, t, 3·d]`.
#[cfg(feature = "openblas")]
fn attention_bwd<T: Float + Exp + crate::blas::Gemm>(qkv: &[T], g: &[T], mask: &[T], s: Heads, scale: T) -> Vec<T> {
    let t = s.t;
    let heads: Vec<Vec<Vec<T>>> = (0..s.b * s.h)
        .into_par_iter()
        .map(|bh| {
            crate::simd::best(
                #[inline(always)]
                || {
                    let (bi, hh) = (bh / s.h, bh % s.h);
                    let keys = &mask[bi * t..(bi + 1) * t];
                    let (q, k, v) = (s.view(qkv, 3, 0, bi, hh), s.view(qkv, 3, 1, bi, hh), s.view(qkv, 3, 2, bi, hh));
                    let go = s.view(g, 1, 0, bi, hh);
                    let p = attention_probs(q, k, keys, scale);
                    let dv = crate::blas::gemm_views(true, View::dense(&p, t, t), false, go);
                    let mut dp = crate::blas::gemm_views(false, go, true, v);
                    for (pr, dr) in p.chunks(t).zip(dp.chunks_mut(t)) {
                        let dot = lane_dot(pr, dr);
                        for (d, &p) in dr.iter_mut().zip(pr) {
                            *d = p * (*d - dot) * scale;
                        }
                    }
                    let ds = View::dense(&dp, t, t);
                    let dq = crate::blas::gemm_views(false, ds, false, k);
                    let dk = crate::blas::gemm_views(true, ds, false, q);
                    vec![dq, dk, dv]
                },
            )
        })
        .collect();
    s.join(&heads, 3)
}

/// qkv `[b, t, 3·d]` with `d` a multiple of `n_head`, the key mask `[b, t]`.
#[cfg(feature = "openblas")]
fn attention_dims(ls: &[&Layout], n_head: usize) -> Result<Heads> {
    let (b, t, w) = ls[0].shape().dims3()?;
    if n_head == 0 || w % (3 * n_head) != 0 || ls[1].dims() != [b, t] {
        candle_core::bail!("rl-attention: qkv {:?} with {n_head} heads, mask {:?}", ls[0].dims(), ls[1].dims())
    }
    Ok(Heads { b, t, h: n_head, hd: w / 3 / n_head })
}

#[cfg(feature = "openblas")]
impl Kernel for Attention {
    const NAME: &'static str = "rl-attention";
    /// Inputs qkv, mask.
    fn run<T: Real>(&self, xs: &[&[T]], ls: &[&Layout]) -> Result<(Vec<T>, Shape)> {
        let s = attention_dims(ls, self.n_head)?;
        let scale = T::from(self.scale).expect("a float");
        Ok((attention_fwd(xs[0], xs[1], s, scale), Shape::from((s.b, s.t, s.d()))))
    }
}

#[cfg(feature = "openblas")]
impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        let (mask, ml) = held(&self.mask)?;
        dispatch(self, &[(s1, l1), (cpu(&mask), ml)])
    }

    fn bwd(&self, qkv: &Tensor, _o: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let op = AttentionBwd { mask: self.mask.clone(), n_head: self.n_head, scale: self.scale };
        Ok(Some(qkv.apply_op2_no_bwd(&g.contiguous()?, &op)?))
    }
}

#[cfg(feature = "openblas")]
struct AttentionBwd {
    mask: Tensor,
    n_head: usize,
    scale: f64,
}

#[cfg(feature = "openblas")]
impl Kernel for AttentionBwd {
    const NAME: &'static str = "rl-attention-bwd";
    /// Inputs qkv, dO, mask.
    fn run<T: Real>(&self, xs: &[&[T]], ls: &[&Layout]) -> Result<(Vec<T>, Shape)> {
        let s = attention_dims(&[ls[0], ls[2]], self.n_head)?;
        if ls[1].dims() != [s.b, s.t, s.d()] {
            candle_core::bail!("rl-attention-bwd: qkv {:?}, gradient {:?}", ls[0].dims(), ls[1].dims())
        }
        let scale = T::from(self.scale).expect("a float");
        Ok((attention_bwd(xs[0], xs[1], xs[2], s, scale), ls[0].shape().clone()))
    }
}

#[cfg(feature = "openblas")]
impl CustomOp2 for AttentionBwd {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (mask, ml) = held(&self.mask)?;
        dispatch(self, &[(s1, l1), (s2, l2), (cpu(&mask), ml)])
    }
}

/// The parameters of one GPT-2 block, in the order [`block`] packs them: `ln_1` weight and
/// bias, `attn.c_attn` weight `[d, 3d]` and bias, `attn.c_proj` weight `[d, d]` and bias,
/// `ln_2` weight and bias, `mlp.c_fc` weight `[d, 4d]` and bias, `mlp.c_proj` weight `[4d, d]`
/// and bias.
pub struct BlockParams<'a> {
    pub tensors: [&'a Tensor; 12],
    pub n_head: usize,
    pub eps: f64,
}

/// A whole GPT-2 block, `x + mlp(ln_2(x'))` with `x' = x + attn(ln_1(x))`, as ONE graph node
/// (differentiable in `x` and every parameter), for `x` `[b, t, d]` and the key mask `[b, t]`.
/// candle's backward pass zeroes a buffer for, and adds into it, the gradient of every node's
/// output (ten nodes a block, a quarter of the backward pass's time); here the block's
/// activations are kept by the node and its backward pass runs the same kernels as the separate
/// ops (the same products, sums and orders, so the same bits) into buffers of its own, with the
/// residual gradients added in place. The parameters enter packed into one vector (one copy of
/// 3 MB a block at the default size); their gradients leave it as views. `None` where the
/// fused kernels do not serve `x` (the caller then runs the ops one by one).
pub fn block(x: &Tensor, p: &BlockParams, key_mask: &Tensor) -> Result<Option<Tensor>> {
    #[cfg(feature = "openblas")]
    if use_fused(x) && p.tensors.iter().all(|t| t.dtype() == x.dtype() && t.device().is_cpu()) {
        let (_, _, d) = x.dims3()?;
        let want = block_sizes(d);
        if p.tensors.iter().zip(want).any(|(t, n)| t.elem_count() != n) || d % p.n_head.max(1) != 0 {
            candle_core::bail!("rl-block: parameters do not match a block of width {d} with {} heads", p.n_head)
        }
        let flat = p.tensors.iter().map(|t| t.flatten_all()).collect::<Result<Vec<_>>>()?;
        let packed = Tensor::cat(&flat, 0)?;
        let keep = x.track_op() || packed.track_op();
        let op = Block { n_head: p.n_head, eps: p.eps, keep, saved: std::sync::Mutex::new(None) };
        return Ok(Some(x.contiguous()?.apply_op3(&packed, &key_mask.to_dtype(x.dtype())?.contiguous()?, op)?));
    }
    let _ = (x, p, key_mask);
    Ok(None)
}

/// Element counts of a block's parameters, in packing order, for width `d`.
#[cfg(feature = "openblas")]
fn block_sizes(d: usize) -> [usize; 12] {
    [d, d, d * 3 * d, 3 * d, d * d, d, d, d, d * 4 * d, 4 * d, 4 * d * d, d]
}

/// The packed parameters split again, in packing order.
#[cfg(feature = "openblas")]
fn unpack<T>(packed: &[T], d: usize) -> Result<[&[T]; 12]> {
    let sizes = block_sizes(d);
    if packed.len() != sizes.iter().sum::<usize>() {
        candle_core::bail!("rl-block: {} packed parameters for a block of width {d}", packed.len())
    }
    let mut rest = packed;
    Ok(sizes.map(|n| {
        let (head, tail) = rest.split_at(n);
        rest = tail;
        head
    }))
}

#[cfg(feature = "openblas")]
struct Block {
    n_head: usize,
    eps: f64,
    /// Whether to keep the activations for a backward pass (some input tracks gradients).
    keep: bool,
    /// The activations of the forward pass (`BlockActs<f32>` or `<f64>`), taken by the
    /// backward pass.
    saved: std::sync::Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

/// What a block's backward pass reads of its forward pass.
#[cfg(feature = "openblas")]
struct BlockActs<T> {
    h1: Vec<T>,
    qkv: Vec<T>,
    att: Vec<T>,
    x2: Vec<T>,
    h2: Vec<T>,
    f: Vec<T>,
    gl: Vec<T>,
}

/// `x · w + b` for `x` `[rows, n_in]`, `w` `[n_in, n_out]`, plus `residual` when given: the
/// output starts as the bias (and residual) row by row and BLAS adds the product to it (one
/// pass over the output instead of a zeroing, BLAS's own zeroing and a bias pass).
#[cfg(feature = "openblas")]
fn linear_rows<T: Real>(x: &[T], w: &[T], b: &[T], residual: Option<&[T]>) -> Vec<T> {
    let (n_out, n_in) = (b.len(), w.len() / b.len().max(1));
    let rows = x.len() / n_in.max(1);
    crate::blas::linear_new(rows, n_out, n_in, x, w, b, residual)
}

/// `a += b`, in parallel.
#[cfg(feature = "openblas")]
fn add_into<T: Real>(a: &mut [T], b: &[T]) {
    a.par_chunks_mut(MIN_PAR).zip(b.par_chunks(MIN_PAR)).for_each(|(a, b)| {
        crate::simd::best(
            #[inline(always)]
            || a.iter_mut().zip(b).for_each(|(a, &b)| *a = *a + b),
        )
    });
}

/// The block's forward pass: its output and, when `keep`, its activations.
#[cfg(feature = "openblas")]
fn block_fwd<T: Real>(x: &[T], packed: &[T], mask: &[T], s: Heads, eps: T, keep: bool) -> Result<(Vec<T>, Option<BlockActs<T>>)> {
    let d = s.d();
    let [ln1w, ln1b, wa, ba, wp, bp, ln2w, ln2b, wf, bf, wm, bm] = unpack(packed, d)?;
    let scale = T::from(1.0 / (s.hd as f64).sqrt()).expect("a float");
    let h1 = layer_norm_rows(x, ln1w, ln1b, eps);
    let qkv = linear_rows(&h1, wa, ba, None);
    let att = attention_fwd(&qkv, mask, s, scale);
    let x2 = linear_rows(&att, wp, bp, Some(x));
    let h2 = layer_norm_rows(&x2, ln2w, ln2b, eps);
    let f = linear_rows(&h2, wf, bf, None);
    let gl = gelu_fwd(&f);
    let y = linear_rows(&gl, wm, bm, Some(&x2));
    Ok((y, keep.then_some(BlockActs { h1, qkv, att, x2, h2, f, gl })))
}

/// The gradients of a linear layer `y = x·w + b` given dy `[rows, n_out]`: (dx, dw, db), dx
/// only when asked.
#[cfg(feature = "openblas")]
fn linear_bwd<T: Real>(x: &[T], w: &[T], dy: &[T], n_in: usize, n_out: usize, want_dx: bool) -> (Option<Vec<T>>, Vec<T>, Vec<T>) {
    let rows = dy.len() / n_out;
    let dx = want_dx.then(|| T::gemm_new(false, true, rows, n_in, n_out, dy, w));
    let dw = T::gemm_new(true, false, n_in, n_out, rows, x, dy);
    (dx, dw, column_sums(dy, n_out))
}

/// The block's backward pass: `[dx, d(packed)]` in one vector.
#[cfg(feature = "openblas")]
fn block_bwd<T: Real>(x: &[T], packed: &[T], dy: &[T], mask: &[T], a: &BlockActs<T>, s: Heads, eps: T) -> Result<Vec<T>> {
    let d = s.d();
    let rows = s.b * s.t;
    let [_, _, wa, _, wp, _, ln2w, _, wf, _, wm, _] = unpack(packed, d)?;
    let ln1w = unpack(packed, d)?[0];
    let scale = T::from(1.0 / (s.hd as f64).sqrt()).expect("a float");
    // The MLP: y = x2 + gl·wm + bm, gl = gelu(f), f = h2·wf + bf, h2 = ln_2(x2).
    let (dgl, dwm, dbm) = linear_bwd(&a.gl, wm, dy, 4 * d, d, true);
    let df = gelu_bwd(&a.f, &dgl.expect("asked for"));
    let (dh2, dwf, dbf) = linear_bwd(&a.h2, wf, &df, d, 4 * d, true);
    let mut ln2 = layer_norm_bwd_rows(&a.x2, ln2w, &dh2.expect("asked for"), eps);
    let dln2b = ln2.split_off((rows + 1) * d);
    let dln2w = ln2.split_off(rows * d);
    let mut dx2 = ln2;
    add_into(&mut dx2, dy);
    // Attention: x2 = x + att·wp + bp, att = attention(qkv), qkv = h1·wa + ba, h1 = ln_1(x).
    let (datt, dwp, dbp) = linear_bwd(&a.att, wp, &dx2, d, d, true);
    let dqkv = attention_bwd(&a.qkv, &datt.expect("asked for"), mask, s, scale);
    let (dh1, dwa, dba) = linear_bwd(&a.h1, wa, &dqkv, d, 3 * d, true);
    let mut ln1 = layer_norm_bwd_rows(x, ln1w, &dh1.expect("asked for"), eps);
    let dln1b = ln1.split_off((rows + 1) * d);
    let dln1w = ln1.split_off(rows * d);
    // dx, with room for the parameters' gradients after it.
    let mut out = crate::simd::map2_reserving(&ln1, &dx2, packed.len(), MIN_PAR, |a, b| a + b);
    for g in [dln1w, dln1b, dwa, dba, dwp, dbp, dln2w, dln2b, dwf, dbf, dwm, dbm] {
        out.extend_from_slice(&g);
    }
    Ok(out)
}

/// x `[b, t, d]`, the packed parameters, the key mask `[b, t]`.
#[cfg(feature = "openblas")]
fn block_dims(ls: &[&Layout], n_head: usize) -> Result<Heads> {
    let (b, t, d) = ls[0].shape().dims3()?;
    if n_head == 0 || d % n_head != 0 || ls[2].dims() != [b, t] {
        candle_core::bail!("rl-block: x {:?} with {n_head} heads, mask {:?}", ls[0].dims(), ls[2].dims())
    }
    Ok(Heads { b, t, h: n_head, hd: d / n_head })
}

#[cfg(feature = "openblas")]
impl Kernel for Block {
    const NAME: &'static str = "rl-block";
    /// Inputs x, packed parameters, mask.
    fn run<T: Real>(&self, xs: &[&[T]], ls: &[&Layout]) -> Result<(Vec<T>, Shape)> {
        let s = block_dims(ls, self.n_head)?;
        let eps = T::from(self.eps).expect("a float");
        let (y, acts) = block_fwd(xs[0], xs[1], xs[2], s, eps, self.keep)?;
        if let Some(acts) = acts {
            *self.saved.lock().expect("not poisoned") = Some(Box::new(acts));
        }
        Ok((y, ls[0].shape().clone()))
    }
}

#[cfg(feature = "openblas")]
impl CustomOp3 for Block {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch(self, &[(s1, l1), (s2, l2), (s3, l3)])
    }

    fn bwd(&self, x: &Tensor, packed: &Tensor, mask: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let saved = self.saved.lock().expect("not poisoned").take();
        let op = BlockBwd { n_head: self.n_head, eps: self.eps, mask: mask.clone(), saved: std::sync::Mutex::new(saved) };
        let both = x.apply_op3_no_bwd(packed, &g.contiguous()?, &op)?;
        let n = x.elem_count();
        let dx = both.narrow(0, 0, n)?.reshape(x.shape())?;
        let dp = both.narrow(0, n, packed.elem_count())?;
        Ok((Some(dx), Some(dp), None))
    }
}

#[cfg(feature = "openblas")]
struct BlockBwd {
    n_head: usize,
    eps: f64,
    mask: Tensor,
    saved: std::sync::Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

#[cfg(feature = "openblas")]
impl Kernel for BlockBwd {
    const NAME: &'static str = "rl-block-bwd";
    /// Inputs x, packed parameters, dy, mask.
    fn run<T: Real>(&self, xs: &[&[T]], ls: &[&Layout]) -> Result<(Vec<T>, Shape)> {
        let s = block_dims(&[ls[0], ls[1], ls[3]], self.n_head)?;
        if ls[2].dims() != ls[0].dims() {
            candle_core::bail!("rl-block-bwd: x {:?}, gradient {:?}", ls[0].dims(), ls[2].dims())
        }
        let eps = T::from(self.eps).expect("a float");
        let saved = self.saved.lock().expect("not poisoned").take().and_then(|b| b.downcast::<BlockActs<T>>().ok());
        // Kept by the forward pass; recomputed if not (a second backward pass over one graph).
        let acts = match saved {
            Some(a) => *a,
            None => block_fwd(xs[0], xs[1], xs[3], s, eps, true)?.1.expect("kept"),
        };
        let out = block_bwd(xs[0], xs[1], xs[2], xs[3], &acts, s, eps)?;
        let n = out.len();
        Ok((out, Shape::from(n)))
    }
}

#[cfg(feature = "openblas")]
impl CustomOp3 for BlockBwd {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (mask, ml) = held(&self.mask)?;
        dispatch(self, &[(s1, l1), (s2, l2), (s3, l3), (cpu(&mask), ml)])
    }
}

/// Causal self-attention probabilities: softmax over the last dimension of `scores · scale`
/// (`[b, h, t, t]`), where query i may attend to key j only if j ≤ i and `key_mask[b, j]` is
/// non-zero (`[b, t]`, same dtype). One pass instead of a scale, a broadcast add of a mask and
/// a softmax; differentiable in `scores`.
pub fn causal_masked_softmax(scores: &Tensor, key_mask: &Tensor, scale: f64) -> Result<Tensor> {
    scores.contiguous()?.apply_op2(&key_mask.to_dtype(scores.dtype())?.contiguous()?, MaskedSoftmax { scale })
}

/// Whether the fused CPU kernels serve this tensor (else the tensor-op forms do).
pub fn fused_available(x: &Tensor) -> bool {
    use_fused(x)
}

struct MaskedSoftmax {
    scale: f64,
}

fn masked_softmax_rows<T: Float + Exp + Send + Sync>(s: &[T], mask: &[T], h: usize, t: usize, scale: T) -> Vec<T> {
    let mut out = s.to_vec();
    // One task per (batch, head) matrix of t rows.
    out.par_chunks_mut(t * t).enumerate().for_each(|(bh, o)| {
        crate::simd::best(
            #[inline(always)]
            || {
                let keys = &mask[(bh / h) * t..(bh / h + 1) * t];
                for (i, row) in o.chunks_mut(t).enumerate() {
                    causal_softmax_row(row, keys, i, scale);
                }
            },
        )
    });
    out
}

impl Kernel for MaskedSoftmax {
    const NAME: &'static str = "rl-causal-masked-softmax";
    fn run<T: Real>(&self, xs: &[&[T]], ls: &[&Layout]) -> Result<(Vec<T>, Shape)> {
        let (b, h, t, t2) = ls[0].shape().dims4()?;
        if t != t2 || ls[1].dims() != [b, t] {
            candle_core::bail!("rl-causal-masked-softmax: scores {:?} and mask {:?}", ls[0].dims(), ls[1].dims())
        }
        let scale = T::from(self.scale).expect("a float");
        Ok((masked_softmax_rows(xs[0], xs[1], h, t, scale), ls[0].shape().clone()))
    }
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch(self, &[(s1, l1), (s2, l2)])
    }

    /// d scores = scale · y ⊙ (g − Σ g ⊙ y): masked entries have y = 0 and get 0.
    fn bwd(&self, _s: &Tensor, _m: &Tensor, y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let ds = (y.apply_op2_no_bwd(&g.contiguous()?, &SoftmaxBwd)? * self.scale)?;
        Ok((Some(ds), None))
    }
}

/// `x + bias` for `x` `[rows, n]` and `bias` `[n]`, differentiable in both (the bias's
/// gradient is the column sums), parallel over rows.
pub fn add_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if !use_fused(x) {
        return x.broadcast_add(bias);
    }
    x.contiguous()?.apply_op2(bias, AddBias)
}

struct AddBias;

impl Kernel for AddBias {
    const NAME: &'static str = "rl-add-bias";
    fn run<T: Real>(&self, xs: &[&[T]], ls: &[&Layout]) -> Result<(Vec<T>, Shape)> {
        let (x, b) = (xs[0], xs[1]);
        let n = b.len();
        let mut out = x.to_vec();
        out.par_chunks_mut(n * rows_per_task(n)).for_each(|o| {
            for row in o.chunks_mut(n) {
                row.iter_mut().zip(b).for_each(|(v, &b)| *v = *v + b);
            }
        });
        Ok((out, ls[0].shape().clone()))
    }
}

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch(self, &[(s1, l1), (s2, l2)])
    }

    fn bwd(&self, _x: &Tensor, b: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = b.dim(0)?;
        let db = g.contiguous()?.apply_op1_no_bwd(&ColumnSums { n })?;
        Ok((Some(g.clone()), Some(db)))
    }
}

struct ColumnSums {
    n: usize,
}

fn column_sums<T: Float + Send + Sync>(g: &[T], n: usize) -> Vec<T> {
    // Partial sums over fixed chunks of rows, added in chunk order: the same bits whatever the
    // thread count or scheduling (a rayon `reduce` adds partials in the order threads finish).
    let partial: Vec<Vec<T>> = g
        .par_chunks(n * rows_per_task(n).max(64))
        .map(|c| {
            crate::simd::best(
                #[inline(always)]
                || {
                    let mut acc = vec![T::zero(); n];
                    for row in c.chunks(n) {
                        acc.iter_mut().zip(row).for_each(|(a, &v)| *a = *a + v);
                    }
                    acc
                },
            )
        })
        .collect();
    let mut sums = vec![T::zero(); n];
    for p in partial {
        sums.iter_mut().zip(p).for_each(|(a, b)| *a = *a + b);
    }
    sums
}

impl Kernel for ColumnSums {
    const NAME: &'static str = "rl-column-sums";
    fn run<T: Real>(&self, xs: &[&[T]], _ls: &[&Layout]) -> Result<(Vec<T>, Shape)> {
        Ok((column_sums(xs[0], self.n), Shape::from(self.n)))
    }
}

impl CustomOp1 for ColumnSums {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch(self, &[(s, l)])
    }
}

/// GPT-2's GELU (`gelu_new`, the tanh approximation), differentiable.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if !use_fused(x) {
        return x.gelu();
    }
    x.contiguous()?.apply_op1(Gelu)
}

struct Gelu;

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_C: f64 = 0.044_715;

/// tanh(z) through one exponential (libm's `tanhf` is several times slower): 1 − 2/(e^{2z} + 1).
#[inline(always)]
fn fast_tanh<T: Float + Exp>(z: T) -> T {
    let two = T::one() + T::one();
    T::one() - two / ((two * z).exp_k() + T::one())
}

/// GELU elementwise, into a new vector (the constants made here and moved into the closure:
/// loads through captured references inside the loop kept the compiler from vectorising it).
fn gelu_fwd<T: Float + Exp + Send + Sync>(x: &[T]) -> Vec<T> {
    let (k, c, half) = (T::from(SQRT_2_OVER_PI).expect("f"), T::from(GELU_C).expect("f"), T::from(0.5).expect("f"));
    crate::simd::map(x, MIN_PAR, move |x| half * x * (T::one() + fast_tanh(k * (x + c * x * x * x))))
}

impl Kernel for Gelu {
    const NAME: &'static str = "rl-gelu";
    fn run<T: Real>(&self, xs: &[&[T]], ls: &[&Layout]) -> Result<(Vec<T>, Shape)> {
        Ok((gelu_fwd(xs[0]), ls[0].shape().clone()))
    }
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch(self, &[(s, l)])
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&g.contiguous()?, &GeluBwd)?))
    }
}

struct GeluBwd;

/// d/dx of 0.5·x·(1 + tanh(u)), u = k(x + c·x³): 0.5(1 + t) + 0.5·x·(1 − t²)·k(1 + 3c·x²),
/// times the incoming gradient.
fn gelu_bwd<T: Float + Exp + Send + Sync>(x: &[T], g: &[T]) -> Vec<T> {
    let (k, c, half) = (T::from(SQRT_2_OVER_PI).expect("f"), T::from(GELU_C).expect("f"), T::from(0.5).expect("f"));
    let three = T::from(3.0).expect("f");
    crate::simd::map2(x, g, MIN_PAR, move |x, g| {
        let t = fast_tanh(k * (x + c * x * x * x));
        g * (half * (T::one() + t) + half * x * (T::one() - t * t) * k * (T::one() + three * c * x * x))
    })
}

impl Kernel for GeluBwd {
    const NAME: &'static str = "rl-gelu-bwd";
    fn run<T: Real>(&self, xs: &[&[T]], ls: &[&Layout]) -> Result<(Vec<T>, Shape)> {
        Ok((gelu_bwd(xs[0], xs[1]), ls[0].shape().clone()))
    }
}

impl CustomOp2 for GeluBwd {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch(self, &[(s1, l1), (s2, l2)])
    }
}

/// Layer norm over the last dimension with an affine `weight` and `bias`, differentiable in
/// all three.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if !use_fused(x) {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
        return normed.broadcast_mul(weight)?.broadcast_add(bias);
    }
    x.contiguous()?.apply_op3(weight, bias, LayerNorm { eps })
}

struct LayerNorm {
    eps: f64,
}

/// Mean and 1/σ of a row.
#[inline(always)]
fn moments<T: Float>(x: &[T], eps: T) -> (T, T) {
    let n = T::from(x.len()).expect("a row length");
    let mean = lane_sum(x) / n;
    let var = lane_sum_by(x, move |v| (v - mean) * (v - mean)) / n;
    (mean, T::one() / (var + eps).sqrt())
}

fn layer_norm_rows<T: Float + Send + Sync>(x: &[T], w: &[T], b: &[T], eps: T) -> Vec<T> {
    let d = w.len();
    crate::simd::map_rows(x, d, rows_per_task(d), move |x| moments(x, eps), move |&(mean, rstd), x, i| (x - mean) * rstd * w[i] + b[i])
}

impl Kernel for LayerNorm {
    const NAME: &'static str = "rl-layer-norm";
    fn run<T: Real>(&self, xs: &[&[T]], ls: &[&Layout]) -> Result<(Vec<T>, Shape)> {
        let eps = T::from(self.eps).expect("a float");
        Ok((layer_norm_rows(xs[0], xs[1], xs[2], eps), ls[0].shape().clone()))
    }
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch(self, &[(s1, l1), (s2, l2), (s3, l3)])
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _b: &Tensor, _y: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // One pass gives dx for every row, then dw and db as the last two rows.
        let d = w.dim(0)?;
        let rows = x.elem_count() / d;
        let packed = x.apply_op3_no_bwd(w, &g.contiguous()?, &LayerNormBwd { eps: self.eps })?;
        let dx = packed.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = packed.narrow(0, rows, 1)?.reshape(d)?;
        let db = packed.narrow(0, rows + 1, 1)?.reshape(d)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

struct LayerNormBwd {
    eps: f64,
}

/// Per row, with x̂ = (x − μ)/σ and h = g ⊙ w: dx = (h − mean(h) − x̂ · mean(h ⊙ x̂)) / σ;
/// dw = Σ_rows g ⊙ x̂, db = Σ_rows g. Returns `[rows + 2, d]`: dx, then dw, then db.
fn layer_norm_bwd_rows<T: Float + Send + Sync>(x: &[T], w: &[T], g: &[T], eps: T) -> Vec<T> {
    let d = w.len();
    let rows = x.len() / d;
    let chunk_rows = rows_per_task(d);
    let mut out = vec![T::zero(); (rows + 2) * d];
    let (dx, _) = out.split_at_mut(rows * d);
    let partial: Vec<(Vec<T>, Vec<T>)> = dx
        .par_chunks_mut(d * chunk_rows)
        .zip(x.par_chunks(d * chunk_rows).zip(g.par_chunks(d * chunk_rows)))
        .map(|(o, (x, g))| {
            crate::simd::best(
                #[inline(always)]
                || {
                    let (mut dw, mut db) = (vec![T::zero(); d], vec![T::zero(); d]);
                    let n = T::from(d).expect("a row length");
                    for ((o, x), g) in o.chunks_mut(d).zip(x.chunks(d)).zip(g.chunks(d)) {
                        let (mean, rstd) = moments(x, eps);
                        let (mut sum_h, mut sum_hx) = (T::zero(), T::zero());
                        for i in 0..d {
                            let xhat = (x[i] - mean) * rstd;
                            let h = g[i] * w[i];
                            sum_h = sum_h + h;
                            sum_hx = sum_hx + h * xhat;
                            dw[i] = dw[i] + g[i] * xhat;
                            db[i] = db[i] + g[i];
                        }
                        let (mean_h, mean_hx) = (sum_h / n, sum_hx / n);
                        for i in 0..d {
                            let xhat = (x[i] - mean) * rstd;
                            o[i] = (g[i] * w[i] - mean_h - xhat * mean_hx) * rstd;
                        }
                    }
                    (dw, db)
                },
            )
        })
        .collect();
    for (pw, pb) in partial {
        for i in 0..d {
            out[rows * d + i] = out[rows * d + i] + pw[i];
            out[(rows + 1) * d + i] = out[(rows + 1) * d + i] + pb[i];
        }
    }
    out
}

impl Kernel for LayerNormBwd {
    const NAME: &'static str = "rl-layer-norm-bwd";
    fn run<T: Real>(&self, xs: &[&[T]], ls: &[&Layout]) -> Result<(Vec<T>, Shape)> {
        let d = ls[1].dims()[0];
        let rows = ls[0].shape().elem_count() / d;
        let eps = T::from(self.eps).expect("a float");
        Ok((layer_norm_bwd_rows(xs[0], xs[1], xs[2], eps), Shape::from((rows + 2, d))))
    }
}

impl CustomOp3 for LayerNormBwd {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        dispatch(self, &[(s1, l1), (s2, l2), (s3, l3)])
    }
}

/// Σ x² over a tensor, in f64: on the CPU in one parallel pass over fixed chunks whose
/// partial sums are added in order (the same bits on any thread count); elsewhere with tensor
/// ops.
pub fn sum_squares(x: &Tensor) -> Result<f64> {
    fn squares<T: Copy + Into<f64>>(c: &[T]) -> f64 {
        let mut lanes = [0f64; 8];
        let mut it = c.chunks_exact(8);
        for c in &mut it {
            for l in 0..8 {
                let x: f64 = c[l].into();
                lanes[l] += x * x;
            }
        }
        for (l, &x) in it.remainder().iter().enumerate() {
            let x: f64 = x.into();
            lanes[l] += x * x;
        }
        lanes.iter().sum()
    }
    fn chunks<T: Copy + Into<f64> + Sync>(v: &[T]) -> f64 {
        let partial: Vec<f64> = v
            .par_chunks(1 << 16)
            .map(|c| {
                crate::simd::best(
                    #[inline(always)]
                    || squares(c),
                )
            })
            .collect();
        partial.iter().sum()
    }
    if x.device().is_cpu() {
        let x = x.contiguous()?;
        let (storage, layout) = x.storage_and_layout();
        if let (candle_core::Storage::Cpu(s), Some((a, b))) = (&*storage, layout.contiguous_offsets()) {
            match s {
                CpuStorage::F32(v) => return Ok(chunks(&v[a..b])),
                CpuStorage::F64(v) => return Ok(chunks(&v[a..b])),
                _ => {}
            }
        }
    }
    x.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()
}

/// One AdamW step for one parameter, in one pass: `theta`, `m`, `v`, `g` alike →
/// `[3, ..]`: the new θ, m and v (`torch.optim.AdamW`'s arithmetic: decoupled weight decay,
/// bias-corrected moments, `eps` after the square root). `None` when the fused kernels do not
/// serve these tensors. (A chain of tensor ops makes ten passes and ten buffers per parameter.)
pub fn adamw_update(theta: &Tensor, m: &Tensor, v: &Tensor, g: &Tensor, h: AdamWStep) -> Result<Option<Tensor>> {
    if !use_fused(theta) || [m, v, g].iter().any(|t| t.dtype() != theta.dtype() || t.shape() != theta.shape()) {
        return Ok(None);
    }
    let op = AdamW { h, g: g.contiguous()? };
    Ok(Some(theta.contiguous()?.apply_op3_no_bwd(&m.contiguous()?, &v.contiguous()?, &op)?))
}

/// The constants of one AdamW step.
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// 1 − β₁ᵗ and √(1 − β₂ᵗ).
    pub bias1: f64,
    pub bias2_sqrt: f64,
    /// A factor the gradient is multiplied by first (clipping's; 1 for none).
    pub grad_scale: f64,
}

struct AdamW {
    h: AdamWStep,
    g: Tensor,
}

fn adamw_rows<T: Float + Send + Sync>(theta: &[T], m: &[T], v: &[T], g: &[T], h: AdamWStep) -> Vec<T> {
    let n = theta.len();
    let c = |x: f64| T::from(x).expect("a float");
    let (b1, nb1, b2, nb2) = (c(h.beta1), c(1.0 - h.beta1), c(h.beta2), c(1.0 - h.beta2));
    let (decay, inv_b2, eps, step) = (c(1.0 - h.lr * h.weight_decay), c(1.0 / h.bias2_sqrt), c(h.eps), c(h.lr / h.bias1));
    // As `g * factor` computes it: in T, the factor rounded to T.
    let (scaled, grad_scale) = (h.grad_scale != 1.0, c(h.grad_scale));
    assert!(m.len() == n && v.len() == n && g.len() == n, "rl-adamw: θ, m, v and g differ in size");
    crate::simd::map_to3(n, MIN_PAR, move |k| {
        let gj = if scaled { g[k] * grad_scale } else { g[k] };
        let mj = m[k] * b1 + gj * nb1;
        let vj = v[k] * b2 + gj * gj * nb2;
        let denom = vj.sqrt() * inv_b2 + eps;
        (theta[k] * decay - mj / denom * step, mj, vj)
    })
}

impl Kernel for AdamW {
    const NAME: &'static str = "rl-adamw";
    /// Inputs θ, m, v, g.
    fn run<T: Real>(&self, xs: &[&[T]], ls: &[&Layout]) -> Result<(Vec<T>, Shape)> {
        let n = xs[0].len();
        if xs.iter().any(|x| x.len() != n) {
            candle_core::bail!("rl-adamw: θ, m, v and g differ in size")
        }
        let mut dims = vec![3];
        dims.extend_from_slice(ls[0].dims());
        Ok((adamw_rows(xs[0], xs[1], xs[2], xs[3], self.h), Shape::from(dims)))
    }
}

impl CustomOp3 for AdamW {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (g, gl) = {
            let (s, l) = self.g.storage_and_layout();
            (s, l.clone())
        };
        let candle_core::Storage::Cpu(g) = &*g else { candle_core::bail!("rl-adamw: the gradient is not on the CPU") };
        dispatch(self, &[(s1, l1), (s2, l2), (s3, l3), (g, &gl)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The one-node block against the same block built from the separate ops (layer norms,
    /// linear layers, attention, GELU, residual adds), values and every gradient, in f64;
    /// padding in the second row.
    #[test]
    fn the_fused_block_matches_the_separate_ops() {
        let dev = Device::Cpu;
        let (d, h) = (8, 2);
        let var = |shape: &[usize], mean: f64| Var::from_tensor(&Tensor::randn(mean, 0.5, shape, &dev).unwrap()).unwrap();
        let x = var(&[2, 5, d], 0.0);
        let shapes: [&[usize]; 12] = [&[d], &[d], &[d, 3 * d], &[3 * d], &[d, d], &[d], &[d], &[d], &[d, 4 * d], &[4 * d], &[4 * d, d], &[d]];
        let params: Vec<Var> = shapes.iter().enumerate().map(|(i, s)| var(s, if i == 0 || i == 6 { 1.0 } else { 0.0 })).collect();
        let keys = Tensor::new(&[[1f64, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0, 0.0]], &dev).unwrap();
        let p: Vec<&Tensor> = params.iter().map(|v| v.as_tensor()).collect();
        let tensors: [&Tensor; 12] = p.clone().try_into().unwrap();
        let Some(fused) = block(&x, &BlockParams { tensors, n_head: h, eps: 1e-5 }, &keys).unwrap() else {
            return; // without OpenBLAS the model runs the separate ops
        };
        let ln = |x: &Tensor, i: usize| layer_norm(x, p[i], p[i + 1], 1e-5).unwrap();
        let lin = |x: &Tensor, i: usize| linear(x, p[i], p[i + 1]).unwrap();
        let a = qkv_attention(&lin(&ln(&x, 0), 2), &keys, h, 1.0 / ((d / h) as f64).sqrt()).unwrap().unwrap();
        let x2 = (x.as_tensor() + lin(&a, 4)).unwrap();
        let plain = (&x2 + lin(&gelu(&lin(&ln(&x2, 6), 8)).unwrap(), 10)).unwrap();
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            assert_eq!(a.dims(), b.dims(), "{what}: shapes");
            let diff = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap();
            assert!(diff < 1e-10, "{what}: differ by {diff}");
        };
        close(&fused, &plain, "block");
        let probe = Tensor::randn(0f64, 1.0, (2, 5, d), &dev).unwrap();
        let gf = (fused * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let gp = (plain * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        close(gf.get(&x).unwrap(), gp.get(&x).unwrap(), "block grad x");
        for (i, v) in params.iter().enumerate() {
            close(gf.get(v).unwrap(), gp.get(v).unwrap(), &format!("block grad of parameter {i}"));
        }
    }

    /// The block's forward and backward pass in f32 (GELU, softmax, layer norm, the sums)
    /// give the same bits with the kernels compiled for AVX-512, for AVX2 and for baseline
    /// SSE2 (those of them this CPU runs).
    #[test]
    fn every_vector_path_computes_the_same_bits() {
        use crate::simd::{force, Level};
        let dev = Device::Cpu;
        let (b, t, d, h) = (2, 19, 64, 4);
        let mut rng = crate::rng::Rng::new(5);
        let mut randn = |shape: &[usize], scale: f64, mean: f64| {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| (mean + rng.normal() * scale) as f32).collect();
            Var::from_tensor(&Tensor::from_vec(v, shape, &dev).unwrap()).unwrap()
        };
        let x = randn(&[b, t, d], 1.0, 0.0);
        let shapes: [&[usize]; 12] = [&[d], &[d], &[d, 3 * d], &[3 * d], &[d, d], &[d], &[d], &[d], &[d, 4 * d], &[4 * d], &[4 * d, d], &[d]];
        let params: Vec<Var> = shapes.iter().enumerate().map(|(i, s)| randn(s, 0.3, if i == 0 || i == 6 { 1.0 } else { 0.0 })).collect();
        let mut keys = vec![1f32; b * t];
        keys[2 * t - 5..].iter_mut().for_each(|k| *k = 0.0);
        let keys = Tensor::from_vec(keys, (b, t), &dev).unwrap();
        let probe = randn(&[b, t, d], 1.0, 0.0);
        let run = || -> Vec<Vec<u32>> {
            let p: Vec<&Tensor> = params.iter().map(|v| v.as_tensor()).collect();
            let Some(y) = block(&x, &BlockParams { tensors: p.try_into().unwrap(), n_head: h, eps: 1e-5 }, &keys).unwrap() else { return vec![] };
            let grads = (&y * probe.as_tensor()).unwrap().sum_all().unwrap().backward().unwrap();
            let mut all = vec![y.flatten_all().unwrap().to_vec1::<f32>().unwrap()];
            all.extend(std::iter::once(&x).chain(&params).map(|v| grads.get(v).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()));
            all.into_iter().map(|v| v.into_iter().map(f32::to_bits).collect()).collect()
        };
        let detected = crate::simd::detected();
        force(Some(Level::Baseline));
        let baseline = run();
        for level in [Level::Avx2, Level::Avx512] {
            force(Some(level));
            let got = run();
            force(None);
            assert!(got == baseline, "{level:?} (capped at {detected:?}) differs from baseline SSE2");
        }
        force(None);
    }

    /// Σ x² in f64 over many chunks against a plain sum, and the same bits on one thread as
    /// on the pool.
    #[test]
    fn sum_squares_matches_a_plain_sum_on_any_thread_count() {
        let v: Vec<f32> = (0..300_001u64).map(|i| ((i * 7919) % 1000) as f32 / 300.0 - 1.5).collect();
        let x = Tensor::from_vec(v.clone(), v.len(), &Device::Cpu).unwrap();
        let want: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        let got = sum_squares(&x).unwrap();
        assert!((got - want).abs() < 1e-9 * want, "{got} vs {want}");
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| sum_squares(&x).unwrap());
        assert_eq!(one.to_bits(), got.to_bits());
        let d = Tensor::from_vec(vec![3f64, 4.0], 2, &Device::Cpu).unwrap();
        assert_eq!(sum_squares(&d).unwrap(), 25.0);
    }

    /// The f32 exponential the kernels use against f64's, over its whole range in steps of
    /// about 2⁻¹⁰ (plus the edges): at most 2 ulp (a relative 2.4e-7) apart, 0 below the
    /// normal floats, NaN for NaN.
    #[test]
    fn fast_exp_is_within_two_ulp_of_exp() {
        let mut worst = 0f64;
        let mut x = -87.336_55f32;
        while x <= 88.376_26 {
            let (got, want) = (x.exp_k(), f64::from(x).exp());
            let ulp = f64::from(f32::EPSILON) * 2f64.powi((want.log2().floor()) as i32);
            let err = (f64::from(got) - want).abs() / ulp;
            assert!(err <= 2.0, "exp({x}) = {got}, want {want}: {err} ulp");
            worst = worst.max(err);
            x += 1.0 / 1024.0 + x.abs() * 1e-6;
        }
        for x in [0.0f32, -0.0, 1e-30, -1e-30, 1.0, -1.0, 0.5, -0.346_573_6, 0.346_573_6] {
            assert!((f64::from(x.exp_k()) - f64::from(x).exp()).abs() <= 2.0 * f64::from(f32::EPSILON) * f64::from(x).exp(), "exp({x})");
        }
        assert_eq!((-88.0f32).exp_k(), 0.0);
        assert_eq!((-1e30f32).exp_k(), 0.0);
        assert_eq!(f32::NEG_INFINITY.exp_k(), 0.0);
        assert!(f32::NAN.exp_k().is_nan());
        assert!(100f32.exp_k() > 2e38 && 100f32.exp_k().is_finite());
        eprintln!("fast exp: worst {worst:.3} ulp");
    }

    /// The fused kernels and the plain tensor-op forms agree, forward and backward.
    #[test]
    fn fused_kernels_match_the_tensor_op_forms() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&(Tensor::randn(0f64, 1.0, (3, 5, 7), &dev).unwrap() * 3.0).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(1f64, 0.5, 7, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f64, 0.5, 7, &dev).unwrap()).unwrap();
        let probe = Tensor::randn(0f64, 1.0, (3, 5, 7), &dev).unwrap();
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
            assert!(diff < 1e-10, "{what}: differ by {diff}");
        };

        let fused = softmax_last_dim(&x).unwrap();
        let plain = candle_nn::ops::softmax(&x, D::Minus1).unwrap();
        close(&fused, &plain, "softmax");
        let gf = (fused * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let gp = (plain * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        close(gf.get(&x).unwrap(), gp.get(&x).unwrap(), "softmax grad");

        let fused = gelu(&x).unwrap();
        let plain = x.gelu().unwrap();
        close(&fused, &plain, "gelu");
        // candle's own GELU backward rounds its constants to 6 digits: compare with central
        // differences instead (error ~h² ≈ 1e-12).
        let gf = (fused * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let h = 1e-6;
        let up = gelu(&(x.as_tensor() + h).unwrap()).unwrap();
        let down = gelu(&(x.as_tensor() - h).unwrap()).unwrap();
        let numeric = (((up - down).unwrap() / (2.0 * h)).unwrap() * &probe).unwrap();
        let diff = (gf.get(&x).unwrap() - numeric).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
        assert!(diff < 1e-8, "gelu grad: differs from central differences by {diff}");

        // The matrix product (OpenBLAS with the feature) against candle's, in all four
        // transpose combinations through the gradients.
        let m = Var::from_tensor(&Tensor::randn(0f64, 1.0, (4, 6), &dev).unwrap()).unwrap();
        let n = Var::from_tensor(&Tensor::randn(0f64, 1.0, (6, 5), &dev).unwrap()).unwrap();
        let e = Var::from_tensor(&Tensor::randn(0f64, 1.0, (5, 6), &dev).unwrap()).unwrap();
        let p2 = Tensor::randn(0f64, 1.0, (4, 5), &dev).unwrap();
        let fused = matmul(&m, &n).unwrap();
        let plain = m.matmul(&n).unwrap();
        close(&fused, &plain, "matmul");
        let gf = (fused * &p2).unwrap().sum_all().unwrap().backward().unwrap();
        let gp = (plain * &p2).unwrap().sum_all().unwrap().backward().unwrap();
        close(gf.get(&m).unwrap(), gp.get(&m).unwrap(), "matmul grad a");
        close(gf.get(&n).unwrap(), gp.get(&n).unwrap(), "matmul grad b");
        let fused = matmul_bt(&m, &e).unwrap();
        let plain = m.matmul(&e.t().unwrap()).unwrap();
        close(&fused, &plain, "matmul bt");
        // A second product of the gradient exercises the transposed forms in backward.
        let gf = (fused.sqr().unwrap() * &p2).unwrap().sum_all().unwrap().backward().unwrap();
        let gp = (plain.sqr().unwrap() * &p2).unwrap().sum_all().unwrap().backward().unwrap();
        close(gf.get(&m).unwrap(), gp.get(&m).unwrap(), "matmul bt grad a");
        close(gf.get(&e).unwrap(), gp.get(&e).unwrap(), "matmul bt grad b");

        // The causal masked softmax (the attention path without OpenBLAS) against scale, an
        // additive mask and a plain softmax; the second row's last key is padding.
        let scores = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 3, 4, 4), &dev).unwrap()).unwrap();
        let keys = Tensor::new(&[[1f64, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]], &dev).unwrap();
        let allowed: Vec<f64> =
            (0..2).flat_map(|b| (0..4).flat_map(move |i| (0..4).map(move |j| if j <= i && !(b == 1 && j == 3) { 0.0 } else { -1e9 }))).collect();
        let bias = Tensor::from_vec(allowed, (2, 1, 4, 4), &dev).unwrap();
        let p4 = Tensor::randn(0f64, 1.0, (2, 3, 4, 4), &dev).unwrap();
        let fused = causal_masked_softmax(&scores, &keys, 0.5).unwrap();
        let plain = candle_nn::ops::softmax(&(scores.as_tensor() * 0.5).unwrap().broadcast_add(&bias).unwrap(), D::Minus1).unwrap();
        close(&fused, &plain, "masked softmax");
        let gf = (fused * &p4).unwrap().sum_all().unwrap().backward().unwrap();
        let gp = (plain * &p4).unwrap().sum_all().unwrap().backward().unwrap();
        close(gf.get(&scores).unwrap(), gp.get(&scores).unwrap(), "masked softmax grad");

        let fused = layer_norm(&x, &w, &b, 1e-5).unwrap();
        let mean = x.mean_keepdim(D::Minus1).unwrap();
        let centred = x.broadcast_sub(&mean).unwrap();
        let var = centred.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let plain = centred.broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap()).unwrap().broadcast_mul(&w).unwrap().broadcast_add(&b).unwrap();
        close(&fused, &plain, "layer norm");
        let gf = (fused * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let gp = (plain * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &w, &b] {
            close(gf.get(v).unwrap(), gp.get(v).unwrap(), "layer norm grads");
        }
    }

    /// The one-node linear layer, the attention straight from `c_attn`'s output and the
    /// one-pass AdamW step against the tensor-op forms they replace, values and gradients.
    #[test]
    fn fused_layers_match_the_tensor_op_forms() {
        let dev = Device::Cpu;
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            assert_eq!(a.dims(), b.dims(), "{what}: shapes");
            let diff = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap();
            assert!(diff < 1e-10, "{what}: differ by {diff}");
        };
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 5, 6), &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f64, 1.0, (6, 24), &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f64, 1.0, 24, &dev).unwrap()).unwrap();
        let fused = linear(&x, &w, &b).unwrap();
        let plain = x.reshape((10, 6)).unwrap().matmul(&w).unwrap().broadcast_add(&b).unwrap().reshape((2, 5, 24)).unwrap();
        close(&fused, &plain, "linear");

        // Attention of 2 heads of 4 over the 24 columns as q | k | v; the second row's last two
        // positions are padding.
        let keys = Tensor::new(&[[1f64, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0, 0.0]], &dev).unwrap();
        let scale = 0.5;
        let plain_attention = |qkv: &Tensor| -> Tensor {
            let split = |i: usize| qkv.narrow(2, i * 8, 8).unwrap().reshape((2, 5, 2, 4)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap();
            let (q, k, v) = (split(0), split(1), split(2));
            let p = causal_masked_softmax(&q.matmul(&k.t().unwrap()).unwrap(), &keys, scale).unwrap();
            p.matmul(&v).unwrap().transpose(1, 2).unwrap().reshape((2, 5, 8)).unwrap()
        };
        // Without OpenBLAS the model itself takes the tensor-op path.
        let yf = qkv_attention(&fused, &keys, 2, scale).unwrap().unwrap_or_else(|| plain_attention(&fused));
        let yp = plain_attention(&plain);
        let probe = Tensor::randn(0f64, 1.0, (2, 5, 8), &dev).unwrap();
        close(&yf, &yp, "attention");
        let gf = (yf * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let gp = (yp * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        for (v, what) in [(&x, "x"), (&w, "w"), (&b, "b")] {
            close(gf.get(v).unwrap(), gp.get(v).unwrap(), &format!("linear and attention grad {what}"));
        }

        // AdamW: one fused step against torch.optim.AdamW's formulas as tensor ops, with the
        // gradient clipped by half first (applied inside the step).
        let t = || Tensor::randn(0f64, 1.0, 40, &dev).unwrap();
        let (theta, m, v0, g_raw) = (t(), t(), t().abs().unwrap(), t());
        let g = (&g_raw * 0.5).unwrap();
        let h = AdamWStep {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
            bias1: 1.0 - 0.9f64.powi(3),
            bias2_sqrt: (1.0 - 0.999f64.powi(3)).sqrt(),
            grad_scale: 0.5,
        };
        let packed = adamw_update(&theta, &m, &v0, &g_raw, h).unwrap().expect("served on the CPU");
        let m1 = ((&m * 0.9).unwrap() + (&g * 0.1).unwrap()).unwrap();
        let v1 = ((&v0 * 0.999).unwrap() + (g.sqr().unwrap() * 0.001).unwrap()).unwrap();
        let denom = ((v1.sqrt().unwrap() / h.bias2_sqrt).unwrap() + 1e-8).unwrap();
        let theta1 = ((&theta * (1.0 - 1e-2 * 0.1)).unwrap() - ((&m1 / denom).unwrap() * (1e-2 / h.bias1)).unwrap()).unwrap();
        close(&packed.get(0).unwrap(), &theta1, "adamw θ");
        close(&packed.get(1).unwrap(), &m1, "adamw m");
        close(&packed.get(2).unwrap(), &v1, "adamw v");
    }
}
