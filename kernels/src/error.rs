//! The one error type of the launchers.

use cust::error::CudaError;
use std::fmt;

/// Why a launch did not happen (or failed): the caller's arguments did not fit the kernel,
/// which is checked before anything is queued, or the driver reported an error (of this
/// launch, or of earlier work on the stream, which CUDA reports late).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A driver error, e.g. an invalid launch configuration or a fault of an earlier kernel.
    Cuda(CudaError),
    /// A bad argument: `kernel` names the launcher (or kernel), `what` says what was wrong
    /// (which buffer, its length and the length the sizes need, or which size is too large).
    BadArgument { kernel: &'static str, what: String },
}

/// A launcher's result.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A [`Error::BadArgument`] of `kernel`.
    pub fn bad(kernel: &'static str, what: impl Into<String>) -> Error {
        Error::BadArgument { kernel, what: what.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Cuda(e) => {
                // cust's Display asks the driver for the text and fails when the driver cannot
                // answer (a link stub, a broken install); `to_string` would then panic.
                let mut text = String::new();
                match fmt::write(&mut text, format_args!("{e}")) {
                    Ok(()) => write!(f, "CUDA error: {text}"),
                    Err(_) => write!(f, "CUDA error: {e:?} (the driver gave no description)"),
                }
            }
            Error::BadArgument { kernel, what } => write!(f, "{kernel}: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Cuda(e) => Some(e),
            Error::BadArgument { .. } => None,
        }
    }
}

impl From<CudaError> for Error {
    fn from(e: CudaError) -> Error {
        Error::Cuda(e)
    }
}

/// Fails with a [`Error::BadArgument`] of `kernel` saying `what` unless `ok`.
pub(crate) fn ensure(ok: bool, kernel: &'static str, what: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::bad(kernel, what()))
    }
}

/// Fails unless buffer `name` of `kernel` holds exactly `expected` elements.
pub(crate) fn check_len(kernel: &'static str, name: &str, len: usize, expected: usize) -> Result<()> {
    ensure(len == expected, kernel, || format!("{name} holds {len} elements, the sizes need {expected}"))
}

/// `n` as the kernels' `int`, or an error naming the size.
pub(crate) fn to_i32(kernel: &'static str, name: &str, n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| Error::bad(kernel, format!("{name} = {n} does not fit in an i32")))
}

/// `n` as the kernels' `long long`, or an error naming the size.
pub(crate) fn to_i64(kernel: &'static str, name: &str, n: usize) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::bad(kernel, format!("{name} = {n} does not fit in an i64")))
}
