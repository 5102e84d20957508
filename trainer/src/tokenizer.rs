//! Tokenizers in Hugging Face's `tokenizer.json` format (the `tokenizers` crate): loaded from a
//! checkpoint directory, or a GPT-2-style byte-level BPE trained on the training texts (no
//! network), saved beside the model so `transformers` reads the same ids.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

/// GPT-2's end-of-text token; also the padding token (padding is masked, never read).
pub const EOS: &str = "<|endoftext|>";

pub struct Tok {
    inner: Tokenizer,
    eos: u32,
}

impl Tok {
    /// Loads `dir/tokenizer.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let inner = Tokenizer::from_file(&path).map_err(|e| anyhow!("cannot load {}: {e}", path.display()))?;
        Self::new(inner)
    }

    fn new(inner: Tokenizer) -> Result<Self> {
        let eos = inner.token_to_id(EOS).ok_or_else(|| anyhow!("the tokenizer has no {EOS} token"))?;
        Ok(Self { inner, eos })
    }

    /// Trains a byte-level BPE (GPT-2's pre-tokenizer: no prefix space) of `vocab_size` tokens
    /// on `texts`. Deterministic for the same texts.
    pub fn train<'a>(texts: impl Iterator<Item = &'a str> + Send, vocab_size: usize) -> Result<Self> {
        let byte_level = ByteLevel::new(false, true, true);
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(vec![AddedToken::from(EOS, true)])
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut built = TokenizerBuilder::new()
            .with_model(BPE::default())
            .with_normalizer(None::<tokenizers::NormalizerWrapper>)
            .with_pre_tokenizer(Some(byte_level))
            .with_post_processor(Some(byte_level))
            .with_decoder(Some(byte_level))
            .build()
            .map_err(|e| anyhow!("cannot build a tokenizer: {e}"))?;
        built.train(&mut trainer, texts).map_err(|e| anyhow!("tokenizer training failed: {e}"))?;
        Self::new(Tokenizer::from(built))
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join("tokenizer.json");
        self.inner.save(&path, false).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
    }

    /// Whether `other` maps every token to the same id (and has no others).
    pub fn same_vocabulary(&self, other: &Tok) -> bool {
        self.eos == other.eos && self.inner.get_vocab(true) == other.inner.get_vocab(true)
    }

    /// A hash of the vocabulary (every token and its id), to check that processes agree.
    pub fn fingerprint(&self) -> u64 {
        let mut vocab: Vec<(String, u32)> = self.inner.get_vocab(true).into_iter().collect();
        vocab.sort();
        let text: String = vocab.iter().map(|(t, i)| format!("{i}\t{t}\n")).collect();
        crate::rng::fnv1a(text.as_bytes())
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// Token ids of each text (no special tokens added), in parallel.
    pub fn encode_all(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encodings = self.inner.encode_batch(refs, false).map_err(|e| anyhow!("tokenization failed: {e}"))?;
        Ok(encodings.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| anyhow!("cannot decode: {e}"))
    }
}

/// `tokenizer_config.json` and `special_tokens_map.json`, so `AutoTokenizer` loads the
/// directory as GPT-2's fast tokenizer with its end-of-text and padding tokens.
pub fn write_hf_tokenizer_files(dir: &Path, max_len: usize) -> Result<()> {
    let config = serde_json::json!({
        "tokenizer_class": "GPT2TokenizerFast",
        "bos_token": EOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS,
        "model_max_length": max_len, "add_prefix_space": false,
    });
    let special = serde_json::json!({"bos_token": EOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS});
    for (name, value) in [("tokenizer_config.json", config), ("special_tokens_map.json", special)] {
        std::fs::write(dir.join(name), serde_json::to_vec_pretty(&value)?).with_context(|| format!("cannot write {}", dir.join(name).display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trains_saves_and_loads_the_same_ids() {
        let texts: Vec<String> = (0..200).map(|i| format!("the quick brown fox {i} jumps over the lazy dog, é ü 😀")).collect();
        let tok = Tok::train(texts.iter().map(String::as_str), 300).unwrap();
        assert!(tok.vocab_size() > 257 && tok.vocab_size() <= 300, "{}", tok.vocab_size());
        let dir = std::env::temp_dir().join(format!("rl-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        tok.save(&dir).unwrap();
        let back = Tok::load(&dir).unwrap();
        let ids = tok.encode_all(&texts[..3]).unwrap();
        assert_eq!(ids, back.encode_all(&texts[..3]).unwrap());
        assert!(ids[0].len() < texts[0].len(), "merges shorten the text");
        assert_eq!(back.decode(&ids[1]).unwrap(), texts[1], "byte-level BPE round-trips any text");
    }
}
