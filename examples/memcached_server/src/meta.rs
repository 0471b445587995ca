//! The meta commands of the ASCII protocol, as memcached 1.6.18 answers them: `mg` (get),
//! `ms` (set, with a data block), `md` (delete), `ma` (incr/decr), `mn` (no-op) and `me`
//! (debug). A command is a two-letter code, a key and flags; the answer is a two-letter code
//! (`HD`, `VA`, `EN`, `NS`, `EX`, `NF`, `MN`) and the flags asked for, in request order.
//!
//! [`ascii::request`](crate::ascii::request) finds the line and passes it here. Errors are
//! memcached's `CLIENT_ERROR` lines and are never hidden by `q`; `q` hides only the nominal
//! answer (`EN` for `mg`; `HD` for `ms`, `md` and `ma`). A refused `ms` whose length token
//! parses has its data block swallowed, never run as commands.
//!
//! Child modules: `request` (tokens, key and flags), `get` (`mg`), `set` (`ms`), `delete`
//! (`md`), `arithmetic` (`ma`).

mod arithmetic;
mod delete;
mod get;
mod request;
mod set;

use sendbuf::{FormatGuard, HardLimitError, WriteBuffer};

use crate::handler::{put, Env, Step, KEY_MAX};
use request::{Line, Request, BAD_FORMAT};

/// Handles the meta command on `line` (without its newline), which with its newline is
/// `line_len` bytes at the start of `input` (`ms` also takes its data block from `input`).
pub fn request(
    env: &Env,
    line: &[u8],
    input: &[u8],
    line_len: usize,
    out: &mut WriteBuffer,
) -> Result<Step, HardLimitError> {
    let line = Line::new(line);
    match line.get(0) {
        b"ms" => return set::request(env, &line, input, line_len, out),
        b"mn" => put(out, b"MN\r\n")?,
        b"me" => debug(env, &line, out)?,
        _ if line.len() < 2 => put(out, b"ERROR\r\n")?,
        b"mg" => get::request(env, &line, out)?,
        b"md" => delete::request(env, &line, out)?,
        b"ma" => arithmetic::request(env, &line, out)?,
        _ => put(out, b"ERROR\r\n")?,
    }
    Ok(Step::Done(line_len))
}

/// `me <key> [b]`: what the store holds about an item, minus its value, in memcached's words.
/// The store has no slab classes: `cls` is always 1, and `size` is what the item counts
/// against the memory limit.
fn debug(env: &Env, line: &Line<'_>, out: &mut WriteBuffer) -> Result<(), HardLimitError> {
    let sent_key = line.get(1);
    if line.len() < 2 || sent_key.len() > KEY_MAX {
        return put(out, BAD_FORMAT);
    }
    let mut decoded = [0; KEY_MAX];
    let key = match line.get(2) {
        b"b" => match request::decode_key(sent_key, &mut decoded) {
            Some(key) => key,
            None => return put(out, BAD_FORMAT),
        },
        _ => sent_key,
    };
    let Some(item) = env.store.peek(key) else {
        return put(out, b"EN\r\n");
    };
    let now = env.store.now();
    let atime = item.meta.atime.load(std::sync::atomic::Ordering::Relaxed);
    let fetched = item.meta.fetched.load(std::sync::atomic::Ordering::Relaxed);
    let mut f = out.format();
    f.put_slice(b"ME ");
    f.put_slice(sent_key);
    f.put_slice(b" exp=");
    // As memcached prints it: the time since expiry (negative while the item lives).
    match item.exptime {
        0 => f.put_slice(b"-1"),
        exptime => f.put_decimal(i64::from(now) - i64::from(exptime)),
    }
    f.put_slice(b" la=");
    f.put_decimal(now.wrapping_sub(atime));
    f.put_slice(b" cas=");
    f.put_decimal(item.cas);
    f.put_slice(if fetched { b" fetch=yes" } else { b" fetch=no" });
    f.put_slice(b" cls=1 size=");
    f.put_decimal(item.size());
    f.put_slice(b"\r\n");
    f.try_commit()
}

/// Appends ` k<key>` (and ` b` for a base64 key, which is returned as sent).
fn put_key(f: &mut FormatGuard<'_>, req: &Request<'_>) {
    f.put_slice(b" k");
    f.put_slice(req.sent_key);
    if req.binary {
        f.put_slice(b" b");
    }
}

/// Appends the flags every answer echoes: the opaque token (`O...`) and the key (`k`).
fn put_echo(f: &mut FormatGuard<'_>, req: &Request<'_>) {
    for flag in req.flags() {
        echo(f, req, flag);
    }
}

/// Appends `flag` if it is one every answer echoes (`O`, `k`).
fn echo(f: &mut FormatGuard<'_>, req: &Request<'_>, flag: &[u8]) {
    match flag[0] {
        b'O' => {
            f.put_u8(b' ');
            f.put_slice(flag);
        }
        b'k' => put_key(f, req),
        _ => {}
    }
}

/// Appends ` t<seconds left>`: -1 for an item that never expires, else counted from `now`
/// (wrapping as memcached's unsigned arithmetic does for a time already past).
fn put_ttl(f: &mut FormatGuard<'_>, exptime: u32, now: u32) {
    f.put_slice(b" t");
    match exptime {
        0 => f.put_slice(b"-1"),
        exptime => f.put_decimal(exptime.wrapping_sub(now)),
    }
}

/// Queues a status line: `code`, the echoed flags, `\r\n`.
fn status(out: &mut WriteBuffer, code: &[u8], req: &Request<'_>) -> Result<(), HardLimitError> {
    let mut f = out.format();
    f.put_slice(code);
    put_echo(&mut f, req);
    f.put_slice(b"\r\n");
    f.try_commit()
}

/// Opens a command without a data block: checks the key's length and the number of tokens
/// (`too_many` is the command's message), then parses the key and the flags from token 2 on;
/// `refusal` replaces a parse error's own message (`md` and `ma` answer with one message). The
/// opaque token's length is left to the caller, which memcached checks at different points.
fn open<'a>(
    env: &Env,
    line: &Line<'a>,
    too_many: &'static [u8],
    refusal: Option<&'static [u8]>,
) -> Result<Request<'a>, &'static [u8]> {
    if line.get(1).len() > KEY_MAX {
        return Err(BAD_FORMAT);
    }
    if line.too_many() {
        return Err(too_many);
    }
    Request::parse(&env.store, line, 2).map_err(|e| refusal.unwrap_or(e))
}

/// `md`'s and `ma`'s answer to any bad flag.
const BAD_FLAG: &[u8] = b"CLIENT_ERROR invalid or duplicate flag\r\n";

/// `md`'s and `ma`'s answer to too many tokens (`mg` says "options flags are too long").
const TOO_MANY: &[u8] = b"CLIENT_ERROR options flags too long\r\n";
