//! Optional integrations with other crates, one file per crate, each behind a feature of the
//! same name.

#[cfg(feature = "bytes")]
mod bytes;
#[cfg(feature = "tokio")]
mod tokio;
