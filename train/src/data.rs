//! Training data: byte corpora split into train/validation, random training windows
//! and fixed validation windows.
//!
//! The default corpus is this repository's own source and docs, gathered by build.rs
//! and compiled into the binary, so `mamba train` needs no download.

use crate::{Error, Result};
use mamba_engine::Rng;

/// The embedded default corpus.
pub fn default_corpus() -> &'static [u8] {
    include_bytes!(concat!(env!("OUT_DIR"), "/corpus.txt"))
}

/// A byte corpus split into a training part and a validation part.
pub struct Corpus {
    pub train: Vec<u8>,
    pub val: Vec<u8>,
}

/// Validation takes whole blocks of this many bytes, spread over the text.
const BLOCK: usize = 4096;

impl Corpus {
    /// Send every `1/val_frac`-th block of 4 KiB to validation and the rest to training, so
    /// that validation samples every part of the text (the tail of a corpus of source
    /// files is one particular file, not a fair test). Short texts fall back to a tail
    /// split. Both parts must hold at least one window of `seq_len + 1` bytes.
    pub fn split(bytes: &[u8], val_frac: f64, seq_len: usize) -> Result<Corpus> {
        let every = (1.0 / val_frac).round().max(2.0) as usize;
        let (mut train, mut val) = (Vec::new(), Vec::new());
        if bytes.len() >= 2 * every * BLOCK {
            for (i, block) in bytes.chunks(BLOCK).enumerate() {
                if i % every == every - 1 { &mut val } else { &mut train }.extend_from_slice(block);
            }
        } else {
            let cut = bytes.len() - bytes.len() / every;
            (train, val) = (bytes[..cut].to_vec(), bytes[cut..].to_vec());
        }
        let window = seq_len.saturating_add(1);
        if val.len() <= window || train.len() <= window {
            return Err(Error::Settings(format!(
                "the text has {} bytes, too few for --seq-len {seq_len}: need more than {} ({}% goes to validation); use a longer file or a smaller --seq-len",
                bytes.len(),
                seq_len.saturating_add(2).saturating_mul(every),
                100 / every
            )));
        }
        Ok(Corpus { train, val })
    }
}

/// `batch` windows at random offsets as (inputs, next-byte targets), each `batch * seq_len`.
pub fn random_batch(data: &[u8], batch: usize, seq_len: usize, rng: &mut Rng) -> (Vec<usize>, Vec<i64>) {
    let starts: Vec<usize> = (0..batch).map(|_| rng.below(data.len() - seq_len)).collect();
    windows(data, &starts, seq_len)
}

/// Up to `count` evenly spaced windows covering the validation text, the same every time;
/// none if `data` is too short for one window of `seq_len + 1` bytes.
pub fn eval_starts(data: &[u8], count: usize, seq_len: usize) -> Vec<usize> {
    let Some(span) = data.len().checked_sub(seq_len.saturating_add(1)) else { return vec![] };
    let count = count.min(span + 1).max(1);
    (0..count).map(|i| i * span / count.max(2).saturating_sub(1).max(1)).map(|s| s.min(span)).collect()
}

/// Where each row reads at `step` when rows are contiguous streams (`--carry-state`, truncated
/// backprop through time): the text cut into `rows` equal segments, row r reading segment r
/// one window of `seq_len` after the other, the next step's window starting where this one's
/// ends (its last target is the next window's first input). After the last whole window
/// (`seq_len + 1` bytes) of a segment the streams start over. Returns the starts and whether
/// they are the streams' beginnings (where carried states restart from zero); `None` when a
/// segment holds no window.
pub fn stream_starts(len: usize, rows: usize, seq_len: usize, step: u64) -> Option<(Vec<usize>, bool)> {
    let segment = len / rows.max(1);
    let per_row = segment.checked_sub(1)? / seq_len.max(1); // windows in a segment
    if per_row == 0 {
        return None;
    }
    let j = (step % per_row as u64) as usize;
    Some(((0..rows).map(|r| r * segment + j * seq_len).collect(), j == 0))
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
        assert_eq!(eval_starts(data, 10, 7), [0]);
        assert!(eval_starts(data, 10, 8).is_empty() && eval_starts(data, 10, usize::MAX).is_empty());
        assert!(Corpus::split(data, 0.1, usize::MAX).is_err());
        assert!(!default_corpus().is_empty());
        assert!(Corpus::split(b"short", 0.1, 8).is_err());
        let text: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let c = Corpus::split(&text, 0.1, 16).unwrap();
        assert_eq!(c.train.len() + c.val.len(), text.len());
        assert_eq!(c.val.len(), 2 * BLOCK); // blocks 9 and 19 of 25
        assert_eq!(&c.val[..BLOCK], &text[9 * BLOCK..10 * BLOCK]);
    }

    #[test]
    fn streams_continue_window_after_window_and_start_over() {
        // 2 rows of 23 bytes: 3 windows of 6 (+1 target) each, then the streams start over
        let starts: Vec<_> = (0..4).map(|step| stream_starts(46, 2, 6, step).unwrap()).collect();
        assert_eq!(starts[0], (vec![0, 23], true));
        assert_eq!(starts[1], (vec![6, 29], false));
        assert_eq!(starts[2], (vec![12, 35], false));
        assert_eq!(starts[3], starts[0]);
        // the last window's target stays inside its row's segment
        assert!(starts[2].0[0] + 6 < 23);
        assert_eq!(stream_starts(46, 2, 22, 0), Some((vec![0, 23], true)));
        assert_eq!(stream_starts(46, 2, 23, 0), None);
        assert_eq!(stream_starts(3, 4, 1, 0), None);
    }
}
