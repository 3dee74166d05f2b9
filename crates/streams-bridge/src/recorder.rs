//! [`Recorder`]: one running recording of a room, owned by the SFU thread. Every frame the SFU forwards
//! from a publisher of the room is appended, as forwarded (ciphertext), to its track's frames file,
//! and the manifest lists the tracks; the format is [`streams_proto::recording`]'s. No key is involved:
//! the bridge cannot read what it records. Listing and reading recordings for members
//! ([`list`], [`read_chunk`]) happen off the SFU thread.
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use streams_proto::recording::{self, FrameRecord, MANIFEST, Manifest, RecordedTrack};
use streams_proto::wire::{
    ErrorCode, MAX_RECORDING_CHUNK, RecordingFile, RecordingInfo, TrackKind, WireError,
};
use streams_proto::{RoomId, TrackId, UserId};

/// A room being recorded.
pub struct Recorder {
    dir: PathBuf,
    manifest: Manifest,
    files: HashMap<TrackId, BufWriter<File>>,
    buffer: Vec<u8>,
}

fn internal(e: std::io::Error) -> WireError {
    tracing::error!("recording: {e}");
    WireError::new(
        ErrorCode::Internal,
        "the bridge could not write the recording",
    )
}

impl Recorder {
    /// Starts recording `room` into `root/<room>/<id>/`.
    pub fn start(root: &Path, room: &RoomId, id: &str, now_us: u64) -> Result<Self, WireError> {
        let dir = root.join(room.as_str()).join(id);
        fs::create_dir_all(&dir).map_err(internal)?;
        let recorder = Recorder {
            dir,
            manifest: Manifest {
                format: recording::FORMAT,
                room_id: room.clone(),
                recording_id: id.to_string(),
                started_us: now_us,
                stopped_us: None,
                tracks: Vec::new(),
            },
            files: HashMap::new(),
            buffer: Vec::new(),
        };
        recorder.write_manifest().map_err(internal)?;
        Ok(recorder)
    }

    /// The recording's id.
    pub fn id(&self) -> &str {
        &self.manifest.recording_id
    }

    fn write_manifest(&self) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(&self.manifest).map_err(std::io::Error::other)?;
        let temp = self.dir.join(format!("{MANIFEST}.tmp"));
        fs::write(&temp, json)?;
        fs::rename(temp, self.dir.join(MANIFEST))
    }

    /// Appends one forwarded frame of `track`. A write failure is logged and the frame lost; the
    /// room's media goes on.
    pub fn frame(
        &mut self,
        track: TrackId,
        user: &UserId,
        kind: TrackKind,
        codec: &str,
        record: FrameRecord,
    ) {
        if !self.files.contains_key(&track) {
            // File names are kept plain (letters, digits, `-`, `_`, `.`): no `:`.
            let file = format!("{}_{}-{}.frames", track.stream, track.mid, self.files.len());
            match File::create(self.dir.join(&file)) {
                Ok(f) => {
                    self.files.insert(track, BufWriter::new(f));
                    self.manifest.tracks.push(RecordedTrack {
                        track_id: track,
                        user_id: user.clone(),
                        kind,
                        codec: codec.to_string(),
                        file,
                    });
                    if let Err(e) = self.write_manifest() {
                        internal(e);
                    }
                }
                Err(e) => {
                    internal(e);
                    return;
                }
            }
        }
        self.buffer.clear();
        record.encode_into(&mut self.buffer);
        if let Some(out) = self.files.get_mut(&track)
            && let Err(e) = out.write_all(&self.buffer)
        {
            internal(e);
        }
    }

    /// Writes out what is buffered (so a listing shows it).
    pub fn flush(&mut self) {
        for out in self.files.values_mut() {
            if let Err(e) = out.flush() {
                internal(e);
            }
        }
    }

    /// Ends the recording.
    pub fn stop(mut self, now_us: u64) {
        self.flush();
        self.manifest.stopped_us = Some(now_us);
        if let Err(e) = self.write_manifest() {
            internal(e);
        }
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn not_found(what: &str) -> WireError {
    WireError::new(ErrorCode::NotFound, format!("no such {what}"))
}

/// The recordings of `room` under `root`, oldest first.
pub fn list(root: &Path, room: &RoomId) -> Result<Vec<RecordingInfo>, WireError> {
    let Ok(entries) = fs::read_dir(root.join(room.as_str())) else {
        return Ok(Vec::new());
    };
    let mut recordings = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(json) = fs::read(dir.join(MANIFEST)) else {
            continue;
        };
        let Ok(manifest) = serde_json::from_slice::<Manifest>(&json) else {
            tracing::warn!("unreadable recording manifest in {}", dir.display());
            continue;
        };
        let mut files = vec![RecordingFile {
            name: MANIFEST.to_string(),
            size: json.len() as u64,
        }];
        for track in &manifest.tracks {
            let size = fs::metadata(dir.join(&track.file)).map_or(0, |m| m.len());
            files.push(RecordingFile {
                name: track.file.clone(),
                size,
            });
        }
        recordings.push(RecordingInfo {
            recording_id: manifest.recording_id.clone(),
            started_at: (manifest.started_us / 1000) as i64,
            stopped_at: manifest.stopped_us.map(|us| (us / 1000) as i64),
            files,
        });
    }
    recordings.sort_by_key(|r| r.started_at);
    Ok(recordings)
}

