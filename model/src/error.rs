//! The one error type of `mamba-model`: everything its functions can refuse or fail at.
//!
//! Tensor failures keep the engine's error ([`mamba_engine::Error`]); the rest say which
//! configuration field or tensor is wrong. Every variant converts with `?` from what it
//! wraps, and the messages are meant for the person running the program.

use safetensors::SafeTensorError;
use std::fmt;

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed.
    Engine(mamba_engine::Error),
    /// A `config.json` that does not parse as a [`crate::MambaConfig`].
    ConfigJson(serde_json::Error),
    /// A configuration this implementation does not support, and why.
    Unsupported(String),
    /// The safetensors library refused the bytes or the tensors: what was being done, and why.
    Safetensors { context: &'static str, source: SafeTensorError },
    /// One named tensor that could not be converted or written.
    Tensor { name: String, what: String },
    /// Weights that do not fit the model (a tensor missing, unexpected, of the wrong shape or
    /// dtype): the message names the tensor.
    Weights(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Engine(e) => write!(f, "{e}"),
            Error::ConfigJson(e) => write!(f, "invalid config: {e}"),
            Error::Unsupported(msg) => write!(f, "unsupported configuration: {msg}"),
            Error::Safetensors { context, source } => write!(f, "{context}: {source}"),
            Error::Tensor { name, what } => write!(f, "`{name}`: {what}"),
            Error::Weights(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Engine(e) => Some(e),
            Error::ConfigJson(e) => Some(e),
            Error::Safetensors { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<mamba_engine::Error> for Error {
    fn from(e: mamba_engine::Error) -> Error {
        Error::Engine(e)
    }
}

/// JSON is only read for configurations in this crate.
impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::ConfigJson(e)
    }
}

impl From<SafeTensorError> for Error {
    fn from(source: SafeTensorError) -> Error {
        Error::Safetensors { context: "safetensors", source }
    }
}
