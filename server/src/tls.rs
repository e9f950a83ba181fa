//! TLS for the HTTP and gRPC listeners (rustls with the ring provider).
//!
//! The certificate and key are PEM files (`--tls-cert`, `--tls-key`), read
//! again whenever either file changes (checked every `--tls-reload-seconds`),
//! as cert-manager rotates a Secret mounted into the pod: new handshakes get
//! the new certificate, open connections keep theirs. A rotation that cannot
//! be read (half-written, mismatched) keeps the old certificate and logs why.
//!
//! With `--tls-client-ca` (or Triton's `--grpc-use-ssl-mutual` and
//! `--grpc-root-cert`) both listeners require a client certificate signed
//! by one of the bundle's CAs: a client without one is refused at the
//! handshake. The bundle is read again when it changes, like the
//! certificate; new handshakes use the new one.
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
use tokio_rustls::rustls::crypto::ring as provider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;

use crate::connections::{Gate, Tracked};

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
    client_ca: Option<ClientCa>,
    http: ArcSwap<ServerConfig>,
    grpc: ArcSwap<ServerConfig>,
}

/// The CA bundle client certificates must chain to, and its stamp when read.
struct ClientCa {
    path: PathBuf,
    stamp: Mutex<Stamp>,
}

fn load_roots(path: &Path) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read the client CA bundle {}", path.display()))?
    {
        let cert = cert.with_context(|| format!("cannot parse the client CA bundle {}", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("{} holds a certificate that is not a usable CA", path.display()))?;
    }
    anyhow::ensure!(!roots.is_empty(), "{} holds no certificate", path.display());
    Ok(Arc::new(roots))
}

/// The listeners' configs (gRPC offers h2 only) over one certificate, with
/// client certificates required when `roots` is given.
fn configs(certificate: &Arc<Reloading>, roots: Option<Arc<RootCertStore>>) -> anyhow::Result<[Arc<ServerConfig>; 2]> {
    let provider = Arc::new(provider::default_provider());
    let verifier = roots
        .map(|roots| WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider)).build())
        .transpose()
        .context("cannot verify client certificates with that CA bundle")?;
    let config = |alpn: &[&[u8]]| -> anyhow::Result<Arc<ServerConfig>> {
        let builder =
            ServerConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions()?;
        let builder = match &verifier {
            Some(v) => builder.with_client_cert_verifier(Arc::clone(v)),
            None => builder.with_no_client_auth(),
        };
        let mut c = builder.with_cert_resolver(Arc::clone(certificate) as Arc<dyn ResolvesServerCert>);
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(c))
    };
    Ok([config(&[b"h2", b"http/1.1"])?, config(&[b"h2"])?])
}

impl Tls {
    pub fn new(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow::Result<Tls> {
        let certificate = Arc::new(Reloading {
            current: ArcSwap::from_pointee(load(cert, key)?),
            stamps: Mutex::new((stamp(cert), stamp(key))),
            cert: cert.to_owned(),
            key: key.to_owned(),
        });
        let roots = client_ca.map(load_roots).transpose()?;
        let [http, grpc] = configs(&certificate, roots)?;
        Ok(Tls {
            client_ca: client_ca.map(|path| ClientCa {
                stamp: Mutex::new(stamp(path)),
                path: path.to_owned(),
            }),
            http: ArcSwap::new(http),
            grpc: ArcSwap::new(grpc),
            certificate,
        })
    }

    /// Whether client certificates are required.
    pub fn mutual(&self) -> bool {
        self.client_ca.is_some()
    }

    /// Reads the client CA bundle again if it changed, and rebuilds the
    /// listeners' configs with it; one that cannot be read keeps the old.
    fn refresh_client_ca(&self) {
        let Some(ca) = &self.client_ca else { return };
        let now = stamp(&ca.path);
        let mut seen = ca.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == now {
            return;
        }
        match load_roots(&ca.path).and_then(|roots| configs(&self.certificate, Some(roots))) {
            Ok([http, grpc]) => {
                self.http.store(http);
                self.grpc.store(grpc);
                *seen = now;
                tracing::info!(client_ca = %ca.path.display(), "TLS client CA bundle reloaded");
            }
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "TLS client CA bundle changed but cannot be loaded; keeping the old one"
            ),
        }
    }

    /// Checks the files every `every` until `stop`.
    pub async fn watch(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let tls = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || {
                tls.certificate.refresh();
                tls.refresh_client_ca();
            })
            .await;
        }
    }

    /// The acceptor for the next handshake on the HTTP or the gRPC listener.
    fn acceptor(&self, grpc: bool) -> TlsAcceptor {
        TlsAcceptor::from(match grpc {
            true => self.grpc.load_full(),
            false => self.http.load_full(),
        })
    }
}

/// Which listener a TLS accept loop serves.
#[derive(Clone, Copy)]
pub enum Listener {
    Http,
    Grpc,
}

/// Accepts TCP connections within the gate's budget (one over it is closed
/// before any handshake) and completes their handshakes concurrently;
/// established TLS streams come out of the channel. Ends when the channel's
/// receiver is dropped, closing the port.
pub fn accept(
    listener: TcpListener,
    tls: Arc<Tls>,
    which: Listener,
    gate: Arc<Gate>,
) -> mpsc::Receiver<(Tracked<TlsStream<TcpStream>>, SocketAddr)> {
    let (tx, rx) = mpsc::channel(64);
    let name = match which {
        Listener::Http => "http",
        Listener::Grpc => "grpc",
    };
    tokio::spawn(async move {
        while let Some((tcp, peer)) = crate::connections::next(&listener, &tx).await {
            let Some(permit) = gate.admit(name) else {
                continue; // closed: over --max-connections
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, out) = (tls.acceptor(matches!(which, Listener::Grpc)), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = out.send((Tracked::new(tls, permit), peer)).await;
                    }
                    Ok(Err(e)) => {
                        crate::telemetry::tls_handshake_failed(name);
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        crate::telemetry::tls_handshake_failed(name);
                        tracing::debug!(%peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    rx
}
