//! The memcached ASCII protocol: `\r\n`-terminated command lines of space-separated tokens, a
//! data block after storage commands, and memcached's exact reply strings. The meta commands
//! (`mg`, `ms`, ...) are found here and handled by [`meta`](crate::meta).
//!
//! [`request`] handles the one request at the start of the input: it finds the line (refusing
//! lines that grow past [`crate::handler::MAX_LINE`] without a newline, except multi-gets,
//! answered key by key by [`get`]), tokenizes it, waits for the data block of a storage
//! command, executes the command and queues the reply. `VALUE` headers are formatted into
//! scratch; values are pinned.

use std::io::Write as _;

use sendbuf::{HardLimitError, WriteBuffer};

pub mod get;

use get::GetLine;

use crate::handler::{put, Env, Step, KEY_MAX, MAX_LINE};
use crate::stats::{bump, VERSION};
use crate::store::{DeleteResult, DeltaResult, Mode, StoreResult};

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

/// The tokens of `line` after the first `skip`: the keys of a multi-get, which may be more
/// than [`Tokens`] holds.
fn keys(line: &[u8], skip: usize) -> impl Iterator<Item = &[u8]> + Clone {
    line.split(|&b| b == b' ')
        .filter(|t| !t.is_empty())
        .skip(skip)
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

/// C's `isspace` in the "C" locale (which, unlike [`u8::is_ascii_whitespace`], includes the
/// vertical tab).
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The front end C's `strtoul` and `strtol` share, on a whole token: optional leading
/// whitespace, an optional `+` or `-`, decimal digits, then the end of the token or a
/// whitespace byte (whatever follows it is not looked at). The sign and the magnitude; `None`
/// if there are no digits, something else follows them, or the magnitude passes 64 bits.
fn c_number(token: &[u8]) -> Option<(bool, u64)> {
    let start = token.iter().take_while(|&&b| is_c_space(b)).count();
    let s = &token[start..];
    let (negative, s) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, s),
    };
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || !s.get(digits).is_none_or(|&b| is_c_space(b)) {
        return None;
    }
    let mut n: u64 = 0;
    for &d in &s[..digits] {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some((negative, n))
}

/// Parses a storage command's flags exactly as memcached 1.6 on a 64-bit host does
/// (`safe_strtoul`: C's `strtoul` into a 64-bit `unsigned long`, kept as 32 bits). So a
/// magnitude over 64 bits is refused; a negated value is refused if it reads as a negative
/// 64-bit number (`-1` is, `-18446744073709551615` is not: it wraps to 1); and the flags are
/// the low 32 bits, so `4294967296` stores flags 0, as memcached stores them.
pub(crate) fn parse_flags(token: &[u8]) -> Option<u32> {
    let (negative, n) = c_number(token)?;
    let n = if negative { n.wrapping_neg() } else { n };
    // memcached refuses a value that is negative as a signed number if the token has a `-`.
    if (n as i64) < 0 && token.contains(&b'-') {
        return None;
    }
    Some(n as u32)
}

