//! [`fetch`]: a member downloads a recording through the bridge — every file in chunks under the
//! message limit — and the room's signed epoch chain (`keys.json`: the key bundles of every epoch so
//! far, each secret wrapped for that epoch's members), so the copy can be exported offline.
use std::fs;
use std::path::{Path, PathBuf};

use streams_proto::RoomId;
use streams_proto::wire::RecordingInfo;

use crate::api::{Operation, Reply};
use crate::client::StreamsClient;
use crate::export::ExportError;

/// The file holding the epoch chain in a fetched recording's directory.
pub const KEYS: &str = "keys.json";

/// The recordings of a room.
pub fn list(client: &StreamsClient, room_id: &RoomId) -> Result<Vec<RecordingInfo>, ExportError> {
    match client.call(Operation::ListRecordings(room_id.clone()))? {
        Reply::Recordings(recordings) => Ok(recordings),
        other => Err(ExportError::Bridge(format!("unexpected reply {other:?}"))),
    }
}

/// Downloads recording `recording_id` of `room_id` into `dir` (created); returns the directory.
pub fn fetch(
    client: &StreamsClient,
    room_id: &RoomId,
    recording_id: &str,
    dir: &Path,
) -> Result<PathBuf, ExportError> {
    let recording = list(client, room_id)?
        .into_iter()
        .find(|r| r.recording_id == recording_id)
        .ok_or_else(|| ExportError::Bridge(format!("no recording {recording_id} in this room")))?;
    fs::create_dir_all(dir)?;
    for file in &recording.files {
        if !streams_proto::recording::is_plain_name(&file.name) {
            return Err(ExportError::Bridge(format!(
                "refusing file name {:?}",
                file.name
            )));
        }
        let mut data = Vec::with_capacity(file.size as usize);
        loop {
            let reply = client.call(Operation::FetchRecording {
                room_id: room_id.clone(),
                recording_id: recording_id.to_string(),
                file: file.name.clone(),
                offset: data.len() as u64,
            })?;
            let Reply::RecordingChunk {
                size, data: chunk, ..
            } = reply
            else {
                return Err(ExportError::Bridge(format!("unexpected reply {reply:?}")));
            };
            let done = chunk.is_empty() || data.len() + chunk.len() >= size as usize;
            data.extend_from_slice(&chunk);
            if done {
                break;
            }
        }
        fs::write(dir.join(&file.name), data)?;
    }
    let room = client.get_room(room_id)?;
    fs::write(
        dir.join(KEYS),
        serde_json::to_vec(&room.record.epochs).map_err(|e| ExportError::Bridge(e.to_string()))?,
    )?;
    Ok(dir.to_path_buf())
}
