//! The plugin's media layer in a headless app against the embedded bridge: a bot publishes a tone and
//! the test pattern; its tracks become entities related to the room, the pattern is written into an
//! image, its voice is placed where its participant stands (louder in the right channel when it
//! stands to the listener's right), proximity unsubscribes it beyond the earshot and brings it back
//! when near (with hysteresis), and its tracks go when it stops.
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy_streams::prelude::*;
use bevy_streams::streams_client::audio::codec::VoiceSettings;
use bevy_streams::streams_client::audio::source::ToneSource;
use bevy_streams::streams_client::media::driver::RoomMedia;
use bevy_streams::streams_client::media::events::MediaCommand;
use bevy_streams::streams_client::video::codec::VideoSettings;
use bevy_streams::streams_client::video::pattern::{PatternSource, read_stamp};
use bevy_streams::streams_client::{ClientConfig, StreamsClient};
use bevy_streams::streams_proto::wire::{EventScope, TrackKind};
use bevy_streams::{EmbeddedBridge, Identity, LatestPicture};

#[derive(Resource, Default)]
struct MediaMessages(usize);

fn count_messages(mut seen: ResMut<MediaMessages>, mut events: MessageReader<StreamsMediaEvent>) {
    seen.0 += events.read().count();
}

fn update_until(app: &mut App, what: &str, mut done: impl FnMut(&mut App) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(app) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        app.update();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the app until `watcher` (a bot's media) reports `track_id` removed; `failure` after 60 s.
fn until_removed_at(app: &mut App, watcher: &RoomMedia, track_id: TrackId, failure: &str) {
    let removed =
        bevy_streams::streams_client::media::events::MediaEvent::RemoteTrackRemoved { track_id };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "{failure}");
        app.update();
        if watcher.events().try_iter().any(|event| event == removed) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn tracks(app: &mut App, kind: TrackKind) -> Vec<Entity> {
    app.world_mut()
        .query::<(Entity, &RemoteTrack)>()
        .iter(app.world())
        .filter(|(_, t)| t.kind == kind)
        .map(|(e, _)| e)
        .collect()
}

fn rms(x: impl Iterator<Item = f32> + Clone) -> f32 {
    let n = x.clone().count().max(1) as f32;
    (x.map(|s| s * s).sum::<f32>() / n).sqrt()
}

/// Both tests send and receive real-time media; on a 2-core machine they run one at a time.
static REAL_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    REAL_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// Listens (see [`listen`]) until the right ear hears more than `level`, for up to 10 s (a busy
/// machine can leave the jitter buffer short for a moment); the last (left, right).
fn listen_until_heard(app: &mut App, level: f32) -> (f32, f32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (left, right) = listen(app);
        if right > level || Instant::now() > deadline {
            return (left, right);
        }
    }
}

/// Renders 200 ms of the positional mix; (left, right) RMS.
fn listen(app: &mut App) -> (f32, f32) {
    let mut out = vec![0.0f32; 2 * 9600];
    // Let the jitter buffer fill at real time, then take what it has.
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(10));
        app.update();
    }
    assert!(
        app.world().resource::<SpatialAudio>().render(&mut out),
        "the plugin runs without an output here"
    );
    (
        rms(out.iter().step_by(2).copied()),
        rms(out.iter().skip(1).step_by(2).copied()),
    )
}

/// What [`join_with_a_bot`] set up.
struct BotRoom {
    url: String,
    bot_identity: Identity,
    bot: StreamsClient,
    room: Entity,
    room_id: bevy_streams::RoomId,
}

