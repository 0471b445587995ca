//! The memcached binary protocol: a 24-byte header (magic, opcode, key length, extras length,
//! body length, opaque, CAS) followed by extras, key and value.
//!
//! Each call of [`request`] validates one header before it trusts any length in it (the
//! CVE-2016-8704..8706 class: a body shorter than key plus extras, lengths near `u32::MAX`), waits
//! for the whole body only when the command's shape allows a body that size, executes the
//! command and formats the response header with a [`FormatGuard`](sendbuf::FormatGuard); values
//! are pinned, not copied. Quiet commands answer only misses (gets) or errors (mutations).
//! The header's layout, opcodes and status codes are in `binary/header.rs`.

mod header;

use sendbuf::{HardLimitError, WriteBuffer};

use std::sync::Arc;

use crate::handler::{pin, Env, Step, KEY_MAX};
use crate::stats::{bump, VERSION};

use crate::store::{DeleteResult, DeltaResult, Hit, Mode, StoreResult};
use header::ResponseHeader;
pub use header::{op, status, Header, HEADER_LEN, REQ_MAGIC, RES_MAGIC};

/// The text memcached sends as the body of an error response.
fn message(status: u16) -> &'static [u8] {
    match status {
        status::KEY_ENOENT => b"Not found",
        status::KEY_EEXISTS => b"Data exists for key.",
        status::E2BIG => b"Too large.",
        status::EINVAL => b"Invalid arguments",
        status::NOT_STORED => b"Not stored.",
        status::DELTA_BADVAL => b"Non-numeric server-side value for incr or decr",
        status::UNKNOWN_COMMAND => b"Unknown command",
        status::ENOMEM => b"Out of memory",
        _ => b"",
    }
}

/// Formats one response: header, extras, key and a small body, all in scratch in one commit.
/// A `value`, if any, follows: copied into the same commit if it is shorter than the buffer's
/// flatten threshold, pinned by reference otherwise.
#[allow(clippy::too_many_arguments)]
fn respond(
    out: &mut WriteBuffer,
    h: &Header,
    status: u16,
    cas: u64,
    extras: &[u8],
    key: &[u8],
    body: &[u8],
    value: Option<Arc<[u8]>>,
) -> Result<(), HardLimitError> {
    let value_len = value.as_ref().map_or(0, |v| v.len());
    let bodylen = extras.len() + key.len() + body.len() + value_len;
    let head = ResponseHeader {
        request: h,
        status,
        key_len: key.len() as u16,
        extras_len: extras.len() as u8,
        body_len: bodylen as u32,
        cas,
    };
    let copy_value = value_len < out.flatten_threshold();
    let mut f = out.format();
    f.put(&head);
    f.put_slice(extras);
    f.put_slice(key);
    f.put_slice(body);
    if let (true, Some(v)) = (copy_value, &value) {
        f.put_slice(v);
    }
    f.try_commit()?;
    match value {
        Some(v) if !copy_value => pin(out, v),
        _ => Ok(()),
    }
}

/// An error response: the status and memcached's text for it.
fn error(out: &mut WriteBuffer, h: &Header, status: u16) -> Result<(), HardLimitError> {
    respond(out, h, status, 0, &[], &[], message(status), None)
}

/// The non-quiet command a quiet opcode stands for, and whether it was quiet.
fn unquiet(opcode: u8) -> (u8, bool) {
    match opcode {
        op::GETQ => (op::GET, true),
        op::GETKQ => (op::GETK, true),
        op::SETQ => (op::SET, true),
        op::ADDQ => (op::ADD, true),
        op::REPLACEQ => (op::REPLACE, true),
        op::DELETEQ => (op::DELETE, true),
        op::INCREMENTQ => (op::INCREMENT, true),
        op::DECREMENTQ => (op::DECREMENT, true),
        op::QUITQ => (op::QUIT, true),
        op::FLUSHQ => (op::FLUSH, true),
        op::APPENDQ => (op::APPEND, true),
        op::PREPENDQ => (op::PREPEND, true),
        op::GATQ => (op::GAT, true),
        op::GATKQ => (op::GATK, true),
        other => (other, false),
    }
}

