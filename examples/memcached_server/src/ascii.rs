//! The memcached ASCII protocol: `\r\n`-terminated command lines of space-separated tokens, a
//! data block after storage commands, and memcached's exact reply strings. The meta commands
//! (`mg`, `ms`, ...) are found here and handled by [`meta`](crate::meta).
//!
//! [`request`] handles the one request at the start of the input: it finds the line (refusing
//! lines that grow past [`crate::handler::MAX_LINE`] without a newline), tokenizes
//! it, waits for the data block of a storage command, executes the command and queues the reply.
//! `VALUE` headers are formatted into scratch; values are pinned.

use std::io::Write as _;

use sendbuf::{HardLimitError, WriteBuffer};

use crate::handler::{pin, put, Env, Step, KEY_MAX, MAX_GET_LINE, MAX_LINE};
use crate::stats::{bump, VERSION};
use crate::store::{DeleteResult, DeltaResult, Hit, Mode, StoreResult};

/// Most tokens a line is split into (memcached's `MAX_TOKENS` less its terminal token); `get`
/// lines may have any number of keys.
const MAX_TOKENS: usize = 23;

const BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";

/// A command line split at spaces (empty tokens dropped, as memcached's tokenizer does).
struct Tokens<'a> {
    list: [&'a [u8]; MAX_TOKENS + 1],
    len: usize,
}

impl<'a> Tokens<'a> {
    fn new(line: &'a [u8]) -> Tokens<'a> {
        let mut t = Tokens {
            list: [&[][..]; MAX_TOKENS + 1],
            len: 0,
        };
        for token in line.split(|&b| b == b' ').filter(|t| !t.is_empty()) {
            if t.len == t.list.len() {
                break;
            }
            t.list[t.len] = token;
            t.len += 1;
        }
        t
    }

    fn get(&self, i: usize) -> &'a [u8] {
        self.list[..self.len].get(i).copied().unwrap_or(b"")
    }

    /// True if the last token is `noreply`.
    fn noreply(&self) -> bool {
        self.len > 1 && self.get(self.len - 1) == b"noreply"
    }
}

/// Parses decimal digits only (no sign, no spaces) into a `u64`.
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

pub(crate) fn parse_u32(s: &[u8]) -> Option<u32> {
    parse_u64(s).and_then(|n| u32::try_from(n).ok())
}

/// Parses an optionally negative decimal `i32` (memcached's `safe_strtol`).
pub(crate) fn parse_i32(s: &[u8]) -> Option<i32> {
    match s.split_first() {
        Some((b'-', digits)) => parse_u64(digits)
            .and_then(|n| i64::try_from(n).ok())
            .and_then(|n| i32::try_from(-n).ok()),
        _ => parse_u64(s).and_then(|n| i32::try_from(n).ok()),
    }
}

/// Queues a one-line reply unless the command said `noreply`.
fn reply(out: &mut WriteBuffer, noreply: bool, line: &[u8]) -> Result<(), HardLimitError> {
    if noreply {
        return Ok(());
    }
    put(out, line)
}

