//! [`export`]: a member turns a fetched recording into files any player opens — one Matroska file per
//! participant with their voice (Opus) and video (H.264) in sync, more files if they published more
//! than one of either. Each frame is opened with the key of its epoch, unwrapped from the signed chain
//! with the member's own key; frames of epochs the member cannot unwrap (before it joined, after it
//! was removed) are counted per epoch and reported, as are frames that do not authenticate and files
//! cut short or corrupted — whatever is intact is exported.
//!
//! Timing: within a participant, frames are placed by their capture time (inside the ciphertext), so
//! voice and video keep the sender's lip sync; participants are aligned on the bridge's clock by the
//! smallest arrival-minus-capture delay seen from each, and every file's clock starts when the
//! recording started — so files of participants who joined later start later, and agree.
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use serde::Serialize;
use streams_proto::frame_crypto::{EpochTag, KeyId, frame_header};
use streams_proto::recording::{MANIFEST, Manifest, RecordedTrack, read_records};
use streams_proto::wire::TrackKind;
use streams_proto::{EpochRecord, Identity, RoomSecret, UserId, verify_chain};

use crate::envelope::opener::{FrameOpener, Opening};
use crate::export::ExportError;
use crate::export::fetch::KEYS;
use crate::export::matroska::{AudioTrack, MatroskaWriter, VideoTrack, avc_config_from_annexb};
use crate::video::carriage;
use crate::video::codec::{VideoDecoder, is_keyframe};

/// Opus pre-skip at 48 kHz (libopus' encoder delay).
const OPUS_PRE_SKIP: u16 = 312;

/// What an export wrote and what it could not.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ExportReport {
    /// The files written.
    pub files: Vec<ExportedFile>,
    /// Frames not opened because this member has no key for their epoch, by epoch (modulo 2^16, as
    /// key ids carry it).
    pub no_key: BTreeMap<u64, u64>,
    /// Frames that did not authenticate (tampered or corrupted).
    pub failed: u64,
    /// What else went wrong (a file cut short, a track missing), one line each.
    pub problems: Vec<String>,
}

/// One written file.
#[derive(Clone, Debug, Serialize)]
pub struct ExportedFile {
    /// Where.
    pub path: PathBuf,
    /// Whose media.
    pub user_id: UserId,
    /// Audio frames in it.
    pub audio_frames: u64,
    /// Video frames in it.
    pub video_frames: u64,
    /// From its first to its last frame, seconds.
    pub duration_s: f64,
}

/// An opened frame placed on the recording's timeline.
struct Placed {
    /// µs since the Unix epoch, sender clock.
    capture_us: u64,
    arrival_us: u64,
    encoded: Vec<u8>,
}

/// Opens every frame of one track; what could not be opened goes into the report.
fn open_track(
    dir: &Path,
    track: &RecordedTrack,
    secrets: &HashMap<u64, RoomSecret>,
    report: &mut ExportReport,
) -> Vec<Placed> {
    let data = match fs::read(dir.join(&track.file)) {
        Ok(data) => data,
        Err(e) => {
            report.problems.push(format!(
                "track {}: {} unreadable: {e}",
                track.track_id, track.file
            ));
            return Vec::new();
        }
    };
    let read = read_records(&data);
    if read.unread > 0 {
        report.problems.push(format!(
            "track {}: the last {} bytes of {} are cut short or corrupt; the {} frames before them are exported",
            track.track_id,
            read.unread,
            track.file,
            read.records.len()
        ));
    }
    let mut opener = FrameOpener::new(track.user_id.clone());
    for (epoch, secret) in secrets {
        opener.add_epoch(*epoch, secret.clone());
    }
    let known: Vec<EpochTag> = secrets.keys().map(|e| EpochTag::of(*e)).collect();
    let mut placed = Vec::with_capacity(read.records.len());
    let mut malformed = 0u64;
    for record in read.records {
        let protected = if track.kind == TrackKind::Audio {
            record.payload
        } else {
            match carriage::unwrap(&record.payload) {
                Ok((_, protected)) => protected,
                Err(_) => {
                    malformed += 1;
                    continue;
                }
            }
        };
        let Ok((kid, _)) = frame_header(&protected) else {
            malformed += 1;
            continue;
        };
        let epoch = KeyId::from_raw(kid).epoch_tag();
        if !known.contains(&epoch) {
            *report.no_key.entry(u64::from(epoch.value())).or_default() += 1;
            continue;
        }
        match opener.open(record.arrival_us, protected) {
            Opening::Opened(frame) => placed.push(Placed {
                capture_us: frame.capture_us,
                arrival_us: record.arrival_us,
                encoded: frame.encoded,
            }),
            Opening::Held | Opening::Failed => report.failed += 1,
        }
    }
    if malformed > 0 {
        report.problems.push(format!(
            "track {}: {malformed} frames are malformed",
            track.track_id
        ));
    }
    placed
}

