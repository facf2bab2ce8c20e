//! API calls: async HTTP requests, each under a 30 s timeout.
//!
//!     cargo run --example api_calls
//!
//! Starts a small HTTP server on 127.0.0.1 (a free port) with a fast endpoint
//! and a slow one that stalls, then calls both under `timeout_async!`. Time is
//! scaled down 100x: the 30 s timeout is 300 ms and the stall 5 s. Runs on
//! smol, a different executor from the other examples; nothing changes in the
//! macro.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_timer::Delay;
use opguard::{timeout_async, timeouts};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};

/// A 30 s network timeout, scaled down 100x.
const API_TIMEOUT: Duration = Duration::from_millis(30_000 / 100);
/// How long the slow endpoint stalls before answering.
const STALL: Duration = Duration::from_secs(5);

/// Serves `GET /price` at once and `GET /slow` after `STALL`.
async fn serve(listener: TcpListener) -> io::Result<()> {
    loop {
        let (mut conn, _) = listener.accept().await?;
        smol::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = conn.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let body = if request.starts_with("GET /slow ") {
                Delay::new(STALL).await;
                "{\"price\": 0}"
            } else {
                "{\"price\": 101.25}"
            };
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(response.as_bytes()).await;
        })
        .detach();
    }
}

/// A minimal HTTP GET over TCP: returns the response body.
async fn get(addr: SocketAddr, path: &str) -> io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    match response.split_once("\r\n\r\n") {
        Some((_, body)) => Ok(body.to_owned()),
        None => Err(io::Error::new(io::ErrorKind::InvalidData, "no HTTP body")),
    }
}

// The item form: every call of `fetch_price` is bounded.
timeout_async! {
    #[timeout(label = "fetch_price", API_TIMEOUT)]
    async fn fetch_price(addr: SocketAddr, path: &str) -> io::Result<String> {
        get(addr, path).await
    }
}

fn main() -> io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    smol::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = smol::spawn(serve(listener));
        println!("server on http://{addr}");

        for path in ["/price", "/slow", "/price"] {
            let start = Instant::now();
            // `?` on the outer Result turns a timeout into io::ErrorKind::TimedOut.
            let out: io::Result<String> =
                timeout_async!(label = "api_get", API_TIMEOUT, get(addr, path))
                    .await
                    .map_err(io::Error::from)
                    .and_then(|inner| inner);
            match out {
                Ok(body) => println!("GET {path:<7} -> {body} in {:?}", start.elapsed()),
                Err(e) => println!(
                    "GET {path:<7} -> {:?}: {e} in {:?}",
                    e.kind(),
                    start.elapsed()
                ),
            }
        }

        match fetch_price(addr, "/slow").await {
            Ok(body) => println!("fetch_price(/slow) -> {body:?}"),
            Err(e) => println!("fetch_price(/slow) -> gave up: {e}"),
        }
        println!(
            "fetch_price(/price) -> {:?}",
            fetch_price(addr, "/price").await
        );

        drop(server); // cancels the server task
        let s = timeouts::stats();
        println!(
            "\ntimeouts: api_get {}, fetch_price {}",
            s.timeouts_labelled("api_get"),
            s.timeouts_labelled("fetch_price")
        );
        Ok(())
    })
}
