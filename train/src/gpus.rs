//! `mamba train --device cuda --gpus N`: data parallelism over the GPUs of one host, one
//! process per GPU.
//!
//! One process per GPU because the engine has one CUDA context and one stream per process,
//! on its device 0: a process started with `CUDA_VISIBLE_DEVICES=<its GPU>` sees its GPU as
//! device 0, so the engine needs no change (threads would need a context and a stream per
//! thread throughout the engine).
//!
//! Rank 0 is the process the user started. It checks the settings, counts the GPUs, loads
//! NCCL and makes its unique id, claims the run folder, then starts ranks 1..N-1: the same
//! binary with the same arguments, told their rank by [`RANK_VAR`], [`WORLD_VAR`] and
//! [`ID_VAR`] (the id in hex) and given their GPU by CUDA_VISIBLE_DEVICES; NCCL_NVLS_ENABLE=0
//! (NVLink multicast off) is set for every rank. Every rank builds the same model from the
//! same seed or checkpoint and draws the same batches; each computes its shard of every batch
//! ([`crate::parallel::shard`]) and the gradients are summed by NCCL in the buckets of
//! [`crate::parallel::Ranks`], the path `--ranks` runs in one process. The clipping and the
//! AdamW step are then the same on every rank. Rank 0 alone writes the checkpoints (which
//! hold nothing per rank, so a run resumes on another N), the metrics and the samples, and
//! shows progress; the others print only their errors.
//!
//! A rank that dies: rank 0 watches its children (`watch.rs`) between steps and while it may
//! wait inside NCCL; each child watches for rank 0 going away and then exits.

mod watch;

use crate::{args::TrainArgs, trainer::Trainer, Error, Result};
#[cfg(feature = "cuda")]
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};
#[cfg(feature = "cuda")]
use std::time::Duration;

/// The environment variables that make a `mamba train` process a rank other than 0.
pub const RANK_VAR: &str = "MAMBA_RANK";
pub const WORLD_VAR: &str = "MAMBA_WORLD";
pub const ID_VAR: &str = "MAMBA_NCCL_ID";

/// Bytes of an NCCL unique id (NCCL_UNIQUE_ID_BYTES).
pub const ID_BYTES: usize = 128;
#[cfg(feature = "cuda")]
const _: () = assert!(ID_BYTES == mamba_engine::cuda::nccl::ID_BYTES);

/// What a rank started by `--gpus` learns from its environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankEnv {
    pub rank: usize,
    pub world: usize,
    pub id: [u8; ID_BYTES],
}

impl RankEnv {
    /// This process's rank settings: none for a process the user started.
    pub fn from_env() -> Result<Option<RankEnv>> {
        let var = |k: &str| std::env::var(k).ok();
        RankEnv::parse(var(RANK_VAR).as_deref(), var(WORLD_VAR).as_deref(), var(ID_VAR).as_deref())
    }

    /// The rank settings from the values of [`RANK_VAR`], [`WORLD_VAR`] and [`ID_VAR`]: none
    /// if none is set, an error naming the variable if one is missing or wrong.
    pub fn parse(rank: Option<&str>, world: Option<&str>, id: Option<&str>) -> Result<Option<RankEnv>> {
        let refuse = |what: String| {
            Err(Error::Settings(format!(
                "{what}. {RANK_VAR}, {WORLD_VAR} and {ID_VAR} are set by `mamba train --gpus N` for the ranks it \
                 starts; unset them to run mamba yourself"
            )))
        };
        let (rank, world, id) = match (rank, world, id) {
            (None, None, None) => return Ok(None),
            (Some(r), Some(w), Some(i)) => (r, w, i),
            _ => {
                let missing = [(RANK_VAR, rank), (WORLD_VAR, world), (ID_VAR, id)]
                    .iter()
                    .filter(|(_, v)| v.is_none())
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(" and ");
                return refuse(format!("{missing} not set while the other rank variables are"));
            }
        };
        let Ok(world_n) = world.trim().parse::<usize>() else {
            return refuse(format!("{WORLD_VAR}={world:?} is not a number of ranks"));
        };
        let Ok(rank_n) = rank.trim().parse::<usize>() else {
            return refuse(format!("{RANK_VAR}={rank:?} is not a rank number"));
        };
        if world_n < 2 || rank_n == 0 || rank_n >= world_n {
            return refuse(format!(
                "{RANK_VAR}={rank_n} of {WORLD_VAR}={world_n}: a started rank is 1 to {WORLD_VAR} - 1 (rank 0 is the \
                 process the user started), of at least 2"
            ));
        }
        let Some(id) = from_hex(id.trim()).and_then(|b| <[u8; ID_BYTES]>::try_from(b).ok()) else {
            return refuse(format!("{ID_VAR} is not {} hex digits (an NCCL unique id)", 2 * ID_BYTES));
        };
        Ok(Some(RankEnv { rank: rank_n, world: world_n, id }))
    }
}

