//! `ma <key> <flags>*`: adds `D` (default 1) to a decimal value, or subtracts it (`MD`/`M-`,
//! floored at 0); with `N`, a miss creates the item holding `J` (default 0). Answers `HD`, or
//! `VA <size>` and the number (`v`), with the flags `c`, `t`, `O`, `k`; `q` hides the answer
//! to a change of an existing item. A miss answers `NF`, a `C` that does not match `EX`.

use sendbuf::{HardLimitError, WriteBuffer};

use super::request::Line;
use super::{echo, open, put_ttl, status, BAD_FLAG, TOO_MANY};
use crate::handler::{put, Env};
use crate::stats::bump;
use crate::store::MetaDelta;

pub(super) fn request(
    env: &Env,
    line: &Line<'_>,
    out: &mut WriteBuffer,
) -> Result<(), HardLimitError> {
    // memcached refuses a bad mode before a long opaque token.
    let req = match open(env, line, TOO_MANY, Some(BAD_FLAG)) {
        Ok(req) => req,
        Err(refusal) => return put(out, refusal),
    };
    let incr = match req.mode {
        None | Some(b'I' | b'+') => true,
        Some(b'D' | b'-') => false,
        Some(_) => return put(out, b"CLIENT_ERROR invalid mode for ma M token\r\n"),
    };
    if let Err(refusal) = req.check_opaque() {
        return put(out, refusal);
    }
    let initial = req.vivify.map(|_| req.initial);
    let cas = req.cas.unwrap_or(0);
    let result = env.store.meta_delta(
        req.key(),
        incr,
        req.delta,
        cas,
        initial,
        |exptime, created| {
            // `R` plays no part in `ma`: as if a win had been sent.
            req.walk(exptime, created, true, |_, _| {}).0
        },
    );
    let stats = env.stats.local();
    let (hits, misses) = match incr {
        true => (&stats.incr_hits, &stats.incr_misses),
        false => (&stats.decr_hits, &stats.decr_misses),
    };
    let (value, item, exptime, created) = match result {
        MetaDelta::Value {
            value,
            item,
            exptime,
            created,
        } => (value, item, exptime, created),
        MetaDelta::NotFound => {
            bump(misses);
            return status(out, b"NF", &req);
        }
        MetaDelta::Exists => return status(out, b"EX", &req),
        MetaDelta::NonNumeric => {
            let text = b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n";
            return put(out, text);
        }
        MetaDelta::NoMemory => return put(out, b"SERVER_ERROR out of memory\r\n"),
        MetaDelta::NotCreated => {
            return put(out, b"SERVER_ERROR Out of memory allocating new item\r\n")
        }
    };
    if !created {
        bump(hits);
        if req.quiet {
            return Ok(());
        }
    }
    let now = env.store.now();
    let mut f = out.format();
    if req.value {
        f.put_slice(b"VA ");
        f.put_decimal(value.checked_ilog10().map_or(1, |d| d + 1));
    } else {
        f.put_slice(b"HD");
    }
    req.walk(exptime, created, true, |flag, exptime| match flag[0] {
        b'c' => {
            f.put_slice(b" c");
            f.put_decimal(item.cas);
        }
        b't' => put_ttl(&mut f, exptime, now),
        _ => echo(&mut f, &req, flag),
    });
    if req.value {
        f.put_slice(b"\r\n");
        f.put_decimal(value);
    }
    f.put_slice(b"\r\n");
    f.try_commit()
}
