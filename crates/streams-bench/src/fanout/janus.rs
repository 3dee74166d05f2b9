//! The `janus` target: Debian's Janus (VideoRoom plugin, WebSockets transport) inside the namespace,
//! with the committed configuration (`crates/streams-bench/janus/`). Each load peer has its own
//! Janus session and handle: a publisher joins and publishes with our offer; a subscriber joins with
//! every publisher's feed, answers Janus' offer and starts. Candidates travel in the SDP (no trickle).
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::fanout::bridge::wait_listening;
use crate::fanout::netns::Namespace;
use crate::fanout::peer::Peer;
use crate::fanout::{Launcher, Load, Server};

const PLUGINS: &str = "/usr/lib/x86_64-linux-gnu/janus/plugins";
const TRANSPORTS: &str = "/usr/lib/x86_64-linux-gnu/janus/transports";
const PORT: u16 = 8188;
const TEMPLATES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/janus");

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One Janus session with one VideoRoom handle.
struct Session {
    socket: Socket,
    session: u64,
    handle: u64,
    next: u64,
}

impl Session {
    async fn open(url: &str) -> Result<Session, String> {
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "janus-protocol".parse().map_err(|_| "header")?,
        );
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| format!("Janus WebSocket: {e}"))?;
        let mut s = Session {
            socket,
            session: 0,
            handle: 0,
            next: 0,
        };
        let created = s.call(json!({"janus": "create"}), false).await?;
        s.session = created["data"]["id"].as_u64().ok_or("no session id")?;
        let attached = s
            .call(
                json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
                false,
            )
            .await?;
        s.handle = attached["data"]["id"].as_u64().ok_or("no handle id")?;
        Ok(s)
    }

    /// Sends a request and waits for its answer: `success`, or (for asynchronous plugin requests,
    /// `wait_event`) the plugin's `event`.
    async fn call(&mut self, mut request: Value, wait_event: bool) -> Result<Value, String> {
        self.next += 1;
        let transaction = format!("t{}", self.next);
        request["transaction"] = json!(transaction);
        if self.session != 0 {
            request["session_id"] = json!(self.session);
        }
        if self.handle != 0 {
            request["handle_id"] = json!(self.handle);
        }
        self.socket
            .send(Message::text(request.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let message = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .map_err(|_| format!("Janus did not answer {request}"))?
                .ok_or("Janus closed the WebSocket")?
                .map_err(|e| e.to_string())?;
            let Message::Text(text) = message else {
                continue;
            };
            let answer: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            if answer["transaction"] != json!(transaction) {
                continue;
            }
            match answer["janus"].as_str() {
                Some("error") => return Err(format!("Janus: {}", answer["error"])),
                Some("ack") if wait_event => continue,
                Some("event") | Some("success") => {
                    if let Some(error) = answer["plugindata"]["data"].get("error") {
                        return Err(format!("VideoRoom: {error}"));
                    }
                    return Ok(answer);
                }
                _ if !wait_event => return Ok(answer),
                _ => continue,
            }
        }
    }

    async fn message(&mut self, body: Value, jsep: Option<Value>) -> Result<Value, String> {
        let mut request = json!({"janus": "message", "body": body});
        if let Some(jsep) = jsep {
            request["jsep"] = jsep;
        }
        self.call(request, true).await
    }
}

