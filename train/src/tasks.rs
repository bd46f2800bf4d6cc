//! The two synthetic tasks of the Mamba paper (Gu & Dao 2023, §4.1.1).
//!
//! Both test whether a sequence model can *select* what to remember:
//!
//! - **Selective copying**: a few data tokens are scattered among blanks; after the
//!   sequence the model must reproduce them in order. A time-invariant model (a fixed
//!   convolution, an LTI SSM) cannot, because where the tokens sit varies per example.
//! - **Induction heads**: a trigger token appears once, followed by some token `a`;
//!   when the trigger appears again at the end, the model must output `a` (associative
//!   recall, the mechanism behind in-context learning).
//!
//! Each sample is an [`Example`]: `input` token ids and `targets` of the same length,
//! where `targets[t]` is what the model's output at position `t` should be, or
//! [`IGNORE`] where the position is not scored (same convention as cross-entropy with
//! `ignore_index = -100` in PyTorch).

use crate::{Error, Result};
use mamba_engine::{Error as EngineError, Rng, Tensor};

/// Target value of a position that is not scored.
pub const IGNORE: i64 = -100;

/// One training/eval sequence: model inputs and next-token targets of equal length;
/// targets are -100 (ignored) except at the positions the task scores.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub input: Vec<usize>,
    pub targets: Vec<i64>,
}

/// A synthetic task with its parameters; build it with [`Task::from_name`] or the
/// validating constructors [`SelectiveCopying::new`] and [`InductionHeads::new`].
#[derive(Clone, Debug, PartialEq)]
pub enum Task {
    SelectiveCopying(SelectiveCopying),
    InductionHeads(InductionHeads),
}

/// Selective copying. Token ids: 0 = blank (noise), 1 = "answer now" marker,
/// `2..2 + vocab` = data tokens. Each example has `seq_len + n_tokens` positions:
///
/// ```text
/// seq_len = 8, n_tokens = 3, vocab = 4 (data tokens 2..=5):
///
/// position  0  1  2  3  4  5  6  7 | 8  9 10
/// input     0  5  0  0  3  0  5  0 | 1  1  1     <- data region | markers
/// target    .  .  .  .  .  .  .  . | 5  3  5     (. = -100, not scored)
/// ```
///
/// The `n_tokens` data tokens sit at distinct random positions of the first `seq_len`
/// (drawn uniformly, repeats of a token allowed); at marker `i` the model must output
/// the `i`-th data token in order of position.
#[derive(Clone, Debug, PartialEq)]
pub struct SelectiveCopying {
    pub seq_len: usize,
    pub n_tokens: usize,
    /// Number of data tokens (the model's vocabulary is `vocab + 2`).
    pub vocab: usize,
}

/// Induction heads. Token ids: `0..vocab` = data tokens, `vocab` = the trigger.
/// Each example has `seq_len` positions of random data tokens, except that the trigger
/// sits at a random position `p <= seq_len - 3` and again at the last position:
///
/// ```text
/// seq_len = 8, vocab = 4 (data tokens 0..=3, trigger T = 4), p = 2:
///
/// position  0  1  2  3  4  5  6  7
/// input     2  0  T  3  1  3  0  T
/// target    .  .  .  .  .  .  .  3     (. = -100, not scored)
/// ```
///
/// Only the last position is scored: its target is the token that followed the first
/// trigger. Data tokens are below `vocab`, so the trigger occurs exactly twice.
#[derive(Clone, Debug, PartialEq)]
pub struct InductionHeads {
    pub seq_len: usize,
    /// Number of data tokens (the model's vocabulary is `vocab + 1`).
    pub vocab: usize,
}

/// The longest `seq_len` a task accepts: a million positions, as far as the paper's
/// induction-heads extrapolation goes. It also keeps `seq_len + n_tokens` from overflowing.
pub const MAX_TASK_LEN: usize = 1 << 20;

/// The most data tokens a task accepts: the embedding grows with them, and the tasks
/// need only a handful (the paper uses 16).
pub const MAX_TASK_VOCAB: usize = 1 << 16;

/// Refuse a `seq_len` or `vocab` above the caps, naming the `mamba train` flag.
fn check_caps(task: &str, seq_len: usize, vocab: usize) -> Result<()> {
    if seq_len > MAX_TASK_LEN {
        return Err(Error::Settings(format!(
            "{task}: seq_len = {seq_len} (--task-len) is more than the {MAX_TASK_LEN} positions allowed; lower it"
        )));
    }
    if vocab > MAX_TASK_VOCAB {
        return Err(Error::Settings(format!(
            "{task}: vocab = {vocab} (--task-vocab) is more than the {MAX_TASK_VOCAB} data tokens allowed; lower it"
        )));
    }
    Ok(())
}

