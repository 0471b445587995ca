//! The server out of file descriptors: a connection it cannot take is still answered.
//!
//! In a file of its own because it lowers the process's descriptor limit and uses up the
//! descriptors under it, which would break any test running beside it.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::Duration;

use memcached_server::config::Config;
use memcached_server::server;

/// Sets the soft limit on open descriptors; returns the old one.
fn set_fd_limit(soft: libc::rlim_t) -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    let old = limit.rlim_cur;
    limit.rlim_cur = soft.min(limit.rlim_max);
    // SAFETY: `limit` is a valid rlimit; lowering the soft limit needs no privilege.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    old
}

#[test]
#[cfg_attr(miri, ignore)] // sockets and rlimits
fn a_connection_accepted_without_descriptors_is_told_and_closed() {
    let server = server::start(Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        threads: 1,
        ..Config::default()
    })
    .expect("server starts");
    let old = set_fd_limit(512);
    // Use up every descriptor but one, which the client's socket takes.
    let mut fillers = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => fillers.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("opening /dev/null: {e}"),
        }
    }
    fillers.pop();
    let mut client = TcpStream::connect(server.local_addr()).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reply = Vec::new();
    let read = client.read_to_end(&mut reply);
    assert!(
        read.is_ok()
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
        "{read:?}"
    );
    assert_eq!(reply, server::TOO_MANY_CONNECTIONS);
    let stats = server.stats();
    assert_eq!(stats.rejected_connections.load(Ordering::Relaxed), 1);
    // Answered without a pause in accepting.
    assert!(stats.accepting_conns.load(Ordering::Relaxed));
    assert_eq!(stats.listen_disabled_num.load(Ordering::Relaxed), 0);
    // Descriptors back: served again.
    drop((fillers, client));
    set_fd_limit(old);
    let mut again = TcpStream::connect(server.local_addr()).expect("connect");
    again
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    again.write_all(b"version\r\n").unwrap();
    let mut line = [0u8; 8];
    again.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"VERSION ");
    drop(again);
    server.shutdown();
}
