//! Split-read tests of the HTTP/1 reader: every message, cut at every byte
//! boundary (and fed one byte per read), must give exactly the outcome of
//! reading it whole — same heads, same bodies, same leftovers, same errors.
//! A parser whose verdict depends on how TCP happened to segment the bytes
//! is a smuggling vector.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use super::body::{copy_payload, BodyError, Inbound, ReadHeadError};
use crate::wire::head::{self, Framing, MAX_HEADERS};

/// Yields the input in the given pieces, one per read.
struct Scripted {
    pieces: Vec<Vec<u8>>,
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pieces.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let piece = self.pieces.remove(0);
        let n = piece.len().min(buf.remaining());
        buf.put_slice(&piece[..n]);
        if n < piece.len() {
            self.pieces.insert(0, piece[n..].to_vec());
        }
        Poll::Ready(Ok(()))
    }
}

/// What reading a stream of pipelined requests produced, message by message.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Head {
        method: String,
        target: String,
        framing: Framing,
        keep_alive: bool,
    },
    Body(Vec<u8>),
    Refused(String),
    End,
}

async fn read_all(mut pieces: Vec<Vec<u8>>) -> Vec<Event> {
    // An empty read means end of stream; a cut at either end is no cut.
    pieces.retain(|p| !p.is_empty());
    let mut src = Inbound::new(Scripted { pieces });
    let mut events = Vec::new();
    loop {
        let n = match src.read_head(4096).await {
            Ok(Some(n)) => n,
            Ok(None) => {
                events.push(Event::End);
                return events;
            }
            Err(ReadHeadError::Head(e)) => {
                events.push(Event::Refused(e.to_string()));
                return events;
            }
            Err(ReadHeadError::Io(e)) => {
                events.push(Event::Refused(format!("io: {}", e.kind())));
                return events;
            }
        };
        let framing = {
            let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match head::parse_request(&src.buf[..n], &mut storage) {
                Ok(h) => {
                    events.push(Event::Head {
                        method: h.method.to_owned(),
                        target: h.target.to_owned(),
                        framing: h.framing,
                        keep_alive: h.keep_alive,
                    });
                    h.framing
                }
                Err(e) => {
                    events.push(Event::Refused(e.to_string()));
                    return events;
                }
            }
        };
        bytes::Buf::advance(&mut src.buf, n);
        let mut body = Vec::new();
        match copy_payload(&mut src, &mut body, framing, Some(100_000)).await {
            Ok(_) => events.push(Event::Body(body)),
            Err(BodyError::Malformed(why)) => {
                events.push(Event::Refused(why.to_owned()));
                return events;
            }
            Err(e) => {
                events.push(Event::Refused(format!("{e:?}")));
                return events;
            }
        }
    }
}

fn run(f: impl std::future::Future<Output = Vec<Event>>) -> Vec<Event> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Valid messages: the whole stream must be read the same however split.
const VALID: &[&[u8]] = &[
    b"GET /foo HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"\r\nGET /foo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"PUT /bar HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-Bar: bar\r\n\r\nhello",
    b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\nGET /d HTTP/1.1\r\nHost: a\r\n\r\n",
];

/// Invalid ones: the verdict (and where it falls) must not depend on splits.
const INVALID: &[&[u8]] = &[
    b"GET /foo HTTP/1.1\nHost: a\r\n\r\n",
    b"GET /foo HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
    b"GET /foo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
    b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nshort",
];

fn check_every_split(msg: &[u8]) -> Vec<Event> {
    let whole = run(read_all(vec![msg.to_vec()]));
    for cut in 0..=msg.len() {
        let split = run(read_all(vec![msg[..cut].to_vec(), msg[cut..].to_vec()]));
        assert_eq!(
            split,
            whole,
            "split at byte {cut} of {:?}",
            String::from_utf8_lossy(msg)
        );
    }
    let bytewise = run(read_all(msg.iter().map(|&b| vec![b]).collect()));
    assert_eq!(
        bytewise,
        whole,
        "one byte per read: {:?}",
        String::from_utf8_lossy(msg)
    );
    whole
}