/// Handles the request at the start of `input`: see [`Step`].
pub fn request(env: &Env, input: &[u8], out: &mut WriteBuffer) -> Result<Step, HardLimitError> {
    let (line_max, get_max) = line_limits(env);
    let window = &input[..input.len().min(get_max + 1)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        return unterminated(input, line_max, get_max, out);
    };
    // The same rule as for a line still without its newline, so that the outcome does not
    // depend on how the line arrived.
    if nl > line_max && !(nl <= get_max && is_multiget(input)) {
        put(out, b"CLIENT_ERROR line too long\r\n")?;
        return Ok(Step::Close(nl + 1));
    }
    let line_len = nl + 1;
    let mut line = &input[..nl];
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    let t = Tokens::new(line);
    let cmd = t.get(0);
    if t.len == 0 || cmd.len() < 2 {
        put(out, b"ERROR\r\n")?;
        return Ok(Step::Done(line_len));
    }
    let n = t.len;
    match cmd {
        b"get" | b"gets" if n >= 2 => get(env, line, cmd == b"gets", None, out)?,
        b"gat" | b"gats" if n >= 3 => {
            let Some(exptime) = parse_i32(t.get(1)) else {
                put(out, b"CLIENT_ERROR invalid exptime argument\r\n")?;
                return Ok(Step::Done(line_len));
            };
            get(env, line, cmd == b"gats", Some(exptime), out)?;
        }
        b"set" | b"add" | b"replace" | b"append" | b"prepend" if n == 5 || n == 6 => {
            let mode = match cmd {
                b"set" => Mode::Set,
                b"add" => Mode::Add,
                b"replace" => Mode::Replace,
                b"append" => Mode::Append,
                _ => Mode::Prepend,
            };
            return update(env, &t, mode, input, line_len, out);
        }
        b"cas" if n == 6 || n == 7 => return update(env, &t, Mode::Cas, input, line_len, out),
        b"incr" | b"decr" if n == 3 || n == 4 => delta(env, &t, cmd == b"incr", out)?,
        b"delete" if (2..=4).contains(&n) => delete(env, &t, out)?,
        b"touch" if n == 3 || n == 4 => touch(env, &t, out)?,
        b"flush_all" if (1..=3).contains(&n) => {
            let noreply = t.noreply();
            let mut delay = 0;
            if n != if noreply { 2 } else { 1 } {
                match parse_i32(t.get(1)) {
                    Some(d) => delay = d,
                    None => {
                        reply(out, noreply, b"CLIENT_ERROR invalid exptime argument\r\n")?;
                        return Ok(Step::Done(line_len));
                    }
                }
            }
            bump(&env.stats.local().cmd_flush);
            env.store.flush_all(i64::from(delay));
            reply(out, noreply, b"OK\r\n")?;
        }
        b"version" => {
            let mut f = out.format();
            f.put_slice(b"VERSION ");
            f.put_slice(VERSION.as_bytes());
            f.put_slice(b"\r\n");
            f.try_commit()?;
        }
        b"verbosity" if n == 2 || n == 3 => {
            let noreply = t.noreply();
            let ok = parse_u32(t.get(1)).is_some();
            reply(out, noreply, if ok { b"OK\r\n" } else { BAD_FORMAT })?;
        }
        b"mg" | b"ms" | b"md" | b"ma" | b"mn" | b"me" => {
            return crate::meta::request(env, line, input, line_len, out)
        }
        b"quit" => return Ok(Step::Close(line_len)),
        b"stats" => stats(env, &t, out)?,
        _ => put(out, b"ERROR\r\n")?,
    }
    Ok(Step::Done(line_len))
}

/// The longest line (without its newline) in general and for a multi-get: memcached's 2048
/// and [`MAX_GET_LINE`], but never more than the server buffers for one request
/// ([`Limits::max_request`](crate::handler::Limits::max_request)).
fn line_limits(env: &Env) -> (usize, usize) {
    let bound = env.limits.max_request() - 1;
    (MAX_LINE.min(bound), MAX_GET_LINE.min(bound))
}

/// True if the line starts (after at most 100 spaces) with `get ` or `gets `: the lines
/// memcached lets grow past 2048 bytes.
fn is_multiget(line: &[u8]) -> bool {
    let start = line.iter().take(101).take_while(|&&b| b == b' ').count();
    let rest = &line[start..];
    start <= 100 && (rest.starts_with(b"get ") || rest.starts_with(b"gets "))
}

/// No newline in the input yet: wait for more, or refuse a line that is already too long.
fn unterminated(
    input: &[u8],
    line_max: usize,
    get_max: usize,
    out: &mut WriteBuffer,
) -> Result<Step, HardLimitError> {
    if input.len() <= line_max {
        return Ok(Step::Need(0));
    }
    if input.len() <= get_max && is_multiget(input) {
        return Ok(Step::Need(input.len() + 1));
    }
    put(out, b"CLIENT_ERROR line too long\r\n")?;
    Ok(Step::Close(input.len()))
}

