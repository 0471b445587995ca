//! `get`, `gets`, `gat` and `gats`: a `VALUE` block for each key found, then `END`.
//!
//! A line of at most [`MAX_LINE`](crate::handler::MAX_LINE) bytes is answered whole, as
//! memcached does: any key over 250 bytes makes the whole reply a `CLIENT_ERROR`, checked before
//! any lookup. A longer line may have any number of keys: it is answered key by key as it
//! arrives ([`GetLine`]), so the server never holds more of it than one key (and what one read
//! brings), and it stops between two keys while the response is over its high water mark. A key
//! over 250 bytes in such a line ends the reply with a `CLIENT_ERROR` after the values already
//! queued, and the rest of the line is discarded; so is the rest after a NUL byte, where
//! memcached's C string ends.

use sendbuf::{HardLimitError, WriteBuffer};

use super::{parse_i32, BAD_FORMAT};
use crate::handler::{pin, put, Env, Step, KEY_MAX};
use crate::stats::bump;
use crate::store::Hit;

/// Which of the four commands, and where its reply stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetLine {
    /// `gets`/`gats`: the CAS unique goes in each `VALUE` line.
    with_cas: bool,
    /// `gat`/`gats`: each key found is touched with this expiry.
    touch: Option<i32>,
    /// The last value was pinned: its `\r\n` goes with the next header or the `END`.
    crlf: bool,
    /// Keys answered so far (a line without keys is an `ERROR`, as memcached's).
    keys: usize,
    /// A key was refused: the rest of the line is discarded.
    discard: bool,
    /// `gat`/`gats`: the expiry has not been read yet.
    expiry_pending: bool,
}

impl GetLine {
    fn new(with_cas: bool, touch: Option<i32>) -> GetLine {
        GetLine {
            with_cas,
            touch,
            crlf: false,
            keys: 0,
            discard: false,
            expiry_pending: false,
        }
    }
}

/// A whole line (without its newline) of at most `MAX_LINE` bytes: `keys` after the command
/// and, for `gat`/`gats`, its expiry.
pub(super) fn whole_line<'a>(
    env: &Env,
    keys: impl Iterator<Item = &'a [u8]> + Clone,
    with_cas: bool,
    touch: Option<i32>,
    out: &mut WriteBuffer,
) -> Result<(), HardLimitError> {
    if keys.clone().any(|k| k.len() > KEY_MAX) {
        return put(out, BAD_FORMAT);
    }
    let mut line = GetLine::new(with_cas, touch);
    for key in keys {
        answer(env, &mut line, key, out)?;
    }
    end(&mut line, out)
}

/// The start of a line longer than `MAX_LINE` (the whole line or not): if it is one of the four
/// commands, the bytes taken by the command (and expiry) and the state to answer the rest with.
/// `None` if it is another command.
pub(super) fn long_line(input: &[u8]) -> Option<(usize, GetLine)> {
    // As memcached: at most 100 spaces before the command.
    let start = input.iter().take(101).take_while(|&&b| b == b' ').count();
    if start > 100 {
        return None;
    }
    let rest = &input[start..];
    let (len, with_cas, touch) = [
        (&b"get "[..], false, false),
        (b"gets ", true, false),
        (b"gat ", false, true),
        (b"gats ", true, true),
    ]
    .into_iter()
    .find(|(cmd, _, _)| rest.starts_with(cmd))
    .map(|(cmd, cas, touch)| (cmd.len(), cas, touch))?;
    let mut line = GetLine::new(with_cas, None);
    // `gat`/`gats`: the expiry is read by `more`, as it arrives.
    line.expiry_pending = touch;
    Some((start + len, line))
}

