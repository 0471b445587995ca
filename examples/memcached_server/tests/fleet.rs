//! A fleet: three example servers behind libmemcached's consistent hashing
//! (`--DISTRIBUTION=consistent`). Keys are stored through libmemcached, each server is asked
//! directly which keys it holds, one server is stopped, and a client configured with the two
//! survivors must find every key they hold where it was, miss only the stopped server's keys, and
//! store those on the survivors, spread between them.
//!
//! The client is libmemcached itself (`libmemcached.so.11`, Debian's `libmemcached11`), loaded at
//! run time so that the workspace builds without it. The test is ignored by plain `cargo test`;
//! `.ci/fleet.sh` installs the library and runs it with `--ignored`.
#![cfg(not(miri))]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use memcached_server::config::{Config, SendPath};
use memcached_server::server::{self, ServerHandle};

const KEYS: usize = 3000;

fn start() -> ServerHandle {
    server::start(Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        threads: 1,
        send_path: SendPath::Copy,
        ..Config::default()
    })
    .expect("server starts")
}

/// libmemcached's configuration string for a consistent-hashing client of these ports.
fn config_string(ports: &[u16]) -> String {
    let mut s: Vec<String> = ports
        .iter()
        .map(|p| format!("--SERVER=127.0.0.1:{p}"))
        .collect();
    s.push("--DISTRIBUTION=consistent".into());
    s.join(" ")
}

fn key(i: usize) -> String {
    format!("fleet:{i}")
}

fn value(i: usize) -> String {
    format!("value {i}")
}

/// One connection straight to one server, bypassing the client's routing.
struct Direct(BufReader<TcpStream>);

impl Direct {
    fn connect(port: u16) -> Self {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_nodelay(true).unwrap();
        Direct(BufReader::new(s))
    }

    /// The value this server holds for `key`, over ASCII `get`.
    fn get(&mut self, key: &str) -> Option<String> {
        write!(self.0.get_mut(), "get {key}\r\n").unwrap();
        let line = self.line();
        if line == "END" {
            return None;
        }
        let len: usize = line
            .strip_prefix(&format!("VALUE {key} 0 "))
            .unwrap_or_else(|| panic!("unexpected response {line:?}"))
            .parse()
            .unwrap();
        let data = self.line();
        assert_eq!(data.len(), len);
        assert_eq!(self.line(), "END");
        Some(data)
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.0.read_line(&mut line).expect("a response line");
        line.strip_suffix("\r\n")
            .unwrap_or_else(|| panic!("unterminated line {line:?}"))
            .to_owned()
    }
}

/// The index of the one server in `direct` that holds `key` with `value`; panics unless exactly
/// one does.
fn holder(direct: &mut [Direct], key: &str, value: &str) -> usize {
    let held: Vec<usize> = (0..direct.len())
        .filter(|&s| match direct[s].get(key) {
            Some(v) => {
                assert_eq!(v, value, "{key} on server {s}");
                true
            }
            None => false,
        })
        .collect();
    assert_eq!(held.len(), 1, "{key} is held by servers {held:?}");
    held[0]
}

