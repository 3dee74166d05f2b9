//! `streams`: the command-line client — keys, rooms, events, bots and listeners.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use streams_client::audio::codec::{FrameDuration, VoiceSettings};
use streams_client::audio::device::{MicrophoneSource, input_devices, output_devices};
use streams_client::audio::source::{AudioSource, ClipSource, ToneSource};
use streams_client::media::voice_session::{Publication, listen_media, publish};
use streams_client::video::VideoSource;
use streams_client::video::camera::{DEFAULT_CAMERA, cameras};
use streams_client::video::codec::VideoSettings;
use streams_client::video::pattern::PatternSource;
use streams_client::video::screen::{ScreenSource, ScreenTarget};
use streams_client::{
    ClientConfig, ClientEvent, NewRoom, Room, RoomEvent, RoomUpdate, StreamsClient,
};
use streams_proto::policy::{Access, Policy};
use streams_proto::wire::{EventScope, Paging, SortOrder, TrackKind};
use streams_proto::{ContextId, Identity, RoomId, StreamId, TrackId, UserId};

/// Command-line client for bevy_streams Stream Rooms.
#[derive(Parser)]
#[command(name = "streams", version)]
struct Cli {
    /// The bridge's WebSocket URL.
    #[arg(
        long,
        global = true,
        env = "STREAMS_BRIDGE",
        default_value = "ws://127.0.0.1:7800"
    )]
    bridge: String,
    /// Your key file (see `streams keygen`). Default: ~/.config/streams/key.
    #[arg(long, global = true, env = "STREAMS_KEY")]
    key: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a new key file (owner-only) and print its user id.
    Keygen {
        /// Where to write the key.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the user id of the key file.
    Whoami,
    /// Manage rooms.
    Room {
        #[command(subcommand)]
        action: RoomAction,
    },
    /// Join a room's media and publish audio (a tone, a WAV clip or a microphone) and/or video (the
    /// test pattern, the X11 screen or a camera) in real time.
    Bot(BotArgs),
    /// List audio input and output devices, and cameras with their formats.
    Devices,
    /// Receive every remote track of a room and report what arrived (one line per track).
    Listen {
        /// The room id.
        #[arg(long)]
        room: String,
        /// How long to listen.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Record a room (managers start and stop; members list). The bridge stores ciphertext only.
    Record {
        #[command(subcommand)]
        action: RecordAction,
    },
    /// Fetch a recording and turn it into files any player opens (one Matroska file per participant,
    /// H.264 + Opus); prints their paths. The encrypted copy is kept in OUT/RECORDING.encrypted.
    Export {
        /// The room id.
        #[arg(long)]
        room: String,
        /// The recording id (see `streams record list`).
        #[arg(long)]
        recording: String,
        /// Where to write the files.
        #[arg(long)]
        out: PathBuf,
        /// Export a copy fetched before (a `.encrypted` directory) instead of fetching.
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// Print room and presence events as JSON lines (the first line, `{"event":"subscribed",…}`, says
    /// that listening has begun).
    Events {
        /// Only this room (default: every room of the default context you are a member of).
        #[arg(long)]
        room: Option<String>,
        /// Stop after this many seconds (default: run until interrupted).
        #[arg(long)]
        seconds: Option<u64>,
    },
}

#[derive(Subcommand)]
enum RecordAction {
    /// Start recording a room.
    Start {
        /// The room id.
        #[arg(long)]
        room: String,
    },
    /// Stop recording a room.
    Stop {
        /// The room id.
        #[arg(long)]
        room: String,
    },
    /// List a room's recordings.
    List {
        /// The room id.
        #[arg(long)]
        room: String,
    },
}

#[derive(Args)]
struct BotArgs {
    /// The room id.
    #[arg(long)]
    room: String,
    /// Send a sine tone at this frequency (Hz).
    #[arg(long, conflicts_with = "file")]
    tone: Option<f64>,
    /// Send this WAV clip, looped.
    #[arg(long, conflicts_with = "mic")]
    file: Option<PathBuf>,
    /// Send the default microphone.
    #[arg(long, conflicts_with = "tone")]
    mic: bool,
    /// With --mic: the input device to use (see `streams devices`).
    #[arg(long, requires = "mic")]
    device: Option<String>,
    /// How long to send, from the moment the media connection is up.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Opus frame duration: 10 or 20 ms.
    #[arg(long, default_value_t = 20)]
    frame_ms: u32,
    /// Publish video too (or only video, without an audio option).
    #[arg(long, value_enum)]
    video: Option<VideoChoice>,
    /// Picture width (pattern: 640, camera: 1280; the screen is captured at its own size).
    #[arg(long)]
    width: Option<usize>,
    /// Picture height (pattern: 360, camera: 720).
    #[arg(long)]
    height: Option<usize>,
    /// Frames per second (pattern: 30, screen and camera: 15).
    #[arg(long)]
    fps: Option<u32>,
    /// With --video camera: which camera (see `streams devices`).
    #[arg(long, default_value_t = 0)]
    camera: u32,
    /// With --video screen: capture this X11 window (id, decimal or 0x hex) instead of the screen.
    #[arg(long, value_parser = parse_window)]
    window: Option<u32>,
    /// A keyframe every this many frames (default: only when a receiver asks).
    #[arg(long)]
    keyframe_interval: Option<u32>,
    /// Highest video bitrate, kbit/s (default: from the picture size).
    #[arg(long)]
    max_kbps: Option<u32>,
    /// With --json: also print the running figures once a second (`{"progress":…}` lines).
    #[arg(long)]
    progress: bool,
}

fn parse_window(text: &str) -> Result<u32, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|e| format!("not a window id: {e}"))
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum VideoChoice {
    /// The moving test pattern (frame number and capture time in its pixels).
    Pattern,
    /// The X11 screen ($DISPLAY), or one window with --window.
    Screen,
    /// A camera.
    Camera,
}

#[derive(Clone, Copy, ValueEnum)]
enum Order {
    Asc,
    Desc,
}

#[derive(Subcommand)]
enum RoomAction {
    /// Create a room; prints its id.
    Create {
        /// Display name (private: stored encrypted).
        #[arg(long)]
        name: String,
        /// A user of the room (repeatable).
        #[arg(long = "user")]
        users: Vec<String>,
        /// A manager of the room besides you (repeatable).
        #[arg(long = "manager")]
        managers: Vec<String>,
        /// Public metadata (the bridge can read it).
        #[arg(long, default_value = "")]
        public_meta: String,
        /// Private metadata (members only).
        #[arg(long, default_value = "")]
        private_meta: String,
        /// Policy entries RIGHT=LEVEL, rights get|update|delete|publish|subscribe|record|update_policy,
        /// levels none|user|manager|all (repeatable).
        #[arg(long = "policy")]
        policy: Vec<String>,
    },
    /// List the rooms you can see.
    List {
        /// How many to skip.
        #[arg(long, default_value_t = 0)]
        skip: u32,
        /// How many to show (1–100).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Order by creation time.
        #[arg(long, value_enum, default_value_t = Order::Desc)]
        order: Order,
    },
    /// Show one room (private metadata decrypted for members).
    Get {
        /// The room id.
        id: String,
    },
    /// Change a room.
    Update {
        /// The room id.
        id: String,
        /// New display name.
        #[arg(long)]
        name: Option<String>,
        /// Add a user (repeatable).
        #[arg(long = "add-user")]
        add_users: Vec<String>,
        /// Remove a user (repeatable); starts a new key epoch.
        #[arg(long = "remove-user")]
        remove_users: Vec<String>,
        /// Add a manager (repeatable).
        #[arg(long = "add-manager")]
        add_managers: Vec<String>,
        /// Remove a manager (repeatable).
        #[arg(long = "remove-manager")]
        remove_managers: Vec<String>,
        /// New public metadata.
        #[arg(long)]
        public_meta: Option<String>,
        /// New private metadata.
        #[arg(long)]
        private_meta: Option<String>,
        /// Policy entries RIGHT=LEVEL (repeatable).
        #[arg(long = "policy")]
        policy: Vec<String>,
        /// Start a new key epoch even if nothing else changes.
        #[arg(long)]
        rotate_key: bool,
        /// The version you are updating (default: the current one).
        #[arg(long)]
        version: Option<u64>,
        /// Apply even if the version is stale.
        #[arg(long)]
        force: bool,
    },
    /// Delete a room.
    Delete {
        /// The room id.
        id: String,
    },
}

fn default_key_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("streams").join("key")
}

