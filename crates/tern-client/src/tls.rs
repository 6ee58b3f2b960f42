//! Client TLS: how a client decides to trust a tern server.
//!
//! Either the server's leaf certificate is pinned by its SHA-256 fingerprint
//! (the default for self-hosted servers with a self-signed certificate, see
//! `tern_proto::fingerprint`), or a CA file is given and the standard
//! WebPKI checks apply. Connections use TLS 1.3 only, ALPN `tern/1`, no 0-RTT.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{IdleTimeout, TransportConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use thiserror::Error;

use tern_proto::fingerprint::{cert_digest, FINGERPRINT_LEN};
use tern_proto::ALPN;

/// Interval at which the client pings an otherwise idle connection, so NATs
/// keep its mapping and the server's idle timeout never fires.
pub const CLIENT_KEEP_ALIVE: Duration = Duration::from_secs(25);
/// Idle timeout the client proposes.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the client trusts to identify the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustAnchor {
    /// SHA-256 of the server's leaf certificate (DER).
    Fingerprint([u8; FINGERPRINT_LEN]),
    /// A PEM or DER file with one or more CA certificates.
    CaFile(PathBuf),
}

/// Why a client TLS configuration could not be built.
#[derive(Debug, Error)]
pub enum ClientTlsError {
    /// The CA file could not be read.
    #[error("cannot read CA file {path}: {source}")]
    CaFileRead {
        /// The CA file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("CA file {0} holds no usable certificate: give a PEM or DER X.509 CA certificate")]
    CaFileEmpty(PathBuf),
    /// rustls rejected the configuration.
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
    /// The crypto provider lacks the cipher suite QUIC needs for Initial packets.
    #[error("QUIC TLS setup failed: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// The server presented a certificate other than the pinned one.
pub struct PinMismatch {
    /// Lowercase hex SHA-256 of the certificate the server presented.
    pub presented: String,
}

/// Same as `Display`: rustls shows this error with `{:?}` in handshake
/// failures, and the message must stay readable there.
impl fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "server certificate fingerprint {} does not match the pinned fingerprint: \
             check the server address, or pin the fingerprint the server logs on start",
            self.presented
        )
    }
}

impl std::error::Error for PinMismatch {}

impl PinMismatch {
    /// The words that open the message, before the presented fingerprint.
    const PREFIX: &'static str = "server certificate fingerprint ";

    /// Finds a pin mismatch in the text of a failed handshake. rustls shows
    /// this error only inside `Other(OtherError(…))`, and quinn keeps only
    /// that text, so this is how the typed error is recovered from it.
    pub fn find_in(reason: &str) -> Option<PinMismatch> {
        let start = reason.find(Self::PREFIX)? + Self::PREFIX.len();
        let presented = reason.get(start..start + 2 * FINGERPRINT_LEN)?;
        let rest = reason.get(start + 2 * FINGERPRINT_LEN..)?;
        let is_hex = presented.bytes().all(|b| b.is_ascii_hexdigit());
        (is_hex && rest.starts_with(" does not match the pinned fingerprint")).then(|| {
            PinMismatch {
                presented: presented.to_owned(),
            }
        })
    }
}

/// A quinn client configuration trusting `trust`, with ALPN `tern/1`,
/// TLS 1.3 only, keep-alive [`CLIENT_KEEP_ALIVE`] and idle timeout
/// [`CLIENT_IDLE_TIMEOUT`].
pub fn client_config(trust: &TrustAnchor) -> Result<quinn::ClientConfig, ClientTlsError> {
    client_config_with(trust, true)
}

/// [`client_config`], offering QUIC datagrams (RFC 9221, the
/// `max_datagram_frame_size` transport parameter) only if `datagrams`:
/// without them the server sends this connection's typing signals on the
/// control stream (docs/PROTOCOL.md §1.4).
pub fn client_config_with(
    trust: &TrustAnchor,
    datagrams: bool,
) -> Result<quinn::ClientConfig, ClientTlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut tls = match trust {
        TrustAnchor::Fingerprint(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertVerifier::new(*pin, provider)))
            .with_no_client_auth(),
        TrustAnchor::CaFile(path) => builder
            .with_root_certificates(load_roots(path)?)
            .with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = false;
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    let mut transport = client_transport();
    if !datagrams {
        transport.datagram_receive_buffer_size(None);
    }
    config.transport_config(Arc::new(transport));
    Ok(config)
}