#[test]
#[ignore = "needs libmemcached11; .ci/fleet.sh installs it and runs this test"]
fn stopping_one_server_moves_only_its_keys() {
    let lib = libmemcached::Library::load();
    let mut servers: Vec<ServerHandle> = (0..3).map(|_| start()).collect();
    let ports: Vec<u16> = servers.iter().map(|s| s.local_addr().port()).collect();

    // Three servers: every key through libmemcached, then each key found on exactly one server,
    // the one libmemcached names for it.
    let client = lib.client(&config_string(&ports));
    for i in 0..KEYS {
        client.set(&key(i), &value(i));
    }
    let mut direct: Vec<Direct> = ports.iter().map(|&p| Direct::connect(p)).collect();
    let owner: Vec<usize> = (0..KEYS)
        .map(|i| {
            let s = holder(&mut direct, &key(i), &value(i));
            assert_eq!(client.server_port(&key(i)), ports[s], "{}", key(i));
            s
        })
        .collect();
    let held: Vec<usize> = (0..3)
        .map(|s| owner.iter().filter(|&&o| o == s).count())
        .collect();
    for &n in &held {
        assert!(
            (KEYS / 5..=KEYS / 2).contains(&n),
            "servers hold {held:?} of {KEYS} keys"
        );
    }
    drop(client);
    drop(direct);

    // Stop the second server; the client now lists the two survivors.
    let stopped = 1;
    servers.remove(stopped).shutdown();
    let survivors: Vec<usize> = vec![0, 2];
    let ports_left: Vec<u16> = survivors.iter().map(|&s| ports[s]).collect();
    let client = lib.client(&config_string(&ports_left));

    let mut stayed = 0;
    let mut moved_to = [0usize; 3];
    for (i, &was) in owner.iter().enumerate() {
        let (k, v) = (key(i), value(i));
        let port = client.server_port(&k);
        let now = ports.iter().position(|&p| p == port).expect("a known port");
        if was == stopped {
            // Its server is gone: a miss, routed to a survivor, stored there again.
            assert_eq!(client.get(&k), None, "{k} was on the stopped server");
            client.set(&k, &v);
            moved_to[now] += 1;
        } else {
            // Routing unchanged: the same server, which still has it.
            assert_eq!(now, was, "{k} moved off a surviving server");
            assert_eq!(client.get(&k).as_deref(), Some(v.as_str()), "{k}");
            stayed += 1;
        }
    }
    let moved = KEYS - stayed;
    assert_eq!(moved, held[stopped]);
    assert!(
        (KEYS / 5..=KEYS / 2).contains(&moved),
        "{moved} of {KEYS} keys moved"
    );
    assert_eq!(moved_to[stopped], 0);
    for &s in &survivors {
        assert!(
            moved_to[s] >= moved / 6,
            "the moved keys went {moved_to:?} (by server)"
        );
    }

    // The moved keys are where the client said: each on the one survivor it named.
    let mut direct: Vec<Direct> = ports_left.iter().map(|&p| Direct::connect(p)).collect();
    for i in (0..KEYS).filter(|&i| owner[i] == stopped) {
        let s = survivors[holder(&mut direct, &key(i), &value(i))];
        assert_eq!(client.server_port(&key(i)), ports[s]);
    }
    drop(client);
    drop(direct);
    println!(
        "{KEYS} keys on 3 servers held {held:?}; server {stopped} stopped: {moved} keys moved \
         (all of its keys), {} to server {} and {} to server {}; {stayed} stayed",
        moved_to[survivors[0]], survivors[0], moved_to[survivors[1]], survivors[1],
    );
    for s in servers {
        s.shutdown();
    }
}

/// libmemcached's C API, as much of it as the test uses, from the shared library found at run
/// time.
#[allow(unsafe_code)]
mod libmemcached {
    use std::ffi::{c_char, c_void, CStr, CString};
    use std::ptr::NonNull;

    type ReturnT = u32; // enum memcached_return_t
    const SUCCESS: ReturnT = 0;
    const NOTFOUND: ReturnT = 16;

    /// The library's functions used here.
    pub struct Library {
        memcached: unsafe extern "C" fn(*const c_char, usize) -> *mut c_void,
        free: unsafe extern "C" fn(*mut c_void),
        set: unsafe extern "C" fn(
            *mut c_void,
            *const c_char,
            usize,
            *const c_char,
            usize,
            libc::time_t,
            u32,
        ) -> ReturnT,
        get: unsafe extern "C" fn(
            *mut c_void,
            *const c_char,
            usize,
            *mut usize,
            *mut u32,
            *mut ReturnT,
        ) -> *mut c_char,
        server_by_key:
            unsafe extern "C" fn(*mut c_void, *const c_char, usize, *mut ReturnT) -> *const c_void,
        server_port: unsafe extern "C" fn(*const c_void) -> u16,
        strerror: unsafe extern "C" fn(*const c_void, ReturnT) -> *const c_char,
    }

    /// The address of the function `name` in `handle`, as the function pointer type `F`.
    ///
    /// # Safety
    ///
    /// `F` must be an `unsafe extern "C" fn` type matching the C declaration of `name`.
    unsafe fn symbol<F: Copy>(handle: *mut c_void, name: &CStr) -> F {
        // SAFETY: `handle` came from a successful `dlopen`; `name` is NUL-terminated.
        let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
        assert!(!p.is_null(), "libmemcached has no {name:?}");
        assert_eq!(size_of::<F>(), size_of::<*mut c_void>());
        // SAFETY: `p` is the non-null address of the function, which has the signature `F`
        // (the caller's promise); function pointers and data pointers have one size here.
        unsafe { std::mem::transmute_copy(&p) }
    }