fn user_ids(list: &[String]) -> Result<Vec<UserId>, String> {
    list.iter()
        .map(|s| UserId::parse(s).map_err(|e| e.to_string()))
        .collect()
}

fn room_id(text: &str) -> Result<RoomId, String> {
    RoomId::parse(text).map_err(|e| e.to_string())
}

fn apply_policy(mut policy: Policy, entries: &[String]) -> Result<Policy, String> {
    for entry in entries {
        let (right, level) = entry
            .split_once('=')
            .ok_or_else(|| format!("policy entry {entry:?} is not RIGHT=LEVEL"))?;
        let level = Access::parse(level)
            .ok_or_else(|| format!("unknown level {level:?} (none|user|manager|all)"))?;
        let slot = match right {
            "get" => &mut policy.get,
            "update" => &mut policy.update,
            "delete" => &mut policy.delete,
            "publish" => &mut policy.publish,
            "subscribe" => &mut policy.subscribe,
            "record" => &mut policy.record,
            "update_policy" => &mut policy.update_policy,
            other => return Err(format!("unknown right {other:?}")),
        };
        *slot = level;
    }
    Ok(policy)
}

/// A room as printed.
#[derive(Serialize)]
struct RoomView {
    id: String,
    context_id: String,
    name: Option<String>,
    created_at: i64,
    created_by: String,
    modified_at: i64,
    modified_by: String,
    version: u64,
    key_epoch: u64,
    users: Vec<String>,
    managers: Vec<String>,
    policy: Policy,
    public_meta: String,
    private_meta: Option<String>,
    readable: bool,
}

