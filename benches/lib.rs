//! Benchmarks (criterion); see the [[bench]] targets in Cargo.toml.
