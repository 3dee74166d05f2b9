//! Media helpers for the bridge's tests: negotiating a client's session and waiting for it to connect.
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use streams_client::media::session::MediaSession;
use streams_client::{ClientError, Operation, Reply, StreamsClient};
use streams_proto::RoomId;
use streams_proto::wire::{TrackAnnounce, TrackSubscription};

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
