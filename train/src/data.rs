//! Training data: byte corpora split into train/validation, random training windows
//! and fixed validation windows.
//!
//! The default corpus is this repository's own source and docs, gathered by build.rs
//! and compiled into the binary, so `mamba train` needs no download.

use mamba_engine::Rng;

/// The embedded default corpus.
pub fn default_corpus() -> &'static [u8] {
    include_bytes!(concat!(env!("OUT_DIR"), "/corpus.txt"))
}

/// A byte corpus split into a training part and a validation part (the last `val_frac`).
pub struct Corpus {
    pub train: Vec<u8>,
    pub val: Vec<u8>,
}

impl Corpus {
    /// Split `bytes`; both parts must hold at least one window of `seq_len + 1` bytes.
    pub fn split(bytes: &[u8], val_frac: f64, seq_len: usize) -> Result<Corpus, String> {
        let cut = ((bytes.len() as f64) * (1.0 - val_frac)) as usize;
        let (train, val) = bytes.split_at(cut);
        if val.len() <= seq_len + 1 || train.len() <= seq_len + 1 {
            return Err(format!(
                "the text has {} bytes, too few for --seq-len {seq_len}: need more than {} (10% goes to validation); use a longer file or a smaller --seq-len",
                bytes.len(),
                (seq_len + 2) * 10
            ));
        }
        Ok(Corpus { train: train.to_vec(), val: val.to_vec() })
    }
}

/// `batch` windows at random offsets as (inputs, next-byte targets), each `batch * seq_len`.
pub fn random_batch(data: &[u8], batch: usize, seq_len: usize, rng: &mut Rng) -> (Vec<usize>, Vec<i64>) {
    let starts: Vec<usize> = (0..batch).map(|_| rng.below(data.len() - seq_len)).collect();
    windows(data, &starts, seq_len)
}

/// Up to `count` evenly spaced windows covering the validation text, the same every time.
pub fn eval_starts(data: &[u8], count: usize, seq_len: usize) -> Vec<usize> {
    let span = data.len() - seq_len - 1;
    let count = count.min(span + 1).max(1);
    (0..count).map(|i| i * span / count.max(2).saturating_sub(1).max(1)).map(|s| s.min(span)).collect()
}

/// The windows starting at `starts` as (inputs, targets).
pub fn windows(data: &[u8], starts: &[usize], seq_len: usize) -> (Vec<usize>, Vec<i64>) {
    let mut ids = Vec::with_capacity(starts.len() * seq_len);
    let mut targets = Vec::with_capacity(starts.len() * seq_len);
    for &s in starts {
        ids.extend(data[s..s + seq_len].iter().map(|&b| b as usize));
        targets.extend(data[s + 1..s + seq_len + 1].iter().map(|&b| b as i64));
    }
    (ids, targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_shift_targets_by_one() {
        let data = b"abcdefgh";
        let (ids, t) = windows(data, &[0, 3], 3);
        assert_eq!(ids, vec![97, 98, 99, 100, 101, 102]);
        assert_eq!(t, vec![98, 99, 100, 101, 102, 103]);
        let starts = eval_starts(data, 10, 3);
        assert!(starts.iter().all(|&s| s + 4 <= data.len()), "{starts:?}");
        assert!(!default_corpus().is_empty());
        assert!(Corpus::split(b"short", 0.1, 8).is_err());
    }
}
