//! `streams`: the command-line client — keys, rooms, events, bots and listeners. This file holds
//! the command line and the small commands; `common.rs` what every command shares (the global
//! options, the key, the connection); `rooms.rs`, `events.rs`, `media.rs` and `recording.rs` the
//! others.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use streams_client::audio::device::{input_devices, output_devices};
use streams_client::video::camera::cameras;
use streams_proto::Identity;

mod common;
mod events;
mod media;
mod recording;
mod rooms;

use crate::common::{Globals, identity};
use crate::media::BotArgs;
use crate::recording::RecordAction;
use crate::rooms::RoomAction;

/// Command-line client for bevy_streams Stream Rooms.
#[derive(Parser)]
#[command(name = "streams", version)]
struct Cli {
    #[command(flatten)]
    globals: Globals,
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

fn run(command: &Command, cli: &Globals) -> Result<(), String> {
    match command {
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
        Command::Room { action } => rooms::room_command(cli, action),
        Command::Events { room, seconds } => events::events(cli, room.as_deref(), *seconds),
        Command::Bot(args) => media::bot(cli, args),
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
        Command::Listen { room, seconds } => media::listen(cli, room, *seconds),
        Command::Record { action } => recording::record(cli, action),
        Command::Export {
            room,
            recording,
            out,
            from,
        } => recording::export_recording(cli, room, recording, out, from.as_deref()),
    }
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
    match run(&cli.command, &cli.globals) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("streams: {e}");
            ExitCode::FAILURE
        }
    }
}
