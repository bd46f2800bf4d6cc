//! The NCCL side of `--gpus`: rank 0's launch of the other ranks, a started rank's run, and
//! the [`Collective`] over NCCL that both hand to their trainer.

use super::{rank_devices, to_hex, watch::Watch, Done, RankEnv, GRACE, ID_BYTES, ID_VAR, RANK_VAR, WORLD_VAR};
use crate::{args::TrainArgs, parallel::Collective, trainer::Trainer, Error, Result};
use mamba_engine::{cuda::nccl, DType, Device, Tensor};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A diagnostic: each rank's CUDA_VISIBLE_DEVICES, entry i for rank i (rank 0 keeps its own),
/// instead of this process's GPUs in turn, and no count of the GPUs. `0,0` starts two ranks on
/// one GPU, which NCCL refuses at init (a duplicate GPU) after the ranks have started and met:
/// the launch checked on a one-GPU machine (kernels/tools/nccl-check.sh).
const DEVICES_VAR: &str = "MAMBA_RANK_DEVICES";

/// NVLink multicast (NVLS) stays off in every multi-GPU run (the lent machines' rule).
const NVLS: (&str, &str) = ("NCCL_NVLS_ENABLE", "0");

/// NCCL's all-reduce as the sum of [`crate::parallel::Ranks`].
struct Nccl {
    comm: Option<nccl::Comm>,
    done: Done,
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.comm.as_ref().map_or(0, nccl::Comm::rank)
    }

    fn processes(&self) -> usize {
        self.comm.as_ref().map_or(1, nccl::Comm::world)
    }

    fn sum(&mut self, t: Tensor) -> Result<Tensor> {
        self.comm()?.all_reduce_sum(&t)?;
        Ok(t)
    }

    fn sum_host(&mut self, values: &mut [f64]) -> Result<()> {
        let t = Tensor::from_f64(values, &[values.len()], DType::F64)?.to(Device::Cuda)?;
        self.comm()?.all_reduce_sum(&t)?;
        values.copy_from_slice(&t.to_vec_f64()?);
        Ok(())
    }

    fn health(&self) -> Result<()> {
        Ok(self.comm()?.async_error()?)
    }
}

impl Nccl {
    fn comm(&self) -> Result<&nccl::Comm> {
        self.comm.as_ref().ok_or_else(|| Error::Settings("engine bug: the NCCL communicator is closed".into()))
    }
}

impl Drop for Nccl {
    /// Destroy the communicator after a finished run; abort it otherwise (a destroy would
    /// wait for collectives whose peers may be gone).
    fn drop(&mut self) {
        if let Some(comm) = self.comm.take() {
            if !self.done.load(Ordering::SeqCst) {
                comm.abort();
            }
        }
    }
}

/// Rank 0's launch: N, the unique id, and once started the other ranks.
pub(super) struct Launch {
    n: usize,
    id: [u8; ID_BYTES],
    pub(super) watch: Option<Watch>,
    pub(super) done: Done,
}

impl Launch {
    /// Count the GPUs, load NCCL (saying which), make the unique id.
    pub(super) fn prepare(args: &TrainArgs, n: usize) -> Result<Launch> {
        let visible = nccl::visible_gpus()?;
        if n > visible && std::env::var_os(DEVICES_VAR).is_none() {
            let cvd = std::env::var("CUDA_VISIBLE_DEVICES").map_or_else(|_| "unset".into(), |v| format!("{v:?}"));
            return Err(Error::Settings(format!(
                "--gpus {n}: this process sees {visible} GPU(s) (CUDA_VISIBLE_DEVICES {cvd}); lower --gpus"
            )));
        }
        if n > 1 && std::env::args_os().nth(1).is_none_or(|a| a != "train") {
            return Err(Error::Settings(format!(
                "--gpus {n} starts `mamba train` again with this process's arguments: run it from the mamba command"
            )));
        }
        if std::env::var(NVLS.0).as_deref() != Ok(NVLS.1) {
            // NCCL reads it when it starts, below; main() set it already when it could.
            std::env::set_var(NVLS.0, NVLS.1);
        }
        let (path, (major, minor, patch)) = nccl::library()?;
        if !args.quiet {
            println!(
                "nccl {major}.{minor}.{patch} from {path}: {n} rank(s), one process per GPU, {}={}",
                NVLS.0, NVLS.1
            );
        }
        let id = nccl::unique_id()?;
        Ok(Launch { n, id, watch: None, done: Arc::new(AtomicBool::new(false)) })
    }

