//! The HTTP server itself under hostile clients, on a real socket: a client
//! that trickles its headers is cut off, idle keep-alive connections end, and
//! connections past the cap are closed on arrival.

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{TestDatabase, test_settings};
use tessera::app::Application;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Serves an application with `overrides` on a free port until the token is cancelled.
async fn serve(overrides: &[(&str, &str)]) -> (SocketAddr, CancellationToken, TestDatabase) {
    let database = TestDatabase::migrated().await;
    let application = Application::build(test_settings(&database.url, overrides), &database.url)
        .expect("the application builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(application.serve(listener, shutdown.clone()));
    (address, shutdown, database)
}

/// Reads until the server closes the connection; returns what it sent and when it closed.
async fn read_until_closed(
    stream: &mut TcpStream,
    patience: Duration,
) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while started.elapsed() < patience {
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&received).into_owned(),
                    Some(started.elapsed()),
                );
            }
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
            Err(_) => {}
        }
    }
    (String::from_utf8_lossy(&received).into_owned(), None)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_trickling_its_headers_is_cut_off() {
    let (address, shutdown, _database) = serve(&[
        ("HEADER_READ_TIMEOUT_MS", "500"),
        ("WORKER_CONCURRENCY", "0"),
    ])
    .await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    let started = Instant::now();
    // One header byte every 150 ms, for up to 5 s: the server must not wait that long.
    let request =
        b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut_off = false;
    for byte in request {
        if stream.write_all(&[*byte]).await.is_err() {
            cut_off = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await
        {
            cut_off = true;
            break;
        }
    }
    assert!(
        cut_off,
        "the connection was still open after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cut off after {:?}",
        started.elapsed()
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_ends_and_a_full_request_is_served() {
    let (address, shutdown, _database) = serve(&[
        ("HEADER_READ_TIMEOUT_MS", "500"),
        ("WORKER_CONCURRENCY", "0"),
    ])
    .await;
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (received, closed) = read_until_closed(&mut stream, Duration::from_secs(4)).await;
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    let closed = closed.expect("the idle keep-alive connection was closed");
    assert!(closed < Duration::from_secs(3), "closed after {closed:?}");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_cap_are_closed_on_arrival() {
    let (address, shutdown, _database) = serve(&[
        ("HEADER_READ_TIMEOUT_MS", "3000"),
        ("MAX_CONNECTIONS", "2"),
        ("WORKER_CONCURRENCY", "0"),
    ])
    .await;
    let _first = TcpStream::connect(address).await.unwrap();
    let _second = TcpStream::connect(address).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(address).await.unwrap();
    let _ = third
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let (received, closed) = read_until_closed(&mut third, Duration::from_secs(2)).await;
    assert!(
        received.is_empty(),
        "the third connection was served: {received}"
    );
    assert!(closed.is_some(), "the third connection was left open");
    // Once the held connections go, a new one is served.
    drop(_first);
    drop(_second);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = TcpStream::connect(address).await.unwrap();
    fourth
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (received, _) = read_until_closed(&mut fourth, Duration::from_secs(3)).await;
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    shutdown.cancel();
}
