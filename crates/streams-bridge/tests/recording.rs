//! Room recording, end to end: a manager records a room while one member publishes a tone with the
//! test pattern and another a second tone; a member fetches the recording (chunked, with the key
//! bundles) and exports it; FFmpeg (a real decoder) plays the files. The bridge's own files hold no
//! decodable media. Outsiders cannot list or fetch; only managers record; a member removed halfway
//! cannot export what came after its removal, even from a copy; a damaged copy exports what is intact.
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{connect, create_room, dir_contains, wait_event};
use streams_bridge::{Bridge, BridgeConfig};
use streams_client::audio::codec::VoiceSettings;
use streams_client::audio::source::ToneSource;
use streams_client::export::{exporter, fetch};
use streams_client::media::voice_session::{Publication, publish};
use streams_client::video::codec::VideoSettings;
use streams_client::video::pattern::PatternSource;
use streams_client::{ClientError, Operation, RoomEvent, RoomUpdate};
use streams_proto::Identity;
use streams_proto::wire::{ErrorCode, EventScope, TrackKind};

const WAIT: Duration = Duration::from_secs(30);

fn ffmpeg_present() {
    let found = Command::new("ffprobe").arg("-version").output().is_ok();
    assert!(
        found,
        "this test needs ffprobe and ffmpeg (apt-get install ffmpeg)"
    );
}