    /// Start ranks 1..N-1 (this binary, these arguments, their rank and GPU in the
    /// environment), join the communicator with them and hand it to the trainer.
    pub(super) fn start(&mut self, trainer: &mut Trainer) -> Result<()> {
        let var = |k: &str| std::env::var(k).ok();
        let devices = rank_devices(var(DEVICES_VAR).or_else(|| var("CUDA_VISIBLE_DEVICES")).as_deref(), self.n)?;
        let exe = std::env::current_exe().map_err(Error::io("cannot find this program to start the other ranks"))?;
        let args: Vec<_> = std::env::args_os().skip(1).collect();
        let commands = (1..self.n)
            .map(|rank| {
                let mut c = Command::new(&exe);
                c.args(&args)
                    .env(RANK_VAR, rank.to_string())
                    .env(WORLD_VAR, self.n.to_string())
                    .env(ID_VAR, to_hex(&self.id))
                    .env("CUDA_VISIBLE_DEVICES", &devices[rank])
                    .env(NVLS.0, NVLS.1)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null()); // quiet; errors go to the shared stderr
                (rank, c)
            })
            .collect();
        let watch = Watch::spawn(commands, GRACE)?;
        // Blocks until every rank has joined: watched, so a rank that dies first ends it.
        let comm = watch.busy(|| nccl::Comm::join(self.n, 0, &self.id))?;
        self.watch = Some(watch);
        trainer.join(Box::new(Nccl { comm: Some(comm), done: self.done.clone() }));
        Ok(())
    }
}

/// A rank other than 0 (started by rank 0 with `--gpus`): the same trainer, its shard of
/// every step, nothing written or shown; it stops if rank 0 goes away.
pub fn train_rank(args: &TrainArgs, env: &RankEnv) -> Result<()> {
    if args.gpus != Some(env.world) {
        let gpus = args.gpus.map_or("no --gpus".into(), |n| format!("--gpus {n}"));
        return Err(Error::Settings(format!(
            "{RANK_VAR}={} {WORLD_VAR}={} with {gpus}: this process was not started by `mamba train --gpus`",
            env.rank, env.world
        )));
    }
    watch_parent(env.rank);
    let args = TrainArgs { rank: env.rank, quiet: true, ..args.clone() };
    let mut trainer = Trainer::new(&args)?;
    let done: Done = Arc::new(AtomicBool::new(false));
    let comm = nccl::Comm::join(env.world, env.rank, &env.id)?;
    trainer.join(Box::new(Nccl { comm: Some(comm), done: done.clone() }));
    super::follow(&mut trainer)?;
    trainer.ranks_agree()?; // with rank 0, after its last step
    done.store(true, Ordering::SeqCst);
    drop(trainer.leave());
    Ok(())
}

/// Exit once rank 0 (the parent) is gone: NCCL would wait for it forever.
fn watch_parent(rank: usize) {
    let parent = std::os::unix::process::parent_id();
    let watch = move || loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        if std::os::unix::process::parent_id() != parent {
            eprintln!("rank {rank}: rank 0 (pid {parent}) has gone: stopping");
            std::process::exit(1);
        }
    };
    // Without the thread a lost rank 0 would leave this one waiting; it is not worth failing for.
    if let Err(e) = std::thread::Builder::new().name("parent-watch".into()).spawn(watch) {
        eprintln!("rank {rank}: cannot watch rank 0 ({e}); if it dies, stop this process by hand");
    }
}
