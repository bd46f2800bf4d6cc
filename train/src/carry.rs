//! Truncated backprop through time (`mamba train --carry-state`), for Mamba-1 LMs on text.
//!
//! Each batch row reads its own contiguous stream of the training text (`data::stream_starts`:
//! the text cut into `batch` segments, consecutive steps reading consecutive windows of a
//! segment), and each layer's final conv window and SSM state of a batch, detached, are the
//! initial states of the next batch's same rows (`MambaLM::objective_from`):
//!
//! ```text
//! step s:  rows read text[r * segment + j * L ..][..L],   j = s mod (windows per segment)
//!          (loss, end) = objective_from(batch, start);     start(s + 1) = detach(end)
//!          j = 0: the streams begin (again); start = zeros
//! ```
//!
//! The gradient stops at the batch boundary (the states are detached), but the forward sees
//! the whole text before it, as generation does. Data-parallel shards (`--ranks`, `--gpus`)
//! keep a state each: a shard always takes the same rows. The states live in memory only: a
//! resumed run continues the streams at its step, from zero states.

use crate::{
    data::{stream_starts, windows},
    trainer::{Batch, Source},
    Error, Result,
};
use mamba_engine::Tensor;
use mamba_model::{mixer::Mamba1State, InferenceState, MambaLM, Mixer, MixerState, Objective};

/// The carried states of a run: one per data shard (None: zeros, a stream's beginning).
pub struct Carry {
    states: Vec<Option<InferenceState>>,
    /// Bytes of the training text, rows and window length the streams were checked for.
    shape: (usize, usize, usize),
}

impl Carry {
    /// The carry of a `--carry-state` run, or `None` without it. Refused, with the reason: a
    /// synthetic task (no text to stream), a layer that is not Mamba-1, a text too short for
    /// one window per row.
    pub(crate) fn for_run(
        enabled: bool,
        model: &MambaLM,
        source: &Source,
        rows: usize,
        seq_len: usize,
    ) -> Result<Option<Carry>> {
        if !enabled {
            return Ok(None);
        }
        let Source::Text(corpus) = source else {
            return Err(Error::Settings("--carry-state streams a text: it does not apply to --task".into()));
        };
        if let Some((i, block)) = model.layers.iter().enumerate().find(|(_, b)| !matches!(b.mixer, Mixer::Mamba1(_))) {
            return Err(Error::Settings(format!(
                "--carry-state carries Mamba1 states: layer {i} is {} (use Mamba-1 layers only)",
                block.mixer.kind()
            )));
        }
        let len = corpus.train.len();
        if stream_starts(len, rows, seq_len, 0).is_none() {
            return Err(Error::Settings(format!(
                "--carry-state cuts the training text ({len} bytes) into --batch {rows} streams: each needs more \
                 than --seq-len {seq_len} bytes; use a longer text or a smaller --batch or --seq-len"
            )));
        }
        Ok(Some(Carry { states: Vec::new(), shape: (len, rows, seq_len) }))
    }

    /// The batch of `step` from `text` (the one `Carry::for_run` checked): each row's next
    /// window of its stream. At the streams' beginning the carried states are dropped.
    pub fn next_batch(&mut self, text: &[u8], step: u64) -> Batch {
        let (len, rows, seq_len) = self.shape;
        debug_assert_eq!(text.len(), len, "the text the streams were checked for");
        let (starts, first) = stream_starts(text.len(), rows, seq_len, step).unwrap_or_default();
        if first {
            self.states.clear();
        }
        let (ids, targets) = windows(text, &starts, seq_len);
        Batch { ids, targets, rows, len: seq_len }
    }

    /// The objective of one shard (`rows` rows of `len` tokens) from the state that shard's
    /// rows ended the previous batch in; keeps the state they end in now, detached.
    fn objective(
        &mut self,
        model: &MambaLM,
        shard: usize,
        (ids, targets): (&[usize], &[i64]),
        rows: usize,
        len: usize,
    ) -> Result<Objective> {
        if self.states.len() <= shard {
            self.states.resize_with(shard + 1, || None);
        }
        let start = match self.states[shard].take() {
            Some(state) => state,
            None => model.new_state(rows)?,
        };
        let (objective, end) = model.objective_from(ids, targets, (rows, len), &start)?;
        self.states[shard] = Some(detached(end)?);
        Ok(objective)
    }
}

/// The objective of a shard of a batch: through the carry when there is one, else
/// [`MambaLM::objective`]. `shard` names the rows (the same shard takes the same rows each
/// step).
pub fn objective(
    carry: Option<&mut Carry>,
    model: &MambaLM,
    shard: usize,
    (ids, targets): (&[usize], &[i64]),
    rows: usize,
    len: usize,
) -> Result<Objective> {
    match carry {
        Some(c) => c.objective(model, shard, (ids, targets), rows, len),
        None => Ok(model.objective(ids, targets, rows, len)?),
    }
}

/// The states out of the graph, in buffers of their own: the scan's last state is a view of
/// its output buffer, which would otherwise stay alive for the whole next step.
fn detached(state: InferenceState) -> Result<InferenceState> {
    let own = |t: &Tensor| Tensor::concat(&[&t.detach()], 0);
    let layers = state
        .layers
        .into_iter()
        .map(|layer| match layer {
            MixerState::Mamba1(s) => Ok(MixerState::Mamba1(Mamba1State { conv: own(&s.conv)?, ssm: own(&s.ssm)? })),
            other => Ok(other), // objective_from refuses other kinds before they get here
        })
        .collect::<mamba_engine::Result<_>>()?;
    Ok(InferenceState { layers })
}

#[cfg(test)]
mod tests;