/// Once the app is connected: a bot client on the embedded bridge, a room `name` for the app's user
/// and the bot, which the app joins (room and media) and the bot joins too.
fn join_with_a_bot(app: &mut App, name: &str) -> BotRoom {
    update_until(app, "connection", |app| {
        app.world_mut()
            .query::<&Connected>()
            .iter(app.world())
            .count()
            == 1
    });
    let url = app.world().resource::<EmbeddedBridge>().url.clone();
    let bot_identity = Identity::generate();
    let bot = StreamsClient::start(ClientConfig::new(url.clone(), bot_identity.clone())).unwrap();
    bot.wait_connected(Duration::from_secs(30)).unwrap();
    app.world_mut()
        .resource_mut::<StreamsCommands>()
        .send(Operation::CreateRoom(NewRoom {
            name: name.into(),
            users: vec![bot_identity.user_id().clone()],
            ..Default::default()
        }));
    update_until(app, "the room", |app| {
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
    app.world_mut().trigger(JoinMedia { entity: room });
    app.world_mut().flush();
    // Joining returned at once; the room's media is being set up.
    assert!(app.world().get::<MediaConnecting>(room).is_some());
    bot.join_room(&room_id).unwrap();
    BotRoom {
        url,
        bot_identity,
        bot,
        room,
        room_id,
    }
}

#[test]
fn remote_tracks_become_entities_with_video_images_positional_voice_and_proximity() {
    let _serial = one_at_a_time();
    let mut app = App::new();
    let mut plugin = StreamsPlugin::embedded();
    plugin.audio_output = false; // the test pulls the mix itself
    app.add_plugins((
        MinimalPlugins,
        AssetPlugin::default(),
        TransformPlugin,
        plugin,
    ))
    .init_asset::<Image>()
    .init_resource::<MediaMessages>()
    .add_systems(Update, count_messages);
    app.world_mut().spawn((
        StreamListener,
        Transform::default(),
        GlobalTransform::default(),
    ));
    let BotRoom {
        url,
        bot_identity,
        bot,
        room,
        room_id,
    } = join_with_a_bot(&mut app, "Plaza");

    // The bot publishes a 2 kHz voice and the pattern.
    let media = RoomMedia::start(
        bot.handle().unwrap(),
        bot_identity.clone(),
        &url,
        room_id.clone(),
    )
    .unwrap();
    media.send(MediaCommand::SubscribeAll(false));
    media.send(MediaCommand::AddAudioTrack {
        // 2 kHz: high enough for the head to shadow the far ear clearly (at 440 Hz the level
        // difference at 90° is only ~4 dB).
        source: Box::new(ToneSource::new(2000.0, 0.5)),
        settings: VoiceSettings::default(),
    });
    media.send(MediaCommand::AddVideoTrack {
        source: Box::new(PatternSource::new(160, 120, 15).unwrap()),
        settings: VideoSettings::for_picture(160, 120, 15),
        kind: TrackKind::Video,
    });

    update_until(&mut app, "the bot's two tracks", |app| {
        tracks(app, TrackKind::Audio).len() == 1 && tracks(app, TrackKind::Video).len() == 1
    });
    update_until(&mut app, "the room's media connected", |app| {
        app.world().get::<MediaConnected>(room).is_some()
    });
    assert!(app.world().get::<MediaConnecting>(room).is_none());
    let video = tracks(&mut app, TrackKind::Video)[0];
    assert_eq!(app.world().get::<TrackOf>(video).unwrap().0, room);
    assert!(
        app.world()
            .get::<RoomTracks>(room)
            .unwrap()
            .entities()
            .len()
            == 2
    );

    // The pattern is written into the track's image, in place.
    update_until(&mut app, "pictures in the image", |app| {
        app.world().get::<RemoteVideo>(video).unwrap().frames_shown >= 5
    });
    let handle = app.world().get::<RemoteVideo>(video).unwrap().image.clone();
    let image = app
        .world()
        .resource::<Assets<Image>>()
        .get(&handle)
        .unwrap();
    assert_eq!((image.width(), image.height()), (160, 120));
    let pixels = image.data.as_ref().expect("the picture is in the image");
    assert_eq!(pixels.len(), 160 * 120 * 4);
    assert!(
        pixels
            .chunks(4)
            .any(|p| p[0] > 200 && p[1] > 200 && p[2] > 200),
        "white stamp blocks"
    );
    let latest = app
        .world()
        .get::<LatestPicture>(video)
        .unwrap()
        .0
        .clone()
        .unwrap();
    assert!(
        read_stamp(&latest.picture).is_some(),
        "the pattern's stamp reads"
    );

    // The bot's participant stands 2 m to the listener's right (+X; the listener looks along −Z).
    let participant = app
        .world()
        .resource::<RoomIndex>()
        .participant(&room_id, bot_identity.user_id())
        .expect("the bot is present");
    let place = |app: &mut App, x: f32| {
        app.world_mut()
            .entity_mut(participant)
            .insert((Transform::from_xyz(x, 0.0, 0.0), GlobalTransform::default()));
    };
    place(&mut app, 2.0);
    let (left, right) = listen_until_heard(&mut app, 0.01);
    assert!(right > 2.0 * left, "right {right} vs left {left}");
    assert!(right > 0.01, "the voice is heard: {right}");

    // Deafened, nothing is heard; undeafened, the voice is back.
    app.world_mut().trigger(Deafen(true));
    let (left, right) = listen(&mut app);
    assert!(left < 1e-4 && right < 1e-4, "deafened: {left} {right}");
    app.world_mut().trigger(Deafen(false));
    let (_, right) = listen_until_heard(&mut app, 0.01);
    assert!(right > 0.01, "undeafened: {right}");

    // Proximity: at 33 m (beyond the 30 m earshot, within the 36 m hysteresis) nothing changes...
    place(&mut app, 33.0);
    for _ in 0..30 {
        app.update();
    }
    assert!(app.world().get::<OutOfEarshot>(participant).is_none());
    assert_eq!(tracks(&mut app, TrackKind::Audio).len(), 1);
    // ...at 40 m the voice is unsubscribed at the bridge (its track ends; video stays)...
    place(&mut app, 40.0);
    update_until(&mut app, "the far voice unsubscribed", |app| {
        app.world().get::<OutOfEarshot>(participant).is_some()
            && tracks(app, TrackKind::Audio).is_empty()
    });
    assert_eq!(tracks(&mut app, TrackKind::Video).len(), 1);
    // ...and back within earshot it is subscribed again.
    place(&mut app, 5.0);
    update_until(&mut app, "the near voice back", |app| {
        app.world().get::<OutOfEarshot>(participant).is_none()
            && tracks(app, TrackKind::Audio).len() == 1
    });

    // Every engine event was also a message, and the bot leaving ends its tracks.
    assert!(app.world().resource::<MediaMessages>().0 >= 3);
    drop(media);
    update_until(&mut app, "the tracks gone", |app| {
        tracks(app, TrackKind::Audio).is_empty() && tracks(app, TrackKind::Video).is_empty()
    });
}

#[derive(Resource, Default)]
struct Triggered {
    media_events: usize,
    room_events: usize,
    errors: Vec<String>,
}

#[test]
fn local_tracks_are_entities_with_a_preview_unpublish_ends_them_and_events_trigger_observers() {
    let _serial = one_at_a_time();
    let mut app = App::new();
    let mut plugin = StreamsPlugin::embedded();
    plugin.audio_output = false;
    app.add_plugins((
        MinimalPlugins,
        AssetPlugin::default(),
        TransformPlugin,
        plugin,
    ))
    .init_asset::<Image>()
    .init_resource::<Triggered>()
    .add_observer(|_: On<StreamsMediaEvent>, mut t: ResMut<Triggered>| t.media_events += 1)
    .add_observer(|_: On<StreamsRoomEvent>, mut t: ResMut<Triggered>| t.room_events += 1)
    .add_observer(|e: On<StreamsMediaError>, mut t: ResMut<Triggered>| {
        t.errors.push(e.error.to_string())
    });
    let BotRoom {
        url,
        bot_identity,
        bot,
        room,
        room_id,
    } = join_with_a_bot(&mut app, "Studio");
    // The bot watches what the game publishes.
    let watcher = RoomMedia::start(
        bot.handle().unwrap(),
        bot_identity.clone(),
        &url,
        room_id.clone(),
    )
    .unwrap();
    update_until(&mut app, "the room's media", |app| {
        app.world().get::<RoomMediaLink>(room).is_some()
    });

    app.world_mut().trigger(PublishAudio {
        entity: room,
        input: AudioInput::Tone(440.0),
    });
    app.world_mut().trigger(PublishVideo {
        entity: room,
        input: VideoInput::Pattern {
            width: 160,
            height: 120,
            fps: 15,
        },
        preview: true,
    });
    let local = |app: &mut App| -> Vec<(Entity, LocalTrack)> {
        let mut q = app
            .world_mut()
            .query::<(Entity, &LocalTrack, &LocalTrackOf)>();
        q.iter(app.world())
            .filter(|(_, _, of)| of.0 == room)
            .map(|(e, t, _)| (e, t.clone()))
            .collect()
    };
    update_until(&mut app, "both local tracks published", |app| {
        let tracks = local(app);
        tracks.len() == 2 && tracks.iter().all(|(_, t)| t.published)
    });
    let tracks = local(&mut app);
    let video = tracks
        .iter()
        .find(|(_, t)| t.kind == TrackKind::Video)
        .unwrap()
        .0;
    assert_eq!(
        app.world()
            .get::<RoomLocalTracks>(room)
            .unwrap()
            .entities()
            .len(),
        2
    );

    // The preview shows what is captured, in an image written in place.
    update_until(&mut app, "the preview", |app| {
        app.world()
            .get::<LocalPreview>(video)
            .is_some_and(|p| p.frames_shown >= 3)
    });
    let handle = app
        .world()
        .get::<LocalPreview>(video)
        .unwrap()
        .image
        .clone();
    let image = app
        .world()
        .resource::<Assets<Image>>()
        .get(&handle)
        .unwrap();
    assert_eq!((image.width(), image.height()), (160, 120));
    let pixels = image.data.as_ref().expect("the preview is in the image");
    assert!(
        pixels
            .chunks(4)
            .any(|p| p[0] > 200 && p[1] > 200 && p[2] > 200),
        "white stamp blocks"
    );
    let shown = app
        .world()
        .get::<LatestPicture>(video)
        .unwrap()
        .0
        .clone()
        .unwrap();
    assert!(
        read_stamp(&shown.picture).is_some(),
        "the preview is the pattern"
    );

    // The bot receives both tracks; the game's stats say what was sent.
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.len() < 2 {
        assert!(Instant::now() < deadline, "the bot did not get both tracks");
        app.update();
        for event in watcher.events().try_iter() {
            if let bevy_streams::streams_client::media::events::MediaEvent::RemoteTrackAdded {
                track_id,
                kind,
                ..
            } = event
            {
                received.push((track_id, kind));
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    update_until(&mut app, "local stats", |app| {
        app.world()
            .get::<LocalTrackStats>(video)
            .is_some_and(|s| s.frames > 0 && s.video.is_some())
    });

    // Unpublishing the video despawns its entity and ends the track at the bot.
    app.world_mut().trigger(Unpublish { entity: video });
    app.update();
    assert!(app.world().get_entity(video).is_err());
    let video_id = received
        .iter()
        .find(|(_, k)| *k == TrackKind::Video)
        .unwrap()
        .0;
    until_removed_at(
        &mut app,
        &watcher,
        video_id,
        "the bot still receives the video",
    );
    assert_eq!(local(&mut app).len(), 1);

    // A camera that is not there is an error event (message and trigger), not a panic.
    app.world_mut().trigger(PublishVideo {
        entity: room,
        input: VideoInput::Camera { index: 97, fps: 15 },
        preview: false,
    });
    update_until(&mut app, "the error trigger", |app| {
        !app.world().resource::<Triggered>().errors.is_empty()
    });
    let triggered = app.world().resource::<Triggered>();
    assert!(triggered.errors[0].contains("camera") || triggered.errors[0].contains("video"));
    assert!(triggered.media_events >= 2, "{}", triggered.media_events);
    assert!(triggered.room_events >= 1, "{}", triggered.room_events);
    assert_eq!(local(&mut app).len(), 1);

    // Leaving the media stops the engine (at the end of the frame) and closes its session at the
    // bridge: the bot loses the voice that was still published.
    let audio_id = received
        .iter()
        .find(|(_, k)| *k == TrackKind::Audio)
        .unwrap()
        .0;
    app.world_mut().trigger(LeaveMedia { entity: room });
    app.update();
    until_removed_at(
        &mut app,
        &watcher,
        audio_id,
        "the bot still receives the voice of a member who left the media",
    );
}