impl From<&Room> for RoomView {
    fn from(room: &Room) -> Self {
        let ids = |v: &[UserId]| v.iter().map(ToString::to_string).collect();
        RoomView {
            id: room.id.to_string(),
            context_id: room.context_id.to_string(),
            name: room.name().map(str::to_string),
            created_at: room.created_at,
            created_by: room.created_by.to_string(),
            modified_at: room.modified_at,
            modified_by: room.modified_by.to_string(),
            version: room.version,
            key_epoch: room.key_epoch,
            users: ids(&room.users),
            managers: ids(&room.managers),
            policy: room.policy,
            public_meta: String::from_utf8_lossy(&room.public_meta).into_owned(),
            private_meta: room
                .private_meta()
                .map(|m| String::from_utf8_lossy(m).into_owned()),
            readable: room.private.is_some(),
        }
    }
}

fn print_room(room: &Room, json: bool) {
    let view = RoomView::from(room);
    if json {
        println!("{}", serde_json::to_string(&view).unwrap_or_default());
        return;
    }
    println!("room {}", view.id);
    println!(
        "  name:         {}",
        view.name.as_deref().unwrap_or("(encrypted)")
    );
    println!(
        "  version:      {}   key epoch: {}",
        view.version, view.key_epoch
    );
    println!("  users:        {}", view.users.join(", "));
    println!("  managers:     {}", view.managers.join(", "));
    println!("  public meta:  {}", view.public_meta);
    println!(
        "  private meta: {}",
        view.private_meta.as_deref().unwrap_or("(encrypted)")
    );
}

