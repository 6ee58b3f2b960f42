//! Push endpoints: the checked URL shape (`https://host[:port]/path`, or
//! `http://` to a loopback host where allowed), which addresses a device's
//! endpoint may reach ([`ip_allowed`]: public ones only, so that a device
//! cannot aim the server at its own network, as OWASP's SSRF guidance
//! asks), and how a device's endpoint is encoded in the store
//! (`kind u8 · bytes`: 0 a Web Push URL, 1 a gateway token).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tern_proto::body::push::{PushEndpoint, MAX_PUSH_TOKEN_LEN, MAX_PUSH_URL_LEN};

/// What endpoint URLs may be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    /// `http://` to a loopback host is allowed (tests).
    pub allow_http_loopback: bool,
}

/// A URL the pusher can `POST` to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    /// The host as written (a name, an IPv4 address, or an IPv6 address
    /// without its brackets).
    pub host: String,
    pub port: u16,
    /// The path and query, starting with `/`.
    pub path: String,
}

/// Why a URL is not a usable endpoint.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("the URL is {0} bytes; at most {MAX_PUSH_URL_LEN}")]
    TooLong(usize),
    #[error("the URL must start with https:// (http:// only to a loopback host where the server allows it)")]
    Scheme,
    #[error("the URL has no host")]
    NoHost,
    #[error("the URL's port is not a number from 1 to 65535")]
    Port,
    #[error("the URL may hold no user information, fragment, spaces or control characters")]
    Characters,
    #[error("the URL names a loopback, private, link-local or otherwise non-public address")]
    NotPublic,
}

/// Parses and checks a device's endpoint URL: [`parse_url`], and a host
/// written as an IP address must be one [`ip_allowed`] (a name is checked
/// when the pusher resolves it).
///
/// # Errors
/// [`UrlError`] naming what is wrong.
pub fn parse_device_url(url: &str, policy: UrlPolicy) -> Result<Url, UrlError> {
    let parsed = parse_url(url, policy)?;
    match parsed.host.parse::<IpAddr>() {
        Ok(ip) if !ip_allowed(ip, policy) => Err(UrlError::NotPublic),
        _ => Ok(parsed),
    }
}

/// Whether a device's endpoint may be reached at `ip`: a public address,
/// or a loopback one where the policy allows loopback endpoints (tests).
/// Private (RFC 1918, RFC 4193), shared (RFC 6598), link-local,
/// unspecified, broadcast, multicast, documentation and reserved
/// addresses never are.
pub fn ip_allowed(ip: IpAddr, policy: UrlPolicy) -> bool {
    if ip.is_loopback() {
        return policy.allow_http_loopback;
    }
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => ip_allowed(IpAddr::V4(v4), policy),
            None => public_v6(v6),
        },
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    let shared = a == 100 && (64..128).contains(&b);
    !(ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || shared
        || a == 0
        || a >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let [first, ..] = ip.segments();
    let unique_local = first & 0xfe00 == 0xfc00;
    let link_local = first & 0xffc0 == 0xfe80;
    let documentation = first == 0x2001 && ip.segments().get(1) == Some(&0x0db8);
    !(ip.is_unspecified() || ip.is_multicast() || unique_local || link_local || documentation)
}

/// Parses and checks an endpoint URL.
///
/// # Errors
/// [`UrlError`] naming what is wrong.
pub fn parse_url(url: &str, policy: UrlPolicy) -> Result<Url, UrlError> {
    if url.len() > MAX_PUSH_URL_LEN {
        return Err(UrlError::TooLong(url.len()));
    }
    if url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '#')
    {
        return Err(UrlError::Characters);
    }
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(UrlError::Scheme);
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err(UrlError::Characters);
    }
    let (host, port) = split_host_port(authority, if tls { 443 } else { 80 })?;
    if host.is_empty() {
        return Err(UrlError::NoHost);
    }
    let plain_allowed = policy.allow_http_loopback && is_loopback(&host);
    if !tls && !plain_allowed {
        return Err(UrlError::Scheme);
    }
    Ok(Url {
        tls,
        host,
        port,
        path: path.to_owned(),
    })
}

