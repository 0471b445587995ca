//! Models and helpers shared by `sendbuf`'s integration tests, its property tests and its fuzz
//! targets, so that `cargo test` runs the very checks `cargo fuzz` runs.
//!
//! * [`model`]: a model of `WriteBuffer` and every operation on it, with [`model::run`] checking
//!   the buffer against the model after each one;
//! * [`kernel`]: the fake kernel of `MSG_ZEROCOPY` sends the model and the zero-copy property
//!   tests drive;
//! * [`read_model`]: the same for `ReadBuffer`;
//! * [`util`]: drop-counting owners, prefix writers, a seeded generator, socket pairs;
//! * `tls` (feature `tls`): a certificate made at run time, both sides' configurations, and a
//!   rustls client over in-memory pipes; `tls_model`: a `TlsSession`'s operations checked
//!   against the plaintext queued, for the `tls_session` fuzz target and `tests/prop_tls.rs`.
//!
//! The feature `arbitrary` derives `arbitrary::Arbitrary` for the inputs (the fuzz crate turns
//! it on); the property tests build them with proptest strategies of their own.

pub mod kernel;
pub mod model;
pub mod read_model;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "tls")]
pub mod tls_model;
pub mod util;
