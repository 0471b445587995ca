//! Fuzz targets for `sendbuf` (see `README.md`).
//!
//! The model lives in [`model`], one file that `tests/prop_model.rs` and
//! `tests/fuzz_regressions.rs` also include by path, so `cargo test` runs the same checks on
//! proptest-generated sequences and on the reproductions of past crashes.

pub mod model;

pub use model::{run, Input};
