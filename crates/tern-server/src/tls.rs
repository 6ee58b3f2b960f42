//! The server's TLS identity and QUIC server configuration.
//!
//! On first start the server makes a self-signed certificate (SANs
//! `localhost`, `tern.local`, `127.0.0.1`, `::1`) and keeps it in its data
//! directory as `cert.der` and `key.der` (mode 0600). Clients pin the
//! certificate's SHA-256 fingerprint, which the server logs on start.
//! Connections use TLS 1.3 only, ALPN `tern/1`, and never accept 0-RTT.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use thiserror::Error;

use tern_proto::fingerprint::cert_fingerprint;
use tern_proto::ALPN;

/// File name of the server certificate (DER) inside the data directory.
pub const CERT_FILE: &str = "cert.der";
/// File name of the server's PKCS#8 private key (DER) inside the data directory.
pub const KEY_FILE: &str = "key.der";
/// File name of the secret (32 random bytes, mode 0600) inside the data
/// directory from which the stateless-reset key is derived.
pub const RESET_SECRET_FILE: &str = "reset.key";
/// Length of the stateless-reset secret.
const RESET_SECRET_LEN: usize = 32;
/// The most [`read`] takes of a certificate, key or secret file: theirs
/// are a few hundred bytes (a link to `/dev/zero` used to be read until
/// memory ran out).
const MAX_FILE_LEN: u64 = 1 << 20;

/// Subject alternative names of the self-signed certificate.
pub const SELF_SIGNED_SANS: [&str; 4] = ["localhost", "tern.local", "127.0.0.1", "::1"];

/// Why the server's TLS identity or configuration could not be set up.
#[derive(Debug, Error)]
pub enum TlsError {
    /// Reading or writing a certificate or key file failed.
    #[error("cannot access {path}: {source}; check that the directory exists and that the server's user may read it (and write it, for the data directory)")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// `tls_dir` lacks `cert.der` or `key.der` (a shared identity is never
    /// made by the server: every node must load the same one).
    #[error("tls_dir {dir} must hold {CERT_FILE} and {KEY_FILE}: make them once with `tern tls-identity --out DIR` and give that directory to every node")]
    Missing {
        /// The configured directory.
        dir: PathBuf,
    },
    /// `tls_dir` holds files that are not one certificate and its key.
    #[error("tls_dir {dir} holds no usable identity: {reason}; make one with `tern tls-identity --out DIR` (DER files, as it writes them) and give that directory to every node")]
    Unusable {
        /// The configured directory.
        dir: PathBuf,
        /// What is wrong with the files.
        reason: String,
    },
    /// `tls_dir` or `tern tls-identity --out` names something else than a directory.
    #[error("{path} is not a directory: give a directory to hold {CERT_FILE} and {KEY_FILE}")]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// A certificate, key or secret file is larger than any of them can be.
    #[error("{path} is larger than {MAX_FILE_LEN} bytes: not a certificate, key or secret; replace it with the file tern wrote")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// `tern tls-identity` was asked to write where an identity exists.
    #[error("{dir} already holds {CERT_FILE} or {KEY_FILE}: clients pin its fingerprint; pass --force to replace it anyway")]
    Exists {
        /// The directory.
        dir: PathBuf,
    },
    /// Only one of `cert.der` and `key.der` exists.
    #[error("{dir} holds only one of {CERT_FILE} and {KEY_FILE}: restore the missing file, or delete both to make a new identity (clients must then pin the new fingerprint)")]
    Incomplete {
        /// The data directory.
        dir: PathBuf,
    },
    /// The self-signed certificate could not be made.
    #[error("cannot generate the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls rejected the certificate or key.
    #[error(
        "TLS setup failed: {0}; if cert.der/key.der were edited by hand, delete both to regenerate"
    )]
    Rustls(#[from] rustls::Error),
    /// The crypto provider lacks the cipher suite QUIC needs for Initial packets.
    #[error("QUIC TLS setup failed: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The stateless-reset secret file is not 32 bytes long.
    #[error("{path} holds {len} bytes, not {RESET_SECRET_LEN}: delete it and a new secret is made (clients connected before then wait out their idle timeout once)")]
    ResetSecret {
        /// The secret file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The configured idle timeout does not fit QUIC's varint range.
    #[error("idle timeout {0:?} is too large: use at most a few hours")]
    IdleTimeout(Duration),
}

/// The server's certificate chain, private key and leaf fingerprint.
#[derive(Debug)]
pub struct ServerIdentity {
    /// Certificate chain, leaf first.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// Private key of the leaf certificate.
    pub key: PrivateKeyDer<'static>,
    /// Lowercase hex SHA-256 of the leaf certificate's DER, for clients to pin.
    pub fingerprint: String,
}

/// Loads `cert.der` and `key.der` from `data_dir`, or makes and stores a new
/// self-signed identity if neither exists.
pub fn load_or_create_identity(data_dir: &Path) -> Result<ServerIdentity, TlsError> {
    let cert_path = data_dir.join(CERT_FILE);
    let key_path = data_dir.join(KEY_FILE);
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => identity(read(&cert_path)?, read(&key_path)?),
        (false, false) => create_identity(&cert_path, &key_path),
        _ => Err(TlsError::Incomplete {
            dir: data_dir.to_path_buf(),
        }),
    }
}