/// Parses a storage command's expiry or length as memcached 1.6 on a 64-bit host does
/// (`safe_strtol`: C's `strtol` into a 64-bit `long`, kept as 32 bits): out of the 64-bit
/// range is refused, and the rest is cut to its low 32 bits, so a length of `4294967295`
/// reads as -1 (and is refused as negative) and an expiry of `4294967296` as 0.
pub(crate) fn parse_strtol(token: &[u8]) -> Option<i32> {
    let (negative, n) = c_number(token)?;
    let n = i128::from(n);
    let n = i64::try_from(if negative { -n } else { n }).ok()?;
    Some(n as i32)
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

/// The command line up to its first NUL byte: memcached reads the line as a C string, so a
/// key with a NUL in it is cut there (`get a\0b` looks up `a`; `set a\0b 0 0 1` is `set a`,
/// too short, so `ERROR`).
fn until_nul(line: &[u8]) -> &[u8] {
    line.iter()
        .position(|&b| b == 0)
        .map_or(line, |nul| &line[..nul])
}

/// Queues a one-line reply unless the command said `noreply`.
fn reply(out: &mut WriteBuffer, noreply: bool, line: &[u8]) -> Result<(), HardLimitError> {
    if noreply {
        return Ok(());
    }
    put(out, line)
}

/// Handles the request at the start of `input`: see [`Step`]. A long multi-get that is not
/// answered whole leaves its state in `get_line`, for `get::more`.
pub fn request(
    env: &Env,
    input: &[u8],
    out: &mut WriteBuffer,
    get_line: &mut Option<GetLine>,
) -> Result<Step, HardLimitError> {
    let line_max = line_max(env);
    let window = &input[..input.len().min(line_max + 1)];
    // A line longer than line_max is known as such whether or not its newline has arrived, so
    // that the outcome does not depend on how the line arrived.
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        if input.len() <= line_max {
            return Ok(Step::Need(0));
        }
        return long_line(env, input, get_line, out);
    };
    let line_len = nl + 1;
    let mut line = &input[..nl];
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    let line = until_nul(line);
    let t = Tokens::new(line);
    let cmd = t.get(0);
    if t.len == 0 || cmd.len() < 2 {
        put(out, b"ERROR\r\n")?;
        return Ok(Step::Done(line_len));
    }
    let n = t.len;
    match cmd {
        b"get" | b"gets" if n >= 2 => {
            get::whole_line(env, keys(line, 1), cmd == b"gets", None, out)?;
        }
        b"gat" | b"gats" if n >= 3 => {
            let Some(exptime) = parse_i32(t.get(1)) else {
                put(out, b"CLIENT_ERROR invalid exptime argument\r\n")?;
                return Ok(Step::Done(line_len));
            };
            get::whole_line(env, keys(line, 2), cmd == b"gats", Some(exptime), out)?;
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
        b"slabs" => slabs(&t, out)?,
        b"mg" | b"ms" | b"md" | b"ma" | b"mn" | b"me" => {
            return crate::meta::request(env, line, input, line_len, out)
        }
        b"quit" => return Ok(Step::Close(line_len)),
        b"stats" => stats(env, &t, out)?,
        // memcached hangs up on a line that looks like HTTP (last word `HTTP/...`) unless it
        // starts with a letter its own commands start with.
        _ if t.get(n - 1).starts_with(b"HTTP/")
            && !b"gsacidt".contains(&cmd[0])
            && !(cmd[0] == b'm' && cmd.len() == 2) =>
        {
            return Ok(Step::Close(line_len))
        }
        _ => put(out, b"ERROR\r\n")?,
    }
    Ok(Step::Done(line_len))
}

/// The longest line (without its newline): memcached's 2048, but never more than the server
/// buffers for one request ([`Limits::max_request`](crate::handler::Limits::max_request)).
fn line_max(env: &Env) -> usize {
    MAX_LINE.min(env.limits.max_request() - 1)
}

/// A line longer than [`line_max`], complete or not: a multi-get goes on key by key (see
/// [`get`]); any other command is refused and the connection closed.
fn long_line(
    env: &Env,
    input: &[u8],
    get_line: &mut Option<GetLine>,
    out: &mut WriteBuffer,
) -> Result<Step, HardLimitError> {
    let Some((taken, mut line)) = get::long_line(input) else {
        put(out, b"CLIENT_ERROR line too long\r\n")?;
        let nl = input.iter().position(|&b| b == b'\n');
        return Ok(Step::Close(nl.map_or(input.len(), |nl| nl + 1)));
    };
    let step = get::more(env, &mut line, &input[taken..], out)?;
    Ok(match step {
        Step::Done(n) => Step::Done(taken + n),
        Step::Pause(n) => {
            *get_line = Some(line);
            Step::Pause(taken + n)
        }
        other => other,
    })
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
    let flags = parse_flags(t.get(2));
    let exptime = parse_strtol(t.get(3));
    let vlen = parse_strtol(t.get(4));
    let cas = if mode == Mode::Cas {
        parse_u64(t.get(5))
    } else {
        Some(0)
    };
    let (Some(flags), Some(exptime), Some(vlen), Some(cas)) = (flags, exptime, vlen, cas) else {
        reply(out, noreply, BAD_FORMAT)?;
        return Ok(Step::Done(line_len));
    };
    // memcached adds 2 for the "\r\n" in an int: a length it cannot add to is refused too.
    let vlen = match usize::try_from(vlen) {
        Ok(v) if vlen <= i32::MAX - 2 => v,
        _ => {
            reply(out, noreply, BAD_FORMAT)?;
            return Ok(Step::Done(line_len));
        }
    };
    let total = line_len.saturating_add(vlen).saturating_add(2);
    if vlen > env.limits.max_item_size || total > env.limits.max_request() {
        bump(&env.stats.local().cmd_set);
        env.stats.detail.set(key);
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
    // Memcached counts the command for its prefix once the line is read, before the data.
    env.stats.detail.set(key);
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
            return reply(
                out,
                noreply,
                b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
            );
        }
    }
    let key = t.get(1);
    if key.len() > KEY_MAX {
        return reply(out, noreply, BAD_FORMAT);
    }
    env.stats.detail.delete(key);
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

/// `slabs reassign SRC DST` and `slabs automove LEVEL`, checked as memcached checks them. The
/// cache is one memory pool, not slab classes with pages to move: reassigning answers as
/// memcached without `-o slab_reassign`, and an automove level of 0, 1 or 2 is accepted with
/// nothing to move.
fn slabs(t: &Tokens<'_>, out: &mut WriteBuffer) -> Result<(), HardLimitError> {
    // As memcached, only `automove` honours `noreply`.
    let noreply = t.get(1) == b"automove" && t.noreply();
    let text: &[u8] = match (t.get(1), t.len) {
        (b"reassign", 4) => b"CLIENT_ERROR slab reassignment disabled\r\n",
        (b"automove", 3..) if t.get(2) == b"ratio" => {
            let ratio = std::str::from_utf8(t.get(3)).ok().map(str::parse::<f64>);
            if t.len >= 4 && matches!(ratio, Some(Ok(_))) {
                b"OK\r\n"
            } else {
                b"ERROR\r\n"
            }
        }
        (b"automove", 3..) => match parse_flags(t.get(2)) {
            None => BAD_FORMAT,
            Some(0..=2) => b"OK\r\n",
            Some(_) => b"ERROR\r\n",
        },
        _ => b"ERROR\r\n",
    };
    reply(out, noreply, text)
}

/// `stats [group]`, answered as memcached 1.6 answers each group: `STAT` lines and `END`, or
/// one line for `reset`, `detail` and the errors. A second word after a group's name is
/// ignored, as memcached ignores it.
fn stats(env: &Env, t: &Tokens<'_>, out: &mut WriteBuffer) -> Result<(), HardLimitError> {
    let (stats, store) = (&env.stats, &env.store);
    let group = match t.get(1) {
        _ if t.len == 1 => stats.report(store),
        b"reset" => {
            stats.reset(store);
            return put(out, b"RESET\r\n");
        }
        b"detail" => {
            return match t.get(2) {
                b"on" | b"off" => {
                    stats.detail.set_on(t.get(2) == b"on");
                    put(out, b"OK\r\n")
                }
                b"dump" => put(out, &stats.detail.dump()),
                _ => put(out, b"CLIENT_ERROR usage: stats detail on|off|dump\r\n"),
            }
        }
        b"cachedump" => return cachedump(env, t, out),
        b"settings" => stats.settings(store),
        b"items" => stats.items(store),
        b"slabs" => stats.slabs(store),
        b"conns" => stats.conns(),
        // No size histogram is kept; memcached ends these two replies without `END`.
        b"sizes" => vec![("sizes_status".into(), "disabled".into())],
        b"sizes_disable" => return put(out, b"STAT sizes_status disabled\r\n"),
        b"sizes_enable" => {
            return put(
                out,
                b"STAT sizes_status error\r\nSTAT sizes_error not_supported\r\n",
            )
        }
        _ => return put(out, b"ERROR\r\n"),
    };
    let mut f = out.format();
    for (name, value) in &group {
        let _ = write!(f, "STAT {name} {value}\r\n");
    }
    f.put_slice(b"END\r\n");
    f.try_commit()
}

/// `stats cachedump <class> <limit>`: `ITEM key [length b; expiry s]` lines for the items of
/// memcached's slab class `class` (see `store::slabs`), then `END`. Keys a line cannot carry
/// (stored through the binary protocol with spaces or control bytes) are passed over, as
/// memcached passes over binary keys.
fn cachedump(env: &Env, t: &Tokens<'_>, out: &mut WriteBuffer) -> Result<(), HardLimitError> {
    if t.len < 4 {
        return put(out, b"CLIENT_ERROR bad command line\r\n");
    }
    let (Some(class), Some(limit)) = (parse_u32(t.get(2)), parse_u32(t.get(3))) else {
        return put(out, BAD_FORMAT);
    };
    if class as usize >= crate::store::slabs::MAX_CLASSES {
        return put(out, b"CLIENT_ERROR Illegal slab id\r\n");
    }
    // As memcached, at most 2 MiB of lines, whatever the limit; no more items are collected
    // than the shortest lines would fill it with.
    const MAX_BYTES: usize = 2 << 20;
    let most = MAX_BYTES / b"ITEM k [0 b; 0 s]\r\n".len();
    let items = match limit {
        0 => env.store.dump(class as usize, most),
        n => env.store.dump(class as usize, (n as usize).min(most)),
    };
    let mut f = out.format();
    let mut bytes = 0;
    for (key, len, exptime) in items {
        if key.iter().any(|&b| !b.is_ascii_graphic()) {
            continue;
        }
        let line = format!(" [{len} b; {exptime} s]\r\n");
        bytes += b"ITEM ".len() + key.len() + line.len();
        if bytes > MAX_BYTES {
            break;
        }
        f.put_slice(b"ITEM ");
        f.put_slice(&key);
        f.put_slice(line.as_bytes());
    }
    f.put_slice(b"END\r\n");
    f.try_commit()
}
