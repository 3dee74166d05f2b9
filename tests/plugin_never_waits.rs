//! The game never waits for the network. A proxy between the app and the bridge holds back every
//! message from the bridge (replies and events alike); each frame that joins a room's media,
//! publishes a track, leaves the media or despawns the room still returns, and the room's media
//! state markers move on once the messages are released. How long frames take is the benchmark's
//! business (`streams-bench join`); a frame that waited for a held reply would wait until the
//! watchdog released it, and that fails the test.
//!
//! And the game keeps its entities when the network comes back: the bridge restarts under a call,
//! both ends rejoin by themselves, and the bot's voice returns on the same `RemoteTrack` entity
//! (which waited meanwhile), the app's own track on the same `LocalTrack` entity.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy_streams::prelude::*;
use bevy_streams::streams_client::audio::codec::VoiceSettings;
use bevy_streams::streams_client::audio::source::ToneSource;
use bevy_streams::streams_client::media::driver::RoomMedia;
use bevy_streams::streams_client::media::events::MediaCommand;
use bevy_streams::streams_client::{ClientConfig, StreamsClient};
use bevy_streams::streams_proto::wire::{EventScope, TrackKind};
use bevy_streams::{AwaitingRejoin, Identity, LocalTrack, RoomId};
use streams_bridge::{Bridge, BridgeConfig};
use streams_testkit::Direction;
use streams_testkit::ws_proxy::WsProxy;

#[test]
fn after_a_bridge_restart_the_same_track_entities_carry_the_media_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BridgeConfig {
        db: dir.path().join("bridge.db"),
        ..BridgeConfig::ephemeral()
    };
    let bridge = Bridge::spawn(config.clone()).unwrap();
    // The restarted bridge listens where this one does, on the same store.
    config.listen = bridge.addr();
    config.media_listen = bridge.media_addr();
    let url = bridge.url();
    let (mut app, room, room_id, bot_identity, bot) =
        app_in_a_room_with_a_bot(&url, &url, "Restart");
    // Seen by an observer: the marker may come and go within one frame.
    app.init_resource::<SawReconnecting>().add_observer(
        |_: On<Add, MediaReconnecting>, mut saw: ResMut<SawReconnecting>| saw.0 = true,
    );
    app.world_mut().trigger(JoinMedia { entity: room });
    app.update();
    app.world_mut().trigger(PublishAudio {
        entity: room,
        input: AudioInput::Tone(440.0),
    });
    let media = RoomMedia::start(bot.handle().unwrap(), bot_identity, &url, room_id).unwrap();
    media.send(MediaCommand::AddAudioTrack {
        source: Box::new(ToneSource::new(880.0, 0.5)),
        settings: VoiceSettings::default(),
    });
    update_until(&mut app, "the bot's voice and our own track", |app| {
        remote_voices(app).len() == 1 && published(app) == Some(true)
    });
    let (voice, before) = remote_voices(&mut app)[0];
    let local = local_track(&mut app);

    drop(bridge);
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(3) {
        app.update();
        std::thread::sleep(Duration::from_millis(5));
    }
    let _bridge = Bridge::spawn(config).unwrap();
    let back = Instant::now();
    update_until(&mut app, "the voice on its old entity again", |app| {
        let voices = remote_voices(app);
        // The remote track can be listed (and taken back) before the media is up again.
        voices.len() == 1
            && voices[0].1 != before
            && !has::<AwaitingRejoin>(app, voices[0].0)
            && published(app) == Some(true)
            && has::<MediaConnected>(app, room)
    });
    let again = back.elapsed();
    let (entity, after) = remote_voices(&mut app)[0];
    assert_eq!(entity, voice, "the same RemoteTrack entity, not a new one");
    assert_eq!(local_track(&mut app), local, "the same LocalTrack entity");
    assert!(
        app.world().resource::<SawReconnecting>().0,
        "the room showed MediaReconnecting meanwhile"
    );
    println!(
        "bridge restarted: the bot's voice ({before} → {after}) back on entity {voice} {:.1} s \
         after the bridge was",
        again.as_secs_f64()
    );
}

/// Whether `MediaReconnecting` was added to the room.
#[derive(Resource, Default)]
struct SawReconnecting(bool);

/// The remote audio tracks: entity and track id.
fn remote_voices(app: &mut App) -> Vec<(Entity, TrackId)> {
    app.world_mut()
        .query::<(Entity, &RemoteTrack)>()
        .iter(app.world())
        .filter(|(_, t)| t.kind == TrackKind::Audio)
        .map(|(e, t)| (e, t.track_id))
        .collect()
}

/// The one local track's entity.
fn local_track(app: &mut App) -> Entity {
    let mut q = app.world_mut().query_filtered::<Entity, With<LocalTrack>>();
    q.single(app.world()).unwrap()
}

/// Whether the one local track is published (`None`: there is none, or several).
fn published(app: &mut App) -> Option<bool> {
    let mut q = app.world_mut().query::<&LocalTrack>();
    q.single(app.world()).ok().map(|t| t.published)
}

/// Releases the proxy if a held phase has not finished by then (far beyond any frame's work): a
/// frame blocked on a held reply returns only then.
const WATCHDOG: Duration = Duration::from_secs(20);

/// Releases `proxy` after [`WATCHDOG`] unless disarmed first.
struct Watchdog {
    disarm: std::sync::mpsc::Sender<()>,
    fired: Arc<AtomicBool>,
}

