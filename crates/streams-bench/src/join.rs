//! `join`: how fast a game hears a room, and what joining costs its frames. A bridge on loopback
//! and a bot publishing a tone in a room run in a peer process ([`peer`]), started at a lower
//! priority so that they stand for the far side of the network rather than compete with the game
//! (`--peer-nice 0` puts them on an equal footing); a Bevy app (MinimalPlugins, the streams plugin
//! with its positional output on the default device, a null sink here) runs at 60 frames a second
//! and joins the room's media N times (leaving it between joins). Per join: the time from
//! `JoinMedia` to the first frame of the bot's voice played by the output (its level in the mix
//! rising above −60 dBFS, as the output thread renders it). Over the frames: the longest
//! `App::update` (the worst main-thread stall), the longest of the frames that join or leave and
//! the two after each, the longest of the others, the median and the 99th percentile. The app's
//! own engine, output and task-pool threads share the two cores with the main thread, so a
//! frame's wall time includes waiting for a core: the worst frame is split, from the kernel's
//! `/proc/thread-self/schedstat`, into the main thread's time on a core, its time runnable but
//! waiting for one, and the rest, blocked (mostly Bevy's executor waiting for systems on its
//! task-pool threads, which wait for a core in turn).
mod peer;

use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy_streams::prelude::*;
use bevy_streams::{MediaConnected, SpatialAudio};
use streams_proto::wire::EventScope;

pub use peer::run as run_peer;

const APP_FPS: u64 = 60;
/// A join that hears nothing by then counts as failed.
const GIVE_UP: Duration = Duration::from_secs(10);
/// Frames after a join or leave counted with it (the engine starting or winding down beside them).
const AFTER_REQUEST: usize = 2;

/// The app and the frame times it has seen.
struct Game {
    app: App,
    frames_ms: Vec<f64>,
    /// The frames that join or leave, and the [`AFTER_REQUEST`] after each.
    request_frames_ms: Vec<f64>,
    next_frame: Instant,
    /// What the frames are doing now, and the worst frame's (duration, what, frames into it).
    phase: &'static str,
    phase_frames: usize,
    worst: (f64, &'static str, usize),
    /// The worst frame's main-thread time on a core and waiting for one, in milliseconds.
    worst_sched: Schedstat,
}

/// The calling thread's scheduler counters (`/proc/thread-self/schedstat`), in milliseconds.
#[derive(Clone, Copy, Default)]
struct Schedstat {
    on_cpu_ms: f64,
    waiting_ms: f64,
}

impl Schedstat {
    /// Now; zeros where the kernel does not keep scheduler statistics.
    fn read() -> Self {
        let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
        let mut fields = text
            .split_whitespace()
            .map(|field| field.parse::<f64>().unwrap_or(0.0) / 1e6);
        Self {
            on_cpu_ms: fields.next().unwrap_or(0.0),
            waiting_ms: fields.next().unwrap_or(0.0),
        }
    }

    fn since(self, earlier: Self) -> Self {
        Self {
            on_cpu_ms: self.on_cpu_ms - earlier.on_cpu_ms,
            waiting_ms: self.waiting_ms - earlier.waiting_ms,
        }
    }
}

impl Game {
    /// One frame at 60 fps: waits for its time, then runs and times `App::update`.
    fn frame(&mut self) {
        self.frame_with(|_| {});
    }

    /// A frame that first does `request` (a game's system would, inside the frame), timed with it.
    fn frame_with(&mut self, request: impl FnOnce(&mut App)) {
        std::thread::sleep(self.next_frame.saturating_duration_since(Instant::now()));
        self.next_frame += Duration::from_micros(1_000_000 / APP_FPS);
        let sched = Schedstat::read();
        let began = Instant::now();
        request(&mut self.app);
        self.app.update();
        let ms = began.elapsed().as_secs_f64() * 1000.0;
        self.frames_ms.push(ms);
        if matches!(self.phase, "joining" | "leaving") && self.phase_frames <= AFTER_REQUEST {
            self.request_frames_ms.push(ms);
        }
        if ms > self.worst.0 {
            self.worst = (ms, self.phase, self.phase_frames);
            self.worst_sched = Schedstat::read().since(sched);
        }
        self.phase_frames += 1;
    }

    fn enter(&mut self, phase: &'static str) {
        self.phase = phase;
        self.phase_frames = 0;
    }

    fn until(
        &mut self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&mut App) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while !done(&mut self.app) {
            if Instant::now() > deadline {
                return Err(format!("timed out waiting for {what}"));
            }
            self.frame();
        }
        Ok(())
    }
}

/// Whether the output plays a remote voice now.
fn hearing(app: &App) -> bool {
    app.world()
        .resource::<SpatialAudio>()
        .levels()
        .iter()
        .any(|(_, level)| *level > -60.0)
}

