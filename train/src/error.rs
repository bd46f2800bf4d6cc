//! The one error type of `mamba-train` (and the `mamba` command): everything training,
//! checkpoints, data and generation can refuse or fail at.
//!
//! Errors of the crates below convert with `?` ([`mamba_engine::Error`],
//! [`mamba_model::Error`], [`std::io::Error`], [`serde_json::Error`]); the variants of
//! this crate's own say which flag, file or step is concerned and what to do about it.

use std::{fmt, io, path::PathBuf};

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed.
    Engine(mamba_engine::Error),
    /// The model refused (its configuration, or weights that do not fit it).
    Model(mamba_model::Error),
    /// A file or directory that could not be read or written: what was being done (often
    /// just the path; empty when unknown) and the system's reason.
    Io { context: String, source: io::Error },
    /// JSON that could not be read or written: where (empty when unknown) and why.
    Json { context: String, source: serde_json::Error },
    /// A checkpoint file or directory, and what is wrong with it.
    Checkpoint { path: PathBuf, what: String },
    /// A flag or setting that cannot work; the message names it and what to change.
    Settings(String),
    /// Another process holds the run directory's lock (`<dir>/.lock`): its pid, when the
    /// lock file says.
    InUse { dir: PathBuf, pid: Option<u32> },
    /// Training stopped before a non-finite value could reach the weights: the step, why,
    /// and the checkpoint that is still good.
    Stopped { step: u64, why: String, checkpoint: PathBuf },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// For `map_err`: an I/O failure while doing `context` (a path, or e.g. `"cannot read --text <file>"`).
    pub fn io(context: impl fmt::Display) -> impl FnOnce(io::Error) -> Error {
        let context = context.to_string();
        move |source| Error::Io { context, source }
    }

    /// For `map_err`: bad JSON at `context` (e.g. `path:line`).
    pub fn json(context: impl fmt::Display) -> impl FnOnce(serde_json::Error) -> Error {
        let context = context.to_string();
        move |source| Error::Json { context, source }
    }

    /// A problem with the checkpoint file or directory `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, what: impl Into<String>) -> Error {
        Error::Checkpoint { path: path.into(), what: what.into() }
    }
}

/// `context: reason`, or the bare reason without a context.
fn with_context(f: &mut fmt::Formatter<'_>, context: &str, reason: &dyn fmt::Display) -> fmt::Result {
    match context {
        "" => write!(f, "{reason}"),
        _ => write!(f, "{context}: {reason}"),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Engine(e) => write!(f, "{e}"),
            Error::Model(e) => write!(f, "{e}"),
            Error::Io { context, source } => with_context(f, context, source),
            Error::Json { context, source } => with_context(f, context, source),
            Error::Checkpoint { path, what } => write!(f, "{}: {what}", path.display()),
            Error::Settings(msg) => write!(f, "{msg}"),
            Error::InUse { dir, pid } => {
                let pid = pid.map_or("pid unknown".to_string(), |p| format!("pid {p}"));
                write!(
                    f,
                    "{} is in use by another mamba run ({pid}); wait for it or choose another --out",
                    dir.display()
                )
            }
            Error::Stopped { step, why, checkpoint } => write!(
                f,
                "training stopped at step {step}: {why}. Nothing was written after the last good checkpoint ({}); \
                 try a lower --lr or a tighter --grad-clip",
                checkpoint.display()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Engine(e) => Some(e),
            Error::Model(e) => Some(e),
            Error::Io { source, .. } => Some(source),
            Error::Json { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<mamba_engine::Error> for Error {
    fn from(e: mamba_engine::Error) -> Error {
        Error::Engine(e)
    }
}

impl From<mamba_model::Error> for Error {
    fn from(e: mamba_model::Error) -> Error {
        Error::Model(e)
    }
}

impl From<io::Error> for Error {
    fn from(source: io::Error) -> Error {
        Error::Io { context: String::new(), source }
    }
}

impl From<serde_json::Error> for Error {
    fn from(source: serde_json::Error) -> Error {
        Error::Json { context: String::new(), source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_context() {
        let e =
            std::fs::read("/nonexistent/corpus.txt").map_err(Error::io("cannot read --text /nonexistent/corpus.txt"));
        let msg = e.unwrap_err().to_string();
        assert!(msg.starts_with("cannot read --text /nonexistent/corpus.txt: "), "{msg}");
        let e: Error = io::Error::other("disk full").into();
        assert_eq!(e.to_string(), "disk full");
        let e = Error::Stopped { step: 3, why: "the loss is NaN".into(), checkpoint: "runs/x/checkpoint".into() };
        let msg = e.to_string();
        assert!(msg.starts_with("training stopped at step 3: the loss is NaN. ") && msg.contains("runs/x/checkpoint"));
        assert_eq!(Error::checkpoint("a/config.json", "cannot read").to_string(), "a/config.json: cannot read");
        let e = Error::InUse { dir: "runs/x".into(), pid: Some(1234) };
        assert_eq!(
            e.to_string(),
            "runs/x is in use by another mamba run (pid 1234); wait for it or choose another --out"
        );
    }
}
