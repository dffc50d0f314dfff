//! SIP over TLS (RFC 3261 §26.2): the rustls configurations of sipctl's TLS listeners and of
//! its outbound TLS connections, built from the PEM files the configuration names.
//!
//! The daemon calls these once at start-up, so a missing or unusable file stops sipctl with
//! an error naming the configuration key ([`TlsError`]). TLS is only a stream under SIP: the
//! daemon frames a TLS connection exactly like a TCP one (RFC 3261 §18.3, one code path).
//!
//! Outbound connections verify the peer's certificate against the CA bundle `sip.tls-ca`
//! (there are no system roots offline, and a call recorder's peers are known), with the
//! URI's host as the name to check (RFC 5922 §7.2; sipctl reaches peers by IP address, so
//! the certificate needs an IP address subjectAltName).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

/// Why a TLS configuration cannot be built; every variant names the configuration key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read or holds no PEM section of the kind needed.
    #[error("{key} = {path:?}: {reason}")]
    File {
        /// The configuration key (`sip.listen[2].cert`).
        key: String,
        /// The path as configured.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refuses the certificate/key pair or the CA bundle.
    #[error("{key}: {source}")]
    Rustls {
        /// The configuration key.
        key: String,
        /// rustls' error.
        source: rustls::Error,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(key: &str, path: &Path, e: &rustls_pki_types::pem::Error, what: &str) -> TlsError {
    let reason = match e {
        rustls_pki_types::pem::Error::Io(io) => format!("cannot read: {io}"),
        rustls_pki_types::pem::Error::NoItemsFound => format!("no PEM {what} in the file"),
        other => format!("not a PEM file: {other}"),
    };
    TlsError::File {
        key: key.to_owned(),
        path: path.to_owned(),
        reason,
    }
}

/// Reads every certificate of a PEM file (at least one).
fn read_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let what = "CERTIFICATE";
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(key, path, &e, what))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, &e, what))?;
    if certs.is_empty() {
        return Err(file_error(
            key,
            path,
            &rustls_pki_types::pem::Error::NoItemsFound,
            what,
        ));
    }
    Ok(certs)
}

/// The server configuration of one TLS listener: its certificate chain and private key.
/// No client certificates are asked for (SIP digest or the trusted-peer list decide).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_key = format!("{}.cert", files.at);
    let key_key = format!("{}.key", files.at);
    let certs = read_certs(&cert_key, &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| file_error(&key_key, &files.key, &e, "PRIVATE KEY"))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            key: files.at.clone(),
            source,
        })?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Rustls {
            key: format!("{} (cert and key)", files.at),
            source,
        })?;
    Ok(Arc::new(config))
}

/// The client configuration for outbound TLS: peers' certificates must chain to a CA of the
/// PEM bundle `ca` (`sip.tls-ca`).
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let key = "sip.tls-ca";
    let mut roots = RootCertStore::empty();
    for cert in read_certs(key, ca)? {
        roots.add(cert).map_err(|source| TlsError::Rustls {
            key: key.to_owned(),
            source,
        })?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            key: key.to_owned(),
            source,
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: PathBuf,
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated key, as PEM
    /// files in a fresh directory.
    fn files(name: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("sipctl-tls-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).expect("ca");
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .signed_by(&leaf_key, &ca, &ca_key)
            .expect("leaf");
        let other = rcgen::KeyPair::generate().expect("key");
        for (f, text) in [
            ("ca.pem", ca.pem()),
            ("cert.pem", leaf.pem()),
            ("key.pem", leaf_key.serialize_pem()),
            ("other-key.pem", other.serialize_pem()),
            (
                "garbage.pem",
                "-----BEGIN CERTIFICATE-----\n!!!\n".to_owned(),
            ),
        ] {
            std::fs::write(dir.join(f), text).expect("write");
        }
        Files { dir }
    }

    fn tls_files(f: &Files, cert: &str, key: &str) -> TlsFiles {
        TlsFiles {
            cert: f.dir.join(cert),
            key: f.dir.join(key),
            at: "sip.listen[2]".into(),
        }
    }

    #[test]
    fn a_matching_certificate_and_key_make_a_server_config() {
        let f = files("ok");
        let c = server_config(&tls_files(&f, "cert.pem", "key.pem")).expect("valid");
        assert!(c.alpn_protocols.is_empty());
        client_config(&f.dir.join("ca.pem")).expect("valid CA bundle");
    }

    #[test]
    fn unusable_files_are_errors_that_name_the_key() {
        let f = files("bad");
        let cases = [
            (
                "missing.pem",
                "key.pem",
                "sip.listen[2].cert",
                "cannot read",
            ),
            (
                "key.pem",
                "key.pem",
                "sip.listen[2].cert",
                "no PEM CERTIFICATE",
            ),
            (
                "garbage.pem",
                "key.pem",
                "sip.listen[2].cert",
                "not a PEM file",
            ),
            (
                "cert.pem",
                "missing.pem",
                "sip.listen[2].key",
                "cannot read",
            ),
            (
                "cert.pem",
                "cert.pem",
                "sip.listen[2].key",
                "no PEM PRIVATE KEY",
            ),
        ];
        for (cert, key, want_key, want) in cases {
            let e = server_config(&tls_files(&f, cert, key)).expect_err(cert);
            let text = e.to_string();
            assert!(text.starts_with(want_key), "{cert}/{key}: {text}");
            assert!(text.contains(want), "{cert}/{key}: {text}");
        }
        let e = client_config(&f.dir.join("missing.pem")).expect_err("missing CA");
        assert!(e.to_string().starts_with("sip.tls-ca = "), "{e}");
        let e = client_config(&f.dir.join("key.pem")).expect_err("no certificate");
        assert!(e.to_string().contains("no PEM CERTIFICATE"), "{e}");
    }

    #[test]
    fn a_key_that_does_not_belong_to_the_certificate_is_refused() {
        let f = files("mismatch");
        let e = server_config(&tls_files(&f, "cert.pem", "other-key.pem")).expect_err("mismatch");
        assert!(
            e.to_string().starts_with("sip.listen[2] (cert and key)"),
            "{e}"
        );
    }
}
