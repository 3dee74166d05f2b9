//! [`WsProxy`]: a WebSocket proxy between clients and an upstream server (the bridge). It accepts
//! each client's WebSocket, opens one to the upstream on the same path, and relays messages, which
//! a test can hold back (a direction stops until released; order is kept, as TCP would), delay,
//! watch, rewrite or drop ([`Verdict`]); it can also cut every connection ([`WsProxy::cut`]: the TCP
//! connections close with no WebSocket close handshake, as when a server dies) or abort it with a TCP
//! reset ([`WsProxy::reset`]), and refuse new connections for a while ([`WsProxy::set_refusing`]:
//! a path that stays down). It runs its own Tokio runtime on a thread.
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, broadcast, oneshot};
use tokio_tungstenite::MaybeTlsStream;
pub use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use crate::Direction;

/// What happens to one message.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// It goes on as it is.
    Pass,
    /// It goes on as this instead.
    Replace(Message),
    /// It is dropped.
    Drop,
}

/// Decides each message's fate (and sees every message: a tap is a rule that always passes).
pub type Rule = Arc<dyn Fn(Direction, &Message) -> Verdict + Send + Sync>;

/// How connections end on [`WsProxy::cut`] and [`WsProxy::reset`].
#[derive(Clone, Copy, Debug)]
enum Ending {
    /// Both TCP connections close (FIN), without a WebSocket close handshake.
    Cut,
    /// Both TCP connections are aborted (RST).
    Reset,
}

struct Shared {
    held: [AtomicBool; 2],
    released: Notify,
    delays: Mutex<[Duration; 2]>,
    rule: Mutex<Option<Rule>>,
    relayed: [AtomicU64; 2],
    connections: AtomicUsize,
    /// New connections are reset as soon as they are accepted.
    refusing: AtomicBool,
    endings: broadcast::Sender<Ending>,
}

fn index(direction: Direction) -> usize {
    match direction {
        Direction::ToServer => 0,
        Direction::ToClient => 1,
    }
}

impl Shared {
    fn is_held(&self, direction: Direction) -> bool {
        self.held[index(direction)].load(Ordering::Acquire)
    }

    fn delay(&self, direction: Direction) -> Duration {
        self.delays.lock().unwrap_or_else(PoisonError::into_inner)[index(direction)]
    }

    fn verdict(&self, direction: Direction, message: &Message) -> Verdict {
        let rule = self
            .rule
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        rule.map_or(Verdict::Pass, |rule| rule(direction, message))
    }
}

