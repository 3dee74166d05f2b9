//! `streams-bench`: benchmarks that print one JSON line each.
//!
//! - `audio-latency` ([`audio_latency`]): one-way audio latency and loss through the SFU.
//! - `video` ([`video`]): one publisher and one subscriber of the test pattern through the SFU —
//!   encode and decode time, glass-to-glass latency, PSNR, sustained frame rate.
//!
//! - `mixer` ([`mixer`]): the cost of N positional HRTF voices as a share of one core.
//! - `textures` ([`textures`]): the Bevy main thread's time per frame to show N remote videos.
//! - `join` ([`join`]): from `JoinMedia` to the first remote voice played, and the worst frame.
//! - `sfu-fanout` ([`fanout`]): SFU forwarding capacity, our bridge and (with `--compare janus`)
//!   Janus side by side, in a network namespace, servers pinned to their own core.
//! - `sfu-scale` ([`fanout::scale`]): the same at growing load (`wide` or `rooms`) until a server
//!   loses more than 1 % or the load side runs out of core.
//!
//! - `impair` ([`impair`]): a call through the bridge over an impaired path (delay and jitter,
//!   loss, reordering, a rate cap): audio concealment and latency, video frame rate, freezes, PSNR.
//!
//! - `all`: every scenario above with its defaults, one after the other (a few minutes).
//!
//! Run them optimised: `cargo run --release -p streams-bench -- video`.
mod audio_latency;
mod common;
mod fanout;
mod impair;
#[cfg(feature = "textures")]
mod join;
mod mixer;
#[cfg(feature = "textures")]
mod textures;
mod video;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "streams-bench")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// One-way audio latency and loss through the SFU.
    AudioLatency {
        /// Publisher/subscriber pairs.
        #[arg(long, default_value_t = 2)]
        pairs: usize,
        /// Seconds of audio per publisher.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Opus frame duration, 10 or 20 ms.
        #[arg(long, default_value_t = 20)]
        frame_ms: u32,
    },
    /// Positional voice: N moving HRTF voices mixed at 48 kHz, as a share of one core.
    Mixer {
        /// Voices.
        #[arg(long, default_value_t = 32)]
        voices: usize,
        /// Seconds of audio to render.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The HRTF set (SOFA).
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/hrtf/mit_kemar_normal_pinna.sofa"))]
        hrtf: std::path::PathBuf,
    },
    /// Bevy main-thread time per frame to write N remote 640×360 videos into their images.
    Textures {
        /// Videos.
        #[arg(long, default_value_t = 9)]
        videos: usize,
        /// Seconds to measure.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// A Bevy app joining a room's media N times: time to the first remote voice played, and the
    /// longest frame.
    Join {
        /// Joins.
        #[arg(long, default_value_t = 10)]
        joins: usize,
        /// The niceness of the bridge and bot's process (0: the game's priority).
        #[arg(long, default_value_t = 19)]
        peer_nice: i32,
    },
    /// The bridge and bot of `join`, in a process of its own (started by `join`).
    #[command(hide = true)]
    JoinPeer,
    /// Every scenario with its defaults (a few minutes), one JSON line each; `sfu-fanout` compares
    /// with Janus when it is installed.
    All {
        /// Leave Janus out even if it is installed.
        #[arg(long)]
        without_janus: bool,
    },
    /// SFU fan-out: R rooms × P publishers × S subscribers of voice frames through one server.
    SfuFanout {
        /// Rooms.
        #[arg(long, default_value_t = 2)]
        rooms: usize,
        /// Publishers per room.
        #[arg(long, default_value_t = 4)]
        publishers: usize,
        /// Subscribers per room.
        #[arg(long, default_value_t = 40)]
        subscribers: usize,
        /// Seconds measured.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Which server: `bridge` or `janus`.
        #[arg(long, default_value = "bridge")]
        target: String,
        /// Also run this target with the same load and print the ratio (`janus`).
        #[arg(long)]
        compare: Option<String>,
        /// The video variant: each publisher also sends H.264 at this many kbit/s (30 fps).
        #[arg(long, default_value_t = 0)]
        video_kbps: u32,
        /// The bridge's forwarding workers (all on the server's core).
        #[arg(long, default_value_t = 1)]
        media_workers: usize,
    },
    /// SFU fan-out at growing load until a server loses more than 1 % or the load side runs
    /// out of core: `wide` (1 room × 10 publishers × 10, 20, 40… subscribers) or `rooms` (2, 4,
    /// 8… rooms × 4 × 4).
    SfuScale {
        /// `wide` or `rooms`.
        #[arg(long, default_value = "wide")]
        shape: String,
        /// Seconds measured per step.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Which server: `bridge` or `janus`.
        #[arg(long, default_value = "bridge")]
        target: String,
        /// Also step this target (`janus`), interleaved with the first.
        #[arg(long)]
        compare: Option<String>,
        /// The bridge's forwarding workers.
        #[arg(long, default_value_t = 1)]
        media_workers: usize,
        /// Most steps.
        #[arg(long, default_value_t = 7)]
        max_steps: u32,
    },
    /// A call through the bridge over an impaired path, one JSON line per condition (clean, 100 ±
    /// 30 ms jitter, 5/10/20 % loss, 1 % reordering, 300 kbit/s).
    Impair {
        /// Seconds of media per condition.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Run only this condition (by its name in the output, e.g. "loss 5%").
        #[arg(long)]
        only: Option<String>,
    },
    /// Video through the SFU: one publisher of the test pattern, one subscriber.
    Video {
        /// Picture width.
        #[arg(long, default_value_t = 1280)]
        width: usize,
        /// Picture height.
        #[arg(long, default_value_t = 720)]
        height: usize,
        /// Frames per second.
        #[arg(long, default_value_t = 30)]
        fps: u32,
        /// Seconds of video.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

/// Runs one scenario; its JSON lines.
fn run(scenario: Scenario) -> Result<Vec<serde_json::Value>, String> {
    let one = |line: Result<serde_json::Value, String>| line.map(|l| vec![l]);
    match scenario {
        Scenario::All { without_janus } => {
            let janus = !without_janus && std::path::Path::new("/usr/bin/janus").exists();
            let runs: [&[&str]; 7] = [
                &["audio-latency"],
                &["video"],
                &["impair"],
                &["mixer"],
                &["textures"],
                &["join"],
                if janus {
                    &["sfu-fanout", "--compare", "janus"]
                } else {
                    &["sfu-fanout"]
                },
            ];
            // Each scenario in a process of its own, one after the other: no thread, task pool or
            // bridge of an earlier one is left to share the cores with the next.
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            for args in runs {
                let ran = std::process::Command::new(&exe).args(args).status();
                if !ran.is_ok_and(|status| status.success()) {
                    let error = "the scenario failed (its error is above)";
                    println!(
                        "{}",
                        serde_json::json!({"scenario": args[0], "error": error})
                    );
                }
            }
            Ok(Vec::new())
        }
        Scenario::Impair { seconds, only } => impair::impair(seconds, only.as_deref()),
        Scenario::AudioLatency {
            pairs,
            seconds,
            frame_ms,
        } => one(audio_latency::audio_latency(pairs, seconds, frame_ms)),
        Scenario::Mixer {
            voices,
            seconds,
            hrtf,
        } => one(mixer::mixer(voices, seconds, &hrtf)),
        Scenario::Video {
            width,
            height,
            fps,
            seconds,
        } => one(video::video(width, height, fps, seconds)),
        #[cfg(feature = "textures")]
        Scenario::Textures { videos, seconds } => one(textures::textures(videos, seconds)),
        #[cfg(not(feature = "textures"))]
        Scenario::Textures { .. } => {
            Err("built without the `textures` feature (it needs Bevy)".into())
        }
        #[cfg(feature = "textures")]
        Scenario::Join { joins, peer_nice } => one(join::join(joins, peer_nice)),
        #[cfg(feature = "textures")]
        Scenario::JoinPeer => join::run_peer().map(|()| Vec::new()),
        #[cfg(not(feature = "textures"))]
        Scenario::Join { .. } | Scenario::JoinPeer => {
            Err("built without the `textures` feature (it needs Bevy)".into())
        }
        Scenario::SfuFanout {
            rooms,
            publishers,
            subscribers,
            seconds,
            target,
            compare,
            video_kbps,
            media_workers,
        } => {
            let load = fanout::Load {
                rooms,
                publishers,
                subscribers,
                seconds,
                video_kbps,
                media_workers,
            };
            fanout::Target::parse_all(target, compare).and_then(|t| fanout::sfu_fanout(load, &t))
        }
        Scenario::SfuScale {
            shape,
            seconds,
            target,
            compare,
            media_workers,
            max_steps,
        } => fanout::scale::Shape::parse(&shape).and_then(|shape| {
            let targets = fanout::Target::parse_all(target, compare)?;
            fanout::scale::sfu_scale(shape, &targets, seconds, media_workers, max_steps)
        }),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.scenario) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("streams-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