#[test]
fn valid_messages_read_the_same_at_every_split() {
    for msg in VALID {
        let events = check_every_split(msg);
        assert_eq!(
            events.last(),
            Some(&Event::End),
            "{:?} is read to its end: {events:?}",
            String::from_utf8_lossy(msg)
        );
        assert!(!events.iter().any(|e| matches!(e, Event::Refused(_))));
    }
}

#[test]
fn invalid_messages_are_refused_at_every_split() {
    for msg in INVALID {
        let events = check_every_split(msg);
        assert!(
            matches!(events.last(), Some(Event::Refused(_))),
            "{:?} must be refused: {events:?}",
            String::from_utf8_lossy(msg)
        );
    }
}

#[test]
fn pipelined_bodies_keep_their_boundaries() {
    let events = check_every_split(VALID[5]);
    let heads: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Head { target, .. } => Some(target.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(heads, ["/a", "/b", "/c"]);
    assert!(events.contains(&Event::Body(b"abc".to_vec())));
    let chunked = check_every_split(VALID[4]);
    // The payload, decoded (extensions and trailers dropped).
    assert!(chunked.contains(&Event::Body(b"hello0123456789abcdef".to_vec())));
}

/// Responses from upstreams, read as the proxy does: head, then the body
/// per the parsed framing (read-until-close included).
async fn read_response(pieces: Vec<Vec<u8>>, head_request: bool) -> Vec<String> {
    let mut pieces = pieces;
    pieces.retain(|p| !p.is_empty());
    let mut src = Inbound::new(Scripted { pieces });
    let mut events = Vec::new();
    loop {
        let n = match src.read_head(64 * 1024).await {
            Ok(Some(n)) => n,
            Ok(None) => {
                events.push("end".to_owned());
                return events;
            }
            Err(e) => {
                events.push(format!("refused: {e:?}"));
                return events;
            }
        };
        let framing = {
            let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match head::parse_response(&src.buf[..n], &mut storage, head_request) {
                Ok(r) => {
                    events.push(format!("{} {:?} close={}", r.code, r.framing, r.close));
                    r.framing
                }
                Err(e) => {
                    events.push(format!("refused: {e}"));
                    return events;
                }
            }
        };
        bytes::Buf::advance(&mut src.buf, n);
        let mut body = Vec::new();
        match copy_payload(&mut src, &mut body, framing, None).await {
            Ok(_) => events.push(String::from_utf8_lossy(&body).into_owned()),
            Err(e) => {
                events.push(format!("body refused: {e:?}"));
                return events;
            }
        }
    }
}

#[test]
fn responses_read_the_same_at_every_split() {
    // (bytes, a HEAD request, read cleanly to the end)
    let cases: &[(&[u8], bool, bool)] = &[
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 204 No Content\r\n\r\n", false, true),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", false, true),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, true),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", false, true),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", false, false),
        (b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", false, false),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false, false),
    ];
    for &(msg, head_request, clean) in cases {
        let whole = run_strings(read_response(vec![msg.to_vec()], head_request));
        assert_eq!(
            whole.last().map(String::as_str) == Some("end"),
            clean,
            "{:?}: {whole:?}",
            String::from_utf8_lossy(msg)
        );
        for cut in 0..=msg.len() {
            let split = run_strings(read_response(
                vec![msg[..cut].to_vec(), msg[cut..].to_vec()],
                head_request,
            ));
            assert_eq!(
                split,
                whole,
                "split at {cut} of {:?}",
                String::from_utf8_lossy(msg)
            );
        }
        let bytewise = run_strings(read_response(
            msg.iter().map(|&b| vec![b]).collect(),
            head_request,
        ));
        assert_eq!(bytewise, whole, "{:?}", String::from_utf8_lossy(msg));
    }
}

fn run_strings(f: impl std::future::Future<Output = Vec<String>>) -> Vec<String> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}
