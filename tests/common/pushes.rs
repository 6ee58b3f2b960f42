//! A push receiver for tests: a plain HTTP server on 127.0.0.1 port 0 that
//! records each request and answers scripted status codes (push tests and
//! the cluster's wake-up test).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};

use super::WAIT;

/// One request the receiver got.
#[derive(Debug)]
pub struct Pushed {
    pub request_line: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Pushed {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// An HTTP receiver on 127.0.0.1:0 answering `script` in order (then 201).
pub fn receiver(script: &[u16]) -> (String, Receiver<Pushed>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/wake/bob-phone", listener.local_addr().unwrap());
    let script = Arc::new(Mutex::new(
        script.iter().copied().collect::<VecDeque<u16>>(),
    ));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(WAIT));
            let Some(pushed) = read_request(&mut stream) else {
                continue;
            };
            let code = script.lock().unwrap().pop_front().unwrap_or(201);
            let answer =
                format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(answer.as_bytes());
            if tx.send(pushed).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

pub fn read_request(stream: &mut impl Read) -> Option<Pushed> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")?
        .1
        .parse()
        .ok()?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Pushed {
        request_line: request_line.trim_end().to_owned(),
        headers,
        body,
    })
}

pub fn next_push(rx: &Receiver<Pushed>) -> Pushed {
    rx.recv_timeout(WAIT).expect("a push arrives in time")
}