/// `get`/`gets`/`gat`/`gats`: a `VALUE` block for each key found, then `END`. Any key over 250
/// bytes makes the whole command a `CLIENT_ERROR` (checked before any lookup, so nothing of the
/// reply is queued first).
fn get(
    env: &Env,
    line: &[u8],
    with_cas: bool,
    touch: Option<i32>,
    out: &mut WriteBuffer,
) -> Result<(), HardLimitError> {
    let skip = if touch.is_some() { 2 } else { 1 };
    let keys = || {
        line.split(|&b| b == b' ')
            .filter(|t| !t.is_empty())
            .skip(skip)
    };
    if keys().any(|k| k.len() > KEY_MAX) {
        return put(out, BAD_FORMAT);
    }
    let stats = env.stats.local();
    let mut crlf = false;
    for key in keys() {
        let item = match touch {
            Some(exptime) => {
                bump(&stats.cmd_touch);
                let item = env
                    .store
                    .touch(key, i64::from(exptime))
                    .map(|item| Hit::of(&item));
                bump(if item.is_some() {
                    &stats.touch_hits
                } else {
                    &stats.touch_misses
                });
                item
            }
            None => {
                bump(&stats.cmd_get);
                let item = env.store.hit(key);
                bump(if item.is_some() {
                    &stats.get_hits
                } else {
                    &stats.get_misses
                });
                item
            }
        };
        let Some(item) = item else { continue };
        // Header (after the previous value's "\r\n"), then the value: copied into the same
        // commit if short, pinned by reference otherwise (its "\r\n" then goes with the next
        // header or the END).
        let copy = item.value.len() < out.flatten_threshold();
        let mut f = out.format();
        if crlf {
            f.put_slice(b"\r\n");
        }
        f.put_slice(b"VALUE ");
        f.put_slice(key);
        f.put_u8(b' ');
        f.put_decimal(item.flags);
        f.put_u8(b' ');
        f.put_decimal(item.value.len());
        if with_cas {
            f.put_u8(b' ');
            f.put_decimal(item.cas);
        }
        f.put_slice(b"\r\n");
        if copy {
            f.put_slice(&item.value);
            f.put_slice(b"\r\n");
        }
        f.try_commit()?;
        crlf = !copy;
        if !copy {
            pin(out, item.value)?;
        }
    }
    put(out, if crlf { b"\r\nEND\r\n" } else { b"END\r\n" })
}

/// `set`/`add`/`replace`/`append`/`prepend`/`cas`: validates the line, waits for the data
/// block, stores it.
fn update(
    env: &Env,
    t: &Tokens<'_>,
    mode: Mode,
    input: &[u8],
    line_len: usize,
    out: &mut WriteBuffer,
) -> Result<Step, HardLimitError> {
    let noreply = t.noreply();
    let key = t.get(1);
    if key.len() > KEY_MAX {
        reply(out, noreply, BAD_FORMAT)?;
        return Ok(Step::Done(line_len));
    }
    let flags = parse_u32(t.get(2));
    let exptime = parse_i32(t.get(3));
    let vlen = parse_i32(t.get(4));
    let cas = if mode == Mode::Cas {
        parse_u64(t.get(5))
    } else {
        Some(0)
    };
    let (Some(flags), Some(exptime), Some(vlen), Some(cas)) = (flags, exptime, vlen, cas) else {
        reply(out, noreply, BAD_FORMAT)?;
        return Ok(Step::Done(line_len));
    };
    let Ok(vlen) = usize::try_from(vlen) else {
        reply(out, noreply, BAD_FORMAT)?;
        return Ok(Step::Done(line_len));
    };
    let total = line_len.saturating_add(vlen).saturating_add(2);
    if vlen > env.limits.max_item_size || total > env.limits.max_request() {
        bump(&env.stats.local().cmd_set);
        if mode == Mode::Set {
            // As memcached: a failed set must not leave the old value readable.
            env.store.delete(key, 0);
        }
        reply(out, noreply, b"SERVER_ERROR object too large for cache\r\n")?;
        return Ok(Step::Swallow(line_len, vlen as u64 + 2));
    }
    let Some(block) = input.get(line_len..total) else {
        return Ok(Step::Need(total));
    };
    let (data, end) = block.split_at(vlen);
    if end != b"\r\n" {
        reply(out, noreply, b"CLIENT_ERROR bad data chunk\r\n")?;
        return Ok(Step::Done(total));
    }
    bump(&env.stats.local().cmd_set);
    let result = env
        .store
        .store(mode, key, data, flags, i64::from(exptime), cas);
    if mode == Mode::Cas {
        match result {
            StoreResult::Stored(_) => bump(&env.stats.local().cas_hits),
            StoreResult::Exists => bump(&env.stats.local().cas_badval),
            StoreResult::NotFound => bump(&env.stats.local().cas_misses),
            _ => {}
        }
    }
    let text: &[u8] = match result {
        StoreResult::Stored(_) => b"STORED\r\n",
        StoreResult::NotStored => b"NOT_STORED\r\n",
        StoreResult::Exists => b"EXISTS\r\n",
        StoreResult::NotFound => b"NOT_FOUND\r\n",
        StoreResult::TooLarge => b"SERVER_ERROR object too large for cache\r\n",
        StoreResult::NoMemory => b"SERVER_ERROR out of memory storing object\r\n",
    };
    reply(out, noreply, text)?;
    Ok(Step::Done(total))
}

