//! A throwaway certificate authority made at start, and an HTTPS accept loop.
//! `azure_core` refuses bearer tokens over plain http and `azure_identity`
//! refuses an http authority host, so the mocks serve TLS that clients trust
//! through [`TestCa::ca_pem`].

use std::io;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate and its private key, PEM.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

/// A CA generated for one test run.
#[derive(Clone)]
pub struct TestCa(Arc<CertifiedIssuer<'static, KeyPair>>);

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestCa")
    }
}

fn tls_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl TestCa {
    pub fn new() -> io::Result<TestCa> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "meshmirror test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(tls_err)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(tls_err)?;
        Ok(TestCa(Arc::new(issuer)))
    }

    /// The CA certificate clients must trust.
    pub fn ca_pem(&self) -> String {
        self.0.pem()
    }

    /// A server certificate for `names` (`127.0.0.1`, `localhost`, ...).
    pub fn issue(&self, names: &[&str]) -> io::Result<IssuedCert> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).map_err(tls_err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "meshmirror test server");
        let key = KeyPair::generate().map_err(tls_err)?;
        let cert = params.signed_by(&key, &self.0).map_err(tls_err)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        })
    }

    /// A rustls server config for `names`, with its own crypto provider so it
    /// never depends on a process-wide default.
    pub fn server_config(&self, names: &[&str]) -> io::Result<ServerConfig> {
        let issued = self.issue(names)?;
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(tls_err)?
                .with_no_client_auth()
                .with_single_cert(
                    vec![issued.cert_der],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(issued.key_der)),
                )
                .map_err(tls_err)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Serves `router` over HTTPS on `tcp` until the task is aborted.
pub fn serve(tcp: TcpListener, config: ServerConfig, router: Router) -> JoinHandle<()> {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _peer)) = tcp.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = TowerToHyperService::new(router);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    })
}