/// Whether a header's lengths fit the command, as memcached checks them (plus: commands that
/// take no value must not carry one, so the stream stays in step). `None`: unknown command.
fn shape_ok(cmd: u8, key: usize, ext: usize, body: usize) -> Option<bool> {
    Some(match cmd {
        op::VERSION | op::NOOP | op::QUIT => ext == 0 && key == 0 && body == 0,
        op::FLUSH => key == 0 && body == ext && (ext == 0 || ext == 4),
        op::SET | op::ADD | op::REPLACE => ext == 8 && key != 0,
        op::GET | op::GETK => ext == 0 && key != 0 && body == key,
        op::DELETE => ext == 0 && key != 0 && body == key,
        op::INCREMENT | op::DECREMENT => ext == 20 && key != 0 && body == key + 20,
        op::APPEND | op::PREPEND => ext == 0 && key != 0,
        op::STAT => ext == 0 && body == key,
        op::TOUCH | op::GAT | op::GATK => ext == 4 && key != 0 && body == key + 4,
        _ => return None,
    })
}

/// Handles the request at the start of `input` (which starts with a header, or a prefix of
/// one): see [`Step`].
pub fn request(env: &Env, input: &[u8], out: &mut WriteBuffer) -> Result<Step, HardLimitError> {
    let Some(head) = input.first_chunk::<HEADER_LEN>() else {
        return Ok(Step::Need(HEADER_LEN));
    };
    let h = Header::parse(head);
    let (key_len, ext_len, body_len) = (
        usize::from(h.keylen),
        usize::from(h.extlen),
        h.bodylen as usize,
    );
    if h.magic != REQ_MAGIC {
        error(out, &h, status::EINVAL)?;
        return Ok(Step::Close(0));
    }
    if key_len + ext_len > body_len {
        error(out, &h, status::UNKNOWN_COMMAND)?;
        return Ok(Step::Close(0));
    }
    if key_len > KEY_MAX {
        error(out, &h, status::EINVAL)?;
        return Ok(Step::Close(0));
    }
    let (cmd, quiet) = unquiet(h.opcode);
    match shape_ok(cmd, key_len, ext_len, body_len) {
        None => {
            error(out, &h, status::UNKNOWN_COMMAND)?;
            return Ok(Step::Swallow(HEADER_LEN, u64::from(h.bodylen)));
        }
        Some(false) => {
            error(out, &h, status::EINVAL)?;
            return Ok(Step::Close(0));
        }
        Some(true) => {}
    }
    let value_len = body_len - key_len - ext_len;
    if value_len > env.limits.max_item_size {
        // Only storage commands can get here: the others' shapes bound the body.
        let head_len = HEADER_LEN + ext_len + key_len;
        let Some(req) = input.get(..head_len) else {
            return Ok(Step::Need(head_len));
        };
        let key = &req[HEADER_LEN + ext_len..];
        bump(&env.stats.local().cmd_set);
        env.stats.detail.set(key);
        if cmd == op::SET {
            // As memcached: a failed set must not leave the old value readable.
            env.store.delete(key, 0);
        }
        error(out, &h, status::E2BIG)?;
        return Ok(Step::Swallow(head_len, value_len as u64));
    }
    let total = HEADER_LEN.saturating_add(body_len);
    let Some(req) = input.get(..total) else {
        return Ok(Step::Need(total));
    };
    let extras = &req[HEADER_LEN..HEADER_LEN + ext_len];
    let key = &req[HEADER_LEN + ext_len..HEADER_LEN + ext_len + key_len];
    let value = &req[HEADER_LEN + ext_len + key_len..];
    let close = execute(env, &h, cmd, quiet, extras, key, value, out)?;
    Ok(if close {
        Step::Close(total)
    } else {
        Step::Done(total)
    })
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Executes one well-formed request; true if the connection is to close after it.
#[allow(clippy::too_many_arguments)]
fn execute(
    env: &Env,
    h: &Header,
    cmd: u8,
    quiet: bool,
    extras: &[u8],
    key: &[u8],
    value: &[u8],
    out: &mut WriteBuffer,
) -> Result<bool, HardLimitError> {
    let store = &*env.store;
    let stats = env.stats.local();
    match cmd {
        op::GET | op::GETK | op::TOUCH | op::GAT | op::GATK => {
            let touch = matches!(cmd, op::TOUCH | op::GAT | op::GATK);
            let with_key = matches!(cmd, op::GETK | op::GATK);
            let item = if touch {
                bump(&stats.cmd_touch);
                store
                    .touch(key, i64::from(be32(extras)))
                    .map(|item| Hit::of(&item))
            } else {
                bump(&stats.cmd_get);
                store.hit(key)
            };
            let hit = item.is_some();
            env.stats.detail.get(key, hit);
            match (touch, hit) {
                (true, true) => bump(&stats.touch_hits),
                (true, false) => bump(&stats.touch_misses),
                (false, true) => bump(&stats.get_hits),
                (false, false) => bump(&stats.get_misses),
            }
            match item {
                Some(item) => {
                    let flags = item.flags.to_be_bytes();
                    let rkey = if with_key { key } else { &[][..] };
                    let value = (cmd != op::TOUCH).then_some(item.value);
                    respond(out, h, status::SUCCESS, item.cas, &flags, rkey, &[], value)?;
                }
                None if quiet => {}
                None if with_key => {
                    respond(out, h, status::KEY_ENOENT, 0, &[], key, &[], None)?;
                }
                None => error(out, h, status::KEY_ENOENT)?,
            }
        }
        op::SET | op::ADD | op::REPLACE | op::APPEND | op::PREPEND => {
            bump(&stats.cmd_set);
            env.stats.detail.set(key);
            let (flags, exptime) = if extras.len() == 8 {
                (be32(extras), i64::from(be32(&extras[4..])))
            } else {
                (0, 0)
            };
            let mode = match cmd {
                op::SET | op::ADD | op::REPLACE if h.cas != 0 => Mode::Cas,
                op::SET => Mode::Set,
                op::ADD => Mode::Add,
                op::REPLACE => Mode::Replace,
                op::APPEND => Mode::Append,
                _ => Mode::Prepend,
            };
            let result = store.store(mode, key, value, flags, exptime, h.cas);
            stats.count_cas(mode, result);
            match result {
                StoreResult::Stored(cas) => {
                    if !quiet {
                        respond(out, h, status::SUCCESS, cas, &[], &[], &[], None)?;
                    }
                }
                StoreResult::Exists => error(out, h, status::KEY_EEXISTS)?,
                StoreResult::NotFound => error(out, h, status::KEY_ENOENT)?,
                StoreResult::NotStored => {
                    let status = match cmd {
                        op::ADD => status::KEY_EEXISTS,
                        op::REPLACE => status::KEY_ENOENT,
                        _ => status::NOT_STORED,
                    };
                    error(out, h, status)?;
                }
                StoreResult::TooLarge => error(out, h, status::E2BIG)?,
                StoreResult::NoMemory => error(out, h, status::ENOMEM)?,
            }
        }
        op::DELETE => {
            env.stats.detail.delete(key);
            match store.delete(key, h.cas) {
                DeleteResult::Deleted => {
                    bump(&stats.delete_hits);
                    if !quiet {
                        respond(out, h, status::SUCCESS, 0, &[], &[], &[], None)?;
                    }
                }
                DeleteResult::NotFound => {
                    bump(&stats.delete_misses);
                    error(out, h, status::KEY_ENOENT)?;
                }
                DeleteResult::Exists => error(out, h, status::KEY_EEXISTS)?,
            }
        }
        op::INCREMENT | op::DECREMENT => {
            let incr = cmd == op::INCREMENT;
            let delta = be64(extras);
            let initial = be64(&extras[8..]);
            let expiration = be32(&extras[16..]);
            let (hits, misses) = if incr {
                (&stats.incr_hits, &stats.incr_misses)
            } else {
                (&stats.decr_hits, &stats.decr_misses)
            };
            let mut result = store.delta(key, incr, delta, h.cas);
            match result {
                DeltaResult::Value(..) => bump(hits),
                DeltaResult::NotFound => bump(misses),
                _ => {}
            }
            if result == DeltaResult::NotFound && expiration != u32::MAX {
                // Create it with the initial value (only if still absent).
                let digits = initial.to_string();
                let exptime = i64::from(expiration);
                result = match store.store(Mode::Add, key, digits.as_bytes(), 0, exptime, 0) {
                    StoreResult::Stored(cas) => DeltaResult::Value(initial, cas),
                    StoreResult::NoMemory | StoreResult::TooLarge => DeltaResult::NoMemory,
                    _ => {
                        error(out, h, status::NOT_STORED)?;
                        return Ok(false);
                    }
                };
            }
            match result {
                DeltaResult::Value(n, cas) => {
                    if !quiet {
                        respond(
                            out,
                            h,
                            status::SUCCESS,
                            cas,
                            &[],
                            &[],
                            &n.to_be_bytes(),
                            None,
                        )?;
                    }
                }
                DeltaResult::NotFound => error(out, h, status::KEY_ENOENT)?,
                DeltaResult::NonNumeric => error(out, h, status::DELTA_BADVAL)?,
                DeltaResult::Exists => error(out, h, status::KEY_EEXISTS)?,
                DeltaResult::NoMemory => error(out, h, status::ENOMEM)?,
            }
        }
        op::QUIT => {
            if !quiet {
                respond(out, h, status::SUCCESS, 0, &[], &[], &[], None)?;
            }
            return Ok(true);
        }
        op::FLUSH => {
            bump(&stats.cmd_flush);
            let delay = if extras.len() == 4 { be32(extras) } else { 0 };
            store.flush_all(i64::from(delay));
            if !quiet {
                respond(out, h, status::SUCCESS, 0, &[], &[], &[], None)?;
            }
        }
        op::NOOP => respond(out, h, status::SUCCESS, 0, &[], &[], &[], None)?,
        op::VERSION => respond(
            out,
            h,
            status::SUCCESS,
            0,
            &[],
            &[],
            VERSION.as_bytes(),
            None,
        )?,
        op::STAT => stat(env, h, key, out)?,
        _ => error(out, h, status::UNKNOWN_COMMAND)?,
    }
    Ok(false)
}

/// `stat`: one response per statistic (key = name, value = its text), then an empty one. The
/// groups are those memcached's binary protocol answers, matched as it matches them (`reset`,
/// `settings` and `detail` by prefix): `items`, `slabs`, `sizes`, `settings`, `reset`, and
/// `detail on|off|dump` (the dump is one statistic, `detailed`); others are not found.
fn stat(env: &Env, h: &Header, group: &[u8], out: &mut WriteBuffer) -> Result<(), HardLimitError> {
    let (stats, store) = (&env.stats, &env.store);
    let list = match group {
        b"" => stats.report(store),
        _ if group.starts_with(b"reset") => {
            stats.reset(store);
            Vec::new()
        }
        _ if group.starts_with(b"settings") => stats.settings(store),
        _ if group.starts_with(b"detail") => match &group[6..] {
            b" dump" => {
                let dump = stats.detail.dump();
                respond(out, h, status::SUCCESS, 0, &[], b"detailed", &dump, None)?;
                Vec::new()
            }
            b" on" | b" off" => {
                stats.detail.set_on(group.ends_with(b" on"));
                Vec::new()
            }
            _ => return error(out, h, status::KEY_ENOENT),
        },
        b"items" => stats.items(store),
        b"slabs" => stats.slabs(store),
        b"sizes" | b"sizes_disable" => vec![("sizes_status".into(), "disabled".into())],
        _ => return error(out, h, status::KEY_ENOENT),
    };
    for (name, value) in &list {
        respond(
            out,
            h,
            status::SUCCESS,
            0,
            &[],
            name.as_bytes(),
            value.as_bytes(),
            None,
        )?;
    }
    respond(out, h, status::SUCCESS, 0, &[], &[], &[], None)
}
