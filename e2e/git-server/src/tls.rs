//! A TLS front for a plain-TCP server: what makes the fixture git remote an
//! `https://` one, for the tests of the git phases through the gateway's
//! proxy (libgit2 tunnels only https remotes): the runner's proxy tests on
//! loopback and Tier B's. Its certificate, for one host name, is made with
//! the openssl CLI (a fixture tool, like the git CLI) and signs itself: the
//! client trusts it by `SSL_CERT_FILE`, `--ca-file` or the profile's
//! `git.caBundle`. It records the server name (SNI) of every connection.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A running front: TLS on `addr`, the bytes inside forwarded to a backend.
pub struct TlsFront {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its certificate (PEM), the one CA that trusts it.
    pub cert_pem: String,
    /// The same certificate's file.
    pub cert_path: PathBuf,
    names: Arc<Mutex<Vec<String>>>,
}

impl TlsFront {
    /// Listens on `listen` with a certificate for `host` (files in `dir`)
    /// and forwards every connection's plaintext to `backend`.
    pub fn start(
        listen: SocketAddr,
        backend: SocketAddr,
        host: &str,
        dir: &Path,
    ) -> Result<Self, String> {
        let (cert, key) = (dir.join("front-cert.pem"), dir.join("front-key.pem"));
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", &format!("/CN={host}")])
            .args(["-addext", &format!("subjectAltName=DNS:{host}")])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .map_err(|e| format!("running openssl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "openssl req: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let cert_pem = std::fs::read_to_string(&cert).map_err(|e| format!("{e}"))?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
            .and_then(|i| i.collect::<Result<_, _>>())
            .map_err(|e| format!("the front's certificate: {e}"))?;
        let key =
            PrivateKeyDer::from_pem_file(&key).map_err(|e| format!("the front's key: {e}"))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| format!("the front's TLS: {e}"))?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener =
            std::net::TcpListener::bind(listen).map_err(|e| format!("binding {listen}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let names: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = names.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("the front's runtime: {e}"))?;
        std::thread::spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                loop {
                    let Ok((s, _)) = listener.accept().await else {
                        continue;
                    };
                    let (acceptor, seen) = (acceptor.clone(), seen.clone());
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(s).await else {
                            return;
                        };
                        let name = tls.get_ref().1.server_name().unwrap_or("").to_owned();
                        seen.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(name);
                        let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                            return;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    });
                }
            });
        });
        Ok(Self {
            addr,
            cert_pem,
            cert_path: cert,
            names,
        })
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The server names (SNI) of the TLS connections it accepted so far.
    pub fn names(&self) -> Vec<String> {
        self.names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