/// Runs the scenario with `joins` joins, the peer process at niceness `peer_nice`, and returns its
/// JSON line.
pub fn join(joins: usize, peer_nice: i32) -> Result<serde_json::Value, String> {
    let mut peer = peer::Peer::spawn(peer_nice)?;
    let mut plugin = StreamsPlugin::url(peer.url.clone());
    plugin.audio_output = true;
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        AssetPlugin::default(),
        TransformPlugin,
        plugin,
    ))
    .init_asset::<Image>();
    let mut game = Game {
        app,
        frames_ms: Vec::new(),
        request_frames_ms: Vec::new(),
        next_frame: Instant::now(),
        phase: "setup",
        phase_frames: 0,
        worst: (0.0, "setup", 0),
        worst_sched: Schedstat::default(),
    };
    game.until("the connection", GIVE_UP, |app| {
        app.world_mut()
            .query::<&Connected>()
            .iter(app.world())
            .count()
            == 1
    })?;
    game.app
        .world_mut()
        .resource_mut::<StreamsCommands>()
        .send(Operation::CreateRoom(NewRoom {
            name: "Join bench".into(),
            users: vec![peer.bot.clone()],
            ..Default::default()
        }));
    game.until("the room", GIVE_UP, |app| {
        app.world_mut()
            .query::<&StreamRoom>()
            .iter(app.world())
            .count()
            == 1
    })?;
    let (room, room_id) = {
        let world = game.app.world_mut();
        let mut rooms = world.query::<(Entity, &StreamRoom)>();
        let (entity, room) = rooms.single(world).map_err(|e| e.to_string())?;
        (entity, room.id.clone())
    };
    {
        let mut streams = game.app.world_mut().resource_mut::<StreamsCommands>();
        streams.send(Operation::Subscribe(EventScope::Room(room_id.clone())));
        streams.send(Operation::JoinRoom(room_id.clone()));
    }
    peer.publish_in(&room_id)?;
    // A second of frames before the first join.
    for _ in 0..APP_FPS {
        game.frame();
    }
    game.frames_ms.clear();
    game.request_frames_ms.clear();
    game.worst = (0.0, "setup", 0);

    let mut first_audio_ms = Vec::new();
    let mut connected_ms = Vec::new();
    for _ in 0..joins {
        game.enter("joining");
        let joined = Instant::now();
        game.frame_with(|app| app.world_mut().trigger(JoinMedia { entity: room }));
        game.until("the bot's voice", GIVE_UP, |app| hearing(app))?;
        first_audio_ms.push(joined.elapsed().as_secs_f64() * 1000.0);
        game.enter("hearing");
        game.until("the media connected", GIVE_UP, |app| {
            app.world().get::<MediaConnected>(room).is_some()
        })?;
        connected_ms.push(joined.elapsed().as_secs_f64() * 1000.0);
        game.enter("leaving");
        game.frame_with(|app| app.world_mut().trigger(LeaveMedia { entity: room }));
        game.until("the voice to go", GIVE_UP, |app| !hearing(app))?;
        // The engine winds down on its own thread; a quarter second before the next join.
        for _ in 0..APP_FPS / 4 {
            game.frame();
        }
    }
    drop(peer);
    // The longest frame that neither joined nor left nor followed closely: the machine's floor.
    let mut others = game.frames_ms.clone();
    for ms in &game.request_frames_ms {
        if let Some(at) = others.iter().position(|other| other == ms) {
            others.swap_remove(at);
        }
    }
    let other_frames_max = others.iter().copied().fold(0.0, f64::max);
    let quantile = |values: &[f64], q: f64| {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted
            .get(((sorted.len().saturating_sub(1)) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(serde_json::json!({
        "scenario": "join",
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "joins": joins,
        "peer_nice": peer_nice,
        "first_audio_ms_p50": quantile(&first_audio_ms, 0.5),
        "first_audio_ms_p95": quantile(&first_audio_ms, 0.95),
        "first_audio_ms_max": quantile(&first_audio_ms, 1.0),
        "first_audio_ms": first_audio_ms,
        "connected_ms_p50": quantile(&connected_ms, 0.5),
        "frames": game.frames_ms.len(),
        "update_ms_p50": quantile(&game.frames_ms, 0.5),
        "update_ms_p99": quantile(&game.frames_ms, 0.99),
        "stall_ms_max": quantile(&game.frames_ms, 1.0),
        "request_frames_ms_max": quantile(&game.request_frames_ms, 1.0),
        "other_frames_ms_max": other_frames_max,
        "stall_during": format!("{} (frame {})", game.worst.1, game.worst.2),
        "stall_on_cpu_ms": game.worst_sched.on_cpu_ms,
        "stall_waiting_for_a_core_ms": game.worst_sched.waiting_ms,
        "stall_blocked_ms": (game.worst.0 - game.worst_sched.on_cpu_ms - game.worst_sched.waiting_ms)
            .max(0.0),
    }))
}