/// Exports the recording fetched into `dir` for `identity`, writing files into `out`.
pub fn export(dir: &Path, identity: &Identity, out: &Path) -> Result<ExportReport, ExportError> {
    let manifest: Manifest = serde_json::from_slice(&fs::read(dir.join(MANIFEST))?)
        .map_err(|e| ExportError::Format(format!("{MANIFEST}: {e}")))?;
    let chain: Vec<EpochRecord> = serde_json::from_slice(&fs::read(dir.join(KEYS))?)
        .map_err(|e| ExportError::Format(format!("{KEYS}: {e}")))?;
    verify_chain(&manifest.room_id, &chain)
        .map_err(|e| ExportError::Format(format!("the key bundles do not verify: {e}")))?;
    let secrets: HashMap<u64, RoomSecret> = chain
        .iter()
        .filter_map(|e| e.unwrap_secret(identity).ok().map(|s| (e.epoch, s)))
        .collect();
    fs::create_dir_all(out)?;
    let mut report = ExportReport::default();
    // Each participant's tracks, in the order they appeared.
    let mut users: Vec<(UserId, Vec<&RecordedTrack>)> = Vec::new();
    for track in &manifest.tracks {
        match users.iter_mut().find(|(u, _)| *u == track.user_id) {
            Some((_, tracks)) => tracks.push(track),
            None => users.push((track.user_id.clone(), vec![track])),
        }
    }
    for (user, tracks) in users {
        let opened: Vec<(&RecordedTrack, Vec<Placed>)> = tracks
            .into_iter()
            .map(|t| (t, open_track(dir, t, &secrets, &mut report)))
            .filter(|(_, frames)| !frames.is_empty())
            .collect();
        // The participant's offset from its capture clock to the bridge's.
        let Some(offset) = opened
            .iter()
            .flat_map(|(_, frames)| frames.iter())
            .map(|f| f.arrival_us as i64 - f.capture_us as i64)
            .min()
        else {
            continue;
        };
        let at_ms = |f: &Placed| {
            ((f.capture_us as i64 + offset - manifest.started_us as i64).max(0) / 1000) as u64
        };
        let audio: Vec<_> = opened
            .iter()
            .filter(|(t, _)| t.kind == TrackKind::Audio)
            .collect();
        let video: Vec<_> = opened
            .iter()
            .filter(|(t, _)| t.kind != TrackKind::Audio)
            .collect();
        let files = audio.len().max(video.len());
        let short = &user.as_str()[..16.min(user.as_str().len())];
        for i in 0..files {
            let name = if i == 0 {
                format!("{short}.mkv")
            } else {
                format!("{short}-{i}.mkv")
            };
            let path = out.join(name);
            let written = write_file(
                &path,
                &user,
                audio.get(i).map(|(_, f)| f.as_slice()),
                video.get(i).map(|(_, f)| f.as_slice()),
                &at_ms,
            )?;
            match written {
                Some(file) => report.files.push(file),
                None => report
                    .problems
                    .push(format!("{}: no playable media for {user}", path.display())),
            }
        }
    }
    Ok(report)
}

/// Writes one participant file; `Ok(None)` when there was nothing playable to write.
fn write_file(
    path: &Path,
    user: &UserId,
    audio: Option<&[Placed]>,
    video: Option<&[Placed]>,
    at_ms: &dyn Fn(&Placed) -> u64,
) -> Result<Option<ExportedFile>, ExportError> {
    // Video starts at its first keyframe (the frames before it cannot be decoded).
    let video = video.map(|frames| {
        let first = frames
            .iter()
            .position(|f| is_keyframe(&f.encoded))
            .unwrap_or(frames.len());
        &frames[first..]
    });
    let video_track = match video.and_then(|v| v.first()) {
        Some(keyframe) => {
            let avc_config = avc_config_from_annexb(&keyframe.encoded)?;
            let mut decoder =
                VideoDecoder::new().map_err(|e| ExportError::Format(e.to_string()))?;
            let picture = decoder
                .decode(&keyframe.encoded, None)
                .map_err(|e| ExportError::Format(e.to_string()))?
                .ok_or_else(|| ExportError::Format("the first keyframe did not decode".into()))?;
            Some(VideoTrack {
                width: picture.width() as u32,
                height: picture.height() as u32,
                avc_config,
            })
        }
        None => None,
    };
    let audio_track = audio.and_then(|a| a.first()).map(|first| AudioTrack {
        sample_rate: 48_000,
        channels: if first.encoded.first().is_some_and(|toc| toc & 0x04 != 0) {
            2
        } else {
            1
        },
        pre_skip: OPUS_PRE_SKIP,
    });
    if video_track.is_none() && audio_track.is_none() {
        return Ok(None);
    }
    // Both tracks merged in time order (the writer takes non-decreasing times).
    let mut blocks: Vec<(u64, bool, &Placed)> = Vec::new();
    if audio_track.is_some() {
        blocks.extend(
            audio
                .unwrap_or_default()
                .iter()
                .map(|f| (at_ms(f), false, f)),
        );
    }
    if video_track.is_some() {
        blocks.extend(
            video
                .unwrap_or_default()
                .iter()
                .map(|f| (at_ms(f), true, f)),
        );
    }
    blocks.sort_by_key(|(t, is_video, _)| (*t, *is_video));
    let (first, last) = (
        blocks.first().map_or(0, |b| b.0),
        blocks.last().map_or(0, |b| b.0),
    );
    let title = format!("bevy_streams recording: {user}");
    let mut writer = MatroskaWriter::new(
        BufWriter::new(File::create(path)?),
        &title,
        video_track,
        audio_track,
    )?;
    let (mut audio_frames, mut video_frames) = (0, 0);
    for (time, is_video, frame) in blocks {
        if is_video {
            writer.write_video(time, is_keyframe(&frame.encoded), &frame.encoded)?;
            video_frames += 1;
        } else {
            writer.write_audio(time, &frame.encoded)?;
            audio_frames += 1;
        }
    }
    writer.finish()?;
    Ok(Some(ExportedFile {
        path: path.to_path_buf(),
        user_id: user.clone(),
        audio_frames,
        video_frames,
        duration_s: (last - first) as f64 / 1000.0,
    }))
}
