//! Cached, left-padded batch inference gives the logits of the plain forward pass, and
//! sampling is deterministic for a seed.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rewardlab_trainer::generate::{generate_batch, sample_token, SamplingOpts};
use rewardlab_trainer::gpt2::{init_weights, Config, KvCache, LmModel};
use rewardlab_trainer::optim::named_params;
use rewardlab_trainer::rng::Rng;

fn tiny() -> LmModel {
    let varmap = VarMap::new();
    let cfg = Config::tiny(40);
    let model = LmModel::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    init_weights(&named_params(&varmap), &cfg, 9).unwrap();
    model
}

#[test]
fn cached_left_padded_logits_equal_the_full_forward_pass() {
    let model = tiny();
    let dev = Device::Cpu;
    let seq: Vec<u32> = vec![5, 9, 2, 33, 7, 1, 18];
    // Reference: the training forward over the whole sequence, one row, no padding.
    let full = model
        .forward(&Tensor::new(seq.as_slice(), &dev).unwrap().unsqueeze(0).unwrap(), &Tensor::ones((1, seq.len()), DType::U32, &dev).unwrap())
        .unwrap()
        .squeeze(0)
        .unwrap();
    // The same sequence as row 1 of a batch, left-padded by 3, prefilled with 4 tokens and
    // then fed one token at a time through the cache.
    let pad = 3u32;
    let mut cache: KvCache = Vec::new();
    let prompt = 4;
    let row0: Vec<u32> = vec![11, 12, 13, 14, 15, 16, 17];
    let width = prompt + pad as usize;
    let row0_ids: Vec<u32> = row0[..width].to_vec();
    let mut row1_ids = vec![0u32; pad as usize];
    row1_ids.extend_from_slice(&seq[..prompt]);
    let ids = Tensor::new(&[row0_ids.clone(), row1_ids][..].concat()[..], &dev).unwrap().reshape((2, width)).unwrap();
    let pos0: Vec<u32> = (0..width as u32).collect();
    let pos1: Vec<u32> = (0..width as u32).map(|j| j.saturating_sub(pad)).collect();
    let positions = Tensor::new(&[pos0, pos1].concat()[..], &dev).unwrap().reshape((2, width)).unwrap();
    let mut mask: Vec<Vec<u32>> = vec![vec![1; width], (0..width as u32).map(|j| u32::from(j >= pad)).collect()];
    let keys = Tensor::new(&mask.concat()[..], &dev).unwrap().reshape((2, width)).unwrap();
    let mut logits = model.next_logits(&ids, &positions, &keys, &mut cache).unwrap();
    for i in prompt..=seq.len() {
        let got: Vec<f32> = logits.get(1).unwrap().to_vec1().unwrap();
        let want: Vec<f32> = full.get(i - 1).unwrap().to_vec1().unwrap();
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-4, "position {}: cached logits differ by {diff}", i - 1);
        if i == seq.len() {
            break;
        }
        mask[0].push(1);
        mask[1].push(1);
        let t = mask[0].len();
        let ids = Tensor::new(&[[7u32], [seq[i]]], &dev).unwrap();
        let positions = Tensor::new(&[[(t - 1) as u32], [i as u32]], &dev).unwrap();
        let keys = Tensor::new(&mask.concat()[..], &dev).unwrap().reshape((2, t)).unwrap();
        logits = model.next_logits(&ids, &positions, &keys, &mut cache).unwrap();
    }
}

#[test]
fn generation_with_and_without_the_cache_agrees_and_is_deterministic() {
    let model = tiny();
    let prompts = vec![vec![3u32, 4, 5, 6, 7], vec![8u32], vec![9u32, 10, 11]];
    let opts = SamplingOpts { temperature: 0.9, top_p: 0.95, max_new_tokens: 12, seed: 4 };
    let rngs = || (0..3).map(|i| Rng::derived(4, "sample", i)).collect::<Vec<_>>();
    let a = generate_batch(&model, &prompts, 0, &opts, &mut rngs(), true, &Device::Cpu).unwrap();
    let b = generate_batch(&model, &prompts, 0, &opts, &mut rngs(), true, &Device::Cpu).unwrap();
    let c = generate_batch(&model, &prompts, 0, &opts, &mut rngs(), false, &Device::Cpu).unwrap();
    assert_eq!(a, b, "same seed, same samples");
    assert_eq!(a, c, "the cache changes nothing but speed");
    assert!(a.iter().all(|s| s.eos || s.tokens.len() == 12));
    let other: Vec<_> = (0..3).map(|i| Rng::derived(5, "sample", i)).collect();
    let d = generate_batch(&model, &prompts, 0, &opts, &mut other.clone(), true, &Device::Cpu).unwrap();
    assert_ne!(a, d, "another seed, other samples");
}

#[test]
fn top_p_and_temperature_shape_the_distribution() {
    let logits = [2.0f32, 1.0, 0.0, -1.0];
    let mut rng = Rng::new(1);
    assert_eq!(sample_token(&logits, 0.0, 1.0, &mut rng), 0, "temperature 0 is greedy");
    // p(0) = 0.644 at temperature 1: top-p 0.5 keeps token 0 alone.
    assert!((0..200).all(|_| sample_token(&logits, 1.0, 0.5, &mut rng) == 0));
    let mut counts = [0usize; 4];
    for _ in 0..4000 {
        counts[sample_token(&logits, 1.0, 1.0, &mut rng) as usize] += 1;
    }
    let p0 = counts[0] as f64 / 4000.0;
    assert!((p0 - 0.6439).abs() < 0.03, "{counts:?}");
    assert!(counts[3] > 0, "with top-p 1 every token can be drawn");
}
