//! Media helpers for the bridge's tests: negotiating a client's session (publishing or receiving one
//! audio track), waiting for it to connect, and waiting for the bridge's sessions to end.
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use streams_bridge::BridgeHandle;
use streams_client::media::session::{MediaKind, MediaSession};
use streams_client::{ClientError, Operation, Reply, StreamsClient};
use streams_proto::wire::{TrackAnnounce, TrackKind, TrackSubscription};
use streams_proto::{MediaId, RoomId, TrackId};

/// Where test media sessions bind.
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Sends an offer with the tracks it publishes and subscribes to; returns the bridge's answer.
pub fn negotiate(
    client: &StreamsClient,
    room: &RoomId,
    offer: String,
    publish: Vec<TrackAnnounce>,
    subscribe: Vec<TrackSubscription>,
) -> Result<String, ClientError> {
    match client.call(Operation::Negotiate {
        room_id: room.clone(),
        offer,
        publish,
        subscribe,
    })? {
        Reply::Answer { answer, .. } => Ok(answer),
        other => panic!("unexpected {other:?}"),
    }
}

/// Runs `session` until ICE and DTLS are up (panics after 30 s).
pub fn wait_connected(session: &mut MediaSession) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !session.is_connected() {
        assert!(Instant::now() < deadline, "media session did not connect");
        session
            .run_until(Instant::now() + Duration::from_millis(10))
            .unwrap();
    }
}

/// For `listen_media_while`: listen until a second after `done` is set (the publishers finished and
/// their last frames are on their way), 60 s at most.
pub fn until_a_second_after(done: &Mutex<Option<Instant>>) -> impl Fn(Duration) -> bool + '_ {
    move |elapsed| {
        let done = *done.lock().unwrap();
        elapsed < Duration::from_secs(60)
            && done.is_none_or(|done| done.elapsed() < Duration::from_secs(1))
    }
}

/// A media session that publishes one audio track (SFrame key `key_id`) in `room`, negotiated
/// and answered; its sending m-line and the bridge's answer.
pub fn publish_audio(
    client: &StreamsClient,
    room: &RoomId,
    key_id: u64,
) -> (MediaSession, MediaId, String) {
    let mut session = MediaSession::bind(LOOPBACK).unwrap();
    let (offer, send_mids, _) = session.offer(&[MediaKind::Audio], &[], &[]).unwrap();
    let publish = vec![TrackAnnounce {
        mid: send_mids[0],
        kind: TrackKind::Audio,
        key_id,
        frame_ms: 20,
    }];
    let answer = negotiate(client, room, offer, publish, vec![]).unwrap();
    session.accept_answer(&answer).unwrap();
    (session, send_mids[0], answer)
}

/// A media session that receives audio track `track_id` of `room`, negotiated and answered; the
/// bridge's answer.
pub fn subscribe_audio(
    client: &StreamsClient,
    room: &RoomId,
    track_id: TrackId,
) -> (MediaSession, String) {
    let mut session = MediaSession::bind(LOOPBACK).unwrap();
    let (offer, _, recv_mids) = session.offer(&[], &[MediaKind::Audio], &[]).unwrap();
    let subscribe = vec![TrackSubscription {
        mid: recv_mids[0],
        track_id,
    }];
    let answer = negotiate(client, room, offer, vec![], subscribe).unwrap();
    session.accept_answer(&answer).unwrap();
    (session, answer)
}

/// Waits (30 s at most, else panics with `what`) until the bridge holds no media session.
pub fn wait_no_media_sessions(bridge: &BridgeHandle, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while bridge.media_session_count() > 0 {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