/// Connects as `identity` (loaded by [`identity`]).
fn connect(cli: &Cli, identity: &Identity) -> Result<StreamsClient, String> {
    let path = key_path(cli);
    let mut config = ClientConfig::new(cli.bridge.clone(), identity.clone());
    config.request_timeout = Duration::from_secs(10);
    // Rooms verified by this key are remembered beside it, so a bridge cannot roll them back later.
    let mut trust = path.clone().into_os_string();
    trust.push(".trust");
    config.trust_file = Some(PathBuf::from(trust));
    let client = StreamsClient::start(config).map_err(|e| e.to_string())?;
    client
        .wait_connected(Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok(client)
}

fn room_command(cli: &Cli, action: &RoomAction) -> Result<(), String> {
    let client = connect(cli, &identity(cli)?)?;
    let err = |e: streams_client::ClientError| e.to_string();
    match action {
        RoomAction::Create {
            name,
            users,
            managers,
            public_meta,
            private_meta,
            policy,
        } => {
            let room = client
                .create_room(NewRoom {
                    context_id: None,
                    name: name.clone(),
                    users: user_ids(users)?,
                    managers: user_ids(managers)?,
                    public_meta: public_meta.as_bytes().to_vec(),
                    private_meta: private_meta.as_bytes().to_vec(),
                    policy: Some(apply_policy(Policy::default(), policy)?),
                })
                .map_err(err)?;
            if cli.json {
                print_room(&room, true);
            } else {
                println!("{}", room.id);
            }
        }
        RoomAction::List { skip, limit, order } => {
            let paging = Paging {
                skip: *skip,
                limit: *limit,
                order: match order {
                    Order::Asc => SortOrder::Asc,
                    Order::Desc => SortOrder::Desc,
                },
            };
            let page = client.list_rooms(None, paging).map_err(err)?;
            for (id, e) in &page.rejected {
                eprintln!("warning: room {id} failed verification and is not shown: {e}");
            }
            if cli.json {
                let rooms: Vec<RoomView> = page.rooms.iter().map(RoomView::from).collect();
                let out = serde_json::json!({ "total": page.total, "rooms": rooms });
                println!("{out}");
            } else {
                println!("{} room(s)", page.total);
                for room in &page.rooms {
                    println!(
                        "{}  {}  v{}  {} user(s)",
                        room.id,
                        room.name().unwrap_or("(encrypted)"),
                        room.version,
                        room.users.len()
                    );
                }
            }
        }
        RoomAction::Get { id } => {
            let room = client.get_room(&room_id(id)?).map_err(err)?;
            print_room(&room, cli.json);
        }
        RoomAction::Update {
            id,
            name,
            add_users,
            remove_users,
            add_managers,
            remove_managers,
            public_meta,
            private_meta,
            policy,
            rotate_key,
            version,
            force,
        } => {
            let room_id = room_id(id)?;
            let policy = if policy.is_empty() {
                None
            } else {
                let current = client.get_room(&room_id).map_err(err)?;
                Some(apply_policy(current.policy, policy)?)
            };
            let mut update = RoomUpdate::new(room_id);
            update.name = name.clone();
            update.add_users = user_ids(add_users)?;
            update.remove_users = user_ids(remove_users)?;
            update.add_managers = user_ids(add_managers)?;
            update.remove_managers = user_ids(remove_managers)?;
            update.public_meta = public_meta.as_ref().map(|m| m.as_bytes().to_vec());
            update.private_meta = private_meta.as_ref().map(|m| m.as_bytes().to_vec());
            update.policy = policy;
            update.rotate_key = *rotate_key;
            update.version = *version;
            update.force = *force;
            let room = client.update_room(update).map_err(err)?;
            print_room(&room, cli.json);
        }
        RoomAction::Delete { id } => {
            client.delete_room(&room_id(id)?).map_err(err)?;
            if !cli.json {
                println!("deleted");
            }
        }
    }
    Ok(())
}

#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum EventLine {
    RoomCreated {
        room: RoomView,
    },
    RoomUpdated {
        room: RoomView,
    },
    RoomDeleted {
        room_id: String,
    },
    RemovedFromRoom {
        room_id: String,
    },
    StreamPublished {
        room_id: String,
        stream_id: StreamId,
        user_id: String,
        tracks: usize,
    },
    StreamUnpublished {
        room_id: String,
        stream_id: StreamId,
    },
    StreamUpdated {
        room_id: String,
        stream_id: StreamId,
        tracks: usize,
    },
    Subscribed {
        room_id: String,
        user_id: String,
        track_ids: Vec<TrackId>,
    },
    Unsubscribed {
        room_id: String,
        user_id: String,
    },
    UserJoined {
        room_id: String,
        user_id: String,
    },
    UserLeft {
        room_id: String,
        user_id: String,
    },
    RecordingChanged {
        room_id: String,
        recording_id: String,
        recording: bool,
        by: String,
    },
    Rejected {
        room_id: String,
        error: String,
    },
    Connection {
        state: String,
    },
}