/// Up to [`MAX_RECORDING_CHUNK`] bytes of one file of a recording, from `offset`; with the file's size.
pub fn read_chunk(
    root: &Path,
    room: &RoomId,
    recording_id: &str,
    file: &str,
    offset: u64,
) -> Result<(Vec<u8>, u64), WireError> {
    if !recording::is_plain_name(recording_id) || !recording::is_plain_name(file) {
        return Err(WireError::new(
            ErrorCode::Invalid,
            "not a recording or file name",
        ));
    }
    let path = root.join(room.as_str()).join(recording_id).join(file);
    let mut f = File::open(&path).map_err(|_| not_found("recording file"))?;
    let size = f.metadata().map_err(internal)?.len();
    let mut data = Vec::new();
    if offset < size {
        f.seek(SeekFrom::Start(offset)).map_err(internal)?;
        f.take(MAX_RECORDING_CHUNK as u64)
            .read_to_end(&mut data)
            .map_err(internal)?;
    }
    Ok((data, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use streams_proto::recording::read_records;

    #[test]
    fn a_recording_is_listed_and_read_back_in_chunks() {
        let root = tempfile::tempdir().unwrap();
        let room = RoomId::random();
        let user = streams_proto::Identity::generate().user_id().clone();
        let mut rec = Recorder::start(root.path(), &room, "rec-1", 1_000_000).unwrap();
        for n in 0..300u64 {
            let record = FrameRecord {
                arrival_us: 1_000_000 + n * 20_000,
                rtp_time: n * 960,
                keyframe: false,
                payload: vec![n as u8; 4000],
            };
            rec.frame(
                TrackId::parse("7:0").unwrap(),
                &user,
                TrackKind::Audio,
                "opus",
                record,
            );
        }
        rec.stop(7_000_000);
        let listed = list(root.path(), &room).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].stopped_at, Some(7_000));
        let frames = &listed[0].files[1];
        assert_eq!(frames.name, "7_0-0.frames");
        assert_eq!(frames.size, 300 * (4000 + 21));
        let mut data = Vec::new();
        while (data.len() as u64) < frames.size {
            let (chunk, size) =
                read_chunk(root.path(), &room, "rec-1", &frames.name, data.len() as u64).unwrap();
            assert_eq!(size, frames.size);
            assert!(chunk.len() <= MAX_RECORDING_CHUNK && !chunk.is_empty());
            data.extend(chunk);
        }
        let read = read_records(&data);
        assert_eq!(read.records.len(), 300);
        assert_eq!(read.records[299].payload, vec![43u8; 4000]);
        assert_eq!(
            read_chunk(root.path(), &room, "..", "recording.json", 0)
                .unwrap_err()
                .code,
            ErrorCode::Invalid
        );
        assert_eq!(
            read_chunk(root.path(), &room, "rec-2", "recording.json", 0)
                .unwrap_err()
                .code,
            ErrorCode::NotFound
        );
        assert!(list(root.path(), &RoomId::random()).unwrap().is_empty());
    }
}
