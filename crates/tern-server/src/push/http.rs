//! The smallest HTTP/1.1 client the pusher needs (RFC 9112): one `POST`
//! per connection (`Connection: close`), over TCP or TLS 1.2/1.3 (rustls,
//! roots from a PEM bundle), answering the status code only. Blocking,
//! with a deadline on every step: it runs on the pusher thread, never on a
//! shard. No redirects are followed (a push service answers 201; a
//! redirect counts as a failure).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::endpoint::{ip_allowed, Url, UrlPolicy};

/// Longest status line read, bytes.
const MAX_STATUS_LINE: usize = 1024;

/// Why a request got no status code.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("https needs certificate authorities, and none were loaded (push.ca_file)")]
    NoRoots,
    #[error("bad TLS server name {0:?}")]
    ServerName(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the answer is not an HTTP/1.x status line")]
    BadAnswer,
    #[error("{0} resolves to no public address")]
    NotPublic(String),
}

/// Loads the certificate authorities of `path` into a client config.
///
/// # Errors
/// A message saying why (unreadable file, no certificate in it).
pub fn tls_config(path: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `POST`s `body` (JSON) to `url` with `headers`; the answer's status code.
/// With `only`, the host's addresses are filtered by [`ip_allowed`] first
/// (a device's endpoint); without, any address is used (the gateway).
///
/// # Errors
/// [`HttpError`] when no status line came back within `timeout` per step.
pub fn post(
    url: &Url,
    only: Option<UrlPolicy>,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<u16, HttpError> {
    let stream = connect(url, only, timeout)?;
    let request = request_bytes(url, headers, body);
    if url.tls {
        let config = tls.ok_or(HttpError::NoRoots)?;
        let name = ServerName::try_from(url.host.clone())
            .map_err(|_| HttpError::ServerName(url.host.clone()))?;
        let conn = rustls::ClientConnection::new(Arc::clone(config), name)
            .map_err(|e| HttpError::Tls(e.to_string()))?;
        exchange(rustls::StreamOwned::new(conn, stream), &request)
    } else {
        exchange(stream, &request)
    }
}

fn connect(url: &Url, only: Option<UrlPolicy>, timeout: Duration) -> Result<TcpStream, HttpError> {
    let addrs: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|_| HttpError::Resolve(url.host.clone()))?
        .filter(|a| only.is_none_or(|policy| ip_allowed(a.ip(), policy)))
        .take(4)
        .collect();
    if addrs.is_empty() {
        return Err(HttpError::NotPublic(url.host.clone()));
    }
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))?;
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(|| HttpError::Resolve(url.host.clone()), HttpError::Connect))
}

fn request_bytes(url: &Url, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let host = match url.host.contains(':') {
        true => format!("[{}]", url.host),
        false => url.host.clone(),
    };
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {host}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        url.path,
        url.port,
        body.len()
    );
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Writes the request, reads the status line (`HTTP/1.x NNN ...`).
fn exchange(mut stream: impl Read + Write, request: &[u8]) -> Result<u16, HttpError> {
    stream.write_all(request)?;
    stream.flush()?;
    let mut line = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    while line.len() < MAX_STATUS_LINE && !line.ends_with(b"\r\n") {
        match stream.read(&mut byte)? {
            0 => break,
            _ => line.extend_from_slice(&byte),
        }
    }
    status_of(&line).ok_or(HttpError::BadAnswer)
}

fn status_of(line: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(line).ok()?;
    let rest = text.strip_prefix("HTTP/1.")?;
    let code = rest.get(2..5)?;
    code.parse().ok().filter(|c| (100..600).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 201 Created\r\n"), Some(201));
        assert_eq!(status_of(b"HTTP/1.0 410 Gone\r\n"), Some(410));
        assert_eq!(status_of(b"HTTP/2 200\r\n"), None);
        assert_eq!(status_of(b"HTTP/1.1 2x1\r\n"), None);
        assert_eq!(status_of(b""), None);
    }
}