fn split_host_port(authority: &str, default: u16) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, tail) = v6.split_once(']').ok_or(UrlError::NoHost)?;
        (host, tail.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => default,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or(UrlError::Port)?,
    };
    Ok((host.to_owned(), port))
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The store encoding of a device's endpoint.
pub fn encode(endpoint: &PushEndpoint) -> Vec<u8> {
    let (kind, bytes) = match endpoint {
        PushEndpoint::WebPush { url } => (0u8, url.as_bytes()),
        PushEndpoint::Gateway { token } => (1u8, token.as_bytes()),
    };
    let mut out = Vec::with_capacity(1 + bytes.len());
    out.push(kind);
    out.extend_from_slice(bytes);
    out
}

/// Reads a stored endpoint; `None` for bytes this server did not write.
pub fn decode(bytes: &[u8]) -> Option<PushEndpoint> {
    let (kind, rest) = bytes.split_first()?;
    let text = std::str::from_utf8(rest).ok()?.to_owned();
    match kind {
        0 if text.len() <= MAX_PUSH_URL_LEN => Some(PushEndpoint::WebPush { url: text }),
        1 if text.len() <= MAX_PUSH_TOKEN_LEN => Some(PushEndpoint::Gateway { token: text }),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const TESTS: UrlPolicy = UrlPolicy {
        allow_http_loopback: true,
    };

    #[test]
    fn urls_are_checked() {
        let u = parse_url("https://push.example.org/wake/1?x=y", UrlPolicy::default()).unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (true, "push.example.org", 443)
        );
        assert_eq!(u.path, "/wake/1?x=y");
        let u = parse_url("http://127.0.0.1:8080", TESTS).unwrap();
        assert_eq!((u.tls, u.port, u.path.as_str()), (false, 8080, "/"));
        let u = parse_url("http://[::1]:9/p", TESTS).unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        let strict = UrlPolicy::default();
        assert_eq!(
            parse_url("http://127.0.0.1/", strict),
            Err(UrlError::Scheme)
        );
        assert_eq!(
            parse_url("http://example.org/", TESTS),
            Err(UrlError::Scheme)
        );
        assert_eq!(
            parse_url("ftp://example.org/", TESTS),
            Err(UrlError::Scheme)
        );
        assert_eq!(parse_url("https:///x", TESTS), Err(UrlError::NoHost));
        assert_eq!(parse_url("https://h:0/", TESTS), Err(UrlError::Port));
        assert_eq!(parse_url("https://h:x/", TESTS), Err(UrlError::Port));
        assert_eq!(parse_url("https://u@h/", TESTS), Err(UrlError::Characters));
        assert_eq!(parse_url("https://h/a b", TESTS), Err(UrlError::Characters));
        let strict = UrlPolicy::default();
        for private in [
            "https://10.0.0.5/x",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest",
            "https://100.64.0.1/",
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://[fd00::1]/",
            "https://[fe80::1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://0.0.0.0/",
        ] {
            assert_eq!(
                parse_device_url(private, strict),
                Err(UrlError::NotPublic),
                "{private}"
            );
        }
        assert!(parse_device_url("https://93.184.215.14/w", strict).is_ok());
        assert!(parse_device_url("https://[2606:2800::1]/w", strict).is_ok());
        assert!(parse_device_url("http://127.0.0.1:9/w", TESTS).is_ok());
        assert!(
            parse_url("https://10.0.0.5/gateway", strict).is_ok(),
            "the gateway may be private"
        );
        let long = format!("https://h/{}", "a".repeat(MAX_PUSH_URL_LEN));
        assert!(matches!(parse_url(&long, TESTS), Err(UrlError::TooLong(_))));
    }

    #[test]
    fn endpoints_roundtrip_through_the_store_encoding() {
        for endpoint in [
            PushEndpoint::WebPush {
                url: "https://h/p".into(),
            },
            PushEndpoint::Gateway {
                token: "t0k".into(),
            },
        ] {
            assert_eq!(decode(&encode(&endpoint)), Some(endpoint));
        }
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[9, b'x']), None);
    }
}
