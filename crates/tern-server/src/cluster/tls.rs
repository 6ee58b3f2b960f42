//! The nodes' mutual-TLS identity. An operator makes one cluster CA
//! (`tern cluster-ca --out DIR`: `ca.pem`, `ca.key`) and gives both files to
//! every node; each node issues itself a leaf certificate at start-up,
//! signed by the CA, whose only name is `{node id}.nodes.tern.invalid`
//! (`.invalid` is reserved by RFC 6761 §6.4: it never resolves, so the
//! name means nothing outside the cluster). Connections use TLS 1.3 only,
//! ALPN `tern-node/1` and no 0-RTT; the server side requires a client
//! certificate chaining to the CA, the client side requires the server's
//! chain to reach the CA *and* carry the name of the node it dialled.
//!
//! Only CAs made by [`ClusterTls::generate_ca`] are accepted (fixed
//! subject `CN=tern cluster CA`; rcgen cannot read another CA's subject
//! without x509-parser). Revoking a node means making a new CA.

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use super::{check_node_id, NodeId};

/// ALPN of node-to-node connections.
pub const NODE_ALPN: &[u8] = b"tern-node/1";
/// What follows the node id in a node certificate's DNS name.
pub const NODE_NAME_SUFFIX: &str = ".nodes.tern.invalid";
/// Common name of the cluster CA.
const CA_COMMON_NAME: &str = "tern cluster CA";

/// Why the cluster TLS identity could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterTlsError {
    /// The node id cannot be a certificate name.
    #[error("{0}")]
    NodeId(String),
    /// `ca.pem` holds no certificate, or not one PEM can read.
    #[error(
        "the cluster CA certificate is not PEM ({0}); use the ca.pem made by `tern cluster-ca`"
    )]
    CaCert(String),
    /// `ca.key` is not a PEM private key rcgen can sign with.
    #[error("the cluster CA key is not a usable PEM private key ({0}); use the ca.key made by `tern cluster-ca`")]
    CaKey(rcgen::Error),
    /// The issued leaf does not verify against `ca.pem`.
    #[error("a certificate signed with the CA key does not verify against the CA certificate ({0}): ca.key and ca.pem must be one pair made by `tern cluster-ca`")]
    Mismatch(rustls::Error),
    /// rcgen could not make a key or certificate.
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused a configuration.
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
    /// The provider lacks QUIC's initial cipher suite.
    #[error("QUIC TLS setup failed: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// This node's certificate from the cluster CA, and the CA to check peers against.
#[derive(Debug)]
pub struct ClusterTls {
    node_id: NodeId,
    leaf: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    roots: Arc<RootCertStore>,
    /// Secret of this node's stateless-reset key: the same across restarts
    /// of one node (derived from the CA key and the node id), so a
    /// restarted node resets the connections its peers still hold to its
    /// previous run and they redial at once.
    reset_secret: [u8; 32],
}

