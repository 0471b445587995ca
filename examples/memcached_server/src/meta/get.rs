//! `mg <key> <flags>*`: a hit answers `VA <size> <flags>` and the value (`v`) or `HD <flags>`;
//! a miss `EN` (hidden by `q`). The flags can also change the item: `T` its expiry, `N` create
//! it on a miss, `R` win its recache early; the answer adds `W` (won), `X` (stale) and `Z` (a
//! win was handed out before).

use sendbuf::{HardLimitError, WriteBuffer};

use super::request::Line;
use super::{echo, open, put_ttl, status};
use crate::handler::{pin, put, Env};
use crate::stats::bump;

pub(super) fn request(
    env: &Env,
    line: &Line<'_>,
    out: &mut WriteBuffer,
) -> Result<(), HardLimitError> {
    let too_many = b"CLIENT_ERROR options flags are too long\r\n";
    let opened = open(env, line, too_many, None);
    let req = match opened.and_then(|req| req.check_opaque().map(|()| req)) {
        Ok(req) => req,
        Err(refusal) => return put(out, refusal),
    };
    let hit = env.store.meta_get(
        req.key(),
        req.vivify.is_some(),
        !req.no_bump,
        |exptime, created, win_sent| req.walk(exptime, created, win_sent, |_, _| {}),
    );
    let stats = env.stats.local();
    let (cmd, hits, misses) = match req.ttl {
        Some(_) => (&stats.cmd_touch, &stats.touch_hits, &stats.touch_misses),
        None => (&stats.cmd_get, &stats.get_hits, &stats.get_misses),
    };
    bump(cmd);
    bump(if hit.is_some() { hits } else { misses });
    let Some(hit) = hit else {
        return match req.quiet {
            true => Ok(()),
            false => status(out, b"EN", &req),
        };
    };
    let item = &hit.item;
    let now = env.store.now();
    // As ascii's get: a short value goes in the same commit as its header, a long one is
    // pinned by reference.
    let copy = item.value.len() < out.flatten_threshold();
    let mut f = out.format();
    if req.value {
        f.put_slice(b"VA ");
        f.put_decimal(item.value.len());
    } else {
        f.put_slice(b"HD");
    }
    req.walk(
        hit.exptime,
        hit.created,
        hit.win_sent,
        |flag, exptime| match flag[0] {
            b's' => {
                f.put_slice(b" s");
                f.put_decimal(item.value.len());
            }
            b't' => put_ttl(&mut f, exptime, now),
            b'c' => {
                f.put_slice(b" c");
                f.put_decimal(item.cas);
            }
            b'f' => {
                f.put_slice(b" f");
                f.put_decimal(item.flags);
            }
            b'l' => {
                f.put_slice(b" l");
                f.put_decimal(now.wrapping_sub(hit.atime));
            }
            b'h' => f.put_slice(if hit.fetched { b" h1" } else { b" h0" }),
            _ => echo(&mut f, &req, flag),
        },
    );
    if hit.win_sent {
        f.put_slice(b" Z");
    }
    if item.stale {
        f.put_slice(b" X");
    }
    if hit.won {
        f.put_slice(b" W");
    }
    f.put_slice(b"\r\n");
    if req.value && copy {
        f.put_slice(&item.value);
        f.put_slice(b"\r\n");
    }
    f.try_commit()?;
    if req.value && !copy {
        pin(out, item.value.clone())?;
        put(out, b"\r\n")?;
    }
    Ok(())
}
