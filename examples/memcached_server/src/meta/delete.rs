//! `md <key> <flags>*`: removes the item, or with `I` marks it stale (new CAS unique, `T` its
//! new expiry) so that meta gets serve it with `X` while one client recaches it; answers `HD`
//! (hidden by `q`), `NF` or `EX` (`C` did not match), echoing `O` and `k`.
//!
//! `x` (from memcached releases after 1.6.18, which refuse it) keeps the item with an empty
//! value and the client flags of `F` (0 without it).

use sendbuf::{HardLimitError, WriteBuffer};

use super::request::Line;
use super::{open, status, BAD_FLAG, TOO_MANY};
use crate::handler::{put, Env};
use crate::stats::bump;
use crate::store::{DeleteResult, Removal};

pub(super) fn request(
    env: &Env,
    line: &Line<'_>,
    out: &mut WriteBuffer,
) -> Result<(), HardLimitError> {
    let opened = open(env, line, TOO_MANY, Some(BAD_FLAG));
    let req = match opened.and_then(|req| req.check_opaque().map(|()| req)) {
        Ok(req) => req,
        Err(refusal) => return put(out, refusal),
    };
    let how = if req.invalidate {
        Removal::Invalidate(req.ttl)
    } else if req.clear_value {
        Removal::ClearValue(req.client_flags)
    } else {
        Removal::Delete
    };
    let result = env.store.meta_delete(req.key(), req.cas, how);
    let stats = env.stats.local();
    let code: &[u8] = match result {
        DeleteResult::Deleted => {
            bump(&stats.delete_hits);
            if req.quiet {
                return Ok(());
            }
            b"HD"
        }
        DeleteResult::NotFound => {
            bump(&stats.delete_misses);
            b"NF"
        }
        DeleteResult::Exists => {
            bump(&stats.delete_misses);
            b"EX"
        }
    };
    status(out, code, &req)
}