fn events(cli: &Cli, room: Option<&str>, seconds: Option<u64>) -> Result<(), String> {
    let client = connect(cli, &identity(cli)?)?;
    let scope = match room {
        Some(id) => EventScope::Room(room_id(id)?),
        None => EventScope::Context(ContextId::default()),
    };
    client.subscribe(scope.clone()).map_err(|e| e.to_string())?;
    // Tells scripts that events from now on will be printed.
    println!(
        "{}",
        serde_json::json!({ "event": "subscribed", "scope": scope })
    );
    let deadline = seconds.map(|s| std::time::Instant::now() + Duration::from_secs(s));
    loop {
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(std::time::Instant::now()),
            None => Duration::from_secs(3600),
        };
        if wait.is_zero() {
            return Ok(());
        }
        let event = match client.events().recv_timeout(wait) {
            Ok(event) => event,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return Err("the client stopped".into());
            }
        };
        let line = match event {
            ClientEvent::Room(RoomEvent::Created(room)) => EventLine::RoomCreated {
                room: RoomView::from(&*room),
            },
            ClientEvent::Room(RoomEvent::Updated(room)) => EventLine::RoomUpdated {
                room: RoomView::from(&*room),
            },
            ClientEvent::Room(RoomEvent::Deleted { room_id, .. }) => EventLine::RoomDeleted {
                room_id: room_id.to_string(),
            },
            ClientEvent::Room(RoomEvent::RemovedFrom { room_id, .. }) => {
                EventLine::RemovedFromRoom {
                    room_id: room_id.to_string(),
                }
            }
            ClientEvent::Room(RoomEvent::StreamPublished { room_id, stream }) => {
                EventLine::StreamPublished {
                    room_id: room_id.to_string(),
                    stream_id: stream.stream_id,
                    user_id: stream.user_id.to_string(),
                    tracks: stream.tracks.len(),
                }
            }
            ClientEvent::Room(RoomEvent::StreamUnpublished { room_id, stream_id }) => {
                EventLine::StreamUnpublished {
                    room_id: room_id.to_string(),
                    stream_id,
                }
            }
            ClientEvent::Room(RoomEvent::StreamUpdated { room_id, stream }) => {
                EventLine::StreamUpdated {
                    room_id: room_id.to_string(),
                    stream_id: stream.stream_id,
                    tracks: stream.tracks.len(),
                }
            }
            ClientEvent::Room(RoomEvent::Subscribed {
                room_id,
                user_id,
                track_ids,
            }) => EventLine::Subscribed {
                room_id: room_id.to_string(),
                user_id: user_id.to_string(),
                track_ids,
            },
            ClientEvent::Room(RoomEvent::Unsubscribed { room_id, user_id }) => {
                EventLine::Unsubscribed {
                    room_id: room_id.to_string(),
                    user_id: user_id.to_string(),
                }
            }
            ClientEvent::Room(RoomEvent::UserJoined { room_id, user_id }) => {
                EventLine::UserJoined {
                    room_id: room_id.to_string(),
                    user_id: user_id.to_string(),
                }
            }
            ClientEvent::Room(RoomEvent::UserLeft { room_id, user_id }) => EventLine::UserLeft {
                room_id: room_id.to_string(),
                user_id: user_id.to_string(),
            },
            ClientEvent::Room(RoomEvent::RecordingChanged {
                room_id,
                recording_id,
                recording,
                by,
            }) => EventLine::RecordingChanged {
                room_id: room_id.to_string(),
                recording_id,
                recording,
                by: by.to_string(),
            },
            ClientEvent::Room(RoomEvent::Rejected { room_id, error }) => EventLine::Rejected {
                room_id: room_id.to_string(),
                error: error.to_string(),
            },
            ClientEvent::Connection(state) => EventLine::Connection {
                state: format!("{state:?}"),
            },
            ClientEvent::Reply { .. } => continue,
        };
        println!("{}", serde_json::to_string(&line).unwrap_or_default());
        let _ = std::io::Write::flush(&mut std::io::stdout());
    }
}

