//! The admin HTTP port as tests read it: one GET, one metric sample.
#![allow(dead_code, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// One `GET path` on the admin port: (status, body).
pub async fn get(admin: SocketAddr, path: &str) -> (u16, String) {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(admin).expect("admin port accepts");
        stream
            .set_read_timeout(Some(super::WAIT))
            .expect("read timeout");
        write!(stream, "GET {path} HTTP/1.1\r\nHost: tern\r\n\r\n").expect("request sent");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("answer read");
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status code");
        (status, body.to_owned())
    })
    .await
    .expect("request task")
}

/// The value of the sample `series` (name with labels, as rendered).
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{metrics}"))
        .trim()
        .parse()
        .expect("a number")
}
