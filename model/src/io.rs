//! Reading and writing named tensors in the safetensors format (the format of the
//! reference checkpoints): an 8-byte header length, a JSON header of names, dtypes,
//! shapes and byte ranges, then the raw little-endian data.

use crate::{Error, Result};
use mamba_engine::{dtype::bf16, DType, Tensor};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::BTreeMap;

/// A tensor read from a file: floats become engine tensors, integers stay integers.
pub enum Loaded {
    Float(Tensor),
    /// `dtype` is the file's (I32 or I64), for messages.
    Int {
        values: Vec<i64>,
        shape: Vec<usize>,
        dtype: Dtype,
    },
}

impl Loaded {
    pub fn tensor(&self) -> Option<&Tensor> {
        match self {
            Loaded::Float(t) => Some(t),
            Loaded::Int { .. } => None,
        }
    }
}

/// Parse safetensors bytes. Errors say what is wrong (never panic on bad bytes).
pub fn read_safetensors(bytes: &[u8]) -> Result<BTreeMap<String, Loaded>> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|source| Error::Safetensors { context: "not a valid safetensors file", source })?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let loaded = match view.dtype() {
            Dtype::F32 => Loaded::Float(float_tensor(&name, data, &shape, DType::F32, 4, |b| {
                f32::from_le_bytes(b.try_into().unwrap()) as f64
            })?),
            Dtype::F64 => Loaded::Float(float_tensor(&name, data, &shape, DType::F64, 8, |b| {
                f64::from_le_bytes(b.try_into().unwrap())
            })?),
            Dtype::BF16 => Loaded::Float(float_tensor(&name, data, &shape, DType::BF16, 2, |b| {
                bf16::from_le_bytes(b.try_into().unwrap()).to_f64()
            })?),
            Dtype::I64 => Loaded::Int {
                values: data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect(),
                shape,
                dtype: Dtype::I64,
            },
            Dtype::I32 => Loaded::Int {
                values: data.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64).collect(),
                shape,
                dtype: Dtype::I32,
            },
            other => {
                return Err(Error::Weights(format!(
                    "tensor `{name}` has dtype {other:?}; only F32, F64, BF16, I32 and I64 are supported"
                )))
            }
        };
        out.insert(name, loaded);
    }
    Ok(out)
}

fn float_tensor(
    name: &str,
    data: &[u8],
    shape: &[usize],
    dtype: DType,
    size: usize,
    f: impl Fn(&[u8]) -> f64,
) -> Result<Tensor> {
    let values: Vec<f64> = data.chunks_exact(size).map(f).collect();
    Tensor::from_f64(&values, shape, dtype).map_err(|e| Error::Tensor { name: name.into(), what: e.to_string() })
}

/// Serialise named tensors (any dtype the engine has) to safetensors bytes, with
/// optional `__metadata__` strings in the header.
pub fn write_safetensors(tensors: &[(String, Tensor)], metadata: &[(&str, String)]) -> Result<Vec<u8>> {
    let mut blobs = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let to_string = |e: mamba_engine::Error| Error::Tensor { name: name.clone(), what: e.to_string() };
        let (dtype, bytes): (Dtype, Vec<u8>) = match t.dtype() {
            DType::F32 => {
                (Dtype::F32, t.to_vec::<f32>().map_err(to_string)?.iter().flat_map(|v| v.to_le_bytes()).collect())
            }
            DType::F64 => {
                (Dtype::F64, t.to_vec::<f64>().map_err(to_string)?.iter().flat_map(|v| v.to_le_bytes()).collect())
            }
            DType::BF16 => {
                (Dtype::BF16, t.to_vec::<bf16>().map_err(to_string)?.iter().flat_map(|v| v.to_le_bytes()).collect())
            }
        };
        blobs.push((name.as_str(), dtype, t.shape().to_vec(), bytes));
    }
    let views = blobs
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (*name, v))
                .map_err(|e| Error::Tensor { name: name.to_string(), what: e.to_string() })
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = (!metadata.is_empty()).then(|| metadata.iter().map(|(k, v)| (k.to_string(), v.clone())).collect());
    Ok(safetensors::serialize(views, &metadata)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_round_trips_bit_for_bit() {
        let bf: Vec<bf16> = [1.0f32, -3.5, 1e-3, 65504.0].iter().map(|&v| bf16::from_f32(v)).collect();
        let tensors = vec![
            ("a".to_string(), Tensor::from_vec(vec![1.5f32, -2.25, 3.0], &[3]).unwrap()),
            ("b".to_string(), Tensor::from_vec(vec![0.1f64, 1e-300], &[2, 1]).unwrap()),
            ("c".to_string(), Tensor::from_vec(bf.clone(), &[2, 2]).unwrap()),
        ];
        let read = read_safetensors(&write_safetensors(&tensors, &[]).unwrap()).unwrap();
        let get = |name: &str| read[name].tensor().expect("a float tensor").clone();
        assert_eq!(get("a").to_vec::<f32>().unwrap(), [1.5, -2.25, 3.0]);
        assert_eq!(get("b").to_vec::<f64>().unwrap(), [0.1, 1e-300]);
        let c = get("c");
        assert_eq!((c.dtype(), c.shape()), (DType::BF16, &[2, 2][..]));
        assert_eq!(c.to_vec::<bf16>().unwrap(), bf);
    }
}
