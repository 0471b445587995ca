//! A small tokio server used the way the crate is meant to be used: read what has arrived into
//! a `ReadBuffer`, answer every complete request in it into one `WriteBuffer` (headers
//! formatted into scratch, bodies pinned as `Bytes`, never copied), then flush once. A client
//! that pipelines requests gets all their responses from one vectored write per read, with
//! partial writes and `Pending` handled by `flush_to`.
//!
//! Protocol: the client sends `GET <key>\n`; the server answers `VALUE <key> <len>\r\n`, the
//! value's bytes and `\r\nEND\r\n`, or `NOT_FOUND\r\n`.
//!
//! Run with `cargo run --example tokio_server --features tokio,bytes`: it starts the server on
//! 127.0.0.1 (any free port), connects a client of its own that sends two pipelined batches of
//! requests (each in one write), checks every response, prints them and exits.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use sendbuf::{ReadBuffer, WriteBuffer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

type Store = Arc<HashMap<String, Bytes>>;

/// What one connection did: reads, requests answered, flushes.
#[derive(Debug, Default)]
struct Served {
    reads: usize,
    requests: usize,
    flushes: usize,
}

/// Serves one connection until the client closes it.
async fn serve(stream: TcpStream, store: Store) -> io::Result<Served> {
    let (mut rd, mut wr) = stream.into_split();
    // Bounded: a client that sends 1 MiB without a newline gets an error, not a bigger buffer.
    let mut input = ReadBuffer::new();
    let mut out = WriteBuffer::new();
    let mut served = Served::default();
    while input.read_from_async(&mut rd).await? > 0 {
        served.reads += 1;
        // Every complete request that has arrived; an incomplete one stays for the next read.
        while let Some(end) = input.data().iter().position(|&b| b == b'\n') {
            respond(&store, &input.data()[..end], &mut out);
            input.consume(end + 1);
            served.requests += 1;
        }
        // One flush for the whole batch: its headers share scratch, its bodies are iovecs.
        if out.has_pending() {
            out.flush_to(&mut wr).await?;
            served.flushes += 1;
        }
    }
    Ok(served)
}

/// Queues the response to one request line (without its `\n`).
fn respond(store: &Store, line: &[u8], out: &mut WriteBuffer) {
    let key = line
        .strip_prefix(b"GET ")
        .and_then(|k| std::str::from_utf8(k).ok())
        .map_or("", str::trim);
    match store.get(key) {
        Some(value) => {
            let mut f = out.format();
            f.put_slice(b"VALUE ");
            f.put_slice(key.as_bytes());
            f.put_u8(b' ');
            f.put_decimal(value.len());
            f.put_slice(b"\r\n");
            f.commit();
            // A clone of a `Bytes` is a reference count: the body is sent from the store's
            // memory and released when its last byte has been written.
            out.pin(value.clone());
            out.put_slice(b"\r\nEND\r\n");
        }
        None => out.put_slice(b"NOT_FOUND\r\n"),
    }
}

/// Sends `keys` as one pipelined write, then reads and checks the response to each in order.
async fn pipeline<R, W>(
    rd: &mut BufReader<R>,
    wr: &mut W,
    store: &Store,
    keys: &[&str],
) -> io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let batch: String = keys.iter().map(|key| format!("GET {key}\n")).collect();
    wr.write_all(batch.as_bytes()).await?;
    println!("client: {} requests in one write", keys.len());
    for key in keys {
        let mut header = String::new();
        rd.read_line(&mut header).await?;
        print!("client:   GET {key:<8} -> {header}");
        match store.get(*key) {
            Some(value) => {
                assert_eq!(header, format!("VALUE {key} {}\r\n", value.len()));
                let mut body = vec![0u8; value.len() + 7];
                rd.read_exact(&mut body).await?;
                assert_eq!(&body[..value.len()], &value[..], "body of {key}");
                assert_eq!(&body[value.len()..], b"\r\nEND\r\n");
                println!("client:     {} body bytes, as stored", value.len());
            }
            None => assert_eq!(header, "NOT_FOUND\r\n"),
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let store: Store = Arc::new(HashMap::from([
        ("small".to_string(), Bytes::from_static(b"hello")),
        ("page".to_string(), Bytes::from(vec![b'p'; 64 * 1024])),
        ("blob".to_string(), Bytes::from(vec![b'b'; 4 << 20])),
    ]));

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("server listening on {addr}");
    let server_store = store.clone();
    let server = tokio::spawn(async move {
        let (stream, peer) = listener.accept().await?;
        println!("server: connection from {peer}");
        serve(stream, server_store).await
    });

    let (rd, mut wr) = TcpStream::connect(addr).await?.into_split();
    let mut rd = BufReader::new(rd);
    let batches: [&[&str]; 2] = [
        &["small", "page", "missing", "blob", "small"],
        &["missing", "small", "small", "page"],
    ];
    for keys in batches {
        pipeline(&mut rd, &mut wr, &store, keys).await?;
    }
    drop(wr); // the server sees end of input and returns
    let served = server.await.expect("server task panicked")?;
    let sent: usize = batches.iter().map(|keys| keys.len()).sum();
    assert_eq!(served.requests, sent, "every request answered");
    println!(
        "done: {} requests answered from {} reads with {} flushes",
        served.requests, served.reads, served.flushes
    );
    Ok(())
}
