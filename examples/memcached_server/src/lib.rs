//! A memcached-compatible cache server built on `sendbuf` (binary and ASCII protocols), as a
//! library the `memcached_server` binary, the tests and the fuzz target use.
//!
//! Layout (no two modules import each other):
//!
//! - [`config`]: the configuration and the command line; [`tls`]: the TLS certificate and key;
//! - [`server`]: the acceptor, the worker threads, shutdown;
//! - [`worker`]: the per-thread event loop (read buffer, session, one `sendmsg` per read, water
//!   marks, idle buffer stealing), with a room per concern: one connection, the send paths,
//!   io_uring, idle and stalled connections;
//! - [`protocol`]: per-connection protocol detection and dispatch, free of I/O;
//! - [`binary`] and [`ascii`]: the two protocols' parsers, commands and responses; [`meta`]:
//!   the meta commands of the ASCII protocol;
//! - [`handler`]: what the session and the two protocols share;
//! - [`store`]: the cache with LRU eviction; [`stats`]: the counters;
//! - `sys`: the raw system calls, behind safe functions.

pub mod ascii;
pub mod binary;
pub mod config;
pub mod handler;
pub mod meta;
pub mod protocol;
pub mod server;
pub mod stats;
pub mod store;
mod sys;
pub mod tls;
pub mod worker;
