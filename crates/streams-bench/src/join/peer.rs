//! The far side of the `join` scenario, in a process of its own: the bridge and a bot that publishes
//! a tone in the game's room. In a shipped game the bridge runs on another machine; here it shares
//! the two cores, so the game's process starts it at a lower priority (`nice`) unless told
//! otherwise, and what the game's frames wait for is the game's own threads, not the bridge's.
//!
//! The exchange is one JSON line each way: the peer prints `{"url", "bot"}` (the bridge's address
//! and the bot's user id), reads `{"room"}` once the game has made the room with the bot in it,
//! prints `{"publishing": true}` when its track is announced, and ends when its input closes.
use std::io::{BufRead, Write};
use std::time::Duration;

use serde_json::json;
use streams_bridge::{Bridge, BridgeConfig};
use streams_client::audio::codec::VoiceSettings;
use streams_client::audio::source::ToneSource;
use streams_client::media::driver::RoomMedia;
use streams_client::media::events::{MediaCommand, MediaEvent};
use streams_proto::{Identity, RoomId, UserId};

use crate::common::client;

/// How long the peer waits for its track to be announced.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// The game's handle on a running peer process.
pub struct Peer {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    /// The bridge's signaling URL.
    pub url: String,
    /// The bot's user id, to put in the room.
    pub bot: UserId,
}

impl Peer {
    /// Starts `streams-bench join-peer` at niceness `nice` (0: the game's priority) and reads its
    /// address.
    pub fn spawn(nice: i32) -> Result<Peer, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = std::process::Command::new("nice")
            .arg("-n")
            .arg(nice.to_string())
            .arg(exe)
            .arg("join-peer")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the peer process: {e}"))?;
        let stdout = child.stdout.take().ok_or("the peer has no output")?;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let hello = next_line(&mut lines)?;
        let url = hello["url"]
            .as_str()
            .ok_or("the peer sent no url")?
            .to_owned();
        let bot = serde_json::from_value(hello["bot"].clone()).map_err(|e| e.to_string())?;
        Ok(Peer {
            child,
            lines,
            url,
            bot,
        })
    }

    /// Tells the peer the room and waits until its bot publishes there.
    pub fn publish_in(&mut self, room: &RoomId) -> Result<(), String> {
        let stdin = self.child.stdin.as_mut().ok_or("the peer has no input")?;
        writeln!(stdin, "{}", json!({ "room": room })).map_err(|e| e.to_string())?;
        stdin.flush().map_err(|e| e.to_string())?;
        let reply = next_line(&mut self.lines)?;
        match reply["publishing"].as_bool() {
            Some(true) => Ok(()),
            _ => Err(format!("the peer did not publish: {reply}")),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Closing its input ends the peer.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn next_line(
    lines: &mut std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) -> Result<serde_json::Value, String> {
    let line = lines
        .next()
        .ok_or("the peer ended (its error is above)")?
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&line).map_err(|e| format!("the peer said {line:?}: {e}"))
}

/// The peer process's body (`streams-bench join-peer`).
pub fn run() -> Result<(), String> {
    let bridge = Bridge::spawn(BridgeConfig::ephemeral()).map_err(|e| e.to_string())?;
    let url = bridge.url();
    let identity = Identity::generate();
    let bot = client(&url, &identity)?;
    let mut out = std::io::stdout().lock();
    let hello = json!({ "url": url, "bot": identity.user_id() });
    writeln!(out, "{hello}")
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())?;

    let mut input = std::io::stdin().lock().lines();
    let line = input
        .next()
        .ok_or("the game ended before naming the room")?
        .map_err(|e| e.to_string())?;
    let asked: serde_json::Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
    let room_id: RoomId =
        serde_json::from_value(asked["room"].clone()).map_err(|e| e.to_string())?;
    bot.join_room(&room_id).map_err(|e| e.to_string())?;
    let media = RoomMedia::start(
        bot.handle().map_err(|e| e.to_string())?,
        identity,
        &url,
        room_id,
    )
    .map_err(|e| e.to_string())?;
    media.send(MediaCommand::SubscribeAll(false));
    media.send(MediaCommand::AddAudioTrack {
        source: Box::new(ToneSource::new(440.0, 0.5)),
        settings: VoiceSettings::default(),
    });
    wait_published(&media)?;
    writeln!(out, "{}", json!({ "publishing": true }))
        .and_then(|()| out.flush())
        .map_err(|e| e.to_string())?;
    // Until the game closes our input.
    for _ in input {}
    drop(media);
    drop(bridge);
    Ok(())
}

/// Waits for the bot's track to be announced in the room.
fn wait_published(media: &RoomMedia) -> Result<(), String> {
    let deadline = std::time::Instant::now() + PUBLISH_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match media.events().recv_timeout(left) {
            Ok(MediaEvent::LocalTrackPublished { .. }) => return Ok(()),
            Ok(MediaEvent::Stopped { reason }) => return Err(format!("the bot stopped: {reason}")),
            Ok(_) => {}
            Err(_) => return Err("the bot's track was not published in time".into()),
        }
    }
}
