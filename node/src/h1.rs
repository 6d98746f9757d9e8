//! A minimal HTTP/1.1 client connection for load: the request serialized once, written whole,
//! the answer parsed in place with httparse (as wrk does with its pre-built request and
//! http_parser). It reads exactly one response per request, with a `Content-Length` body, a
//! chunked body, no body (`HEAD`, 1xx, 204, 304), or a body to the end of the connection.
//! Anything else it cannot frame ends the connection with an error; it never guesses.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Response headers beyond this many are an error.
const HEADERS_MAX: usize = 64;
/// A response head (status line and headers) beyond this many bytes is an error.
const HEAD_BYTES_MAX: usize = 64 * 1024;
/// Read this much at a time.
const READ_CHUNK: usize = 16 * 1024;

/// How an exchange went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum H1Error {
    /// The connection broke or closed early.
    Io,
    /// The answer was not HTTP/1.1 we can frame.
    Malformed,
}

/// The request, serialized.
pub fn serialize(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(String, String)],
    body: &[u8],
    head_request: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + body.len());
    out.extend_from_slice(format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n").as_bytes());
    for (name, value) in headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !body.is_empty() || !(head_request || method == "GET" || method == "DELETE" || method == "OPTIONS") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// One keep-alive connection over `S` (TCP, or TLS over TCP).
pub struct H1Conn<S> {
    stream: S,
    /// Bytes read and not yet consumed, from `start`.
    buf: Vec<u8>,
    start: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> H1Conn<S> {
    /// Wraps a connected stream.
    pub fn new(stream: S) -> H1Conn<S> {
        H1Conn { stream, buf: Vec::with_capacity(READ_CHUNK), start: 0 }
    }

    /// Sends `request` and reads its whole answer. `Ok((status, keep_alive))`.
    pub async fn exchange(&mut self, request: &[u8], head_request: bool) -> Result<(u16, bool), H1Error> {
        self.stream.write_all(request).await.map_err(|_| H1Error::Io)?;
        loop {
            let (status, head_len, framing, close) = loop {
                match parse_head(&self.buf[self.start..])? {
                    Some(head) => break head,
                    None if self.buf.len() - self.start > HEAD_BYTES_MAX => return Err(H1Error::Malformed),
                    None => self.fill().await?,
                }
            };
            self.start += head_len;
            // An interim answer (100 Continue, 103 Early Hints) comes before the real one.
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let framing = if head_request || status == 204 || status == 304 { Framing::None } else { framing };
            let keep = match framing {
                Framing::None => !close,
                Framing::Length(n) => {
                    self.skip(n).await?;
                    !close
                }
                Framing::Chunked => {
                    self.skip_chunked().await?;
                    !close
                }
                Framing::UntilClose => {
                    while self.fill().await.is_ok() {
                        self.start = self.buf.len();
                    }
                    false
                }
            };
            self.compact();
            return Ok((status, keep));
        }
    }

    /// Reads more bytes; an end of stream is an error.
    async fn fill(&mut self) -> Result<(), H1Error> {
        self.compact();
        let len = self.buf.len();
        self.buf.resize(len + READ_CHUNK, 0);
        let read = self.stream.read(&mut self.buf[len..]).await;
        match read {
            Ok(n) if n > 0 => {
                self.buf.truncate(len + n);
                Ok(())
            }
            _ => {
                self.buf.truncate(len);
                Err(H1Error::Io)
            }
        }
    }

    /// Drops consumed bytes from the front of the buffer.
    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > READ_CHUNK {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    async fn skip(&mut self, mut n: u64) -> Result<(), H1Error> {
        loop {
            let available = (self.buf.len() - self.start) as u64;
            let take = available.min(n);
            self.start += take as usize;
            n -= take;
            if n == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    async fn skip_chunked(&mut self) -> Result<(), H1Error> {
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buf[self.start..]) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.start += used;
                        break size;
                    }
                    Ok(httparse::Status::Partial) => self.fill().await?,
                    Err(_) => return Err(H1Error::Malformed),
                }
            };
            if size == 0 {
                // Trailers, if any, then the empty line.
                loop {
                    let rest = &self.buf[self.start..];
                    if let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
                        self.start += end + 2;
                        if end == 0 {
                            return Ok(());
                        }
                    } else {
                        self.fill().await?;
                    }
                }
            }
            self.skip(size + 2).await?; // The chunk and its CRLF.
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

type Head = (u16, usize, Framing, bool);

/// The status, head length, body framing and whether the server closes, once the head is
/// complete.
fn parse_head(bytes: &[u8]) -> Result<Option<Head>, H1Error> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(H1Error::Malformed),
    };
    let status = response.code.ok_or(H1Error::Malformed)?;
    let mut framing = Framing::UntilClose;
    let mut close = response.version == Some(0);
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).map_err(|_| H1Error::Malformed)?;
            let n = text.trim().parse().map_err(|_| H1Error::Malformed)?;
            if framing != Framing::Chunked {
                framing = Framing::Length(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            framing = if chunked { Framing::Chunked } else { Framing::UntilClose };
        } else if h.name.eq_ignore_ascii_case("connection") {
            let value = h.value.trim_ascii();
            if value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if value.eq_ignore_ascii_case(b"keep-alive") {
                close = false;
            }
        }
    }
    Ok(Some((status, len, framing, close)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_frame_their_bodies() {
        let head = |text: &str| parse_head(text.as_bytes()).unwrap().unwrap();
        assert_eq!(head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"), (200, 38, Framing::Length(5), false));
        assert_eq!(
            head("HTTP/1.1 500 x\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n").2,
            Framing::Chunked
        );
        assert!(head("HTTP/1.1 500 x\r\nConnection: close\r\n\r\n").3);
        assert_eq!(head("HTTP/1.0 200 OK\r\n\r\n"), (200, 19, Framing::UntilClose, true));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Len"), Ok(None));
        assert_eq!(parse_head(b"garbage\r\n\r\n"), Err(H1Error::Malformed));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"), Err(H1Error::Malformed));
    }

    #[test]
    fn requests_are_serialized_once_whole() {
        let get = serialize("GET", "/a?b=1", "h:1", &[("X-A".into(), "1".into())], b"", false);
        assert_eq!(get, b"GET /a?b=1 HTTP/1.1\r\nHost: h:1\r\nX-A: 1\r\n\r\n");
        let post = serialize("POST", "/", "h", &[], b"{}", false);
        assert_eq!(post, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}");
        let empty_put = serialize("PUT", "/", "h", &[], b"", false);
        assert!(empty_put.ends_with(b"Content-Length: 0\r\n\r\n"));
    }
}