/// Selective copying's blank and marker token ids.
const BLANK: usize = 0;
const MARKER: usize = 1;

impl SelectiveCopying {
    /// Checks `1 <= n_tokens <= seq_len <= MAX_TASK_LEN` and `2 <= vocab <= MAX_TASK_VOCAB`.
    pub fn new(seq_len: usize, n_tokens: usize, vocab: usize) -> Result<SelectiveCopying> {
        check_caps("selective-copying", seq_len, vocab)?;
        if n_tokens == 0 {
            return Err(Error::Settings(
                "selective-copying: n_tokens must be at least 1 (how many tokens to memorise)".into(),
            ));
        }
        if n_tokens > seq_len {
            return Err(Error::Settings(format!(
                "selective-copying: n_tokens = {n_tokens} does not fit in seq_len = {seq_len}; \
                 raise seq_len or lower n_tokens"
            )));
        }
        if vocab < 2 {
            return Err(Error::Settings(format!(
                "selective-copying: vocab = {vocab} data tokens is too few; use vocab >= 2"
            )));
        }
        Ok(SelectiveCopying { seq_len, n_tokens, vocab })
    }

    pub fn sample(&self, rng: &mut Rng) -> Example {
        // Clamped so that a hand-built struct with n_tokens > seq_len cannot panic.
        let k = self.n_tokens.min(self.seq_len);
        let len = self.seq_len + self.n_tokens;
        let mut input = vec![BLANK; len];
        let mut targets = vec![IGNORE; len];
        for (i, pos) in distinct_sorted(self.seq_len, k, rng).into_iter().enumerate() {
            let token = 2 + rng.below(self.vocab);
            input[pos] = token;
            input[self.seq_len + i] = MARKER;
            targets[self.seq_len + i] = token as i64;
        }
        Example { input, targets }
    }
}

impl InductionHeads {
    /// Checks `4 <= seq_len <= MAX_TASK_LEN` and `2 <= vocab <= MAX_TASK_VOCAB`.
    pub fn new(seq_len: usize, vocab: usize) -> Result<InductionHeads> {
        check_caps("induction-heads", seq_len, vocab)?;
        if seq_len < 4 {
            return Err(Error::Settings(format!(
                "induction-heads: seq_len = {seq_len} is too short (trigger, answer, filler, trigger); use seq_len >= 4"
            )));
        }
        if vocab < 2 {
            return Err(Error::Settings(format!(
                "induction-heads: vocab = {vocab} data tokens is too few; use vocab >= 2"
            )));
        }
        Ok(InductionHeads { seq_len, vocab })
    }

    pub fn sample(&self, rng: &mut Rng) -> Example {
        let n = self.seq_len;
        let trigger = self.vocab;
        let mut input: Vec<usize> = (0..n).map(|_| rng.below(self.vocab)).collect();
        let mut targets = vec![IGNORE; n];
        // Below 3 positions there is no room for trigger, answer and final trigger
        // (only reachable by building the struct by hand): leave the example unscored.
        if n >= 3 {
            let p = rng.below(n - 2); // 0..=n-3, so the answer at p+1 is not the last position
            input[p] = trigger;
            input[n - 1] = trigger;
            targets[n - 1] = input[p + 1] as i64;
        }
        Example { input, targets }
    }
}

impl Task {
    /// Builds a task by name: `"selective-copying"` or `"induction-heads"` (which has no
    /// `n_tokens` and ignores it). The error says which parameter to change.
    pub fn from_name(name: &str, seq_len: usize, n_tokens: usize, vocab: usize) -> Result<Task> {
        match name {
            "selective-copying" => SelectiveCopying::new(seq_len, n_tokens, vocab).map(Task::SelectiveCopying),
            "induction-heads" => InductionHeads::new(seq_len, vocab).map(Task::InductionHeads),
            other => Err(Error::Settings(format!(
                "unknown task {other:?}; choose \"selective-copying\" or \"induction-heads\""
            ))),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Task::SelectiveCopying(_) => "selective-copying",
            Task::InductionHeads(_) => "induction-heads",
        }
    }

    /// Total number of token ids the model needs: data tokens plus special tokens.
    pub fn vocab_size(&self) -> usize {
        match self {
            Task::SelectiveCopying(t) => t.vocab + 2, // + blank, marker
            Task::InductionHeads(t) => t.vocab + 1,   // + trigger
        }
    }