fn client_transport() -> TransportConfig {
    let mut t = TransportConfig::default();
    t.keep_alive_interval(Some(CLIENT_KEEP_ALIVE))
        .max_idle_timeout(IdleTimeout::try_from(CLIENT_IDLE_TIMEOUT).ok());
    t
}

/// Reads CA certificates from a PEM file (any number of `CERTIFICATE`
/// blocks) or a single DER certificate.
fn load_roots(path: &Path) -> Result<RootCertStore, ClientTlsError> {
    let bytes = std::fs::read(path).map_err(|source| ClientTlsError::CaFileRead {
        path: path.to_path_buf(),
        source,
    })?;
    let certs: Vec<CertificateDer<'static>> =
        if bytes.starts_with(b"-----") || bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            CertificateDer::pem_slice_iter(&bytes)
                .filter_map(Result::ok)
                .collect()
        } else {
            vec![CertificateDer::from(bytes)]
        };
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(ClientTlsError::CaFileEmpty(path.to_path_buf()));
    }
    Ok(roots)
}

/// Accepts exactly the server leaf certificate whose SHA-256 equals the pin
/// (names, dates and chain are not checked: the pin is the identity), and
/// still verifies the handshake signature made with that certificate's key.
#[derive(Debug)]
pub struct PinnedCertVerifier {
    pin: [u8; FINGERPRINT_LEN],
    provider: Arc<CryptoProvider>,
}

impl PinnedCertVerifier {
    /// A verifier for `pin`, checking signatures with `provider`'s algorithms.
    pub fn new(pin: [u8; FINGERPRINT_LEN], provider: Arc<CryptoProvider>) -> Self {
        Self { pin, provider }
    }
}

/// Compares without an early exit, so timing does not reveal how many
/// leading bytes matched.
fn constant_time_eq(a: &[u8; FINGERPRINT_LEN], b: &[u8; FINGERPRINT_LEN]) -> bool {
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = cert_digest(end_entity.as_ref());
        if constant_time_eq(&digest, &self.pin) {
            return Ok(ServerCertVerified::assertion());
        }
        let mismatch = PinMismatch {
            presented: hex::encode(digest),
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(mismatch)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_all_bytes() {
        let a = [7u8; FINGERPRINT_LEN];
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[FINGERPRINT_LEN - 1] ^= 1;
        assert!(!constant_time_eq(&a, &b));
    }

    #[test]
    fn a_pin_mismatch_is_found_in_a_handshake_failure_text() {
        let mismatch = PinMismatch {
            presented: "ab".repeat(FINGERPRINT_LEN),
        };
        let wrapped = format!("error 42: invalid peer certificate: Other(OtherError({mismatch}))");
        let found = PinMismatch::find_in(&wrapped).expect("found");
        assert_eq!(found.presented, mismatch.presented);
        assert!(
            PinMismatch::find_in("error 42: invalid peer certificate: UnknownIssuer").is_none()
        );
        let short = "server certificate fingerprint abcd does not match the pinned fingerprint";
        assert!(PinMismatch::find_in(short).is_none());
    }

    #[test]
    fn configs_build() -> Result<(), Box<dyn std::error::Error>> {
        client_config(&TrustAnchor::Fingerprint([0; FINGERPRINT_LEN]))?;
        let missing = client_config(&TrustAnchor::CaFile(PathBuf::from("/nonexistent/ca.pem")));
        assert!(matches!(missing, Err(ClientTlsError::CaFileRead { .. })));
        Ok(())
    }

    #[test]
    fn ca_file_accepts_pem_and_der() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_string()])?;
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, ca.cert.pem())?;
        let der = dir.path().join("ca.der");
        std::fs::write(&der, ca.cert.der())?;
        client_config(&TrustAnchor::CaFile(pem))?;
        client_config(&TrustAnchor::CaFile(der))?;
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate")?;
        assert!(matches!(
            client_config(&TrustAnchor::CaFile(junk)),
            Err(ClientTlsError::CaFileEmpty(_))
        ));
        Ok(())
    }
}
