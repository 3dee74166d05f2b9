//! [`Bridge`]: binds the listener and accepts connections; [`BridgeHandle`] runs a bridge on its own
//! thread (the embedded bridge of examples and tests) and stops it on drop.
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::connection;
use crate::sfu::{SfuHandle, SfuStartError};
use crate::state::BridgeState;
use crate::store::{SqliteStore, StoreError};
use crate::tls::{TlsServer, TlsSetupError, TlsSource};
use crate::turn::TurnRelays;

/// Where and how a bridge runs.
#[derive(Clone, Debug)]
pub struct BridgeConfig {
    /// Address to listen on for signaling (port 0 picks a free one).
    pub listen: SocketAddr,
    /// UDP address for media (port 0 picks a free one). With several media workers, worker `i`
    /// listens on this port + `i` (or each on a free port).
    pub media_listen: SocketAddr,
    /// TCP address for media over TCP (ICE-TCP, for clients whose UDP is blocked; port 0 picks a
    /// free one); worker `i` listens on this port + `i`. `None`: media over UDP only.
    pub media_tcp_listen: Option<SocketAddr>,
    /// The addresses media sessions announce (the public address of a bridge behind a 1:1 NAT,
    /// IPv4 and/or IPv6), at each worker's port; empty: the bound address, or for an unspecified
    /// one the machine's interface addresses (see [`crate::sfu::addresses`]).
    pub media_public_ips: Vec<IpAddr>,
    /// Forwarding workers (threads, one UDP socket each); rooms are spread over them, a room on
    /// one worker. At least 1.
    pub media_workers: usize,
    /// SQLite database file, or `:memory:`.
    pub db: PathBuf,
    /// Development mode: any key may connect, no registration needed.
    pub open: bool,
    /// Where room recordings are written (`None`: recording is refused).
    pub recordings: Option<PathBuf>,
    /// Serve signaling over TLS (`wss://`) with this certificate; `None`: plain `ws://`, which
    /// clients accept only on loopback unless told otherwise.
    pub tls: Option<TlsSource>,
    /// TURN servers clients may relay media through, and the secret they share with the bridge
    /// (`None`: clients reach the media ports directly or not at all).
    pub turn: Option<TurnRelays>,
}

impl BridgeConfig {
    /// An open, in-memory bridge on a free loopback port: what examples and tests embed.
    pub fn ephemeral() -> Self {
        BridgeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            media_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            media_tcp_listen: None,
            media_public_ips: Vec::new(),
            media_workers: 1,
            db: PathBuf::from(":memory:"),
            open: true,
            recordings: None,
            tls: None,
            turn: None,
        }
    }
}

