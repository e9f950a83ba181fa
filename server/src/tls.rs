//! TLS for the HTTP and gRPC listeners (rustls with the ring provider).
//!
//! The certificate and key are PEM files (`--tls-cert`, `--tls-key`), read
//! again whenever either file changes (checked every `--tls-reload-seconds`),
//! as cert-manager rotates a Secret mounted into the pod: new handshakes get
//! the new certificate, open connections keep theirs. A rotation that cannot
//! be read (half-written, mismatched) keeps the old certificate and logs why.
//!
//! Handshakes run one task each, with a deadline, so a client that never
//! finishes one cannot hold up the others.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring as provider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::server::TlsStream;

/// How long a TLS handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);

fn load(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot parse the certificate {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", cert.display());
    let key_der =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("cannot read the private key {}", key.display()))?;
    let signing = provider::sign::any_supported_type(&key_der)
        .with_context(|| format!("unsupported private key {}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .with_context(|| format!("{} is not the key of {}", key.display(), cert.display()))?;
    Ok(certified)
}

/// What a file looks like from outside: changes when it is rewritten.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The certificate every new handshake gets; swapped when the files change.
#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// Certificate's and key's stamps when last loaded.
    stamps: Mutex<(Stamp, Stamp)>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl Reloading {
    /// Reads the files again if they changed; returns whether it swapped.
    fn refresh(&self) -> bool {
        let now = (stamp(&self.cert), stamp(&self.key));
        let mut seen = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == now {
            return false;
        }
        match load(&self.cert, &self.key) {
            Ok(k) => {
                self.current.store(Arc::new(k));
                *seen = now;
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                true
            }
            // Not marked as seen: a rotation still being written is tried again.
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "TLS certificate changed but cannot be loaded; keeping the old one"
                );
                false
            }
        }
    }
}

/// TLS for both listeners, sharing one reloading certificate.
/// Makes ring the process's rustls provider: quiver's listeners and its
/// HTTPS clients (registries, object stores) share it, and reqwest builds
/// no client before one is installed. Idempotent.
pub fn install_crypto_provider() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

pub struct Tls {
    certificate: Arc<Reloading>,
    http: TlsAcceptor,
    grpc: TlsAcceptor,
}

impl Tls {
    pub fn new(cert: &Path, key: &Path) -> anyhow::Result<Tls> {
        let certificate = Arc::new(Reloading {
            current: ArcSwap::from_pointee(load(cert, key)?),
            stamps: Mutex::new((stamp(cert), stamp(key))),
            cert: cert.to_owned(),
            key: key.to_owned(),
        });
        let config = |alpn: &[&[u8]]| -> anyhow::Result<TlsAcceptor> {
            let mut c = ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_cert_resolver(Arc::clone(&certificate) as Arc<dyn ResolvesServerCert>);
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(TlsAcceptor::from(Arc::new(c)))
        };
        Ok(Tls {
            http: config(&[b"h2", b"http/1.1"])?,
            grpc: config(&[b"h2"])?,
            certificate: Arc::clone(&certificate),
        })
    }

    /// Checks the files every `every` until `stop`.
    pub async fn watch(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let certificate = Arc::clone(&self.certificate);
            let _ = tokio::task::spawn_blocking(move || certificate.refresh()).await;
        }
    }

    pub fn http_acceptor(&self) -> TlsAcceptor {
        self.http.clone()
    }

    pub fn grpc_acceptor(&self) -> TlsAcceptor {
        self.grpc.clone()
    }
}

/// Accepts TCP connections and completes their handshakes concurrently;
/// established TLS streams come out of the channel.
pub fn accept(listener: TcpListener, acceptor: TlsAcceptor) -> mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, out) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = out.send((tls, peer)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

/// A listener for `axum::serve` over the established TLS streams.
pub struct HttpsListener {
    pub streams: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    pub local: SocketAddr,
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.streams.recv().await {
            Some(s) => s,
            // The acceptor is gone: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
