//! A small tokio server that answers each request line with a header formatted into a
//! `WriteBuffer` and a pinned `Bytes` body: one vectored write per response, the body never
//! copied, partial writes and `Pending` handled by `flush_to`.
//!
//! Protocol: the client sends `GET <key>\n`; the server answers `VALUE <key> <len>\r\n`, the
//! value's bytes and `\r\nEND\r\n`, or `NOT_FOUND\r\n`.
//!
//! Run with `cargo run --example tokio_server --features tokio,bytes`: it starts the server on
//! 127.0.0.1 (any free port), connects a client of its own, does a few round trips, prints
//! them and exits.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use sendbuf::WriteBuffer;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

type Store = Arc<HashMap<String, Bytes>>;

/// Serves one connection until the client closes it.
async fn serve(stream: TcpStream, store: Store) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut lines = BufReader::new(rd).lines();
    let mut buf = WriteBuffer::new();
    while let Some(line) = lines.next_line().await? {
        let key = line.strip_prefix("GET ").unwrap_or("").trim();
        match store.get(key) {
            Some(value) => {
                let mut f = buf.format();
                write!(f, "VALUE {key} {}\r\n", value.len())?;
                f.commit();
                // A clone of a `Bytes` is a reference count: the body is sent from the store's
                // memory and released when its last byte has been written.
                buf.pin(value.clone());
                buf.put_slice(b"\r\nEND\r\n");
            }
            None => buf.put_slice(b"NOT_FOUND\r\n"),
        }
        buf.flush_to(&mut wr).await?;
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
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
    for key in ["small", "page", "missing", "blob", "small"] {
        wr.write_all(format!("GET {key}\n").as_bytes()).await?;
        let mut header = String::new();
        rd.read_line(&mut header).await?;
        print!("client: GET {key:<8} -> {}", header);
        if let Some(len) = header.strip_prefix("VALUE ") {
            let len: usize = len.split_whitespace().nth(1).unwrap().parse().unwrap();
            let mut body = vec![0u8; len + 7];
            rd.read_exact(&mut body).await?;
            assert_eq!(&body[..len], &store[key][..], "body of {key}");
            assert_eq!(&body[len..], b"\r\nEND\r\n");
            println!("client:   {len} body bytes, as stored");
        }
    }
    drop(wr); // the server sees end of input and returns
    server.await.expect("server task panicked")?;
    println!("done: 5 round trips");
    Ok(())
}