fn key_path(cli: &Cli) -> PathBuf {
    cli.key.clone().unwrap_or_else(default_key_path)
}

fn identity(cli: &Cli) -> Result<Identity, String> {
    Identity::load(&key_path(cli)).map_err(|e| e.to_string())
}

fn audio_source(args: &BotArgs) -> Result<Option<Box<dyn AudioSource>>, String> {
    Ok(match (args.tone, &args.file) {
        _ if args.mic => Some(Box::new(
            MicrophoneSource::open(args.device.as_deref())
                .map_err(|e| format!("{e}; use --tone HZ or --file PATH instead"))?,
        )),
        (_, Some(path)) => Some(Box::new(ClipSource::load(path).map_err(|e| e.to_string())?)),
        (Some(hz), None) => Some(Box::new(ToneSource::new(hz, 0.5))),
        (None, None) => None,
    })
}

fn video_source(
    args: &BotArgs,
    choice: VideoChoice,
) -> Result<(Box<dyn VideoSource>, TrackKind), String> {
    let fps = args.fps.unwrap_or(match choice {
        VideoChoice::Pattern => 30,
        _ => DEFAULT_CAMERA.2,
    });
    Ok(match choice {
        VideoChoice::Pattern => (
            Box::new(
                PatternSource::new(args.width.unwrap_or(640), args.height.unwrap_or(360), fps)
                    .map_err(|e| e.to_string())?,
            ),
            TrackKind::Video,
        ),
        VideoChoice::Screen => {
            let target = args
                .window
                .map_or(ScreenTarget::Screen, ScreenTarget::Window);
            let screen = ScreenSource::open(None, target, fps)
                .map_err(|e| format!("{e}; use --video pattern instead"))?;
            (Box::new(screen), TrackKind::Screen)
        }
        VideoChoice::Camera => (camera_source(args, fps)?, TrackKind::Video),
    })
}

#[cfg(feature = "camera")]
fn camera_source(args: &BotArgs, fps: u32) -> Result<Box<dyn VideoSource>, String> {
    let width = args.width.map_or(DEFAULT_CAMERA.0, |w| w as u32);
    let height = args.height.map_or(DEFAULT_CAMERA.1, |h| h as u32);
    let camera = streams_client::video::camera::CameraSource::open(args.camera, width, height, fps)
        .map_err(|e| format!("{e}; use --video pattern instead"))?;
    Ok(Box::new(camera))
}

#[cfg(not(feature = "camera"))]
fn camera_source(_: &BotArgs, _: u32) -> Result<Box<dyn VideoSource>, String> {
    Err("this build has no camera support; use --video pattern instead".into())
}

