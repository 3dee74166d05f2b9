//! `sfu-fanout`: R rooms × P publishers × S subscribers of Opus-sized voice frames (50 a second per
//! publisher) through one server, for a fixed time, over a veth pair into a network namespace. The
//! server runs as its own process pinned to core 1, the load (every peer's DTLS-SRTP, on one Tokio
//! thread) on core 0. Targets: `bridge` (our `streams-bridge`) and `janus` (Debian's Janus 1.1,
//! VideoRoom); `--compare janus` runs both in one invocation and adds a `ratio` line.
//!
//! With `--video-kbps N` each publisher also sends an H.264 track (30 fps, N kbit/s).
//!
//! Figures: `egress_pps` — packets received per second by all subscribers after SRTP
//! authentication: voice frames (one packet each) plus video packets (from str0m's ingress
//! statistics, every 200 ms); `server_cpu_pct` — the server's CPU time over the window, from
//! `/proc/PID/stat`; `egress_pps_per_core` — the two divided (what one fully used core would
//! forward at this load); `loss_pct` — frames sent × subscribers not received; `p95_ms` — one-way
//! latency from the send time inside each frame; `server_rss_mb` and the growth per subscribed
//! track. A run whose load side used more than 90% of its core is marked `"valid": false`.
//!
//! `--media-workers N` runs the bridge with N forwarding workers (every one pinned to the server's
//! core, so they share it as they would share a loaded machine); `workers` then gives each one's
//! egress (counted by the subscribers it serves), its thread's CPU and the two divided, and
//! `workers_cpu_spread_pct` how far apart their CPU is ((max - min) / max). [`scale`] steps the
//! load until the server loses packets or the load side runs out of core.
pub mod bridge;
pub mod janus;
pub mod netns;
pub mod peer;
pub mod procstat;
pub mod scale;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use streams_client::media::voice::percentile;

use crate::fanout::netns::Namespace;
use crate::fanout::peer::{Counters, MAX_WORKERS, Peer};
use crate::fanout::procstat::{CpuMeter, numbered_threads, rss_mb};

/// The core the server is pinned to, and the load's.
const SERVER_CPU: usize = 1;
const LOAD_CPU: usize = 0;

/// How much load.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Rooms.
    pub rooms: usize,
    /// Publishers per room.
    pub publishers: usize,
    /// Subscribers per room (each receives every publisher of its room).
    pub subscribers: usize,
    /// Seconds of measured sending.
    pub seconds: u64,
    /// With more than 0, each publisher also sends an H.264 track at this rate (30 fps).
    pub video_kbps: u32,
    /// The bridge's forwarding workers (`--media-workers`; Janus ignores it).
    pub media_workers: usize,
}

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Our bridge.
    Bridge,
    /// Janus' VideoRoom.
    Janus,
}

impl Target {
    /// The target named first, then the one to compare with (`bridge` or `janus`).
    pub fn parse_all(first: String, compare: Option<String>) -> Result<Vec<Target>, String> {
        std::iter::once(first)
            .chain(compare)
            .map(|t| match t.as_str() {
                "bridge" => Ok(Target::Bridge),
                "janus" => Ok(Target::Janus),
                other => Err(format!("unknown target {other} (bridge or janus)")),
            })
            .collect()
    }

    fn name(self) -> &'static str {
        match self {
            Target::Bridge => "bridge",
            Target::Janus => "janus",
        }
    }
}

/// Runs `targets` one after the other; one JSON line each, and a ratio line for two.
pub fn sfu_fanout(load: Load, targets: &[Target]) -> Result<Vec<serde_json::Value>, String> {
    // Everything of the load side (this process) on its core.
    let pinned = std::process::Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &LOAD_CPU.to_string(),
            &std::process::id().to_string(),
        ])
        .output();
    if !pinned.is_ok_and(|o| o.status.success()) {
        return Err("taskset failed (util-linux)".into());
    }
    let mut lines = Vec::new();
    for target in targets {
        lines.push(run(*target, load)?);
    }
    if let [a, b] = lines.as_slice() {
        let per_core = |v: &serde_json::Value| v["egress_pps_per_core"].as_f64().unwrap_or(0.0);
        lines.push(serde_json::json!({
            "scenario": "sfu-fanout",
            "ratio": format!("{}/{}", a["target"].as_str().unwrap_or("?"), b["target"].as_str().unwrap_or("?")),
            "egress_pps_per_core_ratio": per_core(a) / per_core(b).max(1e-9),
            "server_cpu_pct_ratio": a["server_cpu_pct"].as_f64().unwrap_or(0.0)
                / b["server_cpu_pct"].as_f64().unwrap_or(0.0).max(1e-9),
        }));
    }
    Ok(lines)
}

