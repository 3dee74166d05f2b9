//! The non-blocking room media engine: one member publishes a tone track, another receives it through
//! the mixer that an output device pulls (the engine hands its voices over), with track, speaking and
//! statistics events; volume and mute reach what plays. `media_engine/resume.rs`: a signaling drop
//! the call rides out; `media_engine/restart.rs` and `outage.rs`: a bridge restart and a 30 s outage
//! it comes back from.
mod common;
#[path = "media_engine/outage.rs"]
mod outage;
#[path = "media_engine/restart.rs"]
mod restart;
#[path = "media_engine/resume.rs"]
mod resume;

use std::time::{Duration, Instant};

use common::*;
use streams_client::StreamsClient;
use streams_client::audio::analysis::level_dbfs;
use streams_client::audio::codec::VoiceSettings;
use streams_client::audio::handoff::VoiceOutput;
use streams_client::audio::mixer::Mixer;
use streams_client::audio::source::{AudioSource, ToneSource};
use streams_client::media::driver::RoomMedia;
use streams_client::media::events::{MediaCommand, MediaEvent, MediaOptions};
use streams_client::media::voice::decoded_frequency;
use streams_proto::{Identity, RoomId};

/// Every test here sends real-time media: on a 2-core machine they run one at a time, so that their
/// timings measure the code, not each other.
static REAL_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    REAL_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// A listener's and a publisher's engines in one room, and the listener's mixer (the test pulls
/// it as an output device would).
struct TonePair {
    listener: RoomMedia,
    publisher: RoomMedia,
    mixer: Mixer,
}

/// `listener` receives through a mixer while `publisher` publishes a 440 Hz tone in `room`.
fn tone_pair(
    url: &str,
    listener: (&StreamsClient, &Identity),
    publisher: (&StreamsClient, &Identity),
    room: &RoomId,
) -> TonePair {
    let (output, inbox) = VoiceOutput::new();
    let options = MediaOptions {
        voice_output: Some(output),
        ..MediaOptions::default()
    };
    let (client, identity) = listener;
    let listener = RoomMedia::start_with(
        client.handle().unwrap(),
        identity.clone(),
        url,
        room.clone(),
        options,
    )
    .unwrap();
    let (client, identity) = publisher;
    let publisher = RoomMedia::start(
        client.handle().unwrap(),
        identity.clone(),
        url,
        room.clone(),
    )
    .unwrap();
    assert!(publisher.send(MediaCommand::AddAudioTrack {
        source: Box::new(ToneSource::new(440.0, 0.5)),
        settings: VoiceSettings::default(),
    }));
    TonePair {
        listener,
        publisher,
        mixer: Mixer::new(inbox),
    }
}

/// A sample above this (-60 dBFS) is sound; the tail of a concealed frame decaying towards zero
/// below it is not.
const AUDIBLE: f32 = 1e-3;

/// Plays the output device as `play_until` does, noting when each 10 ms period that had sound
/// (a sample above [`AUDIBLE`]) was pulled, until `until` holds or `limit` passes.
fn play_voiced(
    mixer: &mut Mixer,
    voiced_at: &mut Vec<Instant>,
    limit: Duration,
    until: impl Fn(&[Instant]) -> bool,
) {
    let start = Instant::now();
    let mut period = 0u32;
    while !until(voiced_at) && start.elapsed() < limit {
        period += 1;
        std::thread::sleep(
            (start + Duration::from_millis(10) * period).saturating_duration_since(Instant::now()),
        );
        let mut out = [0.0f32; 480];
        mixer.fill(&mut out);
        if out.iter().any(|s| s.abs() > AUDIBLE) {
            voiced_at.push(Instant::now());
        }
    }
}

/// Plays the output device: pulls 10 ms from `mixer` every 10 ms, collecting `media`'s events, until
/// `done(voiced, events)` holds or 30 s pass (a busy machine delays the tone, the test waits for it).
/// Returns the voiced (non-zero) samples.
fn play_until(
    mixer: &mut Mixer,
    media: &RoomMedia,
    events: &mut Vec<MediaEvent>,
    mut done: impl FnMut(&[f32], &[MediaEvent]) -> bool,
) -> Vec<f32> {
    let mut voiced = Vec::new();
    let start = Instant::now();
    let mut period = 0u32;
    while !done(&voiced, events) && start.elapsed() < Duration::from_secs(30) {
        period += 1;
        let due = start + Duration::from_millis(10) * period;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let mut out = [0.0f32; 480];
        mixer.fill(&mut out);
        voiced.extend(out.into_iter().filter(|s| *s != 0.0));
        events.extend(media.events().try_iter());
    }
    voiced
}

