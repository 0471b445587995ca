//! A meta command's line: its tokens, and its key and flags parsed as memcached 1.6.18 parses
//! them (`_meta_flag_preparse`): one flag per token, named by its first byte, each at most
//! once, some with an argument after that byte. The flags are kept in request order, which is
//! the order of the response's flags and of the `T`/`N` changes the `t` flag reports.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::ascii::{parse_i32, parse_u64};
use crate::handler::KEY_MAX;
use crate::store::Store;

/// Most tokens a meta line may have: memcached refuses lines of 20 or more ("options flags
/// too long"; its count includes a terminal token).
const MAX_TOKENS: usize = 19;

/// Longest opaque token, `O` included.
const MAX_OPAQUE: usize = 32;

pub(super) const BAD_FORMAT: &[u8] = b"CLIENT_ERROR bad command line format\r\n";
const BAD_TOKEN: &[u8] = b"CLIENT_ERROR bad token in command line format\r\n";

/// A command line split at spaces (empty tokens dropped), up to [`MAX_TOKENS`].
#[derive(Debug)]
pub(super) struct Line<'a> {
    tokens: [&'a [u8]; MAX_TOKENS],
    len: usize,
    too_many: bool,
}

impl<'a> Line<'a> {
    pub(super) fn new(line: &'a [u8]) -> Line<'a> {
        let mut l = Line {
            tokens: [&[][..]; MAX_TOKENS],
            len: 0,
            too_many: false,
        };
        for token in line.split(|&b| b == b' ').filter(|t| !t.is_empty()) {
            if l.len == MAX_TOKENS {
                l.too_many = true;
                break;
            }
            l.tokens[l.len] = token;
            l.len += 1;
        }
        l
    }

    /// Token `i`, or an empty slice.
    pub(super) fn get(&self, i: usize) -> &'a [u8] {
        self.tokens[..self.len].get(i).copied().unwrap_or(b"")
    }

    /// Number of tokens (at most [`MAX_TOKENS`]).
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// More than [`MAX_TOKENS`] tokens: memcached's "options flags too long".
    pub(super) fn too_many(&self) -> bool {
        self.too_many
    }
}

/// A meta request's key and flags. Expiry times are server times.
#[derive(Debug)]
pub(super) struct Request<'a> {
    /// The key as sent (base64 with `b`).
    pub(super) sent_key: &'a [u8],
    /// The key decoded (`b`), else empty: see [`Request::key`].
    decoded: [u8; KEY_MAX],
    decoded_len: usize,
    /// `b`: the key is base64.
    pub(super) binary: bool,
    /// The flag tokens in request order.
    flags: [&'a [u8]; MAX_TOKENS],
    nflags: usize,
    /// `q`: hide the nominal answer.
    pub(super) quiet: bool,
    /// `v`: return the value.
    pub(super) value: bool,
    /// `u`: do not mark the item used.
    pub(super) no_bump: bool,
    /// `N`: create on a miss, expiring then.
    pub(super) vivify: Option<u32>,
    /// `T`: the new expiry.
    pub(super) ttl: Option<u32>,
    /// `R`: win the recache if the item expires before then.
    pub(super) recache: Option<u32>,
    /// `F`: client flags (default 0).
    pub(super) client_flags: u32,
    /// `C`: the CAS unique to compare.
    pub(super) cas: Option<u64>,
    /// `M`: the mode character.
    pub(super) mode: Option<u8>,
    /// `J`: `ma`'s initial value (default 0).
    pub(super) initial: u64,
    /// `D`: `ma`'s delta (default 1).
    pub(super) delta: u64,
    /// `I`: invalidate (mark stale) instead.
    pub(super) invalidate: bool,
    /// `x`: `md` clears the value instead of removing the item.
    pub(super) clear_value: bool,
}

