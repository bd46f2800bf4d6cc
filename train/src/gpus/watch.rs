//! Rank 0's watch over the ranks it started. NCCL on one host does not notice a peer that
//! died: the collective's kernel waits for it forever, and so does a host thread waiting for
//! the stream. So rank 0 polls its children: between steps ([`Watch::check`]: a clear error,
//! the last checkpoint intact) and, from a thread of its own, while it may be waiting inside
//! NCCL ([`Watch::busy`]): a rank dead for [`Watch::spawn`]'s grace while rank 0 is still
//! busy can only mean a wait that never ends, and the process exits with the reason.
//!
//! Only a `cuda` build starts ranks; the module is compiled in every build so that its tests
//! run on the CPU.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use crate::{Error, Result};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the watching thread looks at the children.
const PATROL: Duration = Duration::from_millis(100);

struct Member {
    rank: usize,
    child: Child,
    exit: Option<ExitStatus>,
}

struct Shared {
    members: Mutex<Vec<Member>>,
    busy: AtomicBool,
    stop: AtomicBool,
    grace: Duration,
}

impl Shared {
    fn members(&self) -> std::sync::MutexGuard<'_, Vec<Member>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Collect exits; the first rank that has exited, said in words.
    fn first_exit(&self) -> Option<String> {
        let mut members = self.members();
        for m in members.iter_mut().filter(|m| m.exit.is_none()) {
            m.exit = m.child.try_wait().ok().flatten();
        }
        members.iter().find_map(|m| m.exit.map(|status| exited(m.rank, m.child.id(), status)))
    }

    fn kill_all(&self) {
        for m in self.members().iter_mut().filter(|m| m.exit.is_none()) {
            let _ = m.child.kill();
            m.exit = m.child.wait().ok();
        }
    }
}

fn exited(rank: usize, pid: u32, status: ExitStatus) -> String {
    format!("rank {rank} (pid {pid}) exited ({status}) before the run ended; its error, if it printed one, is above")
}

/// The ranks rank 0 started, and the thread that watches them.
pub(crate) struct Watch {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    /// Start every `(rank, command)`; a rank dead for `grace` while rank 0 is [`Watch::busy`]
    /// ends the process. If one cannot start, those started are stopped again.
    pub(crate) fn spawn(commands: Vec<(usize, Command)>, grace: Duration) -> Result<Watch> {
        let shared =
            Arc::new(Shared { members: Mutex::new(Vec::new()), busy: false.into(), stop: false.into(), grace });
        let mut watch = Watch { shared: shared.clone(), thread: None };
        for (rank, mut command) in commands {
            let what = format!("cannot start rank {rank} ({:?})", command.get_program());
            let child = command.spawn().map_err(Error::io(what))?;
            shared.members().push(Member { rank, child, exit: None }); // `watch` stops it on an error
        }
        let thread = std::thread::Builder::new()
            .name("rank-watch".into())
            .spawn(move || patrol(&shared))
            .map_err(Error::io("cannot start the thread that watches the ranks"))?;
        watch.thread = Some(thread);
        Ok(watch)
    }

    /// Run `f`, during which rank 0 may wait for the other ranks inside NCCL.
    pub(crate) fn busy<T>(&self, f: impl FnOnce() -> T) -> T {
        self.shared.busy.store(true, Ordering::SeqCst);
        let out = f();
        self.shared.busy.store(false, Ordering::SeqCst);
        out
    }

    /// An error if a rank has exited (between steps none should).
    pub(crate) fn check(&self) -> Result<()> {
        match self.shared.first_exit() {
            Some(msg) => Err(Error::Settings(msg)),
            None => Ok(()),
        }
    }

    /// After the last step: every rank must exit, successfully, within `timeout`; one that
    /// does not is stopped and named.
    pub(crate) fn wait(self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let mut members = self.shared.members();
            for m in members.iter_mut().filter(|m| m.exit.is_none()) {
                m.exit = m.child.try_wait().map_err(Error::io(format!("cannot wait for rank {}", m.rank)))?;
            }
            if let Some(m) = members.iter().find(|m| m.exit.is_some_and(|s| !s.success())) {
                let status = m.exit.map_or_else(String::new, |s| s.to_string());
                return Err(Error::Settings(format!("rank {} (pid {}) failed ({status})", m.rank, m.child.id())));
            }
            if members.iter().all(|m| m.exit.is_some()) {
                return Ok(());
            }
            if start.elapsed() > timeout {
                let left: Vec<String> =
                    members.iter().filter(|m| m.exit.is_none()).map(|m| m.rank.to_string()).collect();
                return Err(Error::Settings(format!(
                    "rank(s) {} did not exit within {}s of the last step: stopped",
                    left.join(", "),
                    timeout.as_secs()
                )));
            }
            drop(members);
            std::thread::sleep(PATROL);
        }
    }
}

impl Drop for Watch {
    /// Stop the watching thread, then any rank still running (rank 0 is leaving).
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.shared.kill_all();
    }
}

/// The watching thread: a rank that has exited while rank 0 stays busy for the grace period
/// after it means rank 0 waits in NCCL for a peer that will never come.
fn patrol(shared: &Shared) {
    let mut dead: Option<(Instant, String)> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        std::thread::sleep(PATROL);
        if dead.is_none() {
            dead = shared.first_exit().map(|msg| (Instant::now(), msg));
        }
        if let Some((since, msg)) = &dead {
            if shared.busy.load(Ordering::SeqCst) && since.elapsed() >= shared.grace {
                eprintln!(
                    "error: {msg}. Rank 0 was waiting for it inside NCCL, which does not notice a lost peer on \
                     one host: stopping every rank (checkpoints written so far are intact)"
                );
                shared.kill_all();
                std::process::exit(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    #[test]
    fn a_rank_that_exits_early_is_an_error_between_steps() {
        let watch = Watch::spawn(vec![(1, sh("exit 3")), (2, sh("sleep 30"))], Duration::from_secs(3600)).unwrap();
        let start = Instant::now();
        let msg = loop {
            if let Err(e) = watch.check() {
                break e.to_string();
            }
            assert!(start.elapsed() < Duration::from_secs(20), "the exit was never seen");
            std::thread::sleep(PATROL);
        };
        assert!(msg.starts_with("rank 1 (pid ") && msg.contains("exit status: 3"), "{msg}");
        drop(watch); // stops rank 2 (sleep 30) at once
        assert!(start.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn ranks_must_exit_well_and_in_time() {
        let ok = Watch::spawn(vec![(1, sh("exit 0")), (2, sh("true"))], Duration::from_secs(3600)).unwrap();
        ok.wait(Duration::from_secs(20)).unwrap();
        let failed = Watch::spawn(vec![(1, sh("exit 0")), (2, sh("exit 7"))], Duration::from_secs(3600)).unwrap();
        let msg = failed.wait(Duration::from_secs(20)).unwrap_err().to_string();
        assert!(msg.starts_with("rank 2 (pid ") && msg.contains("exit status: 7"), "{msg}");
        let slow = Watch::spawn(vec![(1, sh("sleep 30"))], Duration::from_secs(3600)).unwrap();
        let msg = slow.wait(Duration::from_millis(300)).unwrap_err().to_string();
        assert!(msg.contains("rank(s) 1 did not exit within 0s"), "{msg}");
        let msg = Watch::spawn(vec![(1, Command::new("/nonexistent/mamba"))], Duration::from_secs(1))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.starts_with("cannot start rank 1"), "{msg}");
    }
}