impl ClusterTls {
    /// Issues `node_id`'s leaf certificate (a fresh P-256 key) from the CA
    /// in `ca_cert_pem` / `ca_key_pem`, and checks that it verifies.
    ///
    /// # Errors
    /// [`ClusterTlsError`]: a bad node id, unreadable PEM, or a key that
    /// does not belong to the certificate.
    pub fn load(
        ca_cert_pem: &str,
        ca_key_pem: &str,
        node_id: &str,
    ) -> Result<Self, ClusterTlsError> {
        check_node_id(node_id).map_err(ClusterTlsError::NodeId)?;
        let ca_der = CertificateDer::from_pem_slice(ca_cert_pem.as_bytes())
            .map_err(|e| ClusterTlsError::CaCert(e.to_string()))?;
        let ca_key = rcgen::KeyPair::from_pem(ca_key_pem).map_err(ClusterTlsError::CaKey)?;
        let issuer = ca_params()?.self_signed(&ca_key)?;
        let leaf_key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec![node_name(node_id)])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, node_id);
        params.use_authority_key_identifier_extension = true;
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let leaf = params.signed_by(&leaf_key, &issuer, &ca_key)?;
        let mut roots = RootCertStore::empty();
        roots
            .add(ca_der)
            .map_err(|e| ClusterTlsError::CaCert(e.to_string()))?;
        let tls = ClusterTls {
            node_id: node_id.to_owned(),
            leaf: leaf.der().clone(),
            key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
            roots: Arc::new(roots),
            reset_secret: reset_secret(ca_key_pem, node_id),
        };
        tls.self_check()?;
        Ok(tls)
    }

    /// A new cluster CA: `(certificate PEM, private key PEM)`. The key is
    /// the cluster's root secret: keep it mode 0600.
    ///
    /// # Errors
    /// rcgen failed to make the key or certificate.
    pub fn generate_ca() -> Result<(String, String), ClusterTlsError> {
        let key = rcgen::KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// This node's leaf certificate (DER).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.leaf
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// The leaf must verify against the CA for this node's name, or every
    /// peer would refuse it: better to fail at start.
    fn self_check(&self) -> Result<(), ClusterTlsError> {
        let verifier =
            WebPkiServerVerifier::builder_with_provider(self.roots.clone(), Self::provider())
                .build()
                .map_err(|e| ClusterTlsError::CaCert(e.to_string()))?;
        let name = ServerName::try_from(node_name(&self.node_id))
            .map_err(|e| ClusterTlsError::NodeId(e.to_string()))?;
        verifier
            .verify_server_cert(&self.leaf, &[], &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(ClusterTlsError::Mismatch)
    }

    /// The server side of node links: TLS 1.3, ALPN [`NODE_ALPN`], a client
    /// certificate chaining to the CA required, no 0-RTT.
    ///
    /// # Errors
    /// rustls or quinn refused the configuration.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, ClusterTlsError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), Self::provider())
                .build()
                .map_err(|e| ClusterTlsError::CaCert(e.to_string()))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.leaf.clone()], self.private_key())?;
        tls.alpn_protocols = vec![NODE_ALPN.to_vec()];
        tls.max_early_data_size = 0;
        let crypto = QuicServerConfig::try_from(tls)?;
        Ok(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
    }

    /// The client side of node links: the server's chain must reach the CA
    /// and name the dialled node (pass [`ClusterTls::server_name`] of it to
    /// `connect`); this node's leaf as client certificate.
    ///
    /// # Errors
    /// rustls or quinn refused the configuration.
    pub fn client_config(&self) -> Result<quinn::ClientConfig, ClusterTlsError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(vec![self.leaf.clone()], self.private_key())?;
        tls.alpn_protocols = vec![NODE_ALPN.to_vec()];
        let crypto = QuicClientConfig::try_from(tls)?;
        Ok(quinn::ClientConfig::new(Arc::new(crypto)))
    }

    /// The TLS name of node `id`: `{id}.nodes.tern.invalid`.
    pub fn server_name(id: &str) -> String {
        node_name(id)
    }

    /// The key quinn signs stateless resets with (HMAC-SHA256).
    pub fn reset_key(&self) -> Arc<dyn quinn::crypto::HmacKey> {
        Arc::new(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &self.reset_secret,
        ))
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    /// The node id a peer's verified certificate chain names (its leaf's
    /// DNS name under [`NODE_NAME_SUFFIX`]); `None` if it names none.
    pub fn peer_node_id(chain: &[CertificateDer<'_>]) -> Option<NodeId> {
        let leaf = chain.first()?;
        let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
        let id = cert
            .valid_dns_names()
            .find_map(|name| name.strip_suffix(NODE_NAME_SUFFIX))?;
        check_node_id(id).ok()?;
        Some(id.to_owned())
    }
}

/// SHA-256("tern-node-reset-v1" ‖ CA key PEM ‖ node id).
fn reset_secret(ca_key_pem: &str, node_id: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(b"tern-node-reset-v1");
    hash.update(ca_key_pem.as_bytes());
    hash.update(node_id.as_bytes());
    hash.finalize().into()
}

fn node_name(id: &str) -> String {
    format!("{id}{NODE_NAME_SUFFIX}")
}

/// The CA's parameters. Fixed, so that a CA can be rebuilt as an rcgen
/// issuer from its key alone (same subject, same key identifier).
fn ca_params() -> Result<rcgen::CertificateParams, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_names_its_node_and_verifies() -> Result<(), ClusterTlsError> {
        let (cert, key) = ClusterTls::generate_ca()?;
        let tls = ClusterTls::load(&cert, &key, "tern-1")?;
        assert_eq!(tls.node_id(), "tern-1");
        let chain = [tls.certificate().clone()];
        assert_eq!(ClusterTls::peer_node_id(&chain).as_deref(), Some("tern-1"));
        tls.server_config()?;
        tls.client_config()?;
        Ok(())
    }

    #[test]
    fn bad_inputs_are_refused() -> Result<(), ClusterTlsError> {
        let (cert, key) = ClusterTls::generate_ca()?;
        let (_, other_key) = ClusterTls::generate_ca()?;
        assert!(matches!(
            ClusterTls::load(&cert, &other_key, "tern-1"),
            Err(ClusterTlsError::Mismatch(_))
        ));
        assert!(matches!(
            ClusterTls::load(&cert, &key, "Tern 1"),
            Err(ClusterTlsError::NodeId(_))
        ));
        assert!(matches!(
            ClusterTls::load("junk", &key, "tern-1"),
            Err(ClusterTlsError::CaCert(_))
        ));
        assert!(matches!(
            ClusterTls::load(&cert, "junk", "tern-1"),
            Err(ClusterTlsError::CaKey(_))
        ));
        Ok(())
    }
}
