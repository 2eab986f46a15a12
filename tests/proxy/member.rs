//! Test-made upstream servers for the pool and retry tests: each records
//! every request it read (method and target, in order) and answers as its
//! behaviour says, so a test asserts what a member actually received.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::lab::Lab;

/// What a member does with one request it has read.
pub enum Reply {
    /// This status, with the member's name as body; the connection stays open.
    Status(u16),
    /// Close the connection without answering.
    Close,
}

/// The requests a member read, as `"METHOD target"`.
#[derive(Clone, Default)]
pub struct Received(Arc<Mutex<Vec<String>>>);

impl Received {
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    /// How many requests started with `prefix` (e.g. `"POST "`).
    pub fn count(&self, prefix: &str) -> usize {
        self.all().iter().filter(|r| r.starts_with(prefix)).count()
    }
}

/// Starts a member on the upstream namespace's `port`; `behave` decides
/// the reply from the method and target.
pub fn spawn(
    lab: &Lab,
    port: u16,
    name: &'static str,
    behave: fn(&str, &str) -> Reply,
) -> Received {
    let listener = lab.listen_upstream(port);
    let received = Received::default();
    let rec = received.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let rec = rec.clone();
            std::thread::spawn(move || serve(conn, name, behave, &rec));
        }
    });
    received
}

fn serve(mut s: TcpStream, name: &str, behave: fn(&str, &str) -> Reply, rec: &Received) {
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // One request head (and a Content-Length body, if any).
        let (method, target, used) = loop {
            let mut storage = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut storage);
            if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                let len: usize = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= n + len {
                    break (
                        req.method.unwrap_or_default().to_owned(),
                        req.path.unwrap_or_default().to_owned(),
                        n + len,
                    );
                }
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        buf.drain(..used);
        rec.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{method} {target}"));
        match behave(&method, &target) {
            Reply::Close => return,
            Reply::Status(code) => {
                let body = if method == "HEAD" { "" } else { name };
                let head = format!(
                    "HTTP/1.1 {code} X\r\ncontent-length: {}\r\n\r\n{body}",
                    name.len()
                );
                if s.write_all(head.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}
