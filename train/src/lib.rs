//! # mamba-train
//!
//! Optimisers, data, checkpoints, synthetic tasks, progress reports and the training
//! loop behind the `mamba` command.

pub mod checkpoint;
pub mod data;
pub mod generate;
pub mod optim;
pub mod report;
pub mod tasks;
pub mod trainer;
