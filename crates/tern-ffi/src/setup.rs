//! Where a [`crate::TernClient`] finds its server: the settings a state
//! directory remembers (`server.toml`, shared with the `tern` CLI), the
//! [`ClientOptions`] built from them, and the tokio runtime each client
//! runs the SDK on.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tern_client::state_dir::StateDir;
use tern_client::{ClientOptions, TrustAnchor};
use tokio::runtime::Runtime;

use crate::TernError;

/// The server settings a state directory remembers (`server.toml`, the
/// same file and fields the `tern` CLI writes, so a state directory
/// registered here also works with the CLI and the other way round).
#[derive(Serialize, Deserialize, Debug, Default)]
pub(crate) struct ServerFile {
    server: Option<String>,
    fingerprint: Option<String>,
    ca: Option<PathBuf>,
    server_name: Option<String>,
}

/// The server settings file in a state directory.
pub(crate) const SERVER_FILE: &str = "server.toml";

/// The runtime a client runs on (see the crate docs: two workers).
pub(crate) fn runtime() -> Result<Runtime, TernError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tern-sdk")
        .enable_all()
        .build()
        .map_err(|e| TernError::Identity {
            message: format!("cannot start the SDK's threads: {e}"),
        })
}

pub(crate) fn new_settings(server: String, fingerprint: String) -> ServerFile {
    ServerFile {
        server: Some(server),
        fingerprint: Some(fingerprint),
        ca: None,
        server_name: Some(tern_client::connection::DEFAULT_SERVER_NAME.to_owned()),
    }
}

/// The server settings saved in `state` (by [`TernClient::register`] or the
/// CLI's `tern register`).
pub(crate) fn load_settings(state: &Path) -> Result<ServerFile, TernError> {
    let text = StateDir::new(state)
        .read_text(SERVER_FILE)
        .map_err(|e| TernError::Identity {
            message: e.to_string(),
        })?
        .ok_or_else(|| TernError::Identity {
            message: format!(
                "{} holds no server settings: register or link a device there first",
                state.display()
            ),
        })?;
    toml::from_str(&text).map_err(|e| TernError::Identity {
        message: format!(
            "the saved server settings in {} are invalid ({e}); fix or delete the file",
            state.join(SERVER_FILE).display()
        ),
    })
}

pub(crate) fn options(settings: &ServerFile, state: &Path) -> Result<ClientOptions, TernError> {
    let server = settings
        .server
        .as_deref()
        .ok_or_else(|| TernError::invalid("no server address (HOST:PORT) saved or given"))?;
    let addr = resolve(server)?;
    let trust = match (&settings.fingerprint, &settings.ca) {
        (Some(fp), _) => TrustAnchor::Fingerprint(
            tern_proto::fingerprint::parse_fingerprint(fp)
                .map_err(|e| TernError::invalid(e.to_string()))?,
        ),
        (None, Some(ca)) => TrustAnchor::CaFile(ca.clone()),
        (None, None) => {
            return Err(TernError::invalid(
                "no trust anchor: give the fingerprint `tern serve` printed",
            ))
        }
    };
    let mut options = ClientOptions::new(addr, trust, state);
    if let Some(name) = &settings.server_name {
        options.server_name = name.clone();
    }
    Ok(options)
}

fn resolve(server: &str) -> Result<SocketAddr, TernError> {
    server
        .to_socket_addrs()
        .map_err(|e| TernError::invalid(format!("cannot resolve server {server:?}: {e}")))?
        .next()
        .ok_or_else(|| TernError::invalid(format!("server {server:?} resolves to no address")))
}
