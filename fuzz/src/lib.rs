//! Fuzz targets for `sendbuf` (see `README.md`).
//!
//! The models live in [`model`] (`WriteBuffer`, with the fake kernel of zero-copy sends in
//! [`kernel`]) and [`read_model`] (`ReadBuffer`), files that `tests/prop_model.rs`,
//! `tests/prop_zerocopy.rs`, `tests/prop_read_buffer.rs` and `tests/fuzz_regressions.rs` also
//! include by path, so `cargo test` runs the same checks on proptest-generated sequences and on
//! the reproductions of past crashes.

pub mod kernel;
pub mod model;
pub mod read_model;

pub use model::{run, Input};
pub use read_model::ReadInput;
