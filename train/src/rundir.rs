//! The run directory `<out>`: one run at a time, and a fresh run never replaces another
//! run's files unless asked to.
//!
//! A run holds an advisory lock on `<out>/.lock` (which holds its pid) from before it
//! writes anything until it exits; the system releases it when the process dies, however
//! it dies. The file itself stays: deleting it would let two runs lock two different files.
//!
//! `<out>` holds a run when any of [`RUN_FILES`] is there. Only the run a `--resume`
//! checkpoint belongs to may continue in it; any other run needs `--overwrite`, which
//! deletes those files only once the new run is set up (`RunDir::clear_previous_run`).

use crate::{checkpoint, Error, Result};
use std::{
    fs::{self, File, OpenOptions, TryLockError},
    io::Write,
    path::{Path, PathBuf},
};

/// The lock file in `<out>`.
pub const LOCK_FILE: &str = ".lock";
/// The last checkpoint of a run, in `<out>`.
pub const LAST: &str = "checkpoint";
/// The checkpoint of the best validation result so far, in `<out>`.
pub const BEST: &str = "checkpoint-best";
/// What a run writes into `<out>` (each checkpoint with its `.tmp` and `.old` siblings):
/// what `--overwrite` deletes. Any other file in `<out>` is left alone.
pub const RUN_FILES: [&str; 10] = [
    LAST,
    "checkpoint.old",
    "checkpoint.tmp",
    BEST,
    "checkpoint-best.old",
    "checkpoint-best.tmp",
    "metrics.jsonl",
    "loss.svg",
    "profile.txt",
    "trace.json",
];

/// A run directory claimed by this process: locked, checked, and (with `--overwrite`) the
/// previous run's files to delete before the first step.
pub(crate) struct RunDir {
    /// Holds the lock until dropped (at the latest, when the process exits).
    _lock: File,
    previous: Vec<PathBuf>,
}

impl RunDir {
    /// Create and lock `out`, then check that this run may write there: `resume` is the
    /// checkpoint a resumed run continues (its run may go on in its own directory), and
    /// `overwrite` allows replacing any other run. Checkpoint directories holding foreign
    /// files are refused now rather than at the first save. Nothing is deleted here.
    pub(crate) fn claim(out: &Path, resume: Option<&Path>, overwrite: bool) -> Result<RunDir> {
        fs::create_dir_all(out).map_err(Error::io(format!("cannot create --out {}", out.display())))?;
        let lock = lock(out)?;
        let previous = previous_run(out)?;
        let own = match resume.and_then(Path::parent) {
            Some(run) => same_dir(run, out),
            None => false,
        };
        if own && overwrite {
            return Err(Error::Settings(format!(
                "--overwrite would delete the run that --resume continues ({}); drop --overwrite",
                out.display()
            )));
        }
        if !previous.is_empty() && !own && !overwrite {
            return Err(Error::Settings(already_a_run(out, &previous, resume.is_none())));
        }
        for name in [LAST, BEST] {
            checkpoint::check_replaceable(&out.join(name))?;
        }
        Ok(RunDir { _lock: lock, previous: if overwrite { previous } else { vec![] } })
    }

    /// `--overwrite`: delete the previous run's files. Called once the new run is set up,
    /// right before its first step, so that a run which fails to start loses nothing.
    pub(crate) fn clear_previous_run(&mut self) -> Result<()> {
        for path in std::mem::take(&mut self.previous) {
            let removed = match path.is_dir() {
                true => fs::remove_dir_all(&path),
                false => fs::remove_file(&path),
            };
            removed.map_err(Error::io(format!("--overwrite: cannot remove {}", path.display())))?;
        }
        Ok(())
    }
}

/// Take the lock on `<out>/.lock` and write our pid into it, or say who holds it.
fn lock(out: &Path) -> Result<File> {
    let path = out.join(LOCK_FILE);
    let context = |what: &str| format!("cannot {what} the lock file {}", path.display());
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false) // the holder's pid, until we hold the lock
        .open(&path)
        .map_err(Error::io(context("open")))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let pid = fs::read_to_string(&path).ok().and_then(|text| text.trim().parse().ok());
            return Err(Error::InUse { dir: out.to_path_buf(), pid });
        }
        Err(TryLockError::Error(e)) => return Err(Error::io(context("lock"))(e)),
    }
    file.set_len(0)
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.flush())
        .map_err(Error::io(context("write")))?;
    Ok(file)
}

/// The files of a previous run in `out`, in [`RUN_FILES`] order.
fn previous_run(out: &Path) -> Result<Vec<PathBuf>> {
    let mut found = vec![];
    for name in RUN_FILES {
        let path = out.join(name);
        match fs::symlink_metadata(&path) {
            Ok(_) => found.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("cannot look at {}", path.display()))(e)),
        }
    }
    Ok(found)
}

/// "runs/x already holds a run (checkpoint/, metrics.jsonl); ..." with what to do.
fn already_a_run(out: &Path, previous: &[PathBuf], fresh: bool) -> String {
    let names: Vec<String> = previous
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            if p.is_dir() {
                format!("{name}/")
            } else {
                name.into_owned()
            }
        })
        .collect();
    let out_name = out.display();
    let resumable = fresh && checkpoint::exists(&out.join(LAST));
    let resume = match resumable {
        true => format!("resume it with --resume {}, ", out.join(LAST).display()),
        false => String::new(),
    };
    format!(
        "{out_name} already holds a run ({}); {resume}pass --overwrite to replace it, or choose another --out",
        names.join(", ")
    )
}

/// Whether `a` and `b` name the same existing directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    let a = if a.as_os_str().is_empty() { Path::new(".") } else { a };
    matches!((fs::canonicalize(a), fs::canonicalize(b)), (Ok(a), Ok(b)) if a == b)
}

/// The absolute path of a checkpoint directory without `.` or `..`, so that its parent is
/// the run it belongs to even for `--resume .` (whose lexical parent is empty). When only
/// `<dir>.old` is left, the parent is resolved and the name kept.
pub(crate) fn canonical_checkpoint(dir: &Path) -> PathBuf {
    if let Ok(path) = fs::canonicalize(dir) {
        return path;
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match (fs::canonicalize(parent), dir.file_name()) {
        (Ok(parent), Some(name)) => parent.join(name),
        _ => dir.to_path_buf(),
    }
}