impl Watchdog {
    fn arm(proxy: &Arc<WsProxy>) -> Watchdog {
        let (disarm, disarmed) = std::sync::mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let (proxy, flag) = (Arc::clone(proxy), Arc::clone(&fired));
        std::thread::spawn(move || {
            if disarmed.recv_timeout(WATCHDOG).is_err() {
                flag.store(true, Ordering::SeqCst);
                proxy.release(Direction::ToClient);
            }
        });
        Watchdog { disarm, fired }
    }

    /// Whether the held phase ran to its end without the watchdog.
    fn disarm(self) -> bool {
        let _ = self.disarm.send(());
        !self.fired.load(Ordering::SeqCst)
    }
}

fn update_until(app: &mut App, what: &str, mut done: impl FnMut(&mut App) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(app) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        app.update();
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn has<C: Component>(app: &App, entity: Entity) -> bool {
    app.world().get::<C>(entity).is_some()
}

fn local_tracks(app: &mut App) -> usize {
    app.world_mut()
        .query::<&LocalTrack>()
        .iter(app.world())
        .count()
}

/// A headless app connected to `url`, in a room (`name`) with a bot that talks to `bridge_url`
/// directly and has joined it: the app, the room entity and id, the bot's identity and client.
fn app_in_a_room_with_a_bot(
    url: &str,
    bridge_url: &str,
    name: &str,
) -> (App, Entity, RoomId, Identity, StreamsClient) {
    let mut app = App::new();
    let mut plugin = StreamsPlugin::url(url);
    plugin.audio_output = false;
    app.add_plugins((
        MinimalPlugins,
        AssetPlugin::default(),
        TransformPlugin,
        plugin,
    ))
    .init_asset::<Image>();
    update_until(&mut app, "the connection", |app| {
        app.world_mut()
            .query::<&Connected>()
            .iter(app.world())
            .count()
            == 1
    });
    // A room with a bot, which talks to the bridge directly.
    let bot_identity = Identity::generate();
    let bot = StreamsClient::start(ClientConfig::new(bridge_url, bot_identity.clone())).unwrap();
    bot.wait_connected(Duration::from_secs(30)).unwrap();
    app.world_mut()
        .resource_mut::<StreamsCommands>()
        .send(Operation::CreateRoom(NewRoom {
            name: name.into(),
            users: vec![bot_identity.user_id().clone()],
            ..Default::default()
        }));
    update_until(&mut app, "the room", |app| {
        app.world_mut()
            .query::<&StreamRoom>()
            .iter(app.world())
            .count()
            == 1
    });
    let (room, room_id) = {
        let mut q = app.world_mut().query::<(Entity, &StreamRoom)>();
        let (e, r) = q.single(app.world()).unwrap();
        (e, r.id.clone())
    };
    {
        let mut streams = app.world_mut().resource_mut::<StreamsCommands>();
        streams.send(Operation::Subscribe(EventScope::Room(room_id.clone())));
        streams.send(Operation::JoinRoom(room_id.clone()));
    }
    bot.join_room(&room_id).unwrap();
    for _ in 0..20 {
        app.update();
        std::thread::sleep(Duration::from_millis(5));
    }
    (app, room, room_id, bot_identity, bot)
}

#[test]
fn frames_return_while_the_bridge_is_held_back_and_media_state_follows_the_replies() {
    let bridge = Bridge::spawn(BridgeConfig::ephemeral()).unwrap();
    let proxy = Arc::new(WsProxy::start(&bridge.url()).unwrap());
    let (mut app, room, _, _, _bot) = app_in_a_room_with_a_bot(&proxy.url(), &bridge.url(), "Held");

    // Everything the bridge says is held: joining and publishing still return at once.
    proxy.hold(Direction::ToClient);
    let watchdog = Watchdog::arm(&proxy);
    app.world_mut().trigger(JoinMedia { entity: room });
    app.update();
    assert!(has::<MediaConnecting>(&app, room));
    app.world_mut().trigger(PublishAudio {
        entity: room,
        input: AudioInput::Tone(440.0),
    });
    app.update();
    assert_eq!(
        local_tracks(&mut app),
        1,
        "the local track is an entity at once"
    );
    // Half a second of frames: no reply came, so the media cannot be up.
    for _ in 0..50 {
        app.update();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(has::<MediaConnecting>(&app, room));
    assert!(!has::<MediaConnected>(&app, room));
    assert!(watchdog.disarm(), "a frame waited for a held reply");

    // Released: the replies arrive and the media connects.
    proxy.release(Direction::ToClient);
    update_until(&mut app, "the media connected", |app| {
        has::<MediaConnected>(app, room)
    });
    assert!(!has::<MediaConnecting>(&app, room));

    // Held again: leaving, joining again and despawning the room all return.
    proxy.hold(Direction::ToClient);
    let watchdog = Watchdog::arm(&proxy);
    app.world_mut().trigger(LeaveMedia { entity: room });
    app.update();
    assert!(!has::<RoomMediaLink>(&app, room));
    assert!(!has::<MediaConnected>(&app, room) && !has::<MediaConnecting>(&app, room));
    assert_eq!(local_tracks(&mut app), 0, "leaving ends the local tracks");
    app.world_mut().trigger(JoinMedia { entity: room });
    app.update();
    assert!(has::<MediaConnecting>(&app, room));
    app.world_mut().entity_mut(room).despawn();
    for _ in 0..20 {
        app.update();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(watchdog.disarm(), "a frame waited for a held reply");

    // What was held arrives for a room that is gone: the app takes it in stride.
    proxy.release(Direction::ToClient);
    for _ in 0..50 {
        app.update();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(app.world().get_entity(room).is_err());
}
