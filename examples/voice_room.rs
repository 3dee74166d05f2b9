//! A 3D voice room: bots walk around and talk (a speech clip or tones) and show the moving test
//! pattern on billboards above their heads; you hear each from where it is (HRTF), WASD moves you.
//!
//! ```sh
//! cargo run --example voice_room                              # in-process bridge, 3 bots, a window
//! cargo run --example voice_room -- --headless --seconds 10    # no window: one JSON line at the end
//! cargo run --example voice_room -- --bridge ws://host:7800     # a real bridge (bots join it too)
//! cargo run --example voice_room -- --seconds 20 --screenshot room.png   # window; save it, exit
//! ```
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bevy::app::ScheduleRunnerPlugin;
use bevy::log::LogPlugin;
use bevy::prelude::*;
use bevy::render::view::screenshot::{Screenshot, save_to_disk};
use bevy_streams::prelude::*;
use bevy_streams::streams_client::audio::codec::VoiceSettings;
use bevy_streams::streams_client::audio::source::{AudioSource, ClipSource, ToneSource};
use bevy_streams::streams_client::media::voice_session::{Publication, publish};
use bevy_streams::streams_client::video::codec::VideoSettings;
use bevy_streams::streams_client::video::pattern::{PatternSource, read_stamp};
use bevy_streams::streams_client::{ClientConfig, StreamsClient};
use bevy_streams::streams_proto::wire::{EventScope, TrackKind};
use bevy_streams::{AudioTrackStats, Identity, LatestPicture, Reply, RoomId, VideoTrackStats};
use crossbeam_channel::Sender;

struct Args {
    bridge: Option<String>,
    headless: bool,
    seconds: Option<u64>,
    bots: usize,
    screenshot: Option<String>,
}

fn args() -> Args {
    let mut args = Args {
        bridge: None,
        headless: false,
        seconds: None,
        bots: 3,
        screenshot: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--bridge" => args.bridge = it.next(),
            "--headless" => args.headless = true,
            "--seconds" => args.seconds = it.next().and_then(|s| s.parse().ok()),
            "--bots" => args.bots = it.next().and_then(|s| s.parse().ok()).unwrap_or(3),
            "--screenshot" => args.screenshot = it.next(),
            other => eprintln!("voice_room: ignoring {other}"),
        }
    }
    args
}

fn main() {
    let args = args();
    let mut app = App::new();
    if args.headless {
        app.add_plugins((
            MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(Duration::from_millis(16))),
            LogPlugin::default(),
            AssetPlugin::default(),
            TransformPlugin,
        ))
        .init_asset::<Image>();
    } else {
        app.add_plugins(DefaultPlugins.set(WindowPlugin {
            primary_window: Some(Window {
                title: "bevy_streams voice room".into(),
                ..default()
            }),
            ..default()
        }))
        .add_systems(Startup, scene)
        .add_systems(Update, (walk_listener, show_billboards));
    }
    let plugin = match &args.bridge {
        Some(url) => StreamsPlugin::url(url.clone()),
        None => StreamsPlugin::embedded(),
    };
    app.add_plugins(plugin)
        .insert_resource(Settings {
            bots: args.bots,
            seconds: args.seconds,
            bridge: args.bridge.clone(),
            screenshot: args.screenshot.clone(),
        })
        .init_resource::<Tally>()
        .add_systems(Startup, (start_bots, spawn_listener))
        .add_observer(create_room_when_connected)
        .add_systems(
            Update,
            (handle_replies, walk_bots, count_pictures, finish).chain(),
        );
    app.run();
}

#[derive(Resource)]
struct Settings {
    bots: usize,
    seconds: Option<u64>,
    bridge: Option<String>,
    screenshot: Option<String>,
}

#[derive(Resource)]
struct Bots {
    users: Vec<bevy_streams::UserId>,
    rooms: Vec<Sender<RoomId>>,
}

#[derive(Resource, Default)]
struct Tally {
    /// Distinct pattern frame numbers written into images, per track.
    frames: HashMap<Entity, HashSet<u32>>,
    /// Sources heard above −50 dBFS at some point in the last second, by track id.
    audible: HashMap<String, f64>,
    room: Option<Entity>,
}