fn bot(cli: &Cli, args: &BotArgs) -> Result<(), String> {
    let audio = audio_source(args)?;
    let video = args.video.map(|v| video_source(args, v)).transpose()?;
    if audio.is_none() && video.is_none() {
        return Err("give --tone HZ, --file PATH, --mic and/or --video SOURCE".into());
    }
    let frame = FrameDuration::from_millis(args.frame_ms)
        .ok_or_else(|| format!("--frame-ms must be 10 or 20, not {}", args.frame_ms))?;
    let video = video.map(|(source, kind)| {
        let (width, height) = source.size();
        let mut settings = VideoSettings::for_picture(width, height, source.frame_rate());
        settings.keyframe_interval = args.keyframe_interval;
        settings.screen_content = kind == TrackKind::Screen;
        if let Some(kbps) = args.max_kbps {
            settings.max_bitrate = kbps.max(100) * 1000;
            settings.start_bitrate = settings.start_bitrate.min(settings.max_bitrate);
        }
        (source, settings, kind)
    });
    let identity = identity(cli)?;
    let client = connect(cli, &identity)?;
    let publication = Publication {
        audio: audio.map(|source| {
            (
                source,
                VoiceSettings {
                    frame,
                    ..VoiceSettings::default()
                },
            )
        }),
        video,
    };
    let progress = cli.json && args.progress;
    let report = publish(
        &client,
        &identity,
        &cli.bridge,
        &room_id(&args.room)?,
        publication,
        Duration::from_secs(args.seconds),
        &mut |report| {
            if progress {
                println!("{}", serde_json::json!({ "progress": report }));
            }
        },
    )
    .map_err(|e| e.to_string())?;
    if cli.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        if report.frame_ms > 0 {
            println!(
                "sent {} audio frames of {} ms (key epochs {:?})",
                report.frames, report.frame_ms, report.epochs
            );
        }
        if let Some(v) = &report.video {
            println!(
                "sent {} video frames of {}x{} ({} keyframes, {} kbit/s target, encode p50 {:.1} ms)",
                v.frames,
                v.width,
                v.height,
                v.keyframes,
                v.target_bitrate / 1000,
                v.encode_ms_p50
            );
        }
    }
    match report.failure {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}

fn listen(cli: &Cli, room: &str, seconds: u64) -> Result<(), String> {
    let identity = identity(cli)?;
    let client = connect(cli, &identity)?;
    let listened = listen_media(
        &client,
        &identity,
        &cli.bridge,
        &room_id(room)?,
        Duration::from_secs(seconds),
    )
    .map_err(|e| e.to_string())?;
    if listened.audio.is_empty() && listened.video.is_empty() && !cli.json {
        println!("no track arrived");
    }
    for r in listened.audio {
        if cli.json {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
        } else {
            println!(
                "{} from {}: {} frames, {} lost, {} concealed, {} FEC, {} decrypt failures, {:.1} Hz, {:.1} dBFS, latency p50 {:?} ms",
                r.track_id,
                r.user_id,
                r.frames,
                r.lost,
                r.concealed,
                r.fec_recovered,
                r.decrypt_failures,
                r.freq_hz,
                r.level_dbfs,
                r.latency_p50_ms
            );
        }
    }
    for v in listened.video {
        if cli.json {
            println!("{}", serde_json::to_string(&v).unwrap_or_default());
        } else {
            println!(
                "{} from {}: {} frames of {}x{} at {:.1} fps, {} freezes, {} decrypt failures, PSNR {:?} dB, latency p50 {:?} ms",
                v.track_id,
                v.user_id,
                v.frames,
                v.width,
                v.height,
                v.fps,
                v.freezes,
                v.decrypt_failures,
                v.psnr_db.map(|p| (p * 10.0).round() / 10.0),
                v.latency_p50_ms
            );
        }
    }
    Ok(())
}