    /// Length of each [`Example`].
    pub fn len(&self) -> usize {
        match self {
            Task::SelectiveCopying(t) => t.seq_len + t.n_tokens,
            Task::InductionHeads(t) => t.seq_len,
        }
    }

    /// True only for a degenerate hand-built task with zero-length examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn sample(&self, rng: &mut Rng) -> Example {
        match self {
            Task::SelectiveCopying(t) => t.sample(rng),
            Task::InductionHeads(t) => t.sample(rng),
        }
    }

    /// `batch` fresh examples, concatenated row-major: inputs and targets of length
    /// `batch * len()`, row `b` at `b * len() .. (b + 1) * len()`.
    pub fn batch(&self, batch: usize, rng: &mut Rng) -> (Vec<usize>, Vec<i64>) {
        let mut inputs = Vec::with_capacity(batch * self.len());
        let mut targets = Vec::with_capacity(batch * self.len());
        for _ in 0..batch {
            let ex = self.sample(rng);
            inputs.extend(ex.input);
            targets.extend(ex.targets);
        }
        (inputs, targets)
    }
}

/// `k` distinct positions from `0..n`, ascending (k <= n). A partial Fisher–Yates
/// shuffle: after step i, `pool[..=i]` is a uniform random i+1-subset in random order.
fn distinct_sorted(n: usize, k: usize, rng: &mut Rng) -> Vec<usize> {
    let mut pool: Vec<usize> = (0..n).collect();
    for i in 0..k {
        let j = i + rng.below(n - i);
        pool.swap(i, j);
    }
    pool.truncate(k);
    pool.sort_unstable();
    pool
}

/// Fraction of scored positions (target != -100) where argmax of logits (B, L, V) equals
/// the target. Any shape `(..., V)` works: the leading axes flatten to one row per target,
/// so `targets.len()` must equal `numel / V`. Ties go to the lowest index.
///
/// Errors: no class axis, a row count that differs from `targets.len()`, a target outside
/// `0..V` (other than -100), or no scored position at all (the fraction would be 0/0).
pub fn accuracy(logits: &Tensor, targets: &[i64]) -> Result<f64> {
    const OP: &str = "accuracy";
    let shape = logits.shape();
    let v = match shape.last() {
        Some(&v) if v > 0 => v,
        _ => {
            let expected = "logits (B, L, V) with V > 0".into();
            return Err(Error::Engine(EngineError::Rank { op: OP, shape: shape.to_vec(), expected }));
        }
    };
    if logits.numel() / v != targets.len() {
        return Err(Error::Engine(EngineError::ShapeMismatch {
            op: OP,
            lhs: shape.to_vec(),
            rhs: vec![targets.len()],
            hint: "need one target per row of logits (B * L targets for logits (B, L, V))".into(),
        }));
    }
    let values = logits.to_vec_f64()?;
    let (mut scored, mut correct) = (0usize, 0usize);
    for (row, &t) in values.chunks_exact(v).zip(targets) {
        if t == IGNORE {
            continue;
        }
        if t < 0 || t as usize >= v {
            return Err(Error::Engine(EngineError::Index { op: OP, index: t, size: v, what: "target class" }));
        }
        scored += 1;
        if argmax(row) == t as usize {
            correct += 1;
        }
    }
    if scored == 0 {
        let msg = "every target is -100: no position to score".into();
        return Err(Error::Engine(EngineError::Invalid { op: OP, msg }));
    }
    Ok(correct as f64 / scored as f64)
}

