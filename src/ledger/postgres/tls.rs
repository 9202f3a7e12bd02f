//! TLS to the PostgreSQL server: rustls on the aws-lc-rs provider (the one reqwest and our
//! signing already use; no ring, no OpenSSL), through `tokio-postgres-rustls`'s
//! `MakeRustlsConnect`, which the synchronous client's `Config::connect` takes as it takes
//! `NoTls`. The URL's `sslmode` decides whether TLS is used: `disable` never, `prefer` (the
//! client's default) when the server offers it, `require` always or no connection.
//!
//! Whenever TLS is used the server's certificate is verified, chain and host name, against
//! `ledger.ca_file` when it is set (only that file's certificates, as libpq's `sslrootcert`) or
//! else the system's root certificates (rustls-native-certs: the store the administrator keeps,
//! `SSL_CERT_FILE`/`SSL_CERT_DIR` honoured, the same one reqwest's platform verifier reads on
//! Linux). This differs from libpq on purpose: there `prefer` and `require` encrypt without
//! checking who answers; here there is no TLS that trusts any certificate, so a server whose
//! certificate nothing vouches for is refused rather than silently trusted. `sslmode=disable`
//! is the explicit way to go without TLS.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use postgres::config::SslMode;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::ledger::{LedgerError, PostgresTarget};

/// How a connection of one ledger is made: the URL's `sslmode` and the roots, decided once at
/// open, so a reconnect trusts exactly what the first connection did.
#[derive(Clone)]
pub(super) enum Tls {
    /// `sslmode=disable`: no TLS (the roots are not even loaded).
    Off,
    /// TLS as `sslmode` asks, verified against `roots`.
    Rustls {
        /// The connector (its `rustls::ClientConfig` is shared, not copied, by each connect).
        connector: MakeRustlsConnect,
        /// Where its roots came from, for messages.
        roots: Roots,
    },
}

/// Where the certificates that vouch for the server come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// `ledger.ca_file`.
    CaFile(PathBuf),
    /// The system's root certificates.
    System,
}

impl fmt::Display for Roots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CaFile(path) => write!(f, "ledger.ca_file {}", path.display()),
            Self::System => f.write_str("the system's root certificates (no ledger.ca_file)"),
        }
    }
}

/// Why `ledger.ca_file` cannot serve as the roots.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// The file cannot be read.
    #[error("cannot read it")]
    Read(#[source] std::io::Error),
    /// Its PEM is broken.
    #[error("its PEM does not parse")]
    Pem(#[source] rustls::pki_types::pem::Error),
    /// It holds no `BEGIN CERTIFICATE` section.
    #[error("it holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate,
    /// A certificate in it cannot be a root (not X.509 that rustls reads).
    #[error("certificate {index} in it cannot be a root certificate")]
    BadCertificate {
        /// Its position in the file, from 1.
        index: usize,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
}

/// The roots `path` holds: every PEM certificate in it, each one usable as a root. The config
/// calls it when it is loaded (so a wrong file is an error naming `ledger.ca_file` before
/// anything starts) and the ledger again when it opens.
pub fn read_ca_file(path: &Path) -> Result<rustls::RootCertStore, CaFileError> {
    let pem = std::fs::read(path).map_err(CaFileError::Read)?;
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(CaFileError::Pem)?;
        roots
            .add(cert)
            .map_err(|source| CaFileError::BadCertificate {
                index: i + 1,
                source,
            })?;
    }
    if roots.is_empty() {
        return Err(CaFileError::NoCertificate);
    }
    Ok(roots)
}

impl Tls {
    /// What `config`'s `sslmode` and `target`'s `ca_file` ask for. The system's roots are read
    /// here, once per open (a reconnect reuses them), and only when TLS may be used.
    pub(super) fn for_target(
        config: &postgres::Config,
        target: &PostgresTarget,
    ) -> Result<Self, LedgerError> {
        if config.get_ssl_mode() == SslMode::Disable {
            return Ok(Self::Off);
        }
        let url = &target.url;
        let (store, roots) = match &target.ca_file {
            Some(path) => {
                let store = read_ca_file(path).map_err(|source| LedgerError::PgCaFile {
                    url: url.clone(),
                    path: path.clone(),
                    source,
                })?;
                (store, Roots::CaFile(path.clone()))
            }
            None => (system_roots(url)?, Roots::System),
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|source| LedgerError::PgTlsSetup {
                url: url.clone(),
                source,
            })?
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(Self::Rustls {
            connector: MakeRustlsConnect::new(client),
            roots,
        })
    }
}

/// The system's root certificates; an error when none could be loaded (TLS could then never
/// succeed, and saying so at open beats a handshake failure later).
fn system_roots(url: &str) -> Result<rustls::RootCertStore, LedgerError> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut store = rustls::RootCertStore::empty();
    // A system store often holds a certificate rustls cannot use as a root; the rest serve.
    store.add_parsable_certificates(loaded.certs);
    if store.is_empty() {
        return Err(LedgerError::PgNoSystemRoots {
            url: url.to_owned(),
            source: loaded.errors.into_iter().next(),
        });
    }
    Ok(store)
}

/// True when `e` is rustls refusing the handshake (the server's certificate, most often): the
/// connector's I/O error wraps the `rustls::Error`.
pub(super) fn is_tls_refusal(e: &postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return true;
        }
        source = s.source();
    }
    false
}