fn run(cli: &Cli) -> Result<(), String> {
    match &cli.command {
        Command::Keygen { out } => {
            let identity = Identity::generate();
            if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            identity.save(out).map_err(|e| e.to_string())?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({ "user_id": identity.user_id().as_str() })
                );
            } else {
                println!("{}", identity.user_id());
            }
            Ok(())
        }
        Command::Whoami => {
            println!("{}", identity(cli)?.user_id());
            Ok(())
        }
        Command::Room { action } => room_command(cli, action),
        Command::Events { room, seconds } => events(cli, room.as_deref(), *seconds),
        Command::Bot(args) => bot(cli, args),
        Command::Devices => {
            let cameras = cameras().unwrap_or_else(|e| {
                eprintln!("streams: {e}");
                Vec::new()
            });
            let list = serde_json::json!({
                "inputs": input_devices(),
                "outputs": output_devices(),
                "cameras": cameras,
            });
            if cli.json {
                println!("{list}");
            } else {
                println!(
                    "inputs:  {}",
                    serde_json::to_string(&list["inputs"]).unwrap_or_default()
                );
                println!(
                    "outputs: {}",
                    serde_json::to_string(&list["outputs"]).unwrap_or_default()
                );
                println!(
                    "cameras: {}",
                    serde_json::to_string(&list["cameras"]).unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::Listen { room, seconds } => listen(cli, room, *seconds),
        Command::Record { action } => record(cli, action),
        Command::Export {
            room,
            recording,
            out,
            from,
        } => export_recording(cli, room, recording, out, from.as_deref()),
    }
}

fn record(cli: &Cli, action: &RecordAction) -> Result<(), String> {
    let identity = identity(cli)?;
    let client = connect(cli, &identity)?;
    let (room, enabled) = match action {
        RecordAction::Start { room } => (room, true),
        RecordAction::Stop { room } => (room, false),
        RecordAction::List { room } => {
            let recordings = streams_client::export::fetch::list(&client, &room_id(room)?)
                .map_err(|e| e.to_string())?;
            for r in recordings {
                if cli.json {
                    println!("{}", serde_json::to_string(&r).unwrap_or_default());
                } else {
                    let bytes: u64 = r.files.iter().map(|f| f.size).sum();
                    let state = if r.stopped_at.is_some() {
                        "stopped"
                    } else {
                        "recording"
                    };
                    println!(
                        "{} {state}, {} files, {bytes} bytes",
                        r.recording_id,
                        r.files.len()
                    );
                }
            }
            return Ok(());
        }
    };
    client
        .call(streams_client::Operation::SetRecording {
            room_id: room_id(room)?,
            enabled,
        })
        .map_err(|e| e.to_string())?;
    if cli.json {
        println!("{}", serde_json::json!({ "recording": enabled }));
    }
    Ok(())
}

fn export_recording(
    cli: &Cli,
    room: &str,
    recording: &str,
    out: &Path,
    from: Option<&Path>,
) -> Result<(), String> {
    use streams_client::export::{exporter, fetch};
    let identity = identity(cli)?;
    let encrypted = match from {
        Some(dir) => dir.to_path_buf(),
        None => {
            let client = connect(cli, &identity)?;
            let dir = out.join(format!("{recording}.encrypted"));
            fetch::fetch(&client, &room_id(room)?, recording, &dir).map_err(|e| e.to_string())?
        }
    };
    let report = exporter::export(&encrypted, &identity, out).map_err(|e| e.to_string())?;
    if cli.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        for file in &report.files {
            println!("{}", file.path.display());
        }
    }
    for (epoch, frames) in &report.no_key {
        eprintln!(
            "streams: {frames} frames of epoch {epoch} not exported: this key cannot open that epoch"
        );
    }
    if report.failed > 0 {
        eprintln!(
            "streams: {} frames did not authenticate and were skipped",
            report.failed
        );
    }
    for problem in &report.problems {
        eprintln!("streams: {problem}");
    }
    if report.files.is_empty() {
        return Err("nothing could be exported".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streams: {e}");
            ExitCode::FAILURE
        }
    }
}
