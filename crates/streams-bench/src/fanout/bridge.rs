//! The `bridge` target: our `streams-bridge` binary (open mode, in-memory store) inside the
//! namespace; each load peer signs in with its own key and negotiates through our signaling
//! (`Negotiate` with the tracks it publishes or subscribes to). With several media workers, worker
//! `i` listens on [`MEDIA_PORT`] + `i`; each subscriber learns its worker from the port in its
//! answer's candidate, so what it receives is counted for that worker.
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use str0m::media::Mid;
use streams_client::{NewRoom, Operation, Reply, StreamsClient};
use streams_proto::wire::{TrackAnnounce, TrackKind, TrackSubscription};
use streams_proto::{Identity, MediaId, TrackId};

use crate::common::client;
use crate::fanout::netns::Namespace;
use crate::fanout::peer::Peer;
use crate::fanout::{Launcher, Load, Server};

/// The media port of the bridge's first worker.
const MEDIA_PORT: u16 = 7801;

/// Which worker an answer's candidate names (its port's offset from [`MEDIA_PORT`]).
fn worker_of_answer(answer: &str) -> Result<usize, String> {
    answer
        .lines()
        .find_map(|l| l.strip_prefix("a=candidate:"))
        .and_then(|c| c.split_whitespace().nth(5)?.parse::<u16>().ok())
        .and_then(|port| port.checked_sub(MEDIA_PORT))
        .map(usize::from)
        .ok_or_else(|| "the bridge's answer names no media worker's port".to_string())
}

/// Waits until something listens on `addr`.
pub fn wait_listening(addr: SocketAddr, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("{what} did not start listening on {addr}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Starts the bridge in `ns` (pinned to `cpu`) and negotiates every peer of `load`.
pub fn start(
    ns: &Namespace,
    cpu: usize,
    load: &Load,
    launcher: &mut Launcher,
) -> Result<Server, String> {
    let binary = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("streams-bridge");
    if !binary.exists() {
        return Err(format!(
            "{} not found: build it beside the bench (cargo build --release -p streams-bridge)",
            binary.display()
        ));
    }
    let recordings = tempfile::tempdir().map_err(|e| e.to_string())?;
    let signaling = SocketAddr::new(IpAddr::V4(ns.inner_ip), 7800);
    let child = ns
        .command(cpu, binary.to_str().unwrap_or("streams-bridge"))
        .args(["--open", "--db", ":memory:"])
        .arg("--listen")
        .arg(signaling.to_string())
        .arg("--media-listen")
        .arg(SocketAddr::new(IpAddr::V4(ns.inner_ip), MEDIA_PORT).to_string())
        .arg("--media-workers")
        .arg(load.media_workers.to_string())
        .arg("--recordings")
        .arg(recordings.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the bridge: {e}"))?;
    let mut child = child;
    let mut clients: Vec<StreamsClient> = Vec::new();
    if let Err(e) = negotiate_all(ns, signaling, load, launcher, &mut clients) {
        let _ = child.kill();
        return Err(e);
    }
    Ok(Server {
        child,
        _keep: Box::new((clients, recordings)),
    })
}

fn negotiate_all(
    ns: &Namespace,
    signaling: SocketAddr,
    load: &Load,
    launcher: &mut Launcher,
    clients: &mut Vec<StreamsClient>,
) -> Result<(), String> {
    wait_listening(signaling, "the bridge")?;
    let url = format!("ws://{signaling}");
    let host = IpAddr::V4(ns.host_ip);
    for room_index in 0..load.rooms {
        let publishers: Vec<Identity> =
            (0..load.publishers).map(|_| Identity::generate()).collect();
        let subscribers: Vec<Identity> = (0..load.subscribers)
            .map(|_| Identity::generate())
            .collect();
        let creator = client(&url, &publishers[0])?;
        let room = creator
            .create_room(NewRoom {
                name: format!("fan-out {room_index}"),
                users: publishers
                    .iter()
                    .skip(1)
                    .chain(&subscribers)
                    .map(|i| i.user_id().clone())
                    .collect(),
                ..NewRoom::default()
            })
            .map_err(|e| e.to_string())?;
        for (i, identity) in publishers.iter().enumerate() {
            let c = client(&url, identity)?;
            let mut peer = Peer::bind(host)?;
            let (offer, pending, _, _) = peer.offer(true, load.video_kbps, 0, 0);
            let mid = peer.send_mid.ok_or("the publisher has no sending m-line")?;
            let mut publish = vec![TrackAnnounce {
                mid: media_id(mid)?,
                kind: TrackKind::Audio,
                key_id: (room_index * 1000 + i) as u64,
                frame_ms: 20,
            }];
            if let Some(video) = peer.send_video_mid {
                publish.push(TrackAnnounce {
                    mid: media_id(video)?,
                    kind: TrackKind::Video,
                    key_id: (room_index * 1000 + 500 + i) as u64,
                    frame_ms: 20,
                });
            }
            let reply = c
                .call(Operation::Negotiate {
                    room_id: room.id.clone(),
                    offer,
                    publish,
                    subscribe: vec![],
                })
                .map_err(|e| format!("publisher negotiation: {e}"))?;
            let Reply::Answer { answer, .. } = reply else {
                return Err(format!("unexpected reply {reply:?}"));
            };
            peer.accept_answer(pending, &answer)?;
            launcher.launch(peer)?;
            clients.push(c);
        }
        let tracks: Vec<(TrackId, TrackKind)> = match creator
            .call(Operation::ListStreams(room.id.clone()))
            .map_err(|e| e.to_string())?
        {
            Reply::Streams(streams) => streams
                .iter()
                .flat_map(|s| s.tracks.iter().map(|t| (t.track_id, t.kind)))
                .collect(),
            other => return Err(format!("unexpected reply {other:?}")),
        };
        let of_kind =
            |kind| -> Vec<TrackId> { tracks.iter().filter(|t| t.1 == kind).map(|t| t.0).collect() };
        let (audio, video) = (of_kind(TrackKind::Audio), of_kind(TrackKind::Video));
        let expected_video = if load.video_kbps > 0 {
            load.publishers
        } else {
            0
        };
        if audio.len() != load.publishers || video.len() != expected_video {
            return Err(format!(
                "{} tracks published for {} publishers",
                tracks.len(),
                load.publishers
            ));
        }
        for identity in &subscribers {
            let c = client(&url, identity)?;
            let mut peer = Peer::bind(host)?;
            let (offer, pending, audio_mids, video_mids) =
                peer.offer(false, 0, audio.len(), video.len());
            let subscribe = audio_mids
                .into_iter()
                .zip(&audio)
                .chain(video_mids.into_iter().zip(&video))
                .map(|(mid, track_id)| {
                    Ok(TrackSubscription {
                        mid: media_id(mid)?,
                        track_id: *track_id,
                    })
                })
                .collect::<Result<_, String>>()?;
            let reply = c
                .call(Operation::Negotiate {
                    room_id: room.id.clone(),
                    offer,
                    publish: vec![],
                    subscribe,
                })
                .map_err(|e| format!("subscriber negotiation: {e}"))?;
            let Reply::Answer { answer, .. } = reply else {
                return Err(format!("unexpected reply {reply:?}"));
            };
            peer.worker = worker_of_answer(&answer)?;
            peer.accept_answer(pending, &answer)?;
            launcher.launch(peer)?;
            clients.push(c);
        }
        clients.push(creator);
    }
    Ok(())
}

/// The protocol's form of a str0m mid.
fn media_id(mid: Mid) -> Result<MediaId, String> {
    MediaId::parse(&mid).map_err(|e| e.to_string())
}
