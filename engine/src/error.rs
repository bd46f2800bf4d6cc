//! One error type for the whole engine. Every variant names the op that refused
//! the call and what it was given, so a message alone says what to fix.

use crate::{DType, Device};
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum Error {
    /// Two operands whose shapes do not fit together.
    ShapeMismatch {
        op: &'static str,
        lhs: Vec<usize>,
        rhs: Vec<usize>,
        hint: String,
    },
    /// An operand of the wrong rank or an axis that does not exist.
    Rank {
        op: &'static str,
        shape: Vec<usize>,
        expected: String,
    },
    /// An index (token id, slice bound, target class) outside its range.
    Index {
        op: &'static str,
        index: i64,
        size: usize,
        what: &'static str,
    },
    DTypeMismatch {
        op: &'static str,
        lhs: DType,
        rhs: DType,
    },
    DeviceMismatch {
        op: &'static str,
        lhs: Device,
        rhs: Device,
    },
    /// A device that cannot do what was asked (not compiled in, no GPU, out of memory, a
    /// driver error, or an op/dtype the device has no kernel for).
    Device {
        op: &'static str,
        device: Device,
        msg: String,
    },
    /// A device and dtype the op has no kernel for (e.g. a compute op on bf16 tensors).
    Unsupported {
        op: &'static str,
        device: Device,
        dtype: DType,
    },
    /// Anything else that is wrong with an argument.
    Invalid {
        op: &'static str,
        msg: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The op that refused the call.
    pub fn op(&self) -> &'static str {
        match self {
            Error::ShapeMismatch { op, .. }
            | Error::Rank { op, .. }
            | Error::Index { op, .. }
            | Error::DTypeMismatch { op, .. }
            | Error::DeviceMismatch { op, .. }
            | Error::Device { op, .. }
            | Error::Unsupported { op, .. }
            | Error::Invalid { op, .. } => op,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ShapeMismatch { op, lhs, rhs, hint } => {
                write!(f, "{op}: shapes {lhs:?} and {rhs:?} do not fit: {hint}")
            }
            Error::Rank { op, shape, expected } => {
                write!(f, "{op}: got a tensor of shape {shape:?}, expected {expected}")
            }
            Error::Index { op, index, size, what } => {
                write!(f, "{op}: {what} {index} is out of range for size {size}")
            }
            Error::DTypeMismatch { op, lhs, rhs } => {
                write!(f, "{op}: dtypes {lhs} and {rhs} differ; convert one with .to_dtype()")
            }
            Error::DeviceMismatch { op, lhs, rhs } => {
                write!(f, "{op}: tensors on {lhs} and {rhs}; move one with .to(device)")
            }
            Error::Device { op, device, msg } => write!(f, "{op} on {device}: {msg}"),
            Error::Unsupported { op, device, dtype } => write!(
                f,
                "{op}: no {device} kernel for {dtype} tensors; convert them first with .to_dtype() \
                 (every op runs in f32)"
            ),
            Error::Invalid { op, msg } => write!(f, "{op}: {msg}"),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for the common "wrong argument" error.
pub(crate) fn invalid<T>(op: &'static str, msg: impl Into<String>) -> Result<T> {
    Err(Error::Invalid { op, msg: msg.into() })
}
