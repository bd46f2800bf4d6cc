//! # mamba-train
//!
//! Optimisers, data, checkpoints, synthetic tasks, progress reports and the training
//! loop behind the `mamba` command, with the crate's one error type (`error.rs`).

pub mod args;
pub mod carry;
pub mod chart;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod eval;
pub mod generate;
pub mod gpus;
pub mod images;
pub mod limits;
pub mod optim;
pub mod parallel;
pub mod report;
mod run;
pub mod rundir;
pub mod tasks;
pub mod trainer;
pub mod vision;

pub use error::{Error, Result};
