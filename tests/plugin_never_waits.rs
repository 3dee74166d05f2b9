//! The game never waits for the network. A proxy between the app and the bridge holds back every
//! message from the bridge (replies and events alike); each frame that joins a room's media,
//! publishes a track, leaves the media or despawns the room still returns, and the room's media
//! state markers move on once the messages are released. How long frames take is the benchmark's
//! business (`streams-bench join`); a frame that waited for a held reply would wait until the
//! watchdog released it, and that fails the test.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy_streams::prelude::*;
use bevy_streams::streams_client::{ClientConfig, StreamsClient};
use bevy_streams::streams_proto::wire::EventScope;
use bevy_streams::{Identity, LocalTrack};
use streams_bridge::{Bridge, BridgeConfig};
use streams_testkit::Direction;
use streams_testkit::ws_proxy::WsProxy;

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

#[test]
fn frames_return_while_the_bridge_is_held_back_and_media_state_follows_the_replies() {
    let bridge = Bridge::spawn(BridgeConfig::ephemeral()).unwrap();
    let proxy = Arc::new(WsProxy::start(&bridge.url()).unwrap());
    let mut app = App::new();
    let mut plugin = StreamsPlugin::url(proxy.url());
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
    let bot = StreamsClient::start(ClientConfig::new(bridge.url(), bot_identity.clone())).unwrap();
    bot.wait_connected(Duration::from_secs(30)).unwrap();
    app.world_mut()
        .resource_mut::<StreamsCommands>()
        .send(Operation::CreateRoom(NewRoom {
            name: "Held".into(),
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
