//! Text to token ids with the model's own `tokenizer.json`, with the padding and
//! truncation it ships replaced by the engine's: no fixed padding (batches are padded
//! to their longest member) and truncation at the model's `max_seq_length`.

use std::path::{Path, PathBuf};

use tokenizers::{Tokenizer, TruncationParams};

use super::config::{BertConfig, TOKENIZER_FILE};
use super::error::EngineError;

/// A batch of token sequences, right-padded to the longest with id 0 and masked, the
/// form every backend consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    /// `sequences × padded_length` token ids, row-major.
    pub input_ids: Vec<u32>,
    /// Real tokens per sequence (the attention mask is `position < lengths[i]`).
    pub lengths: Vec<usize>,
    /// Length every row is padded to.
    pub padded_length: usize,
}

impl TokenBatch {
    /// Builds a padded batch from unpadded sequences.
    pub fn from_sequences(sequences: &[Vec<u32>]) -> Self {
        let padded_length = sequences.iter().map(Vec::len).max().unwrap_or(0);
        let mut input_ids = vec![0; sequences.len() * padded_length];
        for (row, sequence) in input_ids
            .chunks_exact_mut(padded_length.max(1))
            .zip(sequences)
        {
            row[..sequence.len()].copy_from_slice(sequence);
        }
        Self {
            input_ids,
            lengths: sequences.iter().map(Vec::len).collect(),
            padded_length,
        }
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    /// Whether the batch holds no sequence.
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// The real (unpadded) token ids of sequence `index`.
    pub fn sequence(&self, index: usize) -> &[u32] {
        let start = index * self.padded_length;
        &self.input_ids[start..start + self.lengths[index]]
    }

    /// Checks the batch against the model a backend runs, so no kernel ever indexes
    /// past a table: a failure here is a programming error upstream, reported as such.
    pub fn validate(&self, config: &BertConfig) -> Result<(), EngineError> {
        if self.input_ids.len() != self.len() * self.padded_length {
            return Err(EngineError::InvalidBatch(
                "input_ids does not hold sequences × padded_length ids".into(),
            ));
        }
        for index in 0..self.len() {
            let length = self.lengths[index];
            if length == 0 || length > self.padded_length.min(config.max_positions) {
                return Err(EngineError::InvalidBatch(format!(
                    "sequence {index} has {length} tokens; 1 to {} are allowed",
                    config.max_positions
                )));
            }
            if let Some(id) = self
                .sequence(index)
                .iter()
                .find(|&&id| id as usize >= config.vocab_size)
            {
                return Err(EngineError::InvalidBatch(format!(
                    "token id {id} is outside the vocabulary of {}",
                    config.vocab_size
                )));
            }
        }
        Ok(())
    }
}

/// One text's token ids, and whether the text was longer than the model reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokenized {
    /// Token ids as the encoder sees them (special tokens included, at most `max_seq_length`).
    pub ids: Vec<u32>,
    /// Whether tokens past `max_seq_length` were cut off.
    pub truncated: bool,
}

/// The model's WordPiece (or other) tokenizer, configured for the engine.
pub struct TextTokenizer {
    inner: Tokenizer,
    /// The same tokenizer without truncation, to count a whole text's tokens:
    /// the truncating one stops reading once it has enough, so it cannot say.
    whole: Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TextTokenizer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json` from the model directory, truncating at `max_seq_length`.
    pub fn load(dir: &Path, max_seq_length: usize) -> Result<Self, EngineError> {
        let path = dir.join(TOKENIZER_FILE);
        if !path.is_file() {
            return Err(EngineError::MissingFile {
                path,
                what: "the tokenizer",
            });
        }
        let error = |source: tokenizers::Error| EngineError::Tokenizer {
            path: path.clone(),
            source,
        };
        let mut inner = Tokenizer::from_file(&path).map_err(error)?;
        // The shipped tokenizer.json pads every input to a fixed 128 tokens and truncates
        // there: both would change the embeddings, so they are replaced.
        inner.with_padding(None);
        let mut whole = inner.clone();
        whole.with_truncation(None).map_err(error)?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                ..TruncationParams::default()
            }))
            .map_err(error)?;
        Ok(Self { inner, whole, path })
    }

    /// How many tokens each whole text holds, special tokens included, however
    /// many the model reads: what a client is told when it asks how long a text is.
    pub fn count_whole<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<usize>, EngineError> {
        texts
            .iter()
            .map(|text| {
                self.whole
                    .encode(text.as_ref(), true)
                    .map(|encoding| encoding.len())
                    .map_err(|source| EngineError::Tokenizer {
                        path: self.path.clone(),
                        source,
                    })
            })
            .collect()
    }

    /// Token ids of each text, special tokens included, truncated to `max_seq_length`.
    pub fn encode<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<u32>>, EngineError> {
        Ok(self
            .encode_marking_truncation(texts)?
            .into_iter()
            .map(|tokenized| tokenized.ids)
            .collect())
    }

    /// Like [`Self::encode`], saying for each text whether it was cut, so callers
    /// that must not lose text silently can refuse it instead.
    pub fn encode_marking_truncation<S: AsRef<str>>(
        &self,
        texts: &[S],
    ) -> Result<Vec<Tokenized>, EngineError> {
        texts
            .iter()
            .map(|text| {
                self.inner
                    .encode(text.as_ref(), true)
                    .map(|encoding| Tokenized {
                        truncated: !encoding.get_overflowing().is_empty(),
                        ids: encoding.get_ids().to_vec(),
                    })
                    .map_err(|source| EngineError::Tokenizer {
                        path: self.path.clone(),
                        source,
                    })
            })
            .collect()
    }
}
