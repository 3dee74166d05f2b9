//! `streams record …` and `streams export`: start, stop and list a room's recordings, and turn
//! one into files any player opens.
use std::path::Path;

use clap::Subcommand;

use crate::common::{Globals, connect, identity, room_id};

#[derive(Subcommand)]
pub(crate) enum RecordAction {
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

pub(crate) fn record(cli: &Globals, action: &RecordAction) -> Result<(), String> {
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

pub(crate) fn export_recording(
    cli: &Globals,
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
