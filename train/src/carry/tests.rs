//! Tests of `--carry-state`: the streams, the carried objective against the whole text's, the
//! refusals, and a few training steps through the trainer.

use super::*;
use crate::{
    data::Corpus,
    tasks::Task,
    trainer::{TrainArgs, Trainer},
};
use mamba_engine::{DType, Rng};
use mamba_model::{MambaConfig, SsmConfig};

fn text(n: usize) -> Vec<u8> {
    let mut rng = Rng::new(2);
    (0..n).map(|_| b'a' + rng.below(26) as u8).collect()
}

fn source(train: Vec<u8>) -> Source {
    Source::Text(Corpus { train, val: vec![] })
}

/// Two steps of carried state see what one pass over windows twice as long sees: the mean
/// cross-entropy of the two steps equals the long windows' (f64), and the third step starts
/// the streams over (from zero states, as the first).
#[test]
fn carried_steps_equal_the_whole_stream() {
    let model = MambaLM::new(MambaConfig::new(16, 2), DType::F64, 1).unwrap();
    let (rows, seq_len, data) = (2, 9, text(2 * 30)); // segments of 30: 3 windows of 9 each
    let src = source(data.clone());
    let mut carry = Carry::for_run(true, &model, &src, rows, seq_len).unwrap().expect("a carry");
    let mut losses = Vec::new();
    for step in 0..4 {
        let b = carry.next_batch(&data, step);
        let o = objective(Some(&mut carry), &model, 0, (&b.ids, &b.targets), b.rows, b.len).unwrap();
        losses.push(o.cross_entropy.item().unwrap());
    }
    let (ids, targets) = windows(&data, &[0, 30], 2 * seq_len);
    let whole = model.objective(&ids, &targets, rows, 2 * seq_len).unwrap().cross_entropy.item().unwrap();
    let carried = (losses[0] + losses[1]) / 2.0;
    assert!((carried - whole).abs() < 1e-12 * whole, "{carried} vs {whole}");
    assert_eq!(losses[3].to_bits(), losses[0].to_bits(), "step 3 starts the streams over: {losses:?}");
    // without the carry, step 1's window is scored from zero states: another loss
    let b = carry.next_batch(&data, 1);
    let fresh = objective(None, &model, 0, (&b.ids, &b.targets), rows, seq_len).unwrap();
    assert_ne!(fresh.cross_entropy.item().unwrap().to_bits(), losses[1].to_bits());
}

/// Shards keep their own states: two shards of one row each carry what one shard of two rows
/// carries.
#[test]
fn each_shard_carries_its_own_rows() {
    let model = MambaLM::new(MambaConfig::new(16, 1), DType::F64, 2).unwrap();
    let data = text(2 * 30);
    let src = source(data.clone());
    let mut whole = Carry::for_run(true, &model, &src, 2, 9).unwrap().unwrap();
    let mut halves = Carry::for_run(true, &model, &src, 2, 9).unwrap().unwrap();
    for step in 0..2 {
        let b = whole.next_batch(&data, step);
        let _ = halves.next_batch(&data, step);
        let both = objective(Some(&mut whole), &model, 0, (&b.ids, &b.targets), 2, 9).unwrap();
        let mut sum = 0.0;
        for shard in 0..2 {
            let part = (&b.ids[shard * 9..][..9], &b.targets[shard * 9..][..9]);
            sum += objective(Some(&mut halves), &model, shard, part, 1, 9).unwrap().cross_entropy.item().unwrap();
        }
        let want = both.cross_entropy.item().unwrap();
        assert!((sum / 2.0 - want).abs() < 1e-12 * want, "step {step}: {} vs {want}", sum / 2.0);
    }
}

#[test]
fn what_cannot_carry_is_refused_with_the_reason() {
    let model = MambaLM::new(MambaConfig::new(16, 1), DType::F32, 0).unwrap();
    let msg = |r: Result<Option<Carry>>| r.err().expect("refused").to_string();
    assert!(Carry::for_run(false, &model, &source(vec![]), 2, 8).unwrap().is_none());
    let e = msg(Carry::for_run(true, &model, &source(text(19)), 2, 9)); // 2 segments of 9 < 9 + 1
    assert!(e.contains("--batch 2 streams") && e.contains("--seq-len 9"), "{e}");
    let task = Source::Task(Task::from_name("induction-heads", 64, 16, 16).unwrap());
    assert!(msg(Carry::for_run(true, &model, &task, 2, 8)).contains("--task"));
    let cfg = MambaConfig { ssm_cfg: SsmConfig::Mamba2(Default::default()), ..MambaConfig::new(64, 1) };
    let m2 = MambaLM::new(cfg, DType::F32, 0).unwrap();
    let e = msg(Carry::for_run(true, &m2, &source(text(100)), 2, 8));
    assert!(e.contains("layer 0 is Mamba2"), "{e}");
}

/// `mamba train --carry-state`: steps train (finite losses, the weights move) and carry a state
/// between them; with --ranks 2 each rank carries its own.
#[test]
fn the_trainer_carries_the_state_between_steps() {
    for ranks in ["1", "2"] {
        let flags = [
            "--quiet",
            "--carry-state",
            "--d-model",
            "16",
            "--n-layer",
            "1",
            "--batch",
            "2",
            "--seq-len",
            "16",
            "--warmup",
            "1",
            "--ranks",
            ranks,
        ];
        let mut trainer = Trainer::new(&TrainArgs::parse_flags(&flags).unwrap()).unwrap();
        for _ in 0..2 {
            let batch = trainer.next_batch();
            let stats = trainer.step(&batch).unwrap();
            assert!(stats.loss.is_finite() && stats.grad_norm > 0.0, "{stats:?}");
        }
        let carry = trainer.carry.as_ref().expect("--carry-state makes a carry");
        assert_eq!(carry.states.iter().filter(|s| s.is_some()).count(), ranks.parse::<usize>().unwrap());
    }
    let task = TrainArgs::parse_flags(&["--carry-state", "--task", "induction-heads"]).unwrap();
    let e = Trainer::new(&task).err().expect("refused").to_string();
    assert!(e.contains("--carry-state") && e.contains("--task"), "{e}");
}