/// (codec type → (codec name, seconds from the first packet to the end of the last)).
fn streams(path: &Path) -> Vec<(String, String, f64)> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=index,codec_type,codec_name",
        ])
        .args([
            "-show_entries",
            "packet=stream_index,pts_time,duration_time",
        ])
        .args(["-of", "json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let num = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse::<f64>().ok());
    json["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let index = s["index"].as_u64().unwrap();
            let packets: Vec<(f64, f64)> = json["packets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["stream_index"].as_u64() == Some(index))
                .filter_map(|p| {
                    Some((
                        num(&p["pts_time"])?,
                        num(&p["duration_time"]).unwrap_or(0.0),
                    ))
                })
                .collect();
            let start = packets.iter().map(|p| p.0).fold(f64::MAX, f64::min);
            let end = packets.iter().map(|p| p.0 + p.1).fold(0.0, f64::max);
            (
                s["codec_type"].as_str().unwrap().to_string(),
                s["codec_name"].as_str().unwrap().to_string(),
                end - start,
            )
        })
        .collect()
}

/// The dominant frequency of a file's audio (zero crossings over its middle second), Hz.
fn tone_hz(path: &Path) -> f64 {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-map", "0:a", "-f", "f32le", "-ac", "1", "-ar", "48000", "-",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<f32> = out
        .stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let mid = samples.len() / 2;
    let second = &samples[mid.saturating_sub(24_000)..(mid + 24_000).min(samples.len())];
    let rising = second
        .windows(2)
        .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
        .count();
    rising as f64 * 48_000.0 / second.len() as f64
}

fn video_frames_decoded(path: &Path) -> usize {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:v", "-f", "framecrc", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .count()
}

fn code(result: Result<impl std::fmt::Debug, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Bridge(e)) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_recorded_room_exports_to_files_a_real_player_opens_and_only_members_keys_open_it() {
    ffmpeg_present();
    let recordings = tempfile::tempdir().unwrap();
    let bridge = Bridge::spawn(BridgeConfig {
        recordings: Some(recordings.path().to_path_buf()),
        ..BridgeConfig::ephemeral()
    })
    .unwrap();
    let url = bridge.url();
    let (alice_id, bob_id, carol_id, dave_id) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let alice = connect(&url, &alice_id);
    let bob = connect(&url, &bob_id);
    let carol = connect(&url, &carol_id);
    let dave = connect(&url, &dave_id);
    let room = create_room(&alice, "Recorded", &[bob_id.user_id(), carol_id.user_id()]);
    let room_id = room.id.clone();
    bob.subscribe(EventScope::Room(room_id.clone())).unwrap();
    alice.join_room(&room_id).unwrap();
    bob.join_room(&room_id).unwrap();

    // Only managers record; outsiders learn nothing.
    let set = |client: &streams_client::StreamsClient, enabled| {
        client.call(Operation::SetRecording {
            room_id: room_id.clone(),
            enabled,
        })
    };
    assert_eq!(code(set(&bob, true)), ErrorCode::Forbidden);
    assert_eq!(
        code(fetch::list(&dave, &room_id).map_err(|e| match e {
            streams_client::export::ExportError::Client(c) => c,
            other => panic!("{other}"),
        })),
        ErrorCode::NotFound
    );
    let started = std::time::Instant::now();
    set(&alice, true).unwrap();
    let event = wait_event(&bob, WAIT, |e| {
        matches!(e, RoomEvent::RecordingChanged { .. })
    });
    let Some(RoomEvent::RecordingChanged { recording, by, .. }) = event else {
        panic!("no recording event");
    };
    assert!(recording);
    assert_eq!(&by, alice_id.user_id());

    // Alice sends a 440 Hz tone and the pattern, Bob an 880 Hz tone, for 5 s; Carol is removed
    // (a new epoch) once Alice has sent 3 s of audio.
    let (three_seconds_tx, three_seconds) = std::sync::mpsc::channel::<()>();
    let publisher = |client: streams_client::StreamsClient, id: Identity, hz: f64, video: bool| {
        let (url, room_id) = (url.clone(), room_id.clone());
        let three_seconds_tx = three_seconds_tx.clone();
        std::thread::spawn(move || {
            let publication = Publication {
                audio: Some((
                    Box::new(ToneSource::new(hz, 0.5)) as Box<_>,
                    VoiceSettings::default(),
                )),
                video: video.then(|| {
                    (
                        Box::new(PatternSource::new(320, 240, 15).unwrap()) as Box<_>,
                        VideoSettings::for_picture(320, 240, 15),
                        TrackKind::Video,
                    )
                }),
            };
            publish(
                &client,
                &id,
                &url,
                &room_id,
                publication,
                Duration::from_secs(5),
                &mut |report| {
                    if video && report.frames >= 150 {
                        let _ = three_seconds_tx.send(());
                    }
                },
            )
            .unwrap();
            client
        })
    };
    let alice_sends = publisher(alice, alice_id.clone(), 440.0, true);
    let bob_sends = publisher(bob, bob_id.clone(), 880.0, false);
    three_seconds
        .recv_timeout(Duration::from_secs(60))
        .expect("Alice sends 3 s of audio");
    let admin = connect(&url, &alice_id);
    let mut remove = RoomUpdate::new(room_id.clone());
    remove.remove_users = vec![carol_id.user_id().clone()];
    let removed_at = admin.update_room(remove).unwrap().key_epoch;
    let alice = alice_sends.join().unwrap();
    let bob = bob_sends.join().unwrap();
    let recorded_for = started.elapsed().as_secs_f64();
    set(&alice, false).unwrap();
    assert_eq!(code(set(&alice, false)), ErrorCode::Invalid);

    // Bob fetches (in chunks, with the key bundles) and exports.
    let listed = fetch::list(&bob, &room_id).unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].stopped_at.is_some());
    assert_eq!(listed[0].files.len(), 4, "the manifest and three tracks");
    let work = tempfile::tempdir().unwrap();
    let copy = fetch::fetch(
        &bob,
        &room_id,
        &listed[0].recording_id,
        &work.path().join("copy"),
    )
    .unwrap();
    let out = work.path().join("bob");
    let report = exporter::export(&copy, &bob_id, &out).unwrap();
    assert!(report.no_key.is_empty(), "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
    assert!(report.problems.is_empty(), "{report:?}");
    assert_eq!(report.files.len(), 2, "{report:?}");
    let file_of = |report: &exporter::ExportReport, who: &Identity| {
        report
            .files
            .iter()
            .find(|f| &f.user_id == who.user_id())
            .unwrap()
            .clone()
    };

    // A real decoder plays them: Alice's file has H.264 and Opus of the same length, her tone and
    // every picture; Bob's has his tone.
    let alices = file_of(&report, &alice_id);
    let found = streams(&alices.path);
    let video = found
        .iter()
        .find(|s| s.0 == "video")
        .expect("a video stream");
    let audio = found
        .iter()
        .find(|s| s.0 == "audio")
        .expect("an audio stream");
    assert_eq!((video.1.as_str(), audio.1.as_str()), ("h264", "opus"));
    assert!(
        (video.2 - audio.2).abs() < 0.2,
        "video {} s, audio {} s",
        video.2,
        audio.2
    );
    // 5 s of media, in a recording no longer than from its start to the publishers' end.
    assert!(
        audio.2 > 4.0 && audio.2 < recorded_for + 0.5,
        "audio {} s of a recording {recorded_for:.2} s long",
        audio.2
    );
    let hz = tone_hz(&alices.path);
    assert!((hz - 440.0).abs() < 5.0, "{hz} Hz");
    let decoded = video_frames_decoded(&alices.path);
    assert!(
        decoded as u64 >= alices.video_frames * 9 / 10 && decoded > 50,
        "{decoded} pictures"
    );
    let bobs = file_of(&report, &bob_id);
    let hz = tone_hz(&bobs.path);
    assert!((hz - 880.0).abs() < 8.0, "{hz} Hz");

    // The bridge's files are ciphertext: no H.264 parameter set, nothing FFmpeg can decode.
    let raw = recordings
        .path()
        .join(room_id.as_str())
        .join(&listed[0].recording_id);
    assert!(!dir_contains(&raw, &[0, 0, 0, 1, 0x67]) && !dir_contains(&raw, &[0, 0, 1, 0x67]));
    for entry in std::fs::read_dir(&raw).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "frames") {
            let out = Command::new("ffmpeg")
                .args(["-v", "quiet", "-f", "h264", "-i"])
                .arg(&path)
                .args(["-f", "framecrc", "-"])
                .output()
                .unwrap();
            let frames = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.starts_with('#'))
                .count();
            assert_eq!(frames, 0, "{} decodes", path.display());
        }
    }

    // Carol, removed, cannot fetch; from Bob's copy she opens only the epochs she was in.
    assert!(
        fetch::fetch(
            &carol,
            &room_id,
            &listed[0].recording_id,
            &work.path().join("c")
        )
        .is_err()
    );
    let carols = exporter::export(&copy, &carol_id, &work.path().join("carol")).unwrap();
    let after: u64 = carols
        .no_key
        .iter()
        .filter(|(e, _)| **e >= removed_at)
        .map(|(_, n)| n)
        .sum();
    assert!(
        after > 30,
        "frames after the removal stay closed: {carols:?}"
    );
    assert!(carols.no_key.keys().all(|e| *e >= removed_at), "{carols:?}");
    let carols_alice = file_of(&carols, &alice_id);
    assert!(
        carols_alice.audio_frames > 50 && carols_alice.audio_frames + 40 < alices.audio_frames,
        "{} of {}",
        carols_alice.audio_frames,
        alices.audio_frames
    );
    eprintln!(
        "alice: video {:.2} s / audio {:.2} s, {decoded} pictures decoded; carol opened {} of {} \
         audio frames, {after} frames after her removal closed",
        video.2, audio.2, carols_alice.audio_frames, alices.audio_frames
    );
    // Dave, never a member, opens nothing.
    let daves = exporter::export(&copy, &dave_id, &work.path().join("dave")).unwrap();
    assert!(daves.files.is_empty());
    assert!(daves.no_key.values().sum::<u64>() > 200);

    // A damaged copy: Alice's video file cut short, Bob's audio with a flipped byte mid-frame.
    let manifest: streams_proto::recording::Manifest =
        serde_json::from_slice(&std::fs::read(copy.join("recording.json")).unwrap()).unwrap();
    for track in &manifest.tracks {
        let path = copy.join(&track.file);
        let mut data = std::fs::read(&path).unwrap();
        if track.kind != TrackKind::Audio {
            data.truncate(data.len() - 100);
        } else if &track.user_id == bob_id.user_id() {
            let at = data.len() / 2;
            data[at] ^= 0x55;
        }
        std::fs::write(&path, data).unwrap();
    }
    let damaged = exporter::export(&copy, &bob_id, &work.path().join("damaged")).unwrap();
    assert_eq!(damaged.files.len(), 2, "{damaged:?}");
    assert!(
        damaged.problems.iter().any(|p| p.contains("cut short")),
        "{damaged:?}"
    );
    assert!(
        damaged.failed >= 1 || !damaged.problems.is_empty(),
        "{damaged:?}"
    );
    let damaged_alice = file_of(&damaged, &alice_id);
    assert!(
        damaged_alice.video_frames + 3 >= alices.video_frames
            && damaged_alice.video_frames < alices.video_frames + 1
    );
    drop((alice, bob, carol, dave, admin));
}
