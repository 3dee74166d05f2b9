//! Helpers shared by the bridge's integration tests: a real bridge on an ephemeral loopback port with a
//! temporary SQLite file, and real clients.
#![allow(dead_code)]

pub mod media;
pub mod nft;

use std::path::PathBuf;
use std::time::Duration;

use streams_bridge::{Bridge, BridgeConfig, BridgeHandle, SqliteStore, Store};
use streams_client::{ClientConfig, ClientEvent, NewRoom, Room, RoomEvent, StreamsClient};
use streams_proto::{ContextId, Identity, UserId};

/// A bridge with registered users, its database file, and the directory that holds it.
pub struct TestBridge {
    pub handle: BridgeHandle,
    pub db: PathBuf,
    pub dir: tempfile::TempDir,
}

/// Starts a bridge (not open) on a free loopback port with `users` registered.
pub fn bridge_with_users(users: &[&Identity]) -> TestBridge {
    bridge_with_media_workers(users, 1)
}

/// Like [`bridge_with_users`], with `workers` media workers (each on its own free port).
pub fn bridge_with_media_workers(users: &[&Identity], workers: usize) -> TestBridge {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bridge.db");
    {
        let mut store = SqliteStore::open(&db).unwrap();
        for user in users {
            store
                .add_user(user.user_id(), &ContextId::default(), 0)
                .unwrap();
        }
    }
    let handle = Bridge::spawn(BridgeConfig {
        db: db.clone(),
        open: false,
        media_workers: workers,
        ..BridgeConfig::ephemeral()
    })
    .unwrap();
    TestBridge { handle, db, dir }
}

/// A connected client.
pub fn connect(url: &str, identity: &Identity) -> StreamsClient {
    let mut config = ClientConfig::new(url, identity.clone());
    config.request_timeout = Duration::from_secs(30);
    let client = StreamsClient::start(config).unwrap();
    client.wait_connected(Duration::from_secs(30)).unwrap();
    client
}

/// Waits for the first room event matching `pred`, skipping others. `None` after `timeout`.
pub fn wait_event(
    client: &StreamsClient,
    timeout: Duration,
    mut pred: impl FnMut(&RoomEvent) -> bool,
) -> Option<RoomEvent> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match client.events().recv_timeout(left) {
            Ok(ClientEvent::Room(event)) if pred(&event) => return Some(event),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// All room events received until `pred` matches one (which is included last).
pub fn events_until(
    client: &StreamsClient,
    timeout: Duration,
    mut pred: impl FnMut(&RoomEvent) -> bool,
) -> Vec<RoomEvent> {
    let deadline = std::time::Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match client.events().recv_timeout(left) {
            Ok(ClientEvent::Room(event)) => {
                let done = pred(&event);
                seen.push(event);
                if done {
                    return seen;
                }
            }
            Ok(_) => continue,
            Err(_) => panic!("timed out; events so far: {seen:?}"),
        }
    }
}

/// A room with a name and private metadata for `users`, created by `client`.
pub fn create_room(client: &StreamsClient, name: &str, users: &[&UserId]) -> Room {
    client
        .create_room(NewRoom {
            name: name.into(),
            users: users.iter().map(|u| (*u).clone()).collect(),
            public_meta: b"public info".to_vec(),
            private_meta: format!("private plan of {name}").into_bytes(),
            ..NewRoom::default()
        })
        .unwrap()
}

/// Whether `needle` occurs in any file under `dir`.
pub fn dir_contains(dir: &std::path::Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        path.is_file()
            && std::fs::read(&path)
                .map(|data| data.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
    })
}
