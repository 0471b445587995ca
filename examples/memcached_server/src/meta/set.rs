//! `ms <key> <datalen> <flags>*` and its data block: stores as `set`, or as `add`, `append`,
//! `prepend`, `replace` (`M` mode), comparing the CAS unique with `C`; answers `HD` (hidden by
//! `q`), `NS`, `EX` or `NF`, with the flags `O`, `k` and `c` (the new CAS unique, 0 if not
//! stored).
//!
//! Once the length token parses, every refusal swallows the data block. memcached itself
//! answers a key over 250 bytes or more than 19 tokens before reading the length, and runs the
//! data block as commands; here it is swallowed as after every other refusal. A length token
//! that does not parse leaves nothing to swallow by: the refusal is memcached's, and what
//! follows the line is read as commands, as memcached reads it.

use sendbuf::{HardLimitError, WriteBuffer};

use super::echo;
use super::request::{Line, Request, BAD_FORMAT};
use crate::ascii::parse_strtol;
use crate::handler::{put, Env, Step, KEY_MAX};
use crate::stats::bump;
use crate::store::{Mode, StoreResult};

pub(super) fn request(
    env: &Env,
    line: &Line<'_>,
    input: &[u8],
    line_len: usize,
    out: &mut WriteBuffer,
) -> Result<Step, HardLimitError> {
    if line.len() < 2 {
        put(out, b"ERROR\r\n")?;
        return Ok(Step::Done(line_len));
    }
    let early = if line.get(1).len() > KEY_MAX {
        Some(BAD_FORMAT)
    } else if line.too_many() {
        Some(super::TOO_MANY)
    } else {
        None
    };
    // Read as memcached's `safe_strtol` reads it (a `+`, the low 32 bits), within its bounds:
    // 0 to INT_MAX - 2.
    let vlen = parse_strtol(line.get(2))
        .filter(|&n| n <= i32::MAX - 2)
        .and_then(|n| usize::try_from(n).ok());
    let Some(vlen) = vlen else {
        put(out, early.unwrap_or(BAD_FORMAT))?;
        return Ok(Step::Done(line_len));
    };
    let swallow = Step::Swallow(line_len, vlen as u64 + 2);
    if let Some(refusal) = early {
        put(out, refusal)?;
        return Ok(swallow);
    }
    // memcached refuses a bad mode before a long opaque token.
    let req = match Request::parse(&env.store, line, 3) {
        Ok(req) => req,
        Err(refusal) => {
            put(out, refusal)?;
            return Ok(swallow);
        }
    };
    let mode = match (req.mode, req.cas) {
        (None | Some(b'S'), None) => Mode::Set,
        (None | Some(b'S' | b'R'), Some(_)) => Mode::Cas,
        (Some(b'E'), _) => Mode::Add,
        (Some(b'A'), _) => Mode::Append,
        (Some(b'P'), _) => Mode::Prepend,
        (Some(b'R'), None) => Mode::Replace,
        _ => {
            put(out, b"CLIENT_ERROR invalid mode for ms M token\r\n")?;
            return Ok(swallow);
        }
    };
    if let Err(refusal) = req.check_opaque() {
        put(out, refusal)?;
        return Ok(swallow);
    }
    let key = req.key();
    let total = line_len.saturating_add(vlen).saturating_add(2);
    if vlen > env.limits.max_item_size || total > env.limits.max_request() {
        bump(&env.stats.local().cmd_set);
        // As memcached: a failed store must not leave the old value readable.
        env.store.delete(key, 0);
        put(out, b"SERVER_ERROR object too large for cache\r\n")?;
        return Ok(swallow);
    }
    let Some(block) = input.get(line_len..total) else {
        return Ok(Step::Need(total));
    };
    let (data, end) = block.split_at(vlen);
    if end != b"\r\n" {
        put(out, b"CLIENT_ERROR bad data chunk\r\n")?;
        return Ok(Step::Done(total));
    }
    let stats = env.stats.local();
    bump(&stats.cmd_set);
    let cas = req.cas.unwrap_or(0);
    let (flags, exptime) = (req.client_flags, req.ttl.unwrap_or(0));
    let result = env
        .store
        .meta_store(mode, key, data, flags, exptime, cas, req.invalidate);
    stats.count_cas(mode, result);
    let (code, new_cas): (&[u8], u64) = match result {
        StoreResult::Stored(_) if req.quiet => return Ok(Step::Done(total)),
        StoreResult::Stored(cas) => (b"HD", cas),
        // memcached's append answers NOT_STORED when the joined value does not fit.
        StoreResult::NotStored | StoreResult::TooLarge => (b"NS", 0),
        StoreResult::Exists => (b"EX", 0),
        StoreResult::NotFound => (b"NF", 0),
        StoreResult::NoMemory => {
            put(out, b"SERVER_ERROR out of memory storing object\r\n")?;
            return Ok(Step::Done(total));
        }
    };
    let mut f = out.format();
    f.put_slice(code);
    for flag in req.flags() {
        match flag[0] {
            b'c' => {
                f.put_slice(b" c");
                f.put_decimal(new_cas);
            }
            _ => echo(&mut f, &req, flag),
        }
    }
    f.put_slice(b"\r\n");
    f.try_commit()?;
    Ok(Step::Done(total))
}
