//! The two helper modes for `benches/vs_memcached.sh`: `--stream-ceiling` and `--idle-conns`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use crate::args::Args;
use crate::buf::{AlignedBuf, RECV_BUF};
use crate::protocol::{
    key, put_header, HEADER, KEY_LEN, OP_GET, OP_SET, RES_MAGIC, SET_EXTRAS, STATUS_KEY_NOT_FOUND,
    STATUS_OK,
};
use crate::tls;

// ---------------------------------------------------------------------------------------------
// --stream-ceiling

pub(crate) fn stream_ceiling(args: &Args) -> io::Result<ExitCode> {
    let chunk = args.chunk;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let start = Instant::now();
    let count_from = start + Duration::from_secs_f64(args.warmup);
    let stop = count_from + Duration::from_secs_f64(args.duration);
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..args.streams {
        let mut tx = TcpStream::connect(addr)?;
        let (mut rx, _) = listener.accept()?;
        senders.push(thread::spawn(move || -> io::Result<()> {
            let mut src = AlignedBuf::new(chunk);
            src.as_mut().fill(0x5a);
            let src = src.as_mut();
            while Instant::now() < stop {
                tx.write_all(src)?;
            }
            tx.shutdown(Shutdown::Write)
        }));
        receivers.push(thread::spawn(move || -> io::Result<u64> {
            let mut buf = AlignedBuf::new(RECV_BUF);
            let buf = buf.as_mut();
            let mut counted = 0u64;
            loop {
                match rx.read(buf) {
                    Ok(0) => return Ok(counted),
                    Ok(n) => {
                        let now = Instant::now();
                        if now >= count_from && now < stop {
                            counted += n as u64;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }));
    }
    let mut bytes = 0;
    for r in receivers {
        bytes += r
            .join()
            .map_err(|_| io::Error::other("receiver panicked"))??;
    }
    for s in senders {
        s.join()
            .map_err(|_| io::Error::other("sender panicked"))??;
    }
    let gbps = bytes as f64 / args.duration / 1e9;
    println!(
        "stream_gbps={gbps:.2} streams={} secs={}",
        args.streams, args.duration
    );
    println!(
        "loadgen: loopback TCP ceiling {gbps:.2} GB/s with {} stream(s) of {} KiB writes into \
         page-aligned receivers",
        args.streams,
        args.chunk >> 10
    );
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// --idle-conns

/// Reads one binary response from a blocking stream; returns (status, value length).
fn read_response(s: &mut impl Read, buf: &mut [u8]) -> io::Result<(u16, usize)> {
    let mut h = [0u8; HEADER];
    s.read_exact(&mut h)?;
    if h[0] != RES_MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad magic"));
    }
    let key_len = u16::from_be_bytes([h[2], h[3]]) as usize;
    let extras = h[4] as usize;
    let status = u16::from_be_bytes([h[6], h[7]]);
    let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
    if body < key_len + extras {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "short body"));
    }
    let mut left = body;
    while left > 0 {
        let n = left.min(buf.len());
        s.read_exact(&mut buf[..n])?;
        left -= n;
    }
    Ok((status, body - key_len - extras))
}

pub(crate) fn idle_conns(args: &Args) -> io::Result<ExitCode> {
    let connect = || -> io::Result<TcpStream> {
        let s = TcpStream::connect(args.server)?;
        s.set_nodelay(true)?;
        Ok(s)
    };
    if args.tls {
        let config = tls::client_config()?;
        idle_with(args, || tls::blocking(&config, connect()?))
    } else {
        idle_with(args, connect)
    }
}

/// `--idle-conns` over the streams `connect` opens (plain TCP or TLS, blocking).
fn idle_with<S: Read + Write>(
    args: &Args,
    mut connect: impl FnMut() -> io::Result<S>,
) -> io::Result<ExitCode> {
    let mut value = vec![0u8; args.value_size];
    value.fill(b'v');
    let k = key(0);
    let mut buf = AlignedBuf::new(RECV_BUF);
    let buf = buf.as_mut();
    if args.populate {
        let mut s = connect()?;
        let mut req = Vec::new();
        put_header(
            &mut req,
            OP_SET,
            SET_EXTRAS,
            SET_EXTRAS + KEY_LEN + value.len(),
            0,
        );
        req.extend_from_slice(&[0u8; SET_EXTRAS]);
        req.extend_from_slice(&k);
        req.extend_from_slice(&value);
        s.write_all(&req)?;
        s.flush()?;
        let (status, _) = read_response(&mut s, buf)?;
        if status != STATUS_OK {
            eprintln!("loadgen: populate SET failed with status {status:#06x}");
            return Ok(ExitCode::from(1));
        }
    }
    let mut get = Vec::new();
    put_header(&mut get, OP_GET, 0, KEY_LEN, 0);
    get.extend_from_slice(&k);
    let mut held = Vec::with_capacity(args.idle_conns);
    let (mut misses, mut errors) = (0u64, 0u64);
    for _ in 0..args.idle_conns {
        let mut s = connect()?;
        s.write_all(&get)?;
        s.flush()?;
        match read_response(&mut s, buf) {
            Ok((STATUS_OK, len)) if len == args.value_size => {}
            Ok((STATUS_KEY_NOT_FOUND, _)) => misses += 1,
            _ => errors += 1,
        }
        held.push(s);
    }
    println!(
        "idle_ready conns={} misses={misses} errors={errors}",
        held.len()
    );
    io::stdout().flush()?;
    thread::sleep(Duration::from_secs_f64(args.hold));
    drop(held);
    Ok(if errors > 0 || misses > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