/// A server under test: its process and what must live as long as the peers run (signaling
/// connections, temporary folders).
pub struct Server {
    /// The server process.
    pub child: std::process::Child,
    /// Kept alive until the run ends.
    pub _keep: Box<dyn std::any::Any>,
}

/// Where negotiated peers go: they start running at once on the load thread.
pub struct Launcher {
    peers: tokio::sync::mpsc::UnboundedSender<Peer>,
    /// What the running peers count.
    pub counters: Arc<Counters>,
    launched: u64,
}

impl Launcher {
    /// Starts running `peer`.
    pub fn launch(&mut self, peer: Peer) -> Result<(), String> {
        self.launched += 1;
        self.peers
            .send(peer)
            .map_err(|_| "the load thread stopped".to_string())
    }

    /// Waits until every peer launched so far is connected (Janus accepts subscribers only for
    /// publishers whose media is up).
    pub fn wait_connected(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.counters.connected.load(Ordering::Relaxed) < self.launched {
            if Instant::now() > deadline {
                return Err(format!(
                    "only {} of {} peers connected",
                    self.counters.connected.load(Ordering::Relaxed),
                    self.launched
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

fn start(
    target: Target,
    ns: &Namespace,
    load: &Load,
    launcher: &mut Launcher,
) -> Result<Server, String> {
    match target {
        Target::Bridge => bridge::start(ns, SERVER_CPU, load, launcher),
        Target::Janus => janus::start(ns, SERVER_CPU, load, launcher),
    }
}

/// The `q` quantile of latencies (µs), in ms (0 when there are none).
fn quantile_ms(latencies: &[u64], q: f64) -> f64 {
    percentile(latencies, q).unwrap_or(0) as f64 / 1000.0
}

/// One run of `target` under `load`: its JSON line.
pub fn run(target: Target, load: Load) -> Result<serde_json::Value, String> {
    let ns = Namespace::create()?;
    let counters = Arc::new(Counters::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<Peer>();
    let driver = {
        let counters = Arc::clone(&counters);
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let mut tasks = Vec::new();
                while let Some(peer) = receiver.recv().await {
                    tasks.push(tokio::spawn(peer.run(Arc::clone(&counters))));
                }
                for task in tasks {
                    let _ = task.await;
                }
            })
        })
    };
    let mut launcher = Launcher {
        peers: sender,
        counters: Arc::clone(&counters),
        launched: 0,
    };
    let outcome = start(target, &ns, &load, &mut launcher).and_then(|mut server| {
        let pid = server.child.id();
        let idle_rss = rss_mb(pid).unwrap_or(0.0);
        let measured = launcher
            .wait_connected()
            .and_then(|()| measure(&counters, pid, &load));
        let _ = server.child.kill();
        let _ = server.child.wait();
        measured.map(|m| (m, idle_rss))
    });
    counters.stop.store(true, Ordering::Relaxed);
    drop(launcher);
    let _ = driver.join();
    let (m, idle_rss) = outcome?;
    let kinds = if load.video_kbps > 0 { 2 } else { 1 };
    let tracks = (load.rooms * load.publishers * load.subscribers * kinds) as f64;
    Ok(serde_json::json!({
        "scenario": "sfu-fanout",
        "target": target.name(),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "rooms": load.rooms,
        "publishers": load.rooms * load.publishers,
        "subscribers": load.rooms * load.subscribers,
        "subscribed_tracks": tracks,
        "seconds": load.seconds,
        "egress_pps": m.egress_pps,
        "audio_pps": m.audio_pps,
        "video_kbps": load.video_kbps,
        "video_pps": m.video_pps,
        "video_fps_received": m.video_fps,
        "server_cpu_pct": m.server_cpu,
        "egress_pps_per_core": m.egress_pps / (m.server_cpu / 100.0).max(1e-9),
        "loss_pct": m.loss_pct,
        "p50_ms": m.p50_ms,
        "p95_ms": m.p95_ms,
        "server_rss_mb": m.rss,
        "server_rss_kb_per_subscribed_track": (m.rss - idle_rss).max(0.0) * 1024.0 / tracks.max(1.0),
        "load_cpu_pct": m.load_cpu,
        "valid": m.load_cpu < 90.0,
        "media_workers": if target == Target::Bridge { load.media_workers } else { 1 },
        "workers": m.workers.iter().map(|w| serde_json::json!({
            "worker": w.index,
            "egress_pps": w.egress_pps,
            "cpu_pct": w.cpu,
            "egress_pps_per_core": w.egress_pps / (w.cpu / 100.0).max(1e-9),
        })).collect::<Vec<_>>(),
        "workers_cpu_spread_pct": spread_pct(m.workers.iter().map(|w| w.cpu)),
    }))
}

/// How far apart the largest and smallest are, as a share of the largest (0 for fewer than 2).
fn spread_pct(values: impl Iterator<Item = f64>) -> f64 {
    let values: Vec<f64> = values.collect();
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    if values.len() < 2 || max <= 0.0 {
        0.0
    } else {
        100.0 * (max - min) / max
    }
}

/// One media worker's share of a run.
struct WorkerMeasured {
    index: usize,
    egress_pps: f64,
    cpu: f64,
}

struct Measured {
    egress_pps: f64,
    audio_pps: f64,
    video_pps: f64,
    video_fps: f64,
    server_cpu: f64,
    load_cpu: f64,
    loss_pct: f64,
    p50_ms: f64,
    p95_ms: f64,
    rss: f64,
    workers: Vec<WorkerMeasured>,
}

fn measure(counters: &Counters, pid: u32, load: &Load) -> Result<Measured, String> {
    counters.sending.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1)); // warm-up
    let server = CpuMeter::start(pid).ok_or("the server process is gone")?;
    let me = CpuMeter::start(std::process::id()).ok_or("no /proc")?;
    // Our bridge's forwarding threads (Janus has none by that name).
    let worker_meters: Vec<(usize, CpuMeter)> = numbered_threads(pid, "streams-sfu-")
        .into_iter()
        .filter(|(index, _)| *index < MAX_WORKERS)
        .filter_map(|(index, tid)| Some((index, CpuMeter::thread(pid, tid)?)))
        .collect();
    let egress_of = |index: usize| counters.egress_by_worker[index].load(Ordering::Relaxed);
    let worker_egress_before: Vec<u64> = worker_meters.iter().map(|(i, _)| egress_of(*i)).collect();
    let received_before = counters.received.load(Ordering::Relaxed);
    let video_packets_before = counters.video_packets.load(Ordering::Relaxed);
    let video_frames_before = counters.video_frames.load(Ordering::Relaxed);
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(load.seconds));
    let received = counters.received.load(Ordering::Relaxed) - received_before;
    let video_packets = counters.video_packets.load(Ordering::Relaxed) - video_packets_before;
    let video_frames = counters.video_frames.load(Ordering::Relaxed) - video_frames_before;
    let elapsed = window.elapsed().as_secs_f64();
    let server_cpu = server.percent().unwrap_or(0.0);
    let load_cpu = me.percent().unwrap_or(0.0);
    let workers = worker_meters
        .iter()
        .zip(worker_egress_before)
        .map(|((index, meter), before)| WorkerMeasured {
            index: *index,
            egress_pps: (egress_of(*index) - before) as f64 / elapsed,
            cpu: meter.percent().unwrap_or(0.0),
        })
        .collect();
    let rss = rss_mb(pid).unwrap_or(0.0);
    counters.sending.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(500)); // what is in flight arrives
    let sent = counters.sent.load(Ordering::Relaxed) as f64;
    let expected = sent * load.subscribers as f64;
    let total = counters.received.load(Ordering::Relaxed) as f64;
    let latencies = counters
        .latencies
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    Ok(Measured {
        egress_pps: (received + video_packets) as f64 / elapsed,
        audio_pps: received as f64 / elapsed,
        video_pps: video_packets as f64 / elapsed,
        video_fps: video_frames as f64 / elapsed,
        server_cpu,
        load_cpu,
        loss_pct: if expected > 0.0 {
            (100.0 * (1.0 - total / expected)).max(0.0)
        } else {
            0.0
        },
        p50_ms: quantile_ms(&latencies, 0.5),
        p95_ms: quantile_ms(&latencies, 0.95),
        rss,
        workers,
    })
}
