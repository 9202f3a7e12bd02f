//! TLS to a PostgreSQL ledger (src/ledger/postgres/tls.rs) against the local server with its
//! own certificate: `sslmode=require` with that certificate as `ledger.ca_file` connects and
//! the server records the session as encrypted; a certificate no root vouches for, or one for
//! another host name, is refused under `require` and under the default `prefer` alike (never a
//! silent fall back to the clear), naming `ledger.url` and `ledger.ca_file`; `sslmode=disable`
//! connects in the clear.
//!
//! How the host name is checked honestly: the server's certificate (Debian's `ssl-cert-snakeoil`,
//! self-signed) is issued to `localhost`, which resolves to 127.0.0.1 here, so the tests connect
//! to `localhost` and rustls checks that name in full; the same server reached as `127.0.0.1`
//! is refused for the name. The "wrong CA" is a fresh self-signed certificate for the same name
//! made by `openssl` (a different key): it is the key that must vouch, not the name.
//!
//! Needs a server with `ssl = on` whose certificate file (`ssl_cert_file`) this user can read
//! and which names `localhost`; otherwise the tools policy applies (SKIPPED, or a failure
//! under CI).

use std::path::{Path, PathBuf};
use std::process::Command;

use checus_reconciler::ledger::{LedgerError, OpenMode, PgLedger, PostgresTarget, Roots};

use crate::common::pg::{self, DropDb};
use crate::common::tools::{require, require_tool};
use checus_reconciler::logging::one_line_chain as chain;

/// A fresh database on a server that speaks TLS, and the server's certificate file.
pub(crate) struct TlsServer {
    /// The fresh database's URL as the tests are given it (sslmode=disable).
    pub url: String,
    /// The server's certificate (its own root: it is self-signed).
    pub cert: PathBuf,
    _db: DropDb,
}

impl TlsServer {
    /// `None`: skipped (no server, or it does not speak TLS; not CI).
    pub(crate) fn new() -> Option<Self> {
        let (url, db) = pg::fresh_db()?;
        let mut admin = pg::connect(&url).unwrap();
        let ssl: String = admin.query_one("SHOW ssl", &[]).unwrap().get(0);
        let cert: String = admin.query_one("SHOW ssl_cert_file", &[]).unwrap().get(0);
        let cert = PathBuf::from(cert);
        if !require(
            &format!(
                "a PostgreSQL server with ssl = on and a certificate this user can read \
                 (ssl = {ssl}, ssl_cert_file = {})",
                cert.display()
            ),
            ssl == "on" && std::fs::read(&cert).is_ok(),
        ) {
            return None;
        }
        Some(Self { url, cert, _db: db })
    }

    /// The database's URL at `host`, with `params` (`sslmode=…`, …) in place of the tests'.
    pub(crate) fn url(&self, host: &str, params: &[(&str, &str)]) -> String {
        let mut u = url::Url::parse(&self.url).unwrap();
        u.set_host(Some(host)).unwrap();
        u.set_query(None);
        for (k, v) in params {
            u.query_pairs_mut().append_pair(k, v);
        }
        u.into()
    }

    /// Whether the server records the session named `application_name` as encrypted, and with
    /// which protocol: the server's own view (`pg_stat_ssl`) of the engine's connection.
    fn session_ssl(&self, application_name: &str) -> Vec<(bool, Option<String>)> {
        let mut admin = pg::connect(&self.url).unwrap();
        admin
            .query(
                "SELECT s.ssl, s.version FROM pg_stat_ssl AS s
                   JOIN pg_stat_activity AS a USING (pid)
                  WHERE a.application_name = $1 AND a.datname = current_database()",
                &[&application_name],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }
}

/// A self-signed certificate for `localhost` with a fresh key, in `dir`: a CA that did not
/// sign the server's certificate. `None`: no `openssl` (skipped, not CI).
pub(crate) fn stranger_ca(dir: &Path) -> Option<PathBuf> {
    if !require_tool("openssl") {
        return None;
    }
    let cert = dir.join("stranger-ca.pem");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .arg("-keyout")
        .arg(dir.join("stranger-ca.key"))
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(cert)
}

fn target(url: String, ca_file: Option<&Path>) -> PostgresTarget {
    PostgresTarget {
        url,
        password: None,
        ca_file: ca_file.map(Path::to_path_buf),
    }
}

#[test]
fn pg_tls_require_with_the_servers_ca_connects_encrypted() {
    let Some(s) = TlsServer::new() else { return };
    let url = s.url(
        "localhost",
        &[
            ("sslmode", "require"),
            ("application_name", "pg_tls_require"),
        ],
    );
    let ledger = PgLedger::open(&target(url, Some(&s.cert)), OpenMode::Create)
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    // A real round trip over it, then the server's record of the session.
    ledger.recheck_schema().unwrap();
    let sessions = s.session_ssl("pg_tls_require");
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let (ssl, version) = &sessions[0];
    assert!(ssl, "the engine's session is not encrypted: {sessions:?}");
    assert!(
        version.as_deref().is_some_and(|v| v.starts_with("TLSv1.")),
        "{sessions:?}"
    );
}

#[test]
fn pg_tls_a_certificate_no_root_vouches_for_is_refused_naming_the_url_and_the_ca_file() {
    let Some(s) = TlsServer::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(stranger) = stranger_ca(dir.path()) else {
        return;
    };
    // `require`, and the default `prefer`: the server offers TLS, so it is used, and a failed
    // check is a refusal, never a fall back to the clear.
    for params in [&[("sslmode", "require")][..], &[][..]] {
        let url = s.url("localhost", params);
        let e = PgLedger::open(&target(url.clone(), Some(&stranger)), OpenMode::Create)
            .expect_err("a server the CA file does not vouch for was trusted");
        let LedgerError::PgTls { roots, .. } = &e else {
            panic!("{params:?}: expected PgTls, got {e:?}");
        };
        assert_eq!(roots, &Roots::CaFile(stranger.clone()));
        assert!(e.is_refusal(), "the operator must act (exit 4)");
        let text = chain(&e);
        for says in [
            "ledger.url",
            url.as_str(),
            "ledger.ca_file",
            stranger.to_str().unwrap(),
            "sslmode=disable",
            // rustls: the stranger has the issuer's name, and its key does not verify.
            "invalid peer certificate: BadSignature",
        ] {
            assert!(text.contains(says), "{params:?}: no {says:?} in: {text}");
        }
    }
    // The right CA, but the server reached by a name its certificate is not for.
    let url = s.url("127.0.0.1", &[("sslmode", "require")]);
    let e = PgLedger::open(&target(url, Some(&s.cert)), OpenMode::Create)
        .expect_err("a certificate for localhost was accepted for 127.0.0.1");
    assert!(matches!(e, LedgerError::PgTls { .. }), "{e:?}");
    assert!(
        chain(&e).contains("certificate not valid for name \"127.0.0.1\""),
        "{}",
        chain(&e)
    );
}

#[test]
fn pg_tls_sslmode_disable_connects_in_the_clear() {
    let Some(s) = TlsServer::new() else { return };
    let url = s.url(
        "127.0.0.1",
        &[
            ("sslmode", "disable"),
            ("application_name", "pg_tls_disable"),
        ],
    );
    let ledger = PgLedger::open(&target(url, None), OpenMode::Create)
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    ledger.recheck_schema().unwrap();
    assert_eq!(s.session_ssl("pg_tls_disable"), vec![(false, None)]);
}
