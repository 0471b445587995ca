//! One connection's protocol state: which protocol it speaks (decided by its first byte, as
//! memcached does: `0x80` is the binary request magic, anything else is ASCII), the bytes of an
//! oversized value still to be swallowed, a long multi-get being answered, and the dispatch of
//! each complete request to [`binary`](crate::binary) or [`ascii`](crate::ascii).
//!
//! The parsers are pure: they look at the unconsumed input, execute at most one complete request
//! (or the keys of a long multi-get that have arrived) against the [`Store`], queue its response
//! in the connection's [`WriteBuffer`], and say how many bytes it took. Nothing here blocks, allocates per byte or trusts a length from the peer.

use std::sync::Arc;

use sendbuf::WriteBuffer;

use crate::ascii::get::GetLine;
use crate::handler::{Env, Limits, Step};
use crate::stats::Stats;
use crate::store::Store;

/// What [`Session::process`] did with its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Processed {
    /// Bytes of the input fully handled; the caller consumes them.
    pub consumed: usize,
    /// Close the connection once what is queued in the output has been sent (`quit`, or a
    /// protocol error after which the stream cannot be trusted).
    pub close: bool,
    /// Total bytes, counted from the start of the unconsumed input, that the next incomplete
    /// request needs; 0 if unknown. Never more than [`Limits::max_request`].
    pub need: usize,
}

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Unknown,
    Binary,
    Ascii,
}

/// The protocol state of one connection.
#[derive(Debug)]
pub struct Session {
    env: Env,
    proto: Proto,
    /// Bytes of a refused value still to be discarded as they arrive.
    swallow: u64,
    /// A `quit` or a fatal error was handled: the rest of the input is ignored.
    closed: bool,
    /// A long multi-get line being answered key by key.
    get_line: Option<GetLine>,
}

impl Session {
    /// A session for a new connection; the protocol is decided by its first byte.
    pub fn new(store: Arc<Store>, stats: Arc<Stats>, limits: Limits) -> Session {
        Session {
            env: Env {
                store,
                stats,
                limits,
            },
            proto: Proto::Unknown,
            swallow: 0,
            closed: false,
            get_line: None,
        }
    }

    /// True once the connection is known to speak the binary protocol.
    pub fn is_binary(&self) -> bool {
        self.proto == Proto::Binary
    }

    /// Parses and executes every complete request at the start of `input`, queueing responses
    /// in `out`. Stops early (returning what it consumed so far) when `out.is_backed_up()` is
    /// true; the caller calls again with the rest once the buffer has drained. Never panics on
    /// any input, and never looks further than one request ahead.
    ///
    /// A buffer with a hard limit that refuses a response makes the session close the
    /// connection (`close = true`): the response stream would be incomplete otherwise.
    pub fn process(&mut self, input: &[u8], out: &mut WriteBuffer) -> Processed {
        let mut done = Processed::default();
        if self.closed {
            done.consumed = input.len();
            done.close = true;
            return done;
        }
        self.env.store.tick();
        loop {
            let rest = &input[done.consumed..];
            if self.swallow > 0 {
                let n = usize::try_from(self.swallow).map_or(rest.len(), |s| s.min(rest.len()));
                done.consumed += n;
                self.swallow -= n as u64;
                if self.swallow > 0 {
                    break;
                }
                continue;
            }
            if rest.is_empty() || out.is_backed_up() {
                break;
            }
            if self.proto == Proto::Unknown {
                self.proto = if rest[0] == crate::binary::REQ_MAGIC {
                    Proto::Binary
                } else {
                    Proto::Ascii
                };
            }
            let step = match (&mut self.get_line, self.proto) {
                (Some(line), _) => crate::ascii::get::more(&self.env, line, rest, out),
                (None, Proto::Binary) => crate::binary::request(&self.env, rest, out),
                (None, _) => crate::ascii::request(&self.env, rest, out, &mut self.get_line),
            };
            match step {
                Ok(Step::Done(n)) => {
                    done.consumed += n;
                    self.get_line = None;
                }
                Ok(Step::Pause(n)) => {
                    // The rest of the input is part of a key, or the output is backed up.
                    done.consumed += n;
                    break;
                }
                Ok(Step::Swallow(n, swallow)) => {
                    done.consumed += n;
                    self.swallow = swallow;
                }
                Ok(Step::Need(need)) => {
                    done.need = need.min(self.env.limits.max_request());
                    break;
                }
                Ok(Step::Close(n)) => {
                    done.consumed += n;
                    self.closed = true;
                    break;
                }
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        if self.closed {
            done.close = true;
            done.consumed = input.len();
            done.need = 0;
        }
        done
    }
}