/// Bytes as lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex digits (either case) as bytes; none for an odd length or a non-hex character.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// The CUDA_VISIBLE_DEVICES of ranks 0..n: the first n GPUs this process sees (`visible` is
/// its own CUDA_VISIBLE_DEVICES, which they subdivide; none: the driver's 0, 1, ..).
pub fn rank_devices(visible: Option<&str>, n: usize) -> Result<Vec<String>> {
    let Some(list) = visible else { return Ok((0..n).map(|i| i.to_string()).collect()) };
    let devices: Vec<String> = list.split(',').map(str::trim).filter(|d| !d.is_empty()).map(String::from).collect();
    if devices.len() < n {
        return Err(Error::Settings(format!(
            "--gpus {n}: CUDA_VISIBLE_DEVICES={list:?} names {} GPU(s); lower --gpus or widen it",
            devices.len()
        )));
    }
    Ok(devices.into_iter().take(n).collect())
}

/// The steps of a rank other than 0 (and of tests): the same batches and updates as rank 0
/// from the trainer's step to the run's last, with nothing written or shown. Returns the
/// losses (the means over all ranks, as rank 0 logs them).
pub fn follow(trainer: &mut Trainer) -> Result<Vec<f64>> {
    let first = trainer.opt.step;
    let mut losses = Vec::new();
    for _ in first..trainer.args.last_step(first) {
        trainer.collective_health()?;
        let batch = trainer.next_batch();
        losses.push(trainer.step(&batch)?.loss);
    }
    Ok(losses)
}

/// Rank 0's side of `--gpus`: the other ranks and the communicator; nothing without --gpus.
pub(crate) struct Group {
    #[cfg(feature = "cuda")]
    launch: Option<Launch>,
}

#[cfg(not(feature = "cuda"))]
impl Group {
    pub(crate) fn prepare(args: &TrainArgs) -> Result<Group> {
        match args.gpus {
            Some(_) => Err(Error::Settings("--gpus needs a build with `--features cuda` (docs/GPU.md)".into())),
            None => Ok(Group {}),
        }
    }

    pub(crate) fn start(&mut self, _trainer: &mut Trainer) -> Result<()> {
        Ok(())
    }

    pub(crate) fn check(&self, trainer: &Trainer) -> Result<()> {
        trainer.collective_health()
    }

    pub(crate) fn watched<T>(&self, f: impl FnOnce() -> T) -> T {
        f()
    }

    pub(crate) fn finish(self, _trainer: &mut Trainer) -> Result<()> {
        Ok(())
    }
}

/// A rank other than 0: its steps, until the run's last ([`follow`]), summing with the others.
#[cfg(not(feature = "cuda"))]
pub fn train_rank(_args: &TrainArgs, _env: &RankEnv) -> Result<()> {
    Err(Error::Settings("--gpus needs a build with `--features cuda` (docs/GPU.md)".into()))
}

#[cfg(feature = "cuda")]
pub use cuda::train_rank;

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "cuda")]
use cuda::Launch;

#[cfg(feature = "cuda")]
impl Group {
    /// Before anything is written: the GPUs counted, NCCL loaded, the unique id made.
    pub(crate) fn prepare(args: &TrainArgs) -> Result<Group> {
        Ok(Group { launch: args.gpus.map(|n| Launch::prepare(args, n)).transpose()? })
    }

    /// Start ranks 1..N-1 and join the communicator with them; the trainer sums through it.
    pub(crate) fn start(&mut self, trainer: &mut Trainer) -> Result<()> {
        self.launch.as_mut().map_or(Ok(()), |l| l.start(trainer))
    }

    /// Between steps: a rank that exited, an error NCCL met in the background.
    pub(crate) fn check(&self, trainer: &Trainer) -> Result<()> {
        if let Some(w) = self.launch.as_ref().and_then(|l| l.watch.as_ref()) {
            w.check()?;
        }
        trainer.collective_health()
    }

    /// Run `f`, during which rank 0 may wait for the other ranks.
    pub(crate) fn watched<T>(&self, f: impl FnOnce() -> T) -> T {
        match self.launch.as_ref().and_then(|l| l.watch.as_ref()) {
            Some(w) => w.busy(f),
            None => f(),
        }
    }

    /// After the last step: check that every rank ends with the same weights, close the
    /// communicator, wait for the other ranks to exit.
    pub(crate) fn finish(mut self, trainer: &mut Trainer) -> Result<()> {
        let Some(launch) = self.launch.take() else { return Ok(()) };
        let close = |trainer: &mut Trainer| {
            trainer.ranks_agree()?; // the other ranks check too, at the same point
            launch.done.store(true, Ordering::SeqCst);
            drop(trainer.leave());
            Ok::<(), Error>(())
        };
        match &launch.watch {
            Some(w) => w.busy(|| close(trainer))?,
            None => close(trainer)?,
        }
        launch.watch.map_or(Ok(()), |w| w.wait(EXIT_WAIT))
    }
}

/// How long rank 0 lets a dead rank go unnoticed while it may be waiting inside NCCL.
#[cfg(feature = "cuda")]
const GRACE: Duration = Duration::from_secs(10);
/// How long the other ranks may take to exit after the last step.
#[cfg(feature = "cuda")]
const EXIT_WAIT: Duration = Duration::from_secs(120);

/// Whether a communicator was closed after a finished run (destroy) or not (abort: its
/// peers may be gone, and a destroy would wait for them).
#[cfg(feature = "cuda")]
type Done = Arc<AtomicBool>;

#[cfg(test)]
mod tests;
