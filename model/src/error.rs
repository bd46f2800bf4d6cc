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
    /// A configuration key that is unknown, missing or holds a value of the wrong type: the
    /// message names the key (`ssm_cfg.d_state`).
    Config(String),
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
            Error::Config(msg) => write!(f, "invalid config: {msg}"),
            Error::Unsupported(msg) => write!(f, "unsupported configuration: {msg}"),
            Error::Safetensors { context, source } => write!(f, "{context}: {}", describe(source)),
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

/// A safetensors error in words (the library's own `Display` is its `Debug`, e.g.
/// `InvalidOffset("x")`), with the variant kept in brackets for searching.
pub fn describe(e: &SafeTensorError) -> String {
    use SafeTensorError as E;
    let why = match e {
        E::HeaderTooSmall => "the file is shorter than the 8-byte header length (truncated)".to_string(),
        E::InvalidHeaderLength => "the header runs past the end of the file (truncated?)".to_string(),
        E::HeaderTooLarge => "the header length is implausible (corrupt first bytes?)".to_string(),
        E::InvalidHeader | E::InvalidHeaderStart => "the header is not UTF-8 JSON (corrupt)".to_string(),
        E::InvalidHeaderDeserialization => "the header is not valid safetensors JSON (corrupt)".to_string(),
        E::MetadataIncompleteBuffer => "the tensor data does not fill the file exactly (truncated?)".to_string(),
        E::InvalidOffset(name) => {
            format!("tensor `{name}`'s byte range overlaps another or leaves a gap (corrupt header)")
        }
        E::TensorInvalidInfo => "a tensor's byte range does not match its shape and dtype (corrupt header)".to_string(),
        E::ValidationOverflow => "a tensor's shape is so large that its size overflows (corrupt header)".to_string(),
        E::TensorNotFound(name) => format!("there is no tensor `{name}`"),
        E::InvalidTensorView(dtype, shape, len) => {
            format!("{len} bytes cannot hold a {dtype:?} tensor of shape {shape:?}")
        }
        E::IoError(io) => format!("cannot read or write: {io}"),
        E::JsonError(json) => format!("the header's JSON is invalid: {json}"),
    };
    let variant = format!("{e:?}");
    let variant = variant.split('(').next().unwrap_or_default();
    format!("{why} [{variant}]")
}

impl From<SafeTensorError> for Error {
    fn from(source: SafeTensorError) -> Error {
        Error::Safetensors { context: "safetensors", source }
    }
}

#[cfg(test)]
mod tests {
    use crate::io::read_safetensors;

    /// safetensors bytes with this JSON header and `data` zero bytes of data.
    fn file(header: &str, data: usize) -> Vec<u8> {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.resize(bytes.len() + data, 0);
        bytes
    }

    #[test]
    fn safetensors_errors_are_words() {
        let overlap = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
        let mismatch = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
        for (header, data, words) in
            [(overlap, 12, "tensor `b`'s byte range"), (mismatch, 8, "does not match its shape")]
        {
            let msg = read_safetensors(&file(header, data)).err().unwrap().to_string();
            assert!(msg.contains(words) && !msg.contains("(\""), "{msg}");
        }
    }
}