/// Loads the identity `tls_dir` holds (`cert.der` and `key.der`, as
/// [`create_identity_in`] writes them): several servers behind one address
/// load the same one, so a client pinning its fingerprint reaches any.
///
/// # Errors
/// [`TlsError::Missing`] when either file is absent, [`TlsError::Io`] when
/// one cannot be read (a directory the server may not search used to be
/// reported as missing), [`TlsError::Unusable`] when they are not a
/// certificate and its private key (PEM text, garbage, a mismatched pair),
/// [`TlsError::NotADirectory`].
pub fn load_identity(tls_dir: &Path) -> Result<ServerIdentity, TlsError> {
    let (cert_path, key_path) = (tls_dir.join(CERT_FILE), tls_dir.join(KEY_FILE));
    check_directory(tls_dir)?;
    if !present(&cert_path)? || !present(&key_path)? {
        return Err(TlsError::Missing {
            dir: tls_dir.to_path_buf(),
        });
    }
    let (cert, key) = (read(&cert_path)?, read(&key_path)?);
    let unusable = |reason: String| TlsError::Unusable {
        dir: tls_dir.to_path_buf(),
        reason,
    };
    for (file, bytes) in [(CERT_FILE, &cert), (KEY_FILE, &key)] {
        if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            return Err(unusable(format!("{file} is PEM text, not DER")));
        }
    }
    let loaded = identity(cert, key)?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(
        loaded.cert_chain.clone(),
        loaded.key.clone_key(),
        &provider,
    )
    .map_err(|e| {
        unusable(format!(
            "{CERT_FILE} and {KEY_FILE} are not a certificate and its private key ({e})"
        ))
    })?;
    Ok(loaded)
}

/// Refuses `dir` when it exists and is not a directory.
fn check_directory(dir: &Path) -> Result<(), TlsError> {
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(TlsError::NotADirectory {
            path: dir.to_path_buf(),
        }),
        Err(source) if source.kind() != io::ErrorKind::NotFound => Err(TlsError::Io {
            path: dir.to_path_buf(),
            source,
        }),
        _ => Ok(()),
    }
}