/// A bridge could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime could not start.
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    /// The media workers could not start (their UDP sockets, what to announce).
    #[error("media: {0}")]
    Media(#[from] SfuStartError),
    /// The TLS certificate could not be loaded or made.
    #[error("tls: {0}")]
    Tls(#[from] TlsSetupError),
}

/// The bridge server.
pub struct Bridge {
    listener: TcpListener,
    state: Arc<BridgeState>,
    tls: Option<TlsServer>,
}

impl Bridge {
    /// Opens the store and binds the listener (inside a Tokio runtime).
    pub async fn bind(config: &BridgeConfig) -> Result<Self, BridgeError> {
        let tls = config.tls.as_ref().map(TlsServer::load).transpose()?;
        let store = SqliteStore::open(&config.db)?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| BridgeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let (sfu, lost) = SfuHandle::start(
            config.media_listen,
            config.media_tcp_listen,
            &config.media_public_ips,
            config.media_workers,
        )?;
        let state = Arc::new({
            let mut state = BridgeState::new(Box::new(store), sfu, config.open);
            state.recordings = config.recordings.clone();
            state.turn = config.turn.clone();
            state
        });
        // Media sessions that end on their own (ICE lost) are announced like closed ones.
        tokio::spawn(connection::announce_lost_streams(
            Arc::downgrade(&state),
            lost,
        ));
        Ok(Bridge {
            listener,
            state,
            tls,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The URL clients connect to: `wss://` with TLS, `ws://` without.
    pub fn url(&self) -> String {
        url(self.local_addr(), self.tls.is_some())
    }

    /// The SHA-256 fingerprint of the TLS certificate, when serving TLS.
    pub fn cert_fingerprint(&self) -> Option<streams_proto::CertFingerprint> {
        self.tls.as_ref().map(TlsServer::fingerprint)
    }

    /// Accepts connections forever. With TLS, a connection that does not finish its TLS handshake
    /// within [`connection::HANDSHAKE_TIMEOUT`] (or speaks anything else) is dropped.
    pub async fn run(self) {
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let state = Arc::clone(&self.state);
                    match &self.tls {
                        None => {
                            tokio::spawn(connection::serve(state, stream, peer));
                        }
                        Some(tls) => {
                            let accepting = tls.acceptor().accept(stream);
                            tokio::spawn(async move {
                                match tokio::time::timeout(connection::HANDSHAKE_TIMEOUT, accepting)
                                    .await
                                {
                                    Ok(Ok(stream)) => connection::serve(state, stream, peer).await,
                                    Ok(Err(e)) => {
                                        tracing::debug!(%peer, "TLS handshake failed: {e}");
                                    }
                                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                                }
                            });
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Runs the bridge on a thread of its own with its own runtime (callable from any thread, inside
    /// another runtime or not). Returns once it listens.
    pub fn spawn(config: BridgeConfig) -> Result<BridgeHandle, BridgeError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("streams-bridge".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("streams-bridge")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(BridgeError::Runtime(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let bridge = match Bridge::bind(&config).await {
                        Ok(bridge) => bridge,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let ready = (
                        bridge.local_addr(),
                        Arc::clone(&bridge.state),
                        bridge.cert_fingerprint(),
                    );
                    let _ = ready_tx.send(Ok(ready));
                    tokio::select! {
                        _ = bridge.run() => {}
                        _ = stop_rx => {}
                    }
                });
                runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            })
            .map_err(BridgeError::Runtime)?;
        let (addr, state, fingerprint) = ready_rx.recv().map_err(|_| {
            BridgeError::Runtime(std::io::Error::other(
                "bridge thread ended before listening",
            ))
        })??;
        tracing::info!(%addr, "bridge listening");
        Ok(BridgeHandle {
            addr,
            state,
            fingerprint,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

/// A bridge running on its own thread. Dropping it stops the bridge.
pub struct BridgeHandle {
    addr: SocketAddr,
    state: Arc<BridgeState>,
    fingerprint: Option<streams_proto::CertFingerprint>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BridgeHandle {
    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The WebSocket URL clients connect to (`wss://` when serving TLS).
    pub fn url(&self) -> String {
        url(self.addr, self.fingerprint.is_some())
    }

    /// The SHA-256 fingerprint of the TLS certificate, when serving TLS.
    pub fn cert_fingerprint(&self) -> Option<streams_proto::CertFingerprint> {
        self.fingerprint
    }

    /// How many authenticated connections are open.
    pub fn connection_count(&self) -> usize {
        self.state.hub().connection_count()
    }

    /// The SFU's UDP address (its first worker's).
    pub fn media_addr(&self) -> SocketAddr {
        self.state.sfu.addr()
    }

    /// Every media worker's UDP address, in order.
    pub fn media_addrs(&self) -> Vec<SocketAddr> {
        self.state.sfu.addrs()
    }

    /// What each media worker's sessions announce, in worker order.
    pub fn media_announced(&self) -> Vec<Vec<SocketAddr>> {
        self.state.sfu.announced()
    }

    /// Every media worker's ICE-TCP address, in order (empty: media over UDP only).
    pub fn media_tcp_addrs(&self) -> Vec<SocketAddr> {
        self.state.sfu.tcp_addrs()
    }

    /// What each media worker's sessions announce for ICE-TCP, in worker order.
    pub fn media_tcp_announced(&self) -> Vec<Vec<SocketAddr>> {
        self.state.sfu.tcp_announced()
    }

    /// How many media sessions the SFU holds.
    pub fn media_session_count(&self) -> usize {
        let sfu = self.state.sfu.clone();
        self.wait_for(async move { sfu.session_count().await })
            .unwrap_or(0)
    }

    /// The addresses the SFU's media arrives from (clients, their NATs, TURN relays).
    pub fn media_peer_addresses(&self) -> Vec<SocketAddr> {
        let sfu = self.state.sfu.clone();
        self.wait_for(async move { sfu.peer_addresses().await })
            .unwrap_or_default()
    }

    /// Waits on this thread for what the SFU answers from its own (a small runtime waits).
    fn wait_for<T>(&self, answer: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .ok()
            .map(|rt| rt.block_on(answer))
    }

    /// How many keyframe requests (PLI/FIR) of subscribers the SFU has passed on to publishers.
    pub fn keyframe_requests_forwarded(&self) -> u64 {
        self.state.sfu.keyframe_requests_forwarded()
    }

    /// Stops the bridge and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn url(addr: SocketAddr, tls: bool) -> String {
    format!("{}://{addr}", if tls { "wss" } else { "ws" })
}

impl Drop for BridgeHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}
