//! What the examples share: their command line (`--bridge URL`, `--headless`, `--seconds N`,
//! `--bots N`, `--screenshot FILE`), the app they start (a window, or none), the bot participants
//! (each its own client and identity, talking and showing the moving test pattern), the room they all
//! join, and the one JSON line printed after `--seconds`.
#![allow(dead_code, clippy::type_complexity)]
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
use bevy_streams::streams_client::video::VideoSource;
use bevy_streams::streams_client::video::codec::VideoSettings;
use bevy_streams::streams_client::video::pattern::{PatternSource, read_stamp};
use bevy_streams::streams_client::video::screen::{ScreenSource, ScreenTarget};
use bevy_streams::streams_client::{ClientConfig, StreamsClient};
use bevy_streams::streams_proto::wire::{EventScope, TrackKind};
use bevy_streams::{AudioTrackStats, Identity, LatestPicture, Reply, RoomId, VideoTrackStats};
use crossbeam_channel::Sender;

/// The command line every example takes.
#[derive(Resource, Clone, Debug)]
pub struct Args {
    pub bridge: Option<String>,
    pub headless: bool,
    pub seconds: Option<u64>,
    pub bots: usize,
    pub screenshot: Option<String>,
}

impl Args {
    pub fn parse(name: &str, default_bots: usize) -> Args {
        let mut args = Args {
            bridge: None,
            headless: false,
            seconds: None,
            bots: default_bots,
            screenshot: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--bridge" => args.bridge = it.next(),
                "--headless" => args.headless = true,
                "--seconds" => args.seconds = it.next().and_then(|s| s.parse().ok()),
                "--bots" => {
                    args.bots = it
                        .next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(default_bots)
                }
                "--screenshot" => args.screenshot = it.next(),
                other => eprintln!("{name}: ignoring {other}"),
            }
        }
        args
    }
}

/// What each bot publishes besides its voice.
#[derive(Resource, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BotVideo {
    /// The moving test pattern as a camera track, at this size and rate.
    Pattern {
        width: usize,
        height: usize,
        fps: u32,
    },
    /// A screen share: the X display when there is one, else the test pattern sent as a screen.
    Screen { fps: u32 },
}

/// An app with a window (or none when `--headless`), the streams plugin (the embedded bridge unless
/// `--bridge`), the bots, the shared room and the closing JSON line.
pub fn app(args: &Args, title: &str, video: BotVideo) -> App {
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
                title: title.into(),
                ..default()
            }),
            ..default()
        }));
    }
    let plugin = match &args.bridge {
        Some(url) => StreamsPlugin::url(url.clone()),
        None => StreamsPlugin::embedded(),
    };
    app.add_plugins(plugin);
    if !args.headless {
        app.add_plugins(bevy_streams::StreamsPanelPlugin);
    }
    app.insert_resource(args.clone())
        .insert_resource(video)
        .init_resource::<Tally>()
        .add_systems(Startup, start_bots)
        .add_observer(create_room_when_connected)
        .add_systems(Update, (handle_replies, count_pictures, finish).chain());
    app
}

/// The bots' user ids and the channels that tell them which room to join.
#[derive(Resource)]
pub struct Bots {
    pub users: Vec<bevy_streams::UserId>,
    rooms: Vec<Sender<RoomId>>,
}

/// The room everyone joins (its entity, once created) and what the closing line counts.
#[derive(Resource, Default)]
pub struct Tally {
    pub room: Option<Entity>,
    /// Distinct pattern frame numbers written into images, per track.
    frames: HashMap<Entity, HashSet<u32>>,
    /// Pictures written into images of tracks without a readable stamp (real screens).
    unstamped: u64,
    /// Sources heard above −50 dBFS, by track id, and when last.
    audible: HashMap<TrackId, f64>,
}

fn bot_video(video: BotVideo) -> (Box<dyn VideoSource>, VideoSettings, TrackKind) {
    match video {
        BotVideo::Pattern { width, height, fps } => (
            Box::new(PatternSource::new(width, height, fps).expect("pattern size")),
            VideoSettings::for_picture(width, height, fps),
            TrackKind::Video,
        ),
        BotVideo::Screen { fps } => {
            let source: Box<dyn VideoSource> =
                match ScreenSource::open(None, ScreenTarget::Screen, fps) {
                    Ok(screen) => Box::new(screen),
                    Err(e) => {
                        info!("bot shares the test pattern as its screen ({e})");
                        Box::new(PatternSource::new(640, 360, fps).expect("pattern size"))
                    }
                };
            let (width, height) = source.size();
            let mut settings = VideoSettings::for_picture(width, height, fps);
            settings.screen_content = true;
            (source, settings, TrackKind::Screen)
        }
    }
}

/// Starts the bots: each its own client and identity, joining the room it is told and publishing a
/// voice (the speech clip for the first, tones for the others) and its video.
fn start_bots(
    mut commands: Commands,
    args: Res<Args>,
    video: Res<BotVideo>,
    embedded: Option<Res<bevy_streams::EmbeddedBridge>>,
) {
    let Some(url) = args
        .bridge
        .clone()
        .or_else(|| embedded.map(|b| b.url.clone()))
    else {
        error!("no bridge for the bots");
        return;
    };
    let video = *video;
    let mut users = Vec::new();
    let mut rooms = Vec::new();
    for i in 0..args.bots {
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
            let publication = Publication {
                audio: Some((voice, VoiceSettings::default())),
                video: Some(bot_video(video)),
            };
            // Bots talk until the app exits (a slow renderer stretches the app's clock behind the
            // wall clock).
            let until_exit = Duration::from_secs(24 * 3600);
            if let Err(e) = publish(
                &bot,
                &identity,
                &url,
                &room,
                publication,
                until_exit,
                &mut |_| {},
            ) {
                eprintln!("bot {i}: {e}");
            }
        });
    }
    commands.insert_resource(Bots { users, rooms });
}

fn create_room_when_connected(
    _: On<Add, Connected>,
    mut streams: ResMut<StreamsCommands>,
    bots: Res<Bots>,
) {
    streams.send(Operation::CreateRoom(NewRoom {
        name: "bevy_streams example".into(),
        users: bots.users.clone(),
        ..Default::default()
    }));
}

/// When the room exists: subscribe to its events, join it and its media, send the bots in.
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
                    info!("room {} created; bots are joining", room.id);
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

/// Counts distinct pictures written into remote images and the voices audible in the mix.
fn count_pictures(
    mut tally: ResMut<Tally>,
    pictures: Query<(Entity, &LatestPicture), (Changed<LatestPicture>, With<RemoteTrack>)>,
    spatial: Res<SpatialAudio>,
    time: Res<Time>,
) {
    for (entity, latest) in &pictures {
        let Some(picture) = latest.0.as_ref() else {
            continue;
        };
        match read_stamp(&picture.picture) {
            Some(stamp) => {
                tally.frames.entry(entity).or_default().insert(stamp.frame);
            }
            None => tally.unstamped += 1,
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
    args: Res<Args>,
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
    let Some(seconds) = args.seconds else { return };
    let now = time.elapsed_secs_f64();
    if *done || now < seconds as f64 {
        return;
    }
    if let Some(path) = &args.screenshot {
        if !*shot {
            *shot = true;
            commands
                .spawn(Screenshot::primary_window())
                .observe(save_to_disk(path.clone()));
            return;
        }
        if now < seconds as f64 + 2.0 {
            return; // the screenshot is written a frame or two later
        }
    }
    *done = true;
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
    let shown = tally.frames.values().map(HashSet::len).sum::<usize>() as u64 + tally.unstamped;
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