/// `incr`/`decr key delta [noreply]`.
fn delta(
    env: &Env,
    t: &Tokens<'_>,
    incr: bool,
    out: &mut WriteBuffer,
) -> Result<(), HardLimitError> {
    let noreply = t.noreply();
    let key = t.get(1);
    if key.len() > KEY_MAX {
        return reply(out, noreply, BAD_FORMAT);
    }
    let Some(delta) = parse_u64(t.get(2)) else {
        return reply(
            out,
            noreply,
            b"CLIENT_ERROR invalid numeric delta argument\r\n",
        );
    };
    let stats = env.stats.local();
    let (hits, misses) = if incr {
        (&stats.incr_hits, &stats.incr_misses)
    } else {
        (&stats.decr_hits, &stats.decr_misses)
    };
    match env.store.delta(key, incr, delta, 0) {
        DeltaResult::Value(n, _) => {
            bump(hits);
            if !noreply {
                let mut f = out.format();
                f.put_decimal(n);
                f.put_slice(b"\r\n");
                f.try_commit()?;
            }
            Ok(())
        }
        DeltaResult::NotFound => {
            bump(misses);
            reply(out, noreply, b"NOT_FOUND\r\n")
        }
        DeltaResult::NonNumeric => reply(
            out,
            noreply,
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        ),
        DeltaResult::Exists => reply(out, noreply, b"EXISTS\r\n"),
        DeltaResult::NoMemory => reply(out, noreply, b"SERVER_ERROR out of memory\r\n"),
    }
}

/// `delete key [0] [noreply]` (the `0` is a legacy hold time, accepted only as zero).
fn delete(env: &Env, t: &Tokens<'_>, out: &mut WriteBuffer) -> Result<(), HardLimitError> {
    let n = t.len;
    let noreply = t.noreply();
    if n > 2 {
        let hold_is_zero = t.get(2) == b"0";
        let valid = (n == 3 && (hold_is_zero || noreply)) || (n == 4 && hold_is_zero && noreply);
        if !valid {
            return put(
                out,
                b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
            );
        }
    }
    let key = t.get(1);
    if key.len() > KEY_MAX {
        return reply(out, noreply, BAD_FORMAT);
    }
    match env.store.delete(key, 0) {
        DeleteResult::Deleted => {
            bump(&env.stats.local().delete_hits);
            reply(out, noreply, b"DELETED\r\n")
        }
        _ => {
            bump(&env.stats.local().delete_misses);
            reply(out, noreply, b"NOT_FOUND\r\n")
        }
    }
}

/// `touch key exptime [noreply]`.
fn touch(env: &Env, t: &Tokens<'_>, out: &mut WriteBuffer) -> Result<(), HardLimitError> {
    let noreply = t.noreply();
    let key = t.get(1);
    if key.len() > KEY_MAX {
        return reply(out, noreply, BAD_FORMAT);
    }
    let Some(exptime) = parse_i32(t.get(2)) else {
        return reply(out, noreply, b"CLIENT_ERROR invalid exptime argument\r\n");
    };
    bump(&env.stats.local().cmd_touch);
    if env.store.touch(key, i64::from(exptime)).is_some() {
        bump(&env.stats.local().touch_hits);
        reply(out, noreply, b"TOUCHED\r\n")
    } else {
        bump(&env.stats.local().touch_misses);
        reply(out, noreply, b"NOT_FOUND\r\n")
    }
}

/// `stats`, `stats settings`, `stats reset`.
fn stats(env: &Env, t: &Tokens<'_>, out: &mut WriteBuffer) -> Result<(), HardLimitError> {
    let list = match (t.len, t.get(1)) {
        (1, _) => env.stats.report(&env.store),
        (2, b"settings") => env.stats.settings(&env.store),
        (2, b"reset") => return put(out, b"RESET\r\n"),
        _ => return put(out, b"ERROR\r\n"),
    };
    let mut f = out.format();
    for (name, value) in &list {
        let _ = write!(f, "STAT {name} {value}\r\n");
    }
    f.put_slice(b"END\r\n");
    f.try_commit()
}
