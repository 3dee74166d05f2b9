//! `streams-bench`: benchmarks that print one JSON line each.
//!
//! - `audio-latency` ([`audio_latency`]): one-way audio latency and loss through the SFU.
//! - `video` ([`video`]): one publisher and one subscriber of the test pattern through the SFU —
//!   encode and decode time, glass-to-glass latency, PSNR, sustained frame rate.
//!
//! - `mixer` ([`mixer`]): the cost of N positional HRTF voices as a share of one core.
//! - `textures` ([`textures`]): the Bevy main thread's time per frame to show N remote videos.
//!
//! Run them optimised: `cargo run --release -p streams-bench -- video`.
mod audio_latency;
mod common;
mod mixer;
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.scenario {
        Scenario::AudioLatency {
            pairs,
            seconds,
            frame_ms,
        } => audio_latency::audio_latency(pairs, seconds, frame_ms),
        Scenario::Mixer {
            voices,
            seconds,
            hrtf,
        } => mixer::mixer(voices, seconds, &hrtf),
        Scenario::Video {
            width,
            height,
            fps,
            seconds,
        } => video::video(width, height, fps, seconds),
        Scenario::Textures { videos, seconds } => textures::textures(videos, seconds),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("streams-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
