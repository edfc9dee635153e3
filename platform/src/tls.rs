//! Test certificate authority and the server certificate for the TLS listeners (rcgen): made once
//! per data directory, so clients that trust the CA keep trusting restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS material could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing the PEM files failed.
    #[error("tls files in {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file did not parse.
    #[error("pem file does not parse: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// rustls refused the certificate or key.
    #[error("tls configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The TLS configuration and where the CA certificate is.
#[derive(Debug, Clone)]
pub(crate) struct TlsMaterial {
    /// PEM of the test CA that signed the server certificate.
    pub(crate) ca_path: PathBuf,
    /// Server configuration for the TLS listeners.
    pub(crate) server_config: Arc<rustls::ServerConfig>,
}

/// Load the CA and server certificate from `dir`, or make them for `names` (host names and IP
/// addresses; the first is the certificate's common name). Asked for other names, it makes a
/// new CA and certificate (the CA's key is not kept), which clients must trust anew.
pub(crate) fn load_or_create(dir: &Path, names: &[String]) -> Result<TlsMaterial, TlsError> {
    let io = |source| TlsError::Io {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let ca_path = dir.join("ca.pem");
    let cert_path = dir.join("server.pem");
    let key_path = dir.join("server-key.pem");
    let host_path = dir.join("server-host.txt");
    let described = names.join("\n");
    let same_names = std::fs::read_to_string(&host_path).is_ok_and(|h| h == described);
    if !(same_names && ca_path.exists() && cert_path.exists() && key_path.exists()) {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "vdev-platform test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let server_key = KeyPair::generate()?;
        let host_names: Vec<String> = names
            .iter()
            .filter(|name| name.parse::<std::net::IpAddr>().is_err())
            .cloned()
            .collect();
        let mut server_params = CertificateParams::new(host_names)?;
        if let Some(common_name) = names.first() {
            server_params
                .distinguished_name
                .push(DnType::CommonName, common_name.as_str());
        }
        for ip in names.iter().filter_map(|name| name.parse().ok()) {
            server_params.subject_alt_names.push(SanType::IpAddress(ip));
        }
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let server_cert = server_params.signed_by(&server_key, &ca_cert, &ca_key)?;
        std::fs::write(&ca_path, ca_cert.pem()).map_err(io)?;
        std::fs::write(&cert_path, server_cert.pem()).map_err(io)?;
        crate::secrets::write_private(&key_path, server_key.serialize_pem().as_bytes())
            .map_err(io)?;
        std::fs::write(&host_path, &described).map_err(io)?;
    }
    // A key written by an earlier version may be readable by others.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    let certs = CertificateDer::pem_file_iter(&cert_path)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsMaterial {
        ca_path,
        server_config: Arc::new(server_config),
    })
}
