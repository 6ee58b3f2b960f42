//! The admin port's HTTP: just enough HTTP/1.1 to answer one `GET` per
//! connection (Prometheus scrapers, kubelet probes, `curl`). The request
//! head is read up to [`MAX_HEAD`] bytes within [`READ_TIMEOUT`]; anything
//! else is answered 400, 404 or 405 and the connection closed.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest request head read (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What a request asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET <path>` (the query string, if any, cut off).
    Get(String),
    /// Another method: answered 405.
    OtherMethod,
    /// Not HTTP, too long or too slow: answered 400.
    Bad,
}

/// An answer: status code, content type, body.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// Reads the request head of `stream`.
pub async fn read_request(stream: &mut TcpStream) -> Request {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 || head.len() + n > MAX_HEAD {
                return None;
            }
            head.extend_from_slice(chunk.get(..n)?);
        }
        Some(())
    })
    .await;
    match read {
        Ok(Some(())) => parse(&head),
        _ => Request::Bad,
    }
}

/// Parses a request head's request line.
pub fn parse(head: &[u8]) -> Request {
    let Ok(text) = std::str::from_utf8(head) else {
        return Request::Bad;
    };
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Request::Bad;
    }
    if method != "GET" {
        return Request::OtherMethod;
    }
    let path = target.split('?').next().unwrap_or_default();
    Request::Get(path.to_owned())
}

/// Writes `response` and closes the connection.
pub async fn write_response(stream: &mut TcpStream, response: Response) {
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(response.body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Get("/metrics".into())
        );
        assert_eq!(
            parse(b"GET /readyz?verbose=1 HTTP/1.0\r\n\r\n"),
            Request::Get("/readyz".into())
        );
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::OtherMethod
        );
        assert_eq!(parse(b"GET /metrics\r\n\r\n"), Request::Bad);
        assert_eq!(parse(b"\xff\xfe"), Request::Bad);
        assert_eq!(parse(b"GET / SPDY/3 extra\r\n\r\n"), Request::Bad);
    }
}