/// A running proxy. Dropping it stops it and ends its connections.
pub struct WsProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WsProxy {
    /// A proxy on a loopback port in front of the WebSocket server at `upstream` (`ws://host:port`).
    pub fn start(upstream: &str) -> io::Result<WsProxy> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let (endings, _) = broadcast::channel(4);
        let shared = Arc::new(Shared {
            held: [AtomicBool::new(false), AtomicBool::new(false)],
            released: Notify::new(),
            delays: Mutex::new([Duration::ZERO; 2]),
            rule: Mutex::new(None),
            relayed: [AtomicU64::new(0), AtomicU64::new(0)],
            connections: AtomicUsize::new(0),
            refusing: AtomicBool::new(false),
            endings,
        });
        let (stop, stopped) = oneshot::channel();
        let upstream = upstream.trim_end_matches('/').to_string();
        let serving = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("testkit-ws-proxy".into())
            .spawn(move || runtime.block_on(accept_until(listener, upstream, serving, stopped)))?;
        Ok(WsProxy {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The proxy's URL, for clients (`ws://127.0.0.1:port`).
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Holds every message in `direction` (those in flight wait too) until [`WsProxy::release`].
    pub fn hold(&self, direction: Direction) {
        self.shared.held[index(direction)].store(true, Ordering::Release);
    }

    /// Lets `direction`'s held messages go, in order.
    pub fn release(&self, direction: Direction) {
        self.shared.held[index(direction)].store(false, Ordering::Release);
        self.shared.released.notify_waiters();
    }

    /// Delays every message in `direction` by `delay` (order is kept).
    pub fn set_delay(&self, direction: Direction, delay: Duration) {
        self.shared
            .delays
            .lock()
            .unwrap_or_else(PoisonError::into_inner)[index(direction)] = delay;
    }

    /// Decides the fate of every message from now on (`None`: pass everything).
    pub fn set_rule(&self, rule: Option<Rule>) {
        *self
            .shared
            .rule
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = rule;
    }

    /// Messages relayed in `direction` so far.
    pub fn relayed(&self, direction: Direction) -> u64 {
        self.shared.relayed[index(direction)].load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Closes every open connection's TCP connections (no WebSocket close handshake); new
    /// connections are accepted.
    pub fn cut(&self) {
        let _ = self.shared.endings.send(Ending::Cut);
    }

    /// Aborts every open connection with a TCP reset both ways; new ones are accepted.
    pub fn reset(&self) {
        let _ = self.shared.endings.send(Ending::Reset);
    }

    /// While `refusing`, each new connection is reset as soon as it is accepted (the path to the
    /// upstream is down); open ones are untouched.
    pub fn set_refusing(&self, refusing: bool) {
        self.shared.refusing.store(refusing, Ordering::Release);
    }
}

impl Drop for WsProxy {
    fn drop(&mut self) {
        self.release(Direction::ToServer);
        self.release(Direction::ToClient);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_until(
    listener: TcpListener,
    upstream: String,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                if shared.refusing.load(Ordering::Acquire) {
                    // SO_LINGER 0: dropping the stream resets it.
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    continue;
                }
                let (upstream, shared) = (upstream.clone(), Arc::clone(&shared));
                tokio::spawn(async move {
                    shared.connections.fetch_add(1, Ordering::Relaxed);
                    // A connection that fails (a bad handshake, an upstream that is down) just ends.
                    let _ = serve(stream, &upstream, &shared).await;
                    shared.connections.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }
    }
}

/// One client: its WebSocket, one to the upstream on the same path, and the two pumps between.
async fn serve(stream: TcpStream, upstream: &str, shared: &Arc<Shared>) -> io::Result<()> {
    let mut path = String::from("/");
    // The handshake callback's error type is tungstenite's (a whole HTTP response); it never fails.
    #[allow(clippy::result_large_err)]
    let remember_path = |request: &Request, response: Response| {
        if let Some(p) = request.uri().path_and_query() {
            path = p.to_string();
        }
        Ok(response)
    };
    let client = tokio_tungstenite::accept_hdr_async(stream, remember_path)
        .await
        .map_err(io::Error::other)?;
    let (server, _) = tokio_tungstenite::connect_async(format!("{upstream}{path}"))
        .await
        .map_err(io::Error::other)?;
    let mut endings = shared.endings.subscribe();
    let client_tcp = socket2::SockRef::from(client.get_ref()).try_clone()?;
    let server_tcp = match server.get_ref() {
        MaybeTlsStream::Plain(tcp) => Some(socket2::SockRef::from(tcp).try_clone()?),
        _ => None,
    };
    let (client_out, client_in) = client.split();
    let (server_out, server_in) = server.split();
    let to_server = pump(client_in, server_out, Direction::ToServer, shared);
    let to_client = pump(server_in, client_out, Direction::ToClient, shared);
    tokio::select! {
        _ = to_server => {}
        _ = to_client => {}
        ending = endings.recv() => {
            if let Ok(Ending::Reset) = ending {
                // SO_LINGER 0: closing sends a reset instead of a FIN.
                for socket in std::iter::once(&client_tcp).chain(server_tcp.as_ref()) {
                    let _ = socket.set_linger(Some(Duration::ZERO));
                    let _ = socket.shutdown(std::net::Shutdown::Both);
                }
            }
            // Cut: dropping both streams closes the sockets.
        }
    }
    Ok(())
}

/// Relays one direction until either side ends.
async fn pump<I, O>(mut from: I, mut to: O, direction: Direction, shared: &Shared)
where
    I: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
    O: SinkExt<Message> + Unpin,
{
    while let Some(Ok(message)) = from.next().await {
        while shared.is_held(direction) {
            let released = shared.released.notified();
            if !shared.is_held(direction) {
                break;
            }
            // Woken by a release, or checked again shortly (a release between the test and the
            // wait is not lost).
            let _ = tokio::time::timeout(Duration::from_millis(20), released).await;
        }
        let delay = shared.delay(direction);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let closing = matches!(message, Message::Close(_));
        let message = match shared.verdict(direction, &message) {
            Verdict::Pass => message,
            Verdict::Replace(other) => other,
            Verdict::Drop => continue,
        };
        if to.send(message).await.is_err() {
            return;
        }
        shared.relayed[index(direction)].fetch_add(1, Ordering::Relaxed);
        if closing {
            return;
        }
    }
    let _ = to.send(Message::Close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that answers every text message with "echo: " and the text.
    fn echo_server(runtime: &tokio::runtime::Runtime) -> String {
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(Message::Text(text))) = ws.next().await {
                        if ws
                            .send(Message::text(format!("echo: {text}")))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        url
    }

    #[test]
    fn held_replies_wait_rules_rewrite_and_a_reset_ends_the_connection() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let proxy = WsProxy::start(&echo_server(&runtime)).unwrap();
        let url = proxy.url();
        runtime.block_on(async {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}/some/path"))
                .await
                .unwrap();
            ws.send(Message::text("one")).await.unwrap();
            assert_eq!(
                ws.next().await.unwrap().unwrap(),
                Message::text("echo: one")
            );

            // Held: the reply does not come until released.
            proxy.hold(Direction::ToClient);
            ws.send(Message::text("two")).await.unwrap();
            let early = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
            assert!(early.is_err(), "a held reply arrived: {early:?}");
            proxy.release(Direction::ToClient);
            assert_eq!(
                ws.next().await.unwrap().unwrap(),
                Message::text("echo: two")
            );

            // A rule rewrites what the client sends and drops what it says is secret.
            proxy.set_rule(Some(Arc::new(|direction, message: &Message| {
                match (direction, message.to_text().unwrap_or("")) {
                    (Direction::ToServer, "secret") => Verdict::Drop,
                    (Direction::ToServer, "three") => Verdict::Replace(Message::text("3")),
                    _ => Verdict::Pass,
                }
            })));
            ws.send(Message::text("secret")).await.unwrap();
            ws.send(Message::text("three")).await.unwrap();
            assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("echo: 3"));
            assert_eq!(proxy.relayed(Direction::ToServer), 3);
            assert_eq!(proxy.connections(), 1);

            // A reset ends the connection with an error, not a close frame.
            proxy.reset();
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(message))) => panic!("a message after the reset: {message:?}"),
                Ok(_) => {}
                Err(_) => panic!("the connection outlived the reset"),
            }
        });
    }
}