/// Writes the configuration from the committed templates into `dir`.
fn configure(dir: &Path, ns: &Namespace) -> Result<(), String> {
    let plugins = dir.join("plugins");
    let transports = dir.join("transports");
    let events = dir.join("events");
    for folder in [&plugins, &transports, &events] {
        std::fs::create_dir_all(folder).map_err(|e| e.to_string())?;
    }
    let link = |from: &str, name: &str, to: &Path| {
        std::os::unix::fs::symlink(Path::new(from).join(name), to.join(name))
            .map_err(|e| format!("{name}: {e}"))
    };
    link(PLUGINS, "libjanus_videoroom.so", &plugins)?;
    link(TRANSPORTS, "libjanus_websockets.so", &transports)?;
    for name in [
        "janus.jcfg",
        "janus.plugin.videoroom.jcfg",
        "janus.transport.websockets.jcfg",
    ] {
        let text = std::fs::read_to_string(Path::new(TEMPLATES).join(name))
            .map_err(|e| format!("{name}: {e}"))?
            .replace("@CONFIGS@", &dir.to_string_lossy())
            .replace("@PLUGINS@", &plugins.to_string_lossy())
            .replace("@TRANSPORTS@", &transports.to_string_lossy())
            .replace("@EVENTS@", &events.to_string_lossy())
            .replace("@INTERFACE@", &ns.inner_dev)
            .replace("@ADDRESS@", &ns.inner_ip.to_string())
            .replace("@PORT@", &PORT.to_string());
        std::fs::write(dir.join(name), text).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Starts Janus in `ns` (pinned to `cpu`) and negotiates every peer of `load`.
pub fn start(
    ns: &Namespace,
    cpu: usize,
    load: &Load,
    launcher: &mut Launcher,
) -> Result<Server, String> {
    if !Path::new(PLUGINS).join("libjanus_videoroom.so").exists() {
        return Err("Janus is not installed (apt-get install janus)".into());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    configure(dir.path(), ns)?;
    let child = ns
        .command(cpu, "janus")
        .arg("-C")
        .arg(dir.path().join("janus.jcfg"))
        .arg("-F")
        .arg(dir.path())
        .arg("-L")
        .arg(dir.path().join("janus.log"))
        .args(["-N", "-d", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start janus: {e}"))?;
    let signaling = SocketAddr::new(IpAddr::V4(ns.inner_ip), PORT);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut child = child;
    let log = dir.path().join("janus.log");
    let negotiated = wait_listening(signaling, "Janus").and_then(|()| {
        let url = format!("ws://{signaling}");
        runtime.block_on(negotiate_all(&url, IpAddr::V4(ns.host_ip), load, launcher))
    });
    match negotiated {
        // Sessions close before the runtime that drives them, and both before the folder goes.
        Ok(sessions) => Ok(Server {
            child,
            _keep: Box::new((sessions, runtime, dir)),
        }),
        Err(e) => {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            let _ = child.kill();
            Err(format!("{e}; janus.log ends: {}", tail.join(" | ")))
        }
    }
}

async fn negotiate_all(
    url: &str,
    host: IpAddr,
    load: &Load,
    launcher: &mut Launcher,
) -> Result<Vec<Session>, String> {
    let mut sessions = Vec::new();
    for room_index in 0..load.rooms {
        let room = 1000 + room_index as u64;
        let mut admin = Session::open(url).await?;
        admin
            .message(
                json!({"request": "create", "room": room, "publishers": load.publishers + 1,
                       "audiocodec": "opus", "videocodec": "h264", "bitrate": 0,
                       "record": false}),
                None,
            )
            .await?;
        let mut feeds = Vec::new();
        for i in 0..load.publishers {
            let mut session = Session::open(url).await?;
            let mut peer = Peer::bind(host)?;
            let (offer, pending, _, _) = peer.offer(true, load.video_kbps, 0, 0);
            let joined = session
                .message(
                    json!({"request": "joinandconfigure", "room": room, "ptype": "publisher",
                           "display": format!("load {i}"), "audio": true,
                           "video": load.video_kbps > 0}),
                    Some(json!({"type": "offer", "sdp": offer, "trickle": false})),
                )
                .await?;
            let answer = joined["jsep"]["sdp"]
                .as_str()
                .ok_or_else(|| format!("no answer from Janus: {joined}"))?;
            peer.accept_answer(pending, answer)?;
            feeds.push(
                joined["plugindata"]["data"]["id"]
                    .as_u64()
                    .ok_or("no feed id")?,
            );
            launcher.launch(peer)?;
            sessions.push(session);
        }
        // A feed exists for subscribers once its publisher's media is up.
        launcher.wait_connected()?;
        for _ in 0..load.subscribers {
            let mut session = Session::open(url).await?;
            let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
            let attached = session
                .message(
                    json!({"request": "join", "room": room, "ptype": "subscriber",
                           "streams": streams}),
                    None,
                )
                .await?;
            let offer = attached["jsep"]["sdp"]
                .as_str()
                .ok_or_else(|| format!("no offer from Janus: {attached}"))?;
            let mut peer = Peer::bind(host)?;
            let answer = peer.accept_offer(offer)?;
            session
                .message(
                    json!({"request": "start", "room": room}),
                    Some(json!({"type": "answer", "sdp": answer, "trickle": false})),
                )
                .await?;
            launcher.launch(peer)?;
            sessions.push(session);
        }
        sessions.push(admin);
    }
    Ok(sessions)
}
