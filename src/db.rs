//! Connections to the application database, for every connection rowcast opens (pool,
//! capture, the replication stream, migrate, check): TLS like libpq, the pool, and the
//! replication connection's settings.
//!
//! `sslmode` in the URL decides whether TLS is used (`disable`, `prefer` — the default —
//! or `require`). As with libpq's `prefer`/`require`, the server certificate is not
//! checked unless a CA is configured: with `database_ca_file` (`ROWCAST_DATABASE_CA_FILE`)
//! the certificate must chain to that CA and match the host name.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{ManagerConfig, Pool, RecyclingMethod, Runtime};
use pgwire_replication::{ReplicationConfig, TlsConfig};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// What is wrong with a connection string.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("DATABASE_URL is not a valid connection string: {0}")]
    Invalid(#[source] tokio_postgres::Error),
    #[error("DATABASE_URL names no user")]
    NoUser,
}

/// Why the pool could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot set up the connection pool: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
}

/// Session settings of every connection rowcast opens, ahead of any `options` in the URL
/// (which win): `jit = off`. rowcast's statements are short lookups and range reads over
/// indexes; with PostgreSQL's default `jit = on` the planner's row estimates for a log
/// read crossed `jit_above_cost`, and compiling the query cost more CPU than reading the
/// rows (a sixth of all the machine's CPU under the `sustained` bench).
const SESSION_OPTIONS: &str = "-c jit=off";

/// The connection settings for `url`, with rowcast's session settings.
pub fn session(url: &str) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
    let mut pg: tokio_postgres::Config = url.parse()?;
    let options = match pg.get_options() {
        Some(own) => format!("{SESSION_OPTIONS} {own}"),
        None => SESSION_OPTIONS.to_string(),
    };
    pg.options(&options);
    Ok(pg)
}

/// A pool of `size` connections to `url` (connections open on first use).
pub fn pool(url: &str, ca_file: Option<&Path>, size: usize) -> Result<Pool, PoolError> {
    let pg = session(url).map_err(UrlError::Invalid)?;
    let manager = deadpool_postgres::Manager::from_config(
        pg,
        tls(ca_file)?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .build()?)
}

/// The connector type every connection uses.
pub type Tls = MakeRustlsConnect;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the database CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("TLS setup failed: {0}")]
    Rustls(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The TLS connector for `ca_file` (verify against it) or none (encrypt, don't verify).
pub fn tls(ca_file: Option<&Path>) -> Result<Tls, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let config = match ca_file {
        Some(path) => {
            let bad = |reason: String| TlsError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no PEM certificate in it".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider())))
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// The replication connection's settings, from the same `DATABASE_URL` and TLS settings as
/// every other connection.
pub fn replication_config(
    url: &str,
    ca_file: Option<&std::path::Path>,
    slot: &str,
    publication: &str,
) -> Result<ReplicationConfig, UrlError> {
    use tokio_postgres::config::{Host, SslMode};
    let pg: tokio_postgres::Config = url.parse().map_err(UrlError::Invalid)?;
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.to_string_lossy().into_owned(),
        None => "localhost".to_string(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let user = pg.get_user().ok_or(UrlError::NoUser)?;
    let password = pg
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let dbname = pg.get_dbname().unwrap_or(user);
    let tls = match (pg.get_ssl_mode(), ca_file) {
        (SslMode::Disable, _) => TlsConfig::disabled(),
        // The replication client checks host names but cannot check an IP address
        // against the certificate: for an IP it verifies the chain only.
        (_, Some(ca)) if host.parse::<std::net::IpAddr>().is_ok() => {
            TlsConfig::verify_ca(Some(ca.to_path_buf()))
        }
        (_, Some(ca)) => TlsConfig::verify_full(Some(ca.to_path_buf())),
        (SslMode::Require, None) => TlsConfig::require(),
        (_, None) => TlsConfig {
            mode: pgwire_replication::SslMode::Prefer,
            ..TlsConfig::disabled()
        },
    };
    Ok(
        ReplicationConfig::new(host, user, password, dbname, slot, publication)
            .with_port(port)
            .with_tls(tls)
            .with_status_interval(Duration::from_secs(1))
            .with_wakeup_interval(Duration::from_secs(5))
            .with_application_name("rowcast")
            // Logical capture renders timestamps from their text, in ISO style.
            .with_options("-c datestyle=ISO,MDY"),
    )
}

/// libpq's `sslmode=require` without a CA: the channel is encrypted and the handshake
/// signatures are checked, but the certificate's issuer and name are not.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_turn_jit_off_and_keep_the_urls_own_options() {
        let plain = session("postgres://u@h/db").unwrap();
        assert_eq!(plain.get_options(), Some("-c jit=off"));
        let own = session("postgres://u@h/db?options=-c%20jit%3Don%20-c%20work_mem%3D8MB").unwrap();
        // The URL's own settings come after rowcast's, so they win.
        assert_eq!(
            own.get_options(),
            Some("-c jit=off -c jit=on -c work_mem=8MB")
        );
        assert!(session("not a url =").is_err());
    }
}