#[test]
fn a_published_track_is_mixed_for_the_listener_with_speaking_and_stats_events() {
    let _serial = one_at_a_time();
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let bridge = bridge_with_users(&[&alice, &bob]);
    let url = bridge.handle.url();
    let (a, b) = (connect(&url, &alice), connect(&url, &bob));
    let room = create_room(&a, "engine", &[bob.user_id()]);

    let TonePair {
        listener: bobs,
        publisher: alices,
        mut mixer,
    } = tone_pair(&url, (&b, &bob), (&a, &alice), &room.id);

    // The test plays the output device, until a second of the tone was mixed and reported on.
    let mut events = Vec::new();
    let heard = play_until(&mut mixer, &bobs, &mut events, |voiced, events| {
        voiced.len() >= 48_000
            && events
                .iter()
                .any(|e| matches!(e, MediaEvent::Speaking { speaking: true, .. }))
            && events.iter().any(|e| match e {
                MediaEvent::Stats(stats) => stats.iter().any(|(_, s)| s.frames >= 50),
                _ => false,
            })
    });
    let added = events
        .iter()
        .find_map(|e| match e {
            MediaEvent::RemoteTrackAdded {
                track_id, user_id, ..
            } => Some((*track_id, user_id.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("Bob receives Alice's track: {events:?}"));
    assert_eq!(&added.1, alice.user_id());
    assert!(events.iter().any(|e| matches!(
        e,
        MediaEvent::Speaking { track_id, speaking: true, .. } if *track_id == added.0
    )));
    let frames = events
        .iter()
        .filter_map(|e| match e {
            MediaEvent::Stats(stats) => stats.iter().find(|(t, _)| *t == added.0),
            _ => None,
        })
        .next_back()
        .map(|(_, s)| s.clone())
        .expect("statistics are reported");
    assert!(frames.frames >= 50, "{frames:?}");
    assert_eq!(frames.decrypt_failures, 0);
    assert!(frames.packets >= frames.frames);
    // 32 kb/s Opus plus SFrame and capture-time overhead.
    assert!((20.0..60.0).contains(&frames.bitrate_kbps), "{frames:?}");
    assert!(
        heard.len() >= 48_000,
        "at least a second of audio was mixed"
    );
    assert!((decoded_frequency(&heard) - 440.0).abs() <= 5.0);

    // Alice removes her track: her stream is unpublished and Bob's engine drops the track.
    assert!(alices.send(MediaCommand::RemoveTrack(0)));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the track was never removed");
        if let Ok(MediaEvent::RemoteTrackRemoved { track_id }) =
            bobs.events().recv_timeout(Duration::from_millis(100))
        {
            assert_eq!(track_id, added.0);
            break;
        }
    }
    // The mixer lets the ended voice go at its next pull.
    mixer.fill(&mut [0.0; 480]);
    assert_eq!(mixer.track_ids().count(), 0);

    // She publishes another track (a new microphone, say): Bob's engine goes on and picks it up.
    assert!(alices.send(MediaCommand::AddAudioTrack {
        source: Box::new(ToneSource::new(660.0, 0.5)),
        settings: VoiceSettings::default(),
    }));
    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        assert!(Instant::now() < deadline, "the new track never arrived");
        match bobs.events().recv_timeout(Duration::from_millis(100)) {
            Ok(MediaEvent::RemoteTrackAdded { track_id, .. }) => break track_id,
            Ok(MediaEvent::Stopped { reason }) => panic!("Bob's engine stopped: {reason}"),
            _ => {}
        }
    };
    assert_ne!(second, added.0);
    let heard = play_until(&mut mixer, &bobs, &mut Vec::new(), |voiced, _| {
        voiced.len() >= 48_000
    });
    assert!((decoded_frequency(&heard) - 660.0).abs() <= 5.0);
    let full = level_dbfs(&heard[heard.len() - 24_000..]);

    // Volume and mute act on what the output plays.
    let mut level_at = |gain: f32, muted: bool| {
        assert!(bobs.send(MediaCommand::SetVolume {
            track_id: second,
            gain,
            muted,
        }));
        // 100 ms for the command to reach the playout (a busy machine is slow), then half a
        // second of output.
        let mut out = vec![0.0f32; 480];
        let mut played = Vec::new();
        let start = Instant::now();
        for period in 1..=60u32 {
            let due = start + Duration::from_millis(10) * period;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            mixer.fill(&mut out);
            if period > 10 {
                played.extend_from_slice(&out);
            }
        }
        level_dbfs(&played)
    };
    let half = level_at(0.5, false);
    assert!(
        (full - half - 6.0).abs() < 2.0,
        "half gain: {full:.1} → {half:.1} dBFS"
    );
    assert!(level_at(1.0, true) < -100.0, "muted is silent");
    drop(alices);
}