impl<'a> Request<'a> {
    /// Parses the key (token 1) and the flags (tokens `first..`). The error is the full
    /// `CLIENT_ERROR` line memcached answers: a repeated or unknown flag stops the parse at
    /// once; after a bad argument it goes on, and the last bad argument names the error.
    pub(super) fn parse(
        store: &Store,
        line: &Line<'a>,
        first: usize,
    ) -> Result<Request<'a>, &'static [u8]> {
        let mut r = Request {
            sent_key: line.get(1),
            decoded: [0; KEY_MAX],
            decoded_len: 0,
            binary: false,
            flags: [&[][..]; MAX_TOKENS],
            nflags: 0,
            quiet: false,
            value: false,
            no_bump: false,
            vivify: None,
            ttl: None,
            recache: None,
            client_flags: 0,
            cas: None,
            mode: None,
            initial: 0,
            delta: 1,
            invalidate: false,
            clear_value: false,
        };
        let mut seen = [false; 128];
        let mut error = None;
        for &flag in line.tokens[..line.len].get(first..).unwrap_or_default() {
            let (&name, arg) = flag.split_first().unwrap_or((&0, &[]));
            let Some(once) = seen.get_mut(usize::from(name)).filter(|_| name < 127) else {
                return Err(b"CLIENT_ERROR duplicate flag\r\n");
            };
            if std::mem::replace(once, true) {
                return Err(b"CLIENT_ERROR duplicate flag\r\n");
            }
            r.flags[r.nflags] = flag;
            r.nflags += 1;
            let expiry = || parse_i32(arg).map(|t| store.expiry(i64::from(t)));
            let unless = |ok: bool, message: &'static [u8]| (!ok).then_some(message);
            let failed = match name {
                b'b' => {
                    r.binary = true;
                    r.decoded_len = decode_key(r.sent_key, &mut r.decoded).map_or(0, <[u8]>::len);
                    unless(r.decoded_len > 0, b"CLIENT_ERROR error decoding key\r\n")
                }
                b'N' => {
                    r.vivify = expiry();
                    unless(r.vivify.is_some(), BAD_TOKEN)
                }
                b'T' => {
                    r.ttl = expiry();
                    unless(r.ttl.is_some(), BAD_TOKEN)
                }
                b'R' => {
                    r.recache = expiry();
                    unless(r.recache.is_some(), BAD_TOKEN)
                }
                // Answered from the flag list; `P` and `L` are a proxy's, ignored.
                b'O' | b'P' | b'L' | b'k' | b's' | b't' | b'c' | b'f' | b'l' | b'h' => None,
                b'v' => {
                    r.value = true;
                    None
                }
                b'u' => {
                    r.no_bump = true;
                    None
                }
                b'q' => {
                    r.quiet = true;
                    None
                }
                b'F' => {
                    // As the flags of `set`: memcached's `safe_strtoul`, kept as 32 bits.
                    let flags = crate::ascii::parse_flags(arg);
                    r.client_flags = flags.unwrap_or(0);
                    // memcached keeps the error it had, if any.
                    unless(flags.is_some(), error.unwrap_or(BAD_FORMAT))
                }
                b'C' => {
                    r.cas = parse_u64(arg);
                    unless(r.cas.is_some(), BAD_TOKEN)
                }
                b'M' => {
                    r.mode = arg.first().copied();
                    unless(
                        arg.len() == 1,
                        b"CLIENT_ERROR incorrect length for M token\r\n",
                    )
                }
                b'J' => {
                    r.initial = parse_u64(arg).unwrap_or(0);
                    let ok = parse_u64(arg).is_some();
                    unless(ok, b"CLIENT_ERROR invalid numeric initial value\r\n")
                }
                b'D' => {
                    r.delta = parse_u64(arg).unwrap_or(1);
                    let ok = parse_u64(arg).is_some();
                    unless(ok, b"CLIENT_ERROR invalid numeric delta value\r\n")
                }
                b'I' => {
                    r.invalidate = true;
                    None
                }
                b'x' => {
                    r.clear_value = true;
                    None
                }
                _ => return Err(b"CLIENT_ERROR invalid flag\r\n"),
            };
            error = failed.or(error);
        }
        error.map_or(Ok(r), Err)
    }

    /// Refuses an opaque token longer than memcached's 32 bytes.
    pub(super) fn check_opaque(&self) -> Result<(), &'static [u8]> {
        match self.flags().any(|f| f[0] == b'O' && f.len() > MAX_OPAQUE) {
            true => Err(b"CLIENT_ERROR opaque token too long\r\n"),
            false => Ok(()),
        }
    }

    /// The key to look up: decoded with `b`, else as sent.
    pub(super) fn key(&self) -> &[u8] {
        match self.binary {
            true => &self.decoded[..self.decoded_len],
            false => self.sent_key,
        }
    }

    /// The flag tokens in request order (each non-empty).
    pub(super) fn flags(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.flags[..self.nflags].iter().copied()
    }

    /// Walks the flags in request order as they change an item that expires at `exptime`:
    /// `T` sets the expiry, `N` sets it on an item this request `created` and wins the
    /// recache, `R` wins it if the item expires (as of that flag) before `R`'s time and no
    /// win was sent. `each` sees every flag with the expiry in force at its turn (what `t`
    /// reports). Returns the final expiry and whether a flag won.
    pub(super) fn walk(
        &self,
        mut exptime: u32,
        created: bool,
        win_sent: bool,
        mut each: impl FnMut(&'a [u8], u32),
    ) -> (u32, bool) {
        let mut won = false;
        for flag in self.flags() {
            match (flag[0], self.ttl, self.vivify, self.recache) {
                (b'T', Some(ttl), _, _) => exptime = ttl,
                (b'N', _, Some(ttl), _) if created => {
                    exptime = ttl;
                    won = true;
                }
                (b'R', _, _, Some(at)) if !win_sent && !created && exptime != 0 && exptime < at => {
                    won = true
                }
                _ => {}
            }
            each(flag, exptime);
        }
        (exptime, won)
    }
}

/// Decodes a base64 key (standard alphabet, padded) into `buf`; `None` if it is not base64 or
/// decodes to nothing.
pub(super) fn decode_key<'b>(sent: &[u8], buf: &'b mut [u8; KEY_MAX]) -> Option<&'b [u8]> {
    match BASE64.decode_slice(sent, buf) {
        Ok(n) if n > 0 => Some(&buf[..n]),
        _ => None,
    }
}
