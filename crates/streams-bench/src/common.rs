//! What the scenarios share: a connected client, a room of two, and a call in it (one publishes
//! while the other listens).
use std::time::Duration;

use streams_client::media::voice_session::{
    Listened, Publication, PublishReport, listen_media, publish,
};
use streams_client::{ClientConfig, NewRoom, Room, StreamsClient};
use streams_proto::{Identity, RoomId};

/// A client of the bridge at `url`, connected. Plain `ws://` to another host is allowed: the
/// scenarios' bridges are on loopback or on private addresses in namespaces of their own.
pub fn client(url: &str, identity: &Identity) -> Result<StreamsClient, String> {
    let mut config = ClientConfig::new(url, identity.clone());
    config.allow_insecure = true;
    let client = StreamsClient::start(config).map_err(|e| e.to_string())?;
    client
        .wait_connected(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    Ok(client)
}

/// A room `name` made by `maker`, with `member` in it.
pub fn room_with(maker: &StreamsClient, member: &Identity, name: &str) -> Result<Room, String> {
    maker
        .create_room(NewRoom {
            name: name.into(),
            users: vec![member.user_id().clone()],
            ..NewRoom::default()
        })
        .map_err(|e| e.to_string())
}

/// One member of a call: its client, its identity and the bridge URL its client was given.
pub struct Member<'a> {
    pub client: &'a StreamsClient,
    pub identity: &'a Identity,
    pub url: &'a str,
}

/// `publisher` publishes `publication` in `room` for `seconds` (reporting to `progress`) while
/// `listener` receives: from half a second before (as a room's members would be there first)
/// until `linger` after the publishing time. What was sent and what arrived.
pub fn call(
    publisher: Member<'_>,
    listener: Member<'_>,
    room: &RoomId,
    publication: Publication,
    seconds: u64,
    linger: Duration,
    progress: &mut dyn FnMut(&PublishReport),
) -> Result<(PublishReport, Listened), String> {
    let (sent, heard) = std::thread::scope(|scope| {
        let listening = scope.spawn(|| {
            listen_media(
                listener.client,
                listener.identity,
                listener.url,
                room,
                Duration::from_secs(seconds) + linger,
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        let sent = publish(
            publisher.client,
            publisher.identity,
            publisher.url,
            room,
            publication,
            Duration::from_secs(seconds),
            progress,
        );
        let heard = listening
            .join()
            .map_err(|_| "the subscriber panicked".to_string());
        (sent, heard)
    });
    let sent = sent.map_err(|e| e.to_string())?;
    let heard = heard?.map_err(|e| e.to_string())?;
    Ok((sent, heard))
}