/// Index of the largest value (first on ties; a NaN never beats a number).
pub(crate) fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] || row[best].is_nan() {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copying() -> Task {
        Task::from_name("selective-copying", 32, 5, 6).unwrap()
    }

    fn induction() -> Task {
        Task::from_name("induction-heads", 20, 0, 5).unwrap()
    }

    #[test]
    fn lengths_and_vocab() {
        let (c, h) = (copying(), induction());
        assert_eq!((c.name(), c.len(), c.vocab_size()), ("selective-copying", 37, 8));
        assert_eq!((h.name(), h.len(), h.vocab_size()), ("induction-heads", 20, 6));
        let mut rng = Rng::new(1);
        for task in [c, h] {
            let ex = task.sample(&mut rng);
            assert_eq!((ex.input.len(), ex.targets.len()), (task.len(), task.len()));
            assert!(ex.input.iter().all(|&x| x < task.vocab_size()));
            let (x, y) = task.batch(3, &mut rng);
            assert_eq!((x.len(), y.len()), (3 * task.len(), 3 * task.len()));
        }
    }

    #[test]
    fn selective_copying_layout() {
        let Task::SelectiveCopying(t) = copying() else { unreachable!() };
        let mut rng = Rng::new(2);
        for _ in 0..50 {
            let ex = t.sample(&mut rng);
            let (data, tail) = ex.input.split_at(t.seq_len);
            // Scored exactly at the marker positions, which are the tail.
            assert!(tail.iter().all(|&x| x == MARKER));
            assert!(ex.targets[..t.seq_len].iter().all(|&y| y == IGNORE));
            let answers: Vec<i64> = ex.targets[t.seq_len..].to_vec();
            assert!(answers.iter().all(|&y| (2..2 + t.vocab as i64).contains(&y)));
            // The data region holds exactly the answers, in order, among blanks.
            let copied: Vec<i64> = data.iter().filter(|&&x| x != BLANK).map(|&x| x as i64).collect();
            assert_eq!(copied, answers);
            assert!(!data.contains(&MARKER));
        }
        // n_tokens == seq_len fills the whole data region.
        let full = SelectiveCopying::new(4, 4, 3).unwrap().sample(&mut rng);
        assert!(full.input[..4].iter().all(|&x| x >= 2));
    }

    #[test]
    fn induction_heads_layout() {
        let Task::InductionHeads(t) = induction() else { unreachable!() };
        let trigger = t.vocab;
        let mut rng = Rng::new(3);
        let mut first_positions = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let ex = t.sample(&mut rng);
            let at: Vec<usize> = (0..t.seq_len).filter(|&i| ex.input[i] == trigger).collect();
            assert_eq!(at.len(), 2, "trigger must appear exactly twice: {:?}", ex.input);
            let p = at[0];
            assert!(p <= t.seq_len - 3);
            assert_eq!(at[1], t.seq_len - 1);
            first_positions.insert(p);
            let scored: Vec<usize> = (0..t.seq_len).filter(|&i| ex.targets[i] != IGNORE).collect();
            assert_eq!(scored, vec![t.seq_len - 1]);
            assert_eq!(ex.targets[t.seq_len - 1], ex.input[p + 1] as i64);
        }
        // Every allowed first position 0..=seq_len-3 shows up.
        assert_eq!(first_positions.len(), t.seq_len - 2);
    }

    #[test]
    fn deterministic_for_a_seed() {
        for task in [copying(), induction()] {
            let a = task.batch(4, &mut Rng::new(42));
            assert_eq!(a, task.batch(4, &mut Rng::new(42)));
            assert_ne!(a, task.batch(4, &mut Rng::new(43)));
        }
    }

    #[test]
    fn bad_parameters_are_errors() {
        let err = |name, s, n, v| Task::from_name(name, s, n, v).unwrap_err().to_string();
        assert!(err("selective-copying", 4, 5, 4).contains("raise seq_len or lower n_tokens"));
        assert!(err("selective-copying", 4, 0, 4).contains("n_tokens"));
        assert!(err("selective-copying", 8, 2, 1).contains("vocab >= 2"));
        assert!(err("induction-heads", 3, 0, 4).contains("seq_len >= 4"));
        assert!(err("induction-heads", 8, 0, 1).contains("vocab >= 2"));
        assert!(err("copying", 8, 2, 4).contains("unknown task"));
        // Huge sizes are refused before anything is allocated (a task allocates nothing).
        for name in ["selective-copying", "induction-heads"] {
            for len in [MAX_TASK_LEN + 1, usize::MAX] {
                assert!(err(name, len, 2, 4).contains(&format!("seq_len = {len} (--task-len)")), "{name}");
            }
            assert!(err(name, 64, 2, MAX_TASK_VOCAB + 1).contains("(--task-vocab)"), "{name}");
            assert!(Task::from_name(name, MAX_TASK_LEN, MAX_TASK_LEN, MAX_TASK_VOCAB).is_ok());
        }
    }

    #[test]
    fn hand_built_degenerate_tasks_do_not_panic() {
        let mut rng = Rng::new(5);
        let ex = SelectiveCopying { seq_len: 2, n_tokens: 4, vocab: 0 }.sample(&mut rng);
        assert_eq!(ex.input.len(), 6);
        let ex = InductionHeads { seq_len: 1, vocab: 0 }.sample(&mut rng);
        assert_eq!(ex.targets, vec![IGNORE]);
    }

    #[test]
    fn accuracy_on_handcrafted_logits() {
        // B = 1, L = 4, V = 3; argmaxes 0, 2, 1, 1 (a tie between 1 and 2 goes to 1).
        let logits =
            Tensor::from_vec(vec![5.0f32, 1.0, 0.0, 0.0, 1.0, 3.0, 0.0, 2.0, 1.0, 0.0, 4.0, 4.0], &[1, 4, 3]).unwrap();
        assert_eq!(accuracy(&logits, &[IGNORE, 2, 0, 1]).unwrap(), 2.0 / 3.0);
        assert_eq!(accuracy(&logits, &[0, 2, 1, 1]).unwrap(), 1.0);
        assert_eq!(accuracy(&logits, &[IGNORE, IGNORE, 0, IGNORE]).unwrap(), 0.0);
        // Wrong number of targets, a class out of range, nothing scored.
        assert!(matches!(accuracy(&logits, &[0, 1]), Err(Error::Engine(EngineError::ShapeMismatch { .. }))));
        assert!(matches!(accuracy(&logits, &[0, 3, 0, 0]), Err(Error::Engine(EngineError::Index { index: 3, .. }))));
        assert!(matches!(accuracy(&logits, &[IGNORE; 4]), Err(Error::Engine(EngineError::Invalid { .. }))));
    }

    /// The answers from the input alone, as a reader of the paper would compute them:
    /// selective copying's data tokens in order of position; induction heads' token after the
    /// first trigger. Every scored target must be that, and nothing else may be scored.
    fn solve(task: &Task, input: &[usize]) -> Vec<i64> {
        let mut want = vec![IGNORE; input.len()];
        match task {
            Task::SelectiveCopying(t) => {
                let data = input[..t.seq_len].iter().filter(|&&x| x != BLANK);
                for (i, &x) in data.enumerate() {
                    want[t.seq_len + i] = x as i64;
                }
            }
            Task::InductionHeads(t) => {
                let first = input.iter().position(|&x| x == t.vocab).expect("a trigger");
                want[input.len() - 1] = input[first + 1] as i64;
            }
        }
        want
    }

    #[test]
    fn the_answer_is_determined_by_the_input() {
        let mut rng = Rng::new(3);
        for task in [copying(), induction()] {
            for _ in 0..2000 {
                let ex = task.sample(&mut rng);
                assert_eq!(ex.targets, solve(&task, &ex.input), "{}: {:?}", task.name(), ex.input);
            }
        }
    }

    /// Chi-square of `counts` against a uniform spread (degrees of freedom: cells - 1).
    fn chi_square(counts: &[usize]) -> f64 {
        let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
        counts.iter().map(|&c| (c as f64 - mean).powi(2) / mean).sum()
    }

    /// Where the data tokens (selective copying) and the first trigger (induction heads) sit
    /// is uniform over the positions they may take: chi-square over 20,000 examples, under the
    /// 99.99th percentile for the degrees of freedom (about df + 4.5 sqrt(2 df); a fixed seed).
    #[test]
    fn positions_are_uniformly_spread() {
        let mut rng = Rng::new(17);
        let (len, tokens) = (24, 4);
        let copy = Task::from_name("selective-copying", len, tokens, 8).unwrap();
        let induct = Task::from_name("induction-heads", len, 0, 8).unwrap();
        let (mut data_at, mut trigger_at) = (vec![0; len], vec![0; len - 2]);
        for _ in 0..20_000 {
            let ex = copy.sample(&mut rng);
            ex.input[..len].iter().enumerate().filter(|(_, &x)| x != BLANK).for_each(|(p, _)| data_at[p] += 1);
            let ex = induct.sample(&mut rng);
            trigger_at[ex.input.iter().position(|&x| x == 8).unwrap()] += 1;
        }
        for (what, counts) in [("data tokens", &data_at), ("first trigger", &trigger_at)] {
            let df = (counts.len() - 1) as f64;
            let (chi, bound) = (chi_square(counts), df + 4.5 * (2.0 * df).sqrt());
            assert!(chi < bound, "{what}: chi-square {chi:.1} over {bound:.1} for {df} df: {counts:?}");
        }
        // and the data tokens' values: uniform over the vocabulary
        let mut values = vec![0; 8];
        for _ in 0..20_000 {
            copy.sample(&mut rng).input.iter().filter(|&&x| x >= 2).for_each(|&x| values[x - 2] += 1);
        }
        assert!(chi_square(&values) < 7.0 + 4.5 * 14f64.sqrt(), "token values {values:?}");
    }
}
