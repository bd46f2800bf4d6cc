//! Where a tensor's storage lives. Model code never branches on this: every op
//! dispatches on the storage it is given. The CUDA backend adds a variant here.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
}

impl Device {
    /// Index into per-device tables (the memory ledger).
    pub(crate) fn index(self) -> usize {
        match self {
            Device::Cpu => 0,
        }
    }
    pub(crate) const ALL: [Device; 1] = [Device::Cpu];
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
        }
    }
}
