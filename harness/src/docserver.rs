//! A small HTTP server for tests that serves documents by path (GET only),
//! changeable while it runs: the Redfish service of a cooling unit, a
//! status page. Answers what it was given, even an invalid body, as a
//! misbehaving device would.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::HarnessError;

type Docs = Arc<Mutex<BTreeMap<String, (u16, String)>>>;

/// A running document server on 127.0.0.1; stops when dropped.
#[derive(Debug)]
pub struct DocServer {
    addr: std::net::SocketAddr,
    docs: Docs,
    requests: Arc<AtomicU64>,
    /// Every answer waits this long (milliseconds): a slow device.
    delay_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl DocServer {
    pub fn start() -> Result<DocServer, HarnessError> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| HarnessError::io("bind doc server", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| HarnessError::io("doc server address", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| HarnessError::io("doc server nonblocking", e))?;
        let docs: Docs = Arc::default();
        let requests = Arc::new(AtomicU64::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (docs, requests, delay_ms, stop) = (
                Arc::clone(&docs),
                Arc::clone(&requests),
                Arc::clone(&delay_ms),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (docs, requests, delay_ms) = (
                                Arc::clone(&docs),
                                Arc::clone(&requests),
                                Arc::clone(&delay_ms),
                            );
                            std::thread::spawn(move || serve(stream, &docs, &requests, &delay_ms));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        Ok(DocServer {
            addr,
            docs,
            requests,
            delay_ms,
            stop,
        })
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Serves `body` with `status` at `path` from now on.
    pub fn set(&self, path: &str, status: u16, body: impl Into<String>) {
        if let Ok(mut d) = self.docs.lock() {
            d.insert(path.to_owned(), (status, body.into()));
        }
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for DocServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(stream: TcpStream, docs: &Docs, requests: &AtomicU64, delay_ms: &AtomicU64) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(read) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // Headers until the blank line; GET has no body.
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => break,
            Ok(_) if h == "\r\n" || h == "\n" => break,
            Ok(_) => {}
        }
    }
    requests.fetch_add(1, Ordering::Relaxed);
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (status, body) = docs
        .lock()
        .ok()
        .and_then(|d| d.get(&path).cloned())
        .unwrap_or((404, "{\"error\":\"not found\"}".to_owned()));
    let delay = delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        std::thread::sleep(Duration::from_millis(delay));
    }
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