/// Starts the bots: each its own client and identity, joining the room it is told and publishing a
/// voice (the speech clip for the first, tones for the others) and the test pattern.
fn start_bots(
    mut commands: Commands,
    settings: Res<Settings>,
    world_bridge: Option<Res<bevy_streams::EmbeddedBridge>>,
) {
    let url = settings
        .bridge
        .clone()
        .or_else(|| world_bridge.map(|b| b.url.clone()))
        .expect("a bridge");
    // Bots talk until the app exits (a slow renderer stretches the app's clock behind the wall clock).
    let seconds = 24 * 3600;
    let mut users = Vec::new();
    let mut rooms = Vec::new();
    for i in 0..settings.bots {
        let identity = Identity::generate();
        users.push(identity.user_id().clone());
        let (tx, rx) = crossbeam_channel::bounded::<RoomId>(1);
        rooms.push(tx);
        let url = url.clone();
        std::thread::spawn(move || {
            let Ok(bot) = StreamsClient::start(ClientConfig::new(url.clone(), identity.clone()))
            else {
                return;
            };
            if bot.wait_connected(Duration::from_secs(10)).is_err() {
                return;
            }
            let Ok(room) = rx.recv() else { return };
            let _ = bot.join_room(&room);
            let clip = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/assets/speech/bot_greeting.wav"
            );
            let voice: Box<dyn AudioSource> =
                match (i, ClipSource::load(std::path::Path::new(clip))) {
                    (0, Ok(clip)) => Box::new(clip),
                    _ => Box::new(ToneSource::new(330.0 + 110.0 * i as f64, 0.3)),
                };
            let pattern = PatternSource::new(320, 240, 15).expect("pattern");
            let publication = Publication {
                audio: Some((voice, VoiceSettings::default())),
                video: Some((
                    Box::new(pattern),
                    VideoSettings::for_picture(320, 240, 15),
                    TrackKind::Video,
                )),
            };
            if let Err(e) = publish(
                &bot,
                &identity,
                &url,
                &room,
                publication,
                Duration::from_secs(seconds),
                &mut |_| {},
            ) {
                eprintln!("bot {i}: {e}");
            }
        });
    }
    commands.insert_resource(Bots { users, rooms });
}

fn spawn_listener(mut commands: Commands) {
    commands.spawn((
        Name::new("listener"),
        StreamListener,
        Transform::from_xyz(0.0, 1.6, 0.0),
    ));
}

fn create_room_when_connected(
    _: On<Add, Connected>,
    mut streams: ResMut<StreamsCommands>,
    bots: Res<Bots>,
) {
    streams.send(Operation::CreateRoom(NewRoom {
        name: "Voice room".into(),
        users: bots.users.clone(),
        ..Default::default()
    }));
}

fn handle_replies(
    mut commands: Commands,
    mut replies: MessageReader<StreamsReply>,
    mut streams: ResMut<StreamsCommands>,
    bots: Res<Bots>,
    index: Res<RoomIndex>,
    mut tally: ResMut<Tally>,
) {
    for reply in replies.read() {
        match &reply.result {
            Ok(Reply::Room(room)) if tally.room.is_none() => {
                streams.send(Operation::Subscribe(EventScope::Room(room.id.clone())));
                streams.send(Operation::JoinRoom(room.id.clone()));
                if let Some(entity) = index.get(&room.id) {
                    tally.room = Some(entity);
                    commands.trigger(JoinMedia { entity });
                    info!("voice room {} created; bots are joining", room.id);
                }
                for bot in &bots.rooms {
                    let _ = bot.send(room.id.clone());
                }
            }
            Ok(_) => {}
            Err(e) => warn!("request {} failed: {e}", reply.id),
        }
    }
}

/// Bots walk in circles around the middle of the room, each on its own radius and pace.
fn walk_bots(
    mut commands: Commands,
    time: Res<Time>,
    participants: Query<(Entity, &Participant, Option<&Transform>)>,
    bots: Res<Bots>,
) {
    for (entity, participant, transform) in &participants {
        let Some(i) = bots.users.iter().position(|u| *u == participant.user_id) else {
            continue;
        };
        let t = time.elapsed_secs() * (0.2 + 0.05 * i as f32) + i as f32 * 2.1;
        let radius = 3.0 + 1.5 * i as f32;
        let position = Vec3::new(radius * t.cos(), 1.6, radius * t.sin());
        match transform {
            Some(_) => {
                commands
                    .entity(entity)
                    .insert(Transform::from_translation(position));
            }
            None => {
                commands
                    .entity(entity)
                    .insert((Transform::from_translation(position), Visibility::default()));
            }
        }
    }
}

/// Counts distinct pattern frames written into images and the voices audible in the mix.
fn count_pictures(
    mut tally: ResMut<Tally>,
    pictures: Query<(Entity, &LatestPicture), Changed<LatestPicture>>,
    spatial: Res<SpatialAudio>,
    time: Res<Time>,
) {
    for (entity, latest) in &pictures {
        if let Some(stamp) = latest.0.as_ref().and_then(|p| read_stamp(&p.picture)) {
            tally.frames.entry(entity).or_default().insert(stamp.frame);
        }
    }
    let now = time.elapsed_secs_f64();
    for (track, level) in spatial.levels() {
        if level > -50.0 {
            tally.audible.insert(track, now);
        }
    }
}

