//! A memcached-compatible cache server built on `sendbuf` (binary and ASCII protocols), as a
//! library the `memcached_server` binary, the tests and the fuzz target use.
//!
//! Layout: [`config`] (the configuration and the command line), [`server`] (acceptor, worker threads, shutdown), [`worker`] (the per-thread event
//! loop: read buffer, session, one `sendmsg` per read, water marks, idle buffer stealing),
//! [`protocol`] (per-connection protocol detection and dispatch, free of I/O), [`binary`] and
//! [`ascii`] (parsers, commands, responses), [`store`] (the cache with LRU eviction),
//! [`stats`].

pub mod ascii;
pub mod binary;
pub mod config;
pub mod protocol;
pub mod server;
pub mod stats;
pub mod store;
mod sys;
pub mod worker;
