//! A saved reward model loads back with the same outputs and Hugging Face's tensor names.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rewardlab_trainer::checkpoint::{load_reward_model, save_model, ModelKind};
use rewardlab_trainer::gpt2::{init_weights, Config, RewardModel};
use rewardlab_trainer::optim::named_params;

#[test]
fn a_saved_reward_model_loads_back_with_the_same_rewards() {
    let varmap = VarMap::new();
    let cfg = Config::tiny(16);
    let model = RewardModel::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
    let params = named_params(&varmap);
    init_weights(&params, &cfg, 5).unwrap();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("rm-{}", std::process::id()));
    let extra = serde_json::json!({"rewardlab": {"reward_bias": 0.25}});
    save_model(&dir, &cfg, ModelKind::Reward, &params, 3, Some(&extra)).unwrap();

    let names: Vec<String> = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap().into_keys().collect();
    for name in ["transformer.wte.weight", "transformer.h.0.attn.c_attn.weight", "transformer.ln_f.bias", "score.weight"] {
        assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
    }
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "GPT2ForSequenceClassification");
    assert_eq!(config["n_embd"], 32);
    assert_eq!(config["pad_token_id"], 3);

    let loaded = load_reward_model(&dir, &Device::Cpu).unwrap();
    assert_eq!(loaded.cfg, cfg);
    assert_eq!(loaded.bias, 0.25);
    let ids = Tensor::new(&[[1u32, 2, 3, 0], [5, 6, 7, 8]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 0], [1, 1, 1, 1]], &Device::Cpu).unwrap();
    let a: Vec<f32> = model.forward(&ids, &mask).unwrap().to_vec1().unwrap();
    let b: Vec<f32> = loaded.model.forward(&ids, &mask).unwrap().to_vec1().unwrap();
    assert_eq!(a, b);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_seed_alone_decides_the_initial_weights() {
    let build = |seed| {
        let varmap = VarMap::new();
        RewardModel::new(&Config::tiny(16), VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        let params = named_params(&varmap);
        init_weights(&params, &Config::tiny(16), seed).unwrap();
        params.iter().map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(build(1), build(1));
    assert_ne!(build(1), build(2));
}