/// Answers the keys at the start of `input`, the continuation of a long line: `Done` with the
/// bytes up to and including the line's newline once it is answered, `Pause` with the bytes
/// taken so far when the rest of the line has not arrived or the output is backed up.
pub(crate) fn more(
    env: &Env,
    line: &mut GetLine,
    input: &[u8],
    out: &mut WriteBuffer,
) -> Result<Step, HardLimitError> {
    let mut pos = 0;
    loop {
        let rest = &input[pos..];
        if line.discard {
            return Ok(match rest.iter().position(|&b| b == b'\n') {
                Some(nl) => Step::Done(pos + nl + 1),
                None => Step::Pause(input.len()),
            });
        }
        let spaces = rest.iter().take_while(|&&b| b == b' ').count();
        pos += spaces;
        let rest = &rest[spaces..];
        if line.expiry_pending {
            let end = rest.iter().position(|&b| b == b' ' || b == b'\n');
            // No number is longer than 21 bytes: a longer token is refused whether or not it
            // has ended, so that the outcome does not depend on how the line arrived.
            let expiry = match end {
                None if rest.len() <= 21 => return Ok(Step::Pause(pos)),
                None => None,
                Some(len) => {
                    let token = &rest[..len];
                    let token = if rest[len] == b'\n' {
                        token.strip_suffix(b"\r").unwrap_or(token)
                    } else {
                        token
                    };
                    pos += token.len();
                    parse_i32(token)
                }
            };
            line.expiry_pending = false;
            match expiry {
                Some(t) => line.touch = Some(t),
                None => {
                    put(out, b"CLIENT_ERROR invalid exptime argument\r\n")?;
                    line.discard = true;
                }
            }
            continue;
        }
        match rest {
            [] | [b'\r'] => return Ok(Step::Pause(pos)),
            [b'\n', ..] | [b'\r', b'\n', ..] => {
                end(line, out)?;
                return Ok(Step::Done(pos + if rest[0] == b'\n' { 1 } else { 2 }));
            }
            _ => {}
        }
        let Some(len) = rest.iter().position(|&b| b == b' ' || b == b'\n' || b == 0) else {
            // The key has not ended yet: wait for the rest, unless it is already too long.
            if rest.len() <= KEY_MAX + 1 {
                return Ok(Step::Pause(pos));
            }
            refuse(line, out)?;
            continue;
        };
        let mut key = &rest[..len];
        if rest[len] == b'\n' {
            key = key.strip_suffix(b"\r").unwrap_or(key);
        }
        if key.len() > KEY_MAX {
            refuse(line, out)?;
            continue;
        }
        if out.is_backed_up() {
            return Ok(Step::Pause(pos));
        }
        if !key.is_empty() {
            answer(env, line, key, out)?;
            pos += key.len();
        }
        if rest[len] == 0 {
            // As memcached, which reads the line as a C string: it ends at the NUL.
            end(line, out)?;
            line.discard = true;
        }
    }
}

/// A key over 250 bytes: the reply ends with a `CLIENT_ERROR`.
fn refuse(line: &mut GetLine, out: &mut WriteBuffer) -> Result<(), HardLimitError> {
    let crlf: &[u8] = if line.crlf { b"\r\n" } else { b"" };
    line.crlf = false;
    line.discard = true;
    let mut f = out.format();
    f.put_slice(crlf);
    f.put_slice(BAD_FORMAT);
    f.try_commit()
}

/// Looks `key` up (touching it for `gat`/`gats`) and queues its `VALUE` block if found.
fn answer(
    env: &Env,
    line: &mut GetLine,
    key: &[u8],
    out: &mut WriteBuffer,
) -> Result<(), HardLimitError> {
    line.keys += 1;
    let stats = env.stats.local();
    let item = match line.touch {
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
    env.stats.detail.get(key, item.is_some());
    let Some(item) = item else { return Ok(()) };
    // Header (after the previous value's "\r\n"), then the value: copied into the same commit
    // if short, pinned by reference otherwise (its "\r\n" then goes with the next header or the
    // END).
    let copy = item.value.len() < out.flatten_threshold();
    let mut f = out.format();
    if line.crlf {
        f.put_slice(b"\r\n");
    }
    f.put_slice(b"VALUE ");
    f.put_slice(key);
    f.put_u8(b' ');
    f.put_decimal(item.flags);
    f.put_u8(b' ');
    f.put_decimal(item.value.len());
    if line.with_cas {
        f.put_u8(b' ');
        f.put_decimal(item.cas);
    }
    f.put_slice(b"\r\n");
    if copy {
        f.put_slice(&item.value);
        f.put_slice(b"\r\n");
    }
    f.try_commit()?;
    line.crlf = !copy;
    if !copy {
        pin(out, item.value)?;
    }
    Ok(())
}

/// The end of the reply: `END` (or memcached's `ERROR` for a line without keys).
fn end(line: &mut GetLine, out: &mut WriteBuffer) -> Result<(), HardLimitError> {
    let text: &[u8] = match (line.keys, line.crlf) {
        (0, _) => b"ERROR\r\n",
        (_, true) => b"\r\nEND\r\n",
        (_, false) => b"END\r\n",
    };
    line.crlf = false;
    put(out, text)
}