/// Whether `path` exists; an error other than "not found" (no permission
/// to search its directory) is an error, not an absence.
fn present(path: &Path) -> Result<bool, TlsError> {
    path.try_exists().map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Makes a self-signed identity (as a server does on first start) in
/// `dir`, created if missing; refuses to replace one unless `force`.
///
/// # Errors
/// [`TlsError::Exists`]; I/O and generation errors.
pub fn create_identity_in(dir: &Path, force: bool) -> Result<ServerIdentity, TlsError> {
    let (cert_path, key_path) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    check_directory(dir)?;
    if !force && (cert_path.exists() || key_path.exists()) {
        return Err(TlsError::Exists {
            dir: dir.to_path_buf(),
        });
    }
    fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    create_identity(&cert_path, &key_path)
}

fn create_identity(cert_path: &Path, key_path: &Path) -> Result<ServerIdentity, TlsError> {
    let sans: Vec<String> = SELF_SIGNED_SANS.iter().map(|s| s.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(sans)?;
    let key = certified.key_pair.serialize_der();
    let cert = certified.cert.der().to_vec();
    // Both written before either replaces a file: a failed write (--force
    // over an identity, a full disk) used to leave a new key beside the
    // old certificate, a pair no server could load.
    let key_tmp = write_temp(key_path, &key)?;
    let cert_tmp = write_temp(cert_path, &cert).inspect_err(|_| {
        let _ = fs::remove_file(&key_tmp);
    })?;
    rename(&key_tmp, key_path)?;
    rename(&cert_tmp, cert_path)?;
    tracing::info!(
        "created a self-signed server certificate in {}",
        cert_path.display()
    );
    identity(cert, key)
}

fn identity(cert: Vec<u8>, key: Vec<u8>) -> Result<ServerIdentity, TlsError> {
    let fingerprint = cert_fingerprint(&cert);
    Ok(ServerIdentity {
        cert_chain: vec![CertificateDer::from(cert)],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        fingerprint,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|file| {
            io::Read::read_to_end(&mut io::Read::take(file, MAX_FILE_LEN + 1), &mut bytes)
        })
        .map_err(|source| TlsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(TlsError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// The key quinn signs stateless-reset tokens with: HMAC-SHA256 under the
/// secret in `data_dir` ([`RESET_SECRET_FILE`], made on first start). The
/// same key across restarts means a restarted server (even after kill -9)
/// answers the old connections' packets with resets their clients accept,
/// so they reconnect at once instead of waiting out the idle timeout.
pub fn load_or_create_reset_key(
    data_dir: &Path,
) -> Result<Arc<dyn quinn::crypto::HmacKey>, TlsError> {
    let path = data_dir.join(RESET_SECRET_FILE);
    let secret = match path.exists() {
        true => read(&path)?,
        false => {
            let mut fresh = vec![0u8; RESET_SECRET_LEN];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
            write_private(&path, &fresh)?;
            fresh
        }
    };
    if secret.len() != RESET_SECRET_LEN {
        return Err(TlsError::ResetSecret {
            path,
            len: secret.len(),
        });
    }
    Ok(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        &secret,
    )))
}

/// Writes `bytes` to `path` through a temporary file created with mode 0600
/// and renamed into place, so a crash never leaves a half-written file.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    let tmp = write_temp(path, bytes)?;
    rename(&tmp, path)
}

/// Writes `bytes`, synced, to a new mode-0600 file beside `path`
/// (`<path>.tmp`, removed again if the write fails); returns its path.
fn write_temp(path: &Path, bytes: &[u8]) -> Result<PathBuf, TlsError> {
    let tmp = path.with_extension("der.tmp");
    let io_err = |source| TlsError::Io {
        path: tmp.clone(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io_err)?;
    if let Err(source) = file.write_all(bytes).and_then(|()| file.sync_all()) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(source));
    }
    Ok(tmp)
}

/// Renames the temporary file `tmp` onto `path`.
fn rename(tmp: &Path, path: &Path) -> Result<(), TlsError> {
    fs::rename(tmp, path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The keep-alive interval tern clients use (`tern_client::tls::CLIENT_KEEP_ALIVE`;
/// a test checks the two agree). The server cannot see it on the wire.
pub const CLIENT_KEEP_ALIVE: Duration = Duration::from_secs(25);

/// The ping interval the server uses for an idle timeout of `idle`: none
/// while the clients' own keep-alive reaches the server at least twice per
/// idle period (`idle >= 2 * CLIENT_KEEP_ALIVE`, so one lost ping is
/// survived), else `idle / 3`. quinn does not tell a client the negotiated
/// idle timeout, so the side that sets a short one keeps its connections
/// alive: the client answers each ping, and both idle timers restart.
pub fn server_keep_alive(idle: Duration) -> Option<Duration> {
    (idle < 2 * CLIENT_KEEP_ALIVE).then(|| idle / 3)
}

/// Transport settings of server connections, tuned for many mostly idle
/// devices. `Default` gives the documented values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTransportTuning {
    /// Close a connection after this long without any packet. Default 60 s.
    pub max_idle_timeout: Duration,
    /// Ping interval of the server. Default `None`: derived from
    /// `max_idle_timeout` by [`server_keep_alive`] (no pings of its own
    /// while the clients' keep-alive suffices).
    pub keep_alive_interval: Option<Duration>,
    /// Bidirectional streams a client may have open at once. Default 5:
    /// the control stream and [`crate::blobs`]' attachment streams (four at
    /// once; QUIC grants another as each one closes).
    pub max_concurrent_bidi_streams: u32,
    /// Unidirectional streams a client may have open at once. Default 0.
    pub max_concurrent_uni_streams: u32,
    /// Receive flow-control window per stream, in bytes. Default 256 KiB.
    pub stream_receive_window: u32,
    /// Receive flow-control window per connection, in bytes. Default 1 MiB.
    pub receive_window: u32,
    /// Unacknowledged bytes in flight per connection. Default 1 MiB.
    pub send_window: u64,
    /// Buffer for received QUIC datagrams (typing signals). Default 16 KiB.
    pub datagram_receive_buffer: usize,
    /// Buffer for QUIC datagrams waiting to be sent. Default 16 KiB.
    pub datagram_send_buffer: usize,
}

impl Default for ServerTransportTuning {
    fn default() -> Self {
        Self {
            max_idle_timeout: Duration::from_secs(60),
            keep_alive_interval: None,
            max_concurrent_bidi_streams: 5,
            max_concurrent_uni_streams: 0,
            stream_receive_window: 256 << 10,
            receive_window: 1 << 20,
            send_window: 1 << 20,
            datagram_receive_buffer: 16 << 10,
            datagram_send_buffer: 16 << 10,
        }
    }
}

impl ServerTransportTuning {
    /// The quinn transport configuration these settings describe.
    pub fn transport_config(&self) -> Result<TransportConfig, TlsError> {
        let idle = IdleTimeout::try_from(self.max_idle_timeout)
            .map_err(|_| TlsError::IdleTimeout(self.max_idle_timeout))?;
        let mut t = TransportConfig::default();
        t.max_idle_timeout(Some(idle))
            .keep_alive_interval(
                self.keep_alive_interval
                    .or_else(|| server_keep_alive(self.max_idle_timeout)),
            )
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_bidi_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(self.max_concurrent_uni_streams))
            .stream_receive_window(VarInt::from_u32(self.stream_receive_window))
            .receive_window(VarInt::from_u32(self.receive_window))
            .send_window(self.send_window)
            .datagram_receive_buffer_size(Some(self.datagram_receive_buffer))
            .datagram_send_buffer_size(self.datagram_send_buffer);
        Ok(t)
    }
}

/// The quinn server configuration: TLS 1.3 only, ALPN `tern/1`, no 0-RTT,
/// client migration allowed, transport from `tuning`.
pub fn server_config(
    identity: &ServerIdentity,
    tuning: &ServerTransportTuning,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.cert_chain.clone(), identity.key.clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    config
        .transport_config(Arc::new(tuning.transport_config()?))
        .migration(true);
    Ok(config)
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_then_loaded() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let first = load_or_create_identity(dir.path())?;
        let again = load_or_create_identity(dir.path())?;
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(first.fingerprint.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEY_FILE))?
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        server_config(&again, &ServerTransportTuning::default())?;
        Ok(())
    }

    #[test]
    fn the_server_pings_only_when_client_keep_alives_are_too_rare() {
        let secs = Duration::from_secs;
        assert_eq!(server_keep_alive(secs(60)), None);
        assert_eq!(server_keep_alive(secs(50)), None);
        assert_eq!(server_keep_alive(secs(30)), Some(secs(10)));
        assert_eq!(server_keep_alive(secs(6)), Some(secs(2)));
    }

    #[test]
    fn the_reset_key_is_made_once_then_kept() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let first = load_or_create_reset_key(dir.path())?;
        let again = load_or_create_reset_key(dir.path())?;
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        first.sign(b"connection id", &mut a);
        again.sign(b"connection id", &mut b);
        assert_eq!(a, b);
        let other = load_or_create_reset_key(tempfile::tempdir()?.path())?;
        other.sign(b"connection id", &mut b);
        assert_ne!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join(RESET_SECRET_FILE);
            assert_eq!(fs::metadata(path)?.permissions().mode() & 0o777, 0o600);
        }
        fs::write(dir.path().join(RESET_SECRET_FILE), b"short")?;
        assert!(matches!(
            load_or_create_reset_key(dir.path()),
            Err(TlsError::ResetSecret { len: 5, .. })
        ));
        Ok(())
    }

    /// A failed `tern tls-identity --force` leaves the identity it meant
    /// to replace whole: the new key used to be in place before the new
    /// certificate failed to be written.
    #[test]
    fn a_failed_replacement_keeps_the_old_pair() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let old = create_identity_in(dir.path(), false)?;
        let old_key = fs::read(dir.path().join(KEY_FILE))?;
        // The certificate's temporary file cannot be made: a directory is there.
        fs::create_dir(dir.path().join("cert.der.tmp"))?;
        assert!(matches!(
            create_identity_in(dir.path(), true),
            Err(TlsError::Io { .. })
        ));
        assert_eq!(fs::read(dir.path().join(KEY_FILE))?, old_key);
        assert!(!dir.path().join("key.der.tmp").exists());
        let kept = load_identity(dir.path())?;
        assert_eq!(kept.fingerprint, old.fingerprint);
        Ok(())
    }

    /// What an operator may put in `tls_dir` by mistake is refused with
    /// the directory and the reason, before any port is bound.
    #[test]
    fn tls_dir_refuses_what_is_not_an_identity() -> Result<(), Box<dyn std::error::Error>> {
        let good = tempfile::tempdir()?;
        create_identity_in(good.path(), false)?;
        let other = tempfile::tempdir()?;
        create_identity_in(other.path(), false)?;
        let cert = fs::read(good.path().join(CERT_FILE))?;
        let key = fs::read(good.path().join(KEY_FILE))?;
        let cases: [(&[u8], &[u8], &str); 5] = [
            (b"", b"", "not a certificate"),
            (&cert, b"\x30\x03garbage", "not a certificate"),
            (b"garbage", &key, "not a certificate"),
            (
                b"-----BEGIN CERTIFICATE-----\nMIIB\n",
                &key,
                "cert.der is PEM",
            ),
            (
                &cert,
                &fs::read(other.path().join(KEY_FILE))?,
                "not a certificate",
            ),
        ];
        for (cert_bytes, key_bytes, says) in cases {
            let dir = tempfile::tempdir()?;
            fs::write(dir.path().join(CERT_FILE), cert_bytes)?;
            fs::write(dir.path().join(KEY_FILE), key_bytes)?;
            match load_identity(dir.path()) {
                Err(e @ TlsError::Unusable { .. }) => {
                    assert!(e.to_string().contains(says), "{e}");
                    assert!(e.to_string().contains("tern tls-identity"), "{e}");
                }
                other => panic!("{says}: {other:?}"),
            }
        }
        #[cfg(unix)]
        {
            let endless = tempfile::tempdir()?;
            std::os::unix::fs::symlink("/dev/zero", endless.path().join(CERT_FILE))?;
            fs::write(endless.path().join(KEY_FILE), &key)?;
            assert!(matches!(
                load_identity(endless.path()),
                Err(TlsError::TooLarge { .. })
            ));
        }
        let file = good.path().join(CERT_FILE);
        assert!(matches!(
            load_identity(&file),
            Err(TlsError::NotADirectory { .. })
        ));
        assert!(matches!(
            create_identity_in(&file, true),
            Err(TlsError::NotADirectory { .. })
        ));
        Ok(())
    }

    #[test]
    fn half_an_identity_is_an_error() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        load_or_create_identity(dir.path())?;
        fs::remove_file(dir.path().join(KEY_FILE))?;
        assert!(matches!(
            load_or_create_identity(dir.path()),
            Err(TlsError::Incomplete { .. })
        ));
        Ok(())
    }
}