    impl Library {
        /// Loads `libmemcached.so.11`; panics with how to install it when it is not there.
        pub fn load() -> Self {
            // SAFETY: loading a C library runs its initialisers; libmemcached's only set up
            // its own state.
            let handle = unsafe { libc::dlopen(c"libmemcached.so.11".as_ptr(), libc::RTLD_NOW) };
            assert!(
                !handle.is_null(),
                "libmemcached.so.11 not found: `apt-get install libmemcached11`, or run \
                 .ci/fleet.sh, which does"
            );
            // SAFETY: each type below is the C declaration of its function in libmemcached
            // 1.x's headers (memcached.h, storage.h, get.h, server.h, strerror.h), with
            // `memcached_st`, `memcached_instance_st` opaque, `size_t` as usize, `in_port_t`
            // as u16 and `memcached_return_t` as a C enum (u32).
            unsafe {
                Library {
                    memcached: symbol(handle, c"memcached"),
                    free: symbol(handle, c"memcached_free"),
                    set: symbol(handle, c"memcached_set"),
                    get: symbol(handle, c"memcached_get"),
                    server_by_key: symbol(handle, c"memcached_server_by_key"),
                    server_port: symbol(handle, c"memcached_server_port"),
                    strerror: symbol(handle, c"memcached_strerror"),
                }
            }
            // The handle is never closed: the functions stay valid for the whole run.
        }

        /// A client made from a libmemcached configuration string (`--SERVER=…`).
        pub fn client(&self, config: &str) -> Client<'_> {
            let c = CString::new(config).unwrap();
            // SAFETY: `c` is a NUL-terminated string of the given length.
            let memc = unsafe { (self.memcached)(c.as_ptr(), config.len()) };
            let memc = NonNull::new(memc)
                .unwrap_or_else(|| panic!("libmemcached refused the configuration {config:?}"));
            Client { lib: self, memc }
        }
    }

    /// A `memcached_st`, freed on drop.
    pub struct Client<'a> {
        lib: &'a Library,
        memc: NonNull<c_void>,
    }

    impl Client<'_> {
        fn check(&self, rc: ReturnT, what: &str) {
            if rc != SUCCESS {
                // SAFETY: `memc` is live; the message is a static NUL-terminated string.
                let msg = unsafe { CStr::from_ptr((self.lib.strerror)(self.memc.as_ptr(), rc)) };
                panic!("{what}: {msg:?}");
            }
        }

        pub fn set(&self, key: &str, value: &str) {
            // SAFETY: `memc` is live; key and value are valid for their lengths.
            let rc = unsafe {
                (self.lib.set)(
                    self.memc.as_ptr(),
                    key.as_ptr().cast(),
                    key.len(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                    0,
                )
            };
            self.check(rc, &format!("set {key}"));
        }

        pub fn get(&self, key: &str) -> Option<String> {
            let (mut len, mut flags, mut rc) = (0usize, 0u32, SUCCESS);
            // SAFETY: `memc` is live; the key is valid for its length; the out-pointers are
            // to locals.
            let p = unsafe {
                (self.lib.get)(
                    self.memc.as_ptr(),
                    key.as_ptr().cast(),
                    key.len(),
                    &mut len,
                    &mut flags,
                    &mut rc,
                )
            };
            if p.is_null() {
                if rc == NOTFOUND {
                    return None;
                }
                self.check(rc, &format!("get {key}"));
                return Some(String::new()); // an empty value
            }
            // SAFETY: libmemcached returned `len` bytes at `p`.
            let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }.to_vec();
            // SAFETY: `p` was allocated with malloc (libmemcached's default allocator) for the
            // caller to free, and is freed once.
            unsafe { libc::free(p.cast()) };
            Some(String::from_utf8(bytes).unwrap())
        }

        /// The port of the server libmemcached routes `key` to.
        pub fn server_port(&self, key: &str) -> u16 {
            let mut rc = SUCCESS;
            // SAFETY: `memc` is live; the key is valid for its length.
            let server = unsafe {
                (self.lib.server_by_key)(
                    self.memc.as_ptr(),
                    key.as_ptr().cast(),
                    key.len(),
                    &mut rc,
                )
            };
            self.check(rc, &format!("server for {key}"));
            assert!(!server.is_null());
            // SAFETY: `server` points into `memc`'s server list, which is live.
            unsafe { (self.lib.server_port)(server) }
        }
    }

    impl Drop for Client<'_> {
        fn drop(&mut self) {
            // SAFETY: `memc` came from `memcached()` and is freed once, here.
            unsafe { (self.lib.free)(self.memc.as_ptr()) };
        }
    }
}