/// After `--seconds`: saves the window to `--screenshot` if asked, prints one JSON line and exits.
#[allow(clippy::too_many_arguments)]
fn finish(
    mut commands: Commands,
    settings: Res<Settings>,
    time: Res<Time>,
    tally: Res<Tally>,
    participants: Query<&ParticipantOf>,
    tracks: Query<(
        &RemoteTrack,
        Option<&AudioTrackStats>,
        Option<&VideoTrackStats>,
    )>,
    mut exit: MessageWriter<AppExit>,
    mut done: Local<bool>,
    mut shot: Local<bool>,
) {
    let Some(seconds) = settings.seconds else {
        return;
    };
    if *done || time.elapsed_secs_f64() < seconds as f64 {
        return;
    }
    if let Some(path) = &settings.screenshot
        && !*shot
    {
        *shot = true;
        commands
            .spawn(Screenshot::primary_window())
            .observe(save_to_disk(path.clone()));
        return;
    }
    if settings.screenshot.is_some() && time.elapsed_secs_f64() < seconds as f64 + 2.0 {
        return; // the screenshot is written a frame or two later
    }
    *done = true;
    let now = time.elapsed_secs_f64();
    let in_room = participants
        .iter()
        .filter(|of| Some(of.0) == tally.room)
        .count();
    let audio = tracks
        .iter()
        .filter(|t| t.0.kind == TrackKind::Audio)
        .count();
    let video = tracks
        .iter()
        .filter(|t| t.0.kind != TrackKind::Audio)
        .count();
    let decrypt_failures: u64 = tracks
        .iter()
        .map(|(_, a, v)| {
            a.map_or(0, |a| a.0.decrypt_failures) + v.map_or(0, |v| v.0.decrypt_failures)
        })
        .sum();
    let shown: usize = tally.frames.values().map(HashSet::len).sum();
    let audible = tally.audible.values().filter(|t| now - **t <= 1.0).count();
    println!(
        "{}",
        serde_json::json!({
            "participants": in_room,
            "remote_audio_tracks": audio,
            "remote_video_tracks": video,
            "video_frames_shown": shown,
            "audible_sources": audible,
            "decrypt_failures": decrypt_failures,
        })
    );
    exit.write(AppExit::Success);
}

fn scene(
    mut commands: Commands,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<StandardMaterial>>,
) {
    commands.spawn((
        Mesh3d(meshes.add(Plane3d::default().mesh().size(30.0, 30.0))),
        MeshMaterial3d(materials.add(Color::srgb(0.3, 0.5, 0.3))),
    ));
    commands.spawn((
        DirectionalLight {
            illuminance: 8_000.0,
            ..default()
        },
        Transform::from_xyz(4.0, 8.0, 4.0).looking_at(Vec3::ZERO, Vec3::Y),
    ));
    commands.spawn((
        Camera3d::default(),
        Transform::from_xyz(0.0, 6.0, 14.0).looking_at(Vec3::new(0.0, 1.0, 0.0), Vec3::Y),
    ));
}

/// WASD moves the listener (the ears), arrow keys turn it.
fn walk_listener(
    keys: Res<ButtonInput<KeyCode>>,
    time: Res<Time>,
    mut listener: Query<&mut Transform, With<StreamListener>>,
) {
    let Ok(mut transform) = listener.single_mut() else {
        return;
    };
    let dt = time.delta_secs();
    let forward = transform.forward().as_vec3();
    let right = transform.right().as_vec3();
    let mut step = Vec3::ZERO;
    for (key, dir) in [
        (KeyCode::KeyW, forward),
        (KeyCode::KeyS, -forward),
        (KeyCode::KeyD, right),
        (KeyCode::KeyA, -right),
    ] {
        if keys.pressed(key) {
            step += dir;
        }
    }
    transform.translation += step.normalize_or_zero() * 4.0 * dt;
    if keys.pressed(KeyCode::ArrowLeft) {
        transform.rotate_y(1.5 * dt);
    }
    if keys.pressed(KeyCode::ArrowRight) {
        transform.rotate_y(-1.5 * dt);
    }
}

/// A billboard with each remote video above its sender's head.
fn show_billboards(
    mut commands: Commands,
    videos: Query<(&RemoteVideo, &RemoteTrack, &TrackOf), Added<RemoteVideo>>,
    rooms: Query<&StreamRoom>,
    index: Res<RoomIndex>,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<StandardMaterial>>,
) {
    for (video, track, of) in &videos {
        let Some(participant) = rooms
            .get(of.0)
            .ok()
            .and_then(|room| index.participant(&room.id, &track.user_id))
        else {
            continue;
        };
        let billboard = commands
            .spawn((
                Mesh3d(meshes.add(Rectangle::new(1.6, 1.2))),
                MeshMaterial3d(materials.add(StandardMaterial {
                    base_color_texture: Some(video.image.clone()),
                    unlit: true,
                    double_sided: true,
                    cull_mode: None,
                    ..default()
                })),
                Transform::from_xyz(0.0, 1.2, 0.0),
            ))
            .id();
        commands.entity(participant).add_child(billboard);
    }
}
