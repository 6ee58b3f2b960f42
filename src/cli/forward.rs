//! A running `tern listen` performs other invocations' commands.
//!
//! The SDK locks a state directory for the one process that has it open
//! (`tern_client::state_lock`), so `tern send --state bob` cannot open bob's
//! state while `tern listen --state bob` runs. Instead the listener serves a
//! Unix socket, `STATE/tern.sock` (mode 0600, in the 0700 state directory,
//! so only its owner can connect), and a command that finds the directory
//! locked connects there and has the listener run it with its open client.
//!
//! The protocol is one line of JSON each way: the request is an [`Op`], the
//! reply a [`Reply`] (what the command printed, and its error if it failed),
//! which the invoking process prints and exits with as if it had run the
//! command itself. A request the listener cannot read (e.g. from another
//! version of tern) is answered with an error that says so.
//!
//! A socket file left by a listener that crashed is stale: whoever holds the
//! lock next removes it (nothing can be listening, since a listener holds the
//! lock for as long as it serves).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tern_client::secure::SecureClient;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use super::ops::{perform, Op, Printed};

/// The socket's name in the state directory.
pub const SOCKET_FILE: &str = "tern.sock";
/// Longest request line accepted (a message text is at most a frame).
const MAX_REQUEST: u64 = 1 << 20;

/// The listener's answer to one request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// What the command printed (also when it failed part-way).
    pub printed: Printed,
    /// Why it failed, as `tern` prints it after `error: `; `None` on success.
    pub error: Option<String>,
}

/// The socket of `state`.
pub fn socket_path(state: &Path) -> PathBuf {
    state.join(SOCKET_FILE)
}

/// Removes a socket file left behind by a listener that is gone. Only call
/// it while holding the state directory's lock.
pub fn remove_stale(state: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(socket_path(state)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A listener's socket, served until this is dropped (which also removes
/// the socket file).
pub struct Serving {
    path: PathBuf,
    accept: JoinHandle<()>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves `state`'s socket for other invocations, performing their commands
/// with `client`. The caller holds `state`'s lock (it opened `client`).
pub fn serve(state: &Path, client: Arc<SecureClient>) -> std::io::Result<Serving> {
    remove_stale(state)?;
    let path = socket_path(state);
    let listener = UnixListener::bind(&path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let accept = tokio::spawn(accept_loop(listener, client));
    Ok(Serving { path, accept })
}

async fn accept_loop(listener: UnixListener, client: Arc<SecureClient>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(answer(stream, client.clone()));
            }
            Err(error) => {
                tracing::warn!(%error, "no longer serving other tern commands");
                return;
            }
        }
    }
}

/// Reads one request from `stream`, performs it, writes the reply.
async fn answer(stream: UnixStream, client: Arc<SecureClient>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    match reader.read_line(&mut line).await {
        Ok(0) | Err(_) => return,
        Ok(_) => {}
    }
    let reply = match serde_json::from_str::<Op>(&line) {
        Ok(op) => {
            let mut printed = Printed::default();
            let error = perform(&client, op, &mut printed).await.err();
            Reply { printed, error }
        }
        Err(e) => Reply {
            printed: Printed::default(),
            error: Some(format!(
                "the running `tern listen` cannot perform this command ({e}); is it another version of tern? Stop it and run the command again"
            )),
        },
    };
    let Ok(mut text) = serde_json::to_string(&reply) else {
        return;
    };
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
}

/// Has the `tern listen` holding `state` perform `op`, and returns its
/// reply; `Ok(None)` when no listener serves `state` (the holder of its
/// lock is some other process).
pub async fn forward(state: &Path, op: &Op) -> Result<Option<Reply>, String> {
    let path = socket_path(state);
    let Ok(stream) = UnixStream::connect(&path).await else {
        return Ok(None);
    };
    let (read, mut write) = stream.into_split();
    let mut request = serde_json::to_string(op).map_err(|e| e.to_string())?;
    request.push('\n');
    let lost = |e: std::io::Error| {
        format!(
            "lost the `tern listen` serving {} ({e}); the command may or may not have run",
            state.display()
        )
    };
    write.write_all(request.as_bytes()).await.map_err(lost)?;
    let mut line = String::new();
    let read = BufReader::new(read).read_line(&mut line).await;
    match read {
        Ok(0) => Err(lost(std::io::ErrorKind::UnexpectedEof.into())),
        Ok(_) => serde_json::from_str(&line)
            .map(Some)
            .map_err(|e| format!("the `tern listen` serving {} answered something unreadable ({e}); is it another version of tern?", state.display())),
        Err(e) => Err(lost(e)),
    }
}
