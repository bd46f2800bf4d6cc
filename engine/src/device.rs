//! Where a tensor's storage lives. Model code never branches on this: every op
//! dispatches on the storage it is given (`StorageKind::Cpu` or `StorageKind::Cuda`).
//!
//! `Device::Cuda` always exists, so a `--device cuda` flag parses on any build; without
//! the `cuda` cargo feature, moving a tensor there is an error that says how to build.

use std::{fmt, str::FromStr};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    /// GPU 0 through the CUDA driver API (our own PTX kernels, no vendor libraries).
    Cuda,
}

impl Device {
    /// Index into per-device tables (the memory ledger).
    pub(crate) fn index(self) -> usize {
        match self {
            Device::Cpu => 0,
            Device::Cuda => 1,
        }
    }
    pub(crate) const ALL: [Device; 2] = [Device::Cpu, Device::Cuda];

    /// Whether this build can run tensors on the device (a CUDA build still needs a GPU
    /// at run time; the first allocation says if there is none).
    pub fn is_compiled(self) -> bool {
        match self {
            Device::Cpu => true,
            Device::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// Whether tensors can live here now: the CPU always; the GPU in a `cuda` build whose
    /// driver finds one (the error says what is missing and what to do).
    pub fn ready(self) -> crate::Result<()> {
        match self {
            Device::Cpu => Ok(()),
            #[cfg(feature = "cuda")]
            Device::Cuda => crate::cuda::gpu("start").map(|_| ()),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda => Err(crate::dispatch::no_cuda("start")),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda => f.write_str("cuda"),
        }
    }
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Device, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda),
            other => Err(format!("unknown device '{other}': use cpu or cuda")),
        }
    }
}
