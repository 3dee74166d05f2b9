//! Blocking media sessions for tools, bots and benchmarks, on top of [`RoomMedia`]:
//! [`publish`] sends an audio and/or a video source in real time; [`listen_media`] receives every
//! remote track (including ones published later), pulls each audio track like an output device
//! would, checks test-pattern video, and reports what arrived. Both follow key epochs through the
//! engine. [`publish_voice`] and [`listen`] are the audio-only forms.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use streams_proto::wire::TrackKind;
use streams_proto::{Identity, RoomId, TrackId, UserId};

use crate::StreamsClient;
use crate::audio::analysis::level_dbfs;
use crate::audio::codec::VoiceSettings;
use crate::audio::handoff::{HandedVoice, VoiceOutput};
use crate::audio::source::AudioSource;
use crate::clock::wall_us_now;
use crate::error::ClientError;
use crate::media::driver::{RoomMedia, StartError};
use crate::media::events::{MediaCommand, MediaEvent, MediaOptions, StopReason};
use crate::media::session::MediaError;
use crate::media::voice::{TrackStats, decoded_frequency};
use crate::video::VideoSource;
use crate::video::check::{PatternCheck, PatternReport};
use crate::video::codec::VideoSettings;
use crate::video::receiver::{FrameObserver, VideoStats};
use crate::video::sender::LocalVideoStats;

/// How long a tool waits for a stopping engine's final figures.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Samples per output period (10 ms at 48 kHz).
const OUTPUT_PERIOD_SAMPLES: usize = 480;

/// A voice session failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VoiceError {
    /// The bridge or the room refused.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The media connection failed.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// The room's media engine could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Encoding or keys failed.
    #[error("{0}")]
    Pipeline(String),
    /// The media connection to the bridge did not come up in time (ICE or DTLS never finished).
    #[error("the media connection to the bridge was not up within {0:?}")]
    NotConnected(Duration),
}

/// What a publisher sent.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PublishReport {
    /// Audio frames sent.
    pub frames: u64,
    /// Audio frame duration, ms.
    pub frame_ms: u32,
    /// Key epochs used.
    pub epochs: Vec<u64>,
    /// The video track's figures, when one was published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<LocalVideoStats>,
    /// Why a track or the session ended early, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl PublishReport {
    /// Takes a local track's counts from an engine event; `true` when the engine has stopped.
    fn record(&mut self, event: MediaEvent) -> bool {
        match event {
            MediaEvent::LocalStats {
                frames,
                epochs,
                video,
                ..
            } => {
                match video {
                    Some(stats) => self.video = Some(stats),
                    None => self.frames = frames,
                }
                self.epochs = epochs;
                false
            }
            MediaEvent::LocalTrackFailed { reason, .. } => {
                self.failure = Some(reason);
                false
            }
            MediaEvent::Stopped { reason } => {
                if reason != StopReason::Owner {
                    self.failure.get_or_insert(reason.to_string());
                }
                true
            }
            _ => false,
        }
    }
}

/// How long [`publish`] waits for the media connection before giving up.
pub const MEDIA_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What to publish.
#[derive(Default)]
pub struct Publication {
    /// An audio source and its codec settings.
    pub audio: Option<(Box<dyn AudioSource>, VoiceSettings)>,
    /// A video source, its encoder settings, and whether it is a camera or a screen.
    pub video: Option<(Box<dyn VideoSource>, VideoSettings, TrackKind)>,
}

/// Publishes `source` in `room` for `duration` of media (see [`publish`]), in real time. The room's
/// current key is used and replaced at once when a new epoch arrives; removal from the room ends it
/// early.
pub fn publish_voice(
    client: &StreamsClient,
    identity: &Identity,
    bridge_url: &str,
    room_id: &RoomId,
    source: Box<dyn AudioSource>,
    settings: VoiceSettings,
    duration: Duration,
) -> Result<PublishReport, VoiceError> {
    let publication = Publication {
        audio: Some((source, settings)),
        video: None,
    };
    publish(
        client,
        identity,
        bridge_url,
        room_id,
        publication,
        duration,
        &mut |_| {},
    )
}

/// Publishes the tracks of `publication` in `room` for `duration`, in real time, counted from the
/// moment the media connection is up (so a slow start does not shorten what is sent); `progress` sees
/// the report about once a second. Keys follow the room's epochs; removal from the room ends it early.
/// A media connection that is not up within [`MEDIA_CONNECT_TIMEOUT`] is an error.
pub fn publish(
    client: &StreamsClient,
    identity: &Identity,
    bridge_url: &str,
    room_id: &RoomId,
    publication: Publication,
    duration: Duration,
    progress: &mut dyn FnMut(&PublishReport),
) -> Result<PublishReport, VoiceError> {
    let media = RoomMedia::start(
        client.handle()?,
        identity.clone(),
        bridge_url,
        room_id.clone(),
    )?;
    // Only these tracks are of interest: nothing remote to receive.
    media.send(MediaCommand::SubscribeAll(false));
    let mut report = PublishReport::default();
    if let Some((source, settings)) = publication.audio {
        report.frame_ms = settings.frame.millis();
        media.send(MediaCommand::AddAudioTrack { source, settings });
    }
    if let Some((source, settings, kind)) = publication.video {
        media.send(MediaCommand::AddVideoTrack {
            source,
            settings,
            kind,
        });
    }
    let connect_by = Instant::now() + MEDIA_CONNECT_TIMEOUT;
    let mut deadline = None;
    let mut stopped = false;
    while deadline.is_none_or(|d| Instant::now() < d) && !stopped {
        if deadline.is_none() && Instant::now() >= connect_by {
            return Err(VoiceError::NotConnected(MEDIA_CONNECT_TIMEOUT));
        }
        if let Ok(event) = media.events().recv_timeout(Duration::from_millis(50)) {
            let stats = matches!(event, MediaEvent::LocalStats { .. });
            if event == MediaEvent::Connected {
                deadline.get_or_insert(Instant::now() + duration);
            }
            stopped = report.record(event);
            if stats {
                progress(&report);
            }
        }
    }
    // Stopping the engine reports the final counts.
    for event in media.stop_and_collect(STOP_TIMEOUT) {
        report.record(event);
    }
    Ok(report)
}

/// What arrived on one remote track.
#[derive(Clone, Debug, Serialize)]
pub struct TrackReport {
    /// What the track carries.
    pub kind: TrackKind,
    /// Who sent it.
    pub user_id: String,
    /// The track.
    pub track_id: TrackId,
    /// Frames really decoded (not concealment).
    pub frames: u64,
    /// Frames lost in transit.
    pub lost: u64,
    /// Frames concealed.
    pub concealed: u64,
    /// Lost frames recovered from FEC.
    pub fec_recovered: u64,
    /// Frames that failed to decrypt.
    pub decrypt_failures: u64,
    /// Frames dropped because they arrived after their slot.
    pub late: u64,
    /// Dominant frequency of the decoded audio, Hz.
    pub freq_hz: f32,
    /// Level of the decoded audio, dBFS.
    pub level_dbfs: f32,
    /// One-way latency, capture of a frame's first sample → the frame leaving the jitter buffer.
    pub latency_p50_ms: Option<f64>,
    /// 95th percentile of the same.
    pub latency_p95_ms: Option<f64>,
    /// 99th percentile of the same.
    pub latency_p99_ms: Option<f64>,
    /// Median of capture of a frame's first sample → its arrival (frame duration, encoding, network).
    pub arrival_p50_ms: Option<f64>,
    /// Smoothed jitter, ms.
    pub jitter_ms: f64,
    /// Jitter buffer target delay, ms.
    pub buffer_delay_ms: f64,
}

/// What arrived on one remote video track.
#[derive(Clone, Debug, Serialize)]
pub struct VideoTrackReport {
    /// `video` (camera) or `screen`.
    pub kind: TrackKind,
    /// Who sent it.
    pub user_id: String,
    /// The track.
    pub track_id: TrackId,
    /// Pictures decoded.
    pub frames: u64,
    /// Average pictures per second, from the first picture to the end.
    pub fps: f64,
    /// Size of the last picture.
    pub width: usize,
    /// Size of the last picture.
    pub height: usize,
    /// Frames that failed to decrypt.
    pub decrypt_failures: u64,
    /// Freezes (see [`VideoStats::freezes`]).
    pub freezes: u64,
    /// The longest pause between two pictures, ms.
    pub longest_pause_ms: f64,
    /// Keyframe requests sent.
    pub keyframe_requests: u64,
    /// Frames skipped while waiting for a keyframe.
    pub skipped: u64,
    /// Median decode time, ms.
    pub decode_ms_p50: f64,
    /// For the test pattern: mean luma PSNR against the pattern redrawn from each picture's stamp.
    pub psnr_db: Option<f64>,
    /// Capture → decoded, median, ms (from the stamp for the pattern, else from the frame's
    /// encrypted capture time).
    pub latency_p50_ms: Option<f64>,
    /// Capture → decoded, 95th percentile, ms.
    pub latency_p95_ms: Option<f64>,
    /// Lip sync: this track's capture → display latency minus the same sender's audio capture →
    /// playout latency (positive: video late), ms.
    pub av_offset_ms: Option<f64>,
    /// For the test pattern: what the stamps showed.
    pub pattern: Option<PatternReport>,
}

/// What arrived on every remote track.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Listened {
    /// Audio tracks.
    pub audio: Vec<TrackReport>,
    /// Video and screen tracks.
    pub video: Vec<VideoTrackReport>,
    /// Why the room's media ended before the listening did, if it did (no media path, removed
    /// from the room).
    #[serde(skip)]
    pub failure: Option<StopReason>,
}

/// Receives every remote audio track of `room` for `duration`, pulling each one every 10 ms like an
/// output device, and reports each.
pub fn listen(
    client: &StreamsClient,
    identity: &Identity,
    bridge_url: &str,
    room_id: &RoomId,
    duration: Duration,
) -> Result<Vec<TrackReport>, VoiceError> {
    Ok(listen_media(client, identity, bridge_url, room_id, duration)?.audio)
}

/// Receives every remote track of `room` for `duration`: audio pulled every 10 ms like an output
/// device, video decoded (and checked against the test pattern when it carries one).
pub fn listen_media(
    client: &StreamsClient,
    identity: &Identity,
    bridge_url: &str,
    room_id: &RoomId,
    duration: Duration,
) -> Result<Listened, VoiceError> {
    listen_media_while(client, identity, bridge_url, room_id, &|elapsed| {
        elapsed < duration
    })
}

/// [`listen_media`] for as long as `keep_listening(elapsed)` holds (asked every 10 ms): until the
/// publishers are done, say, however long they took to start.
pub fn listen_media_while(
    client: &StreamsClient,
    identity: &Identity,
    bridge_url: &str,
    room_id: &RoomId,
    keep_listening: &dyn Fn(Duration) -> bool,
) -> Result<Listened, VoiceError> {
    let checks: Arc<Mutex<HashMap<TrackId, PatternCheck>>> = Arc::default();
    // When each video track's first and latest pictures were decoded.
    let pictures: Arc<Mutex<HashMap<TrackId, (Instant, Instant)>>> = Arc::default();
    let observer: FrameObserver = {
        let checks = Arc::clone(&checks);
        let pictures = Arc::clone(&pictures);
        Arc::new(move |track, decoded| {
            if let Ok(mut pictures) = pictures.lock() {
                let now = Instant::now();
                pictures.entry(track).or_insert((now, now)).1 = now;
            }
            if let Ok(mut checks) = checks.lock() {
                checks.entry(track).or_default().observe(decoded);
            }
        })
    };
    // This tool is the voices' output: it pulls each one on its own, like an output device would.
    let (output, inbox) = VoiceOutput::new();
    let media = RoomMedia::start_with(
        client.handle()?,
        identity.clone(),
        bridge_url,
        room_id.clone(),
        MediaOptions {
            video_rgba: false,
            video_observer: Some(observer),
            voice_output: Some(output),
        },
    )?;
    let mut tracks = Tracks::default();
    let mut voices: HashMap<TrackId, Box<HandedVoice>> = HashMap::new();
    let mut pcm: HashMap<TrackId, Vec<f32>> = HashMap::new();
    let mut period_pcm = [0.0f32; OUTPUT_PERIOD_SAMPLES];
    let start = Instant::now();
    let mut period = 0u32;
    while keep_listening(start.elapsed()) && tracks.stopped.is_none() {
        period += 1;
        let due = start + Duration::from_millis(10) * period;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        for event in media.events().try_iter() {
            tracks.record(event);
        }
        while let Some(voice) = inbox.take() {
            voices.insert(voice.track_id, voice);
        }
        for (track_id, voice) in &mut voices {
            if voice.playout.is_closed() {
                continue;
            }
            voice.playout.pull_at(wall_us_now(), &mut period_pcm);
            pcm.entry(*track_id)
                .or_default()
                .extend_from_slice(&period_pcm);
        }
    }
    // Stopping the engine reports the final figures.
    for event in media.stop_and_collect(STOP_TIMEOUT) {
        tracks.record(event);
    }
    let mut reports = Vec::new();
    for (track_id, user) in tracks.voices {
        let Some(stats) = tracks.voice_stats.get(&track_id) else {
            continue;
        };
        // Level and frequency over the audible part: decoded or concealed frames.
        let voiced: Vec<f32> = pcm
            .get(&track_id)
            .map(|p| p.iter().copied().filter(|s| *s != 0.0).collect())
            .unwrap_or_default();
        reports.push(TrackReport {
            kind: TrackKind::Audio,
            user_id: user.to_string(),
            track_id,
            frames: stats.frames,
            lost: stats.lost,
            concealed: stats.concealed,
            fec_recovered: stats.fec_recovered,
            decrypt_failures: stats.decrypt_failures,
            late: stats.late,
            freq_hz: decoded_frequency(&voiced),
            level_dbfs: level_dbfs(&voiced),
            latency_p50_ms: stats.latency_p50_ms,
            latency_p95_ms: stats.latency_p95_ms,
            latency_p99_ms: stats.latency_p99_ms,
            arrival_p50_ms: stats.arrival_p50_ms,
            jitter_ms: stats.jitter_ms,
            buffer_delay_ms: stats.buffer_delay_ms,
        });
    }
    let checks = checks.lock().map(|c| {
        c.iter()
            .map(|(k, v)| (*k, v.report()))
            .collect::<HashMap<_, _>>()
    });
    let checks = checks.unwrap_or_default();
    let pictures = pictures.lock().map(|f| f.clone()).unwrap_or_default();
    let mut video = Vec::new();
    for (track_id, (user, kind, stats)) in tracks.videos {
        let pattern = checks.get(&track_id).filter(|p| p.stamped > 0).cloned();
        let seconds = pictures.get(&track_id).map_or(0.0, |(first, last)| {
            last.duration_since(*first).as_secs_f64()
        });
        let (p50, p95) = match &pattern {
            Some(p) => (p.latency_p50_ms, p.latency_p95_ms),
            None if stats.frames > 0 => (Some(stats.latency_p50_ms), Some(stats.latency_p95_ms)),
            None => (None, None),
        };
        let audio_latency = reports
            .iter()
            .find(|a| a.user_id == user.as_str())
            .and_then(|a| a.latency_p50_ms);
        video.push(VideoTrackReport {
            kind,
            user_id: user.to_string(),
            track_id,
            frames: stats.frames,
            fps: if seconds > 0.0 {
                stats.frames.saturating_sub(1) as f64 / seconds
            } else {
                0.0
            },
            width: stats.width,
            height: stats.height,
            decrypt_failures: stats.decrypt_failures,
            freezes: stats.freezes,
            longest_pause_ms: stats.longest_pause_ms,
            keyframe_requests: stats.keyframe_requests,
            skipped: stats.skipped,
            decode_ms_p50: stats.decode_ms_p50,
            psnr_db: pattern.as_ref().and_then(|p| p.psnr_db),
            latency_p50_ms: p50,
            latency_p95_ms: p95,
            av_offset_ms: p50.zip(audio_latency).map(|(v, a)| v - a),
            pattern,
        });
    }
    Ok(Listened {
        audio: reports,
        video,
        failure: tracks.stopped.filter(|reason| *reason != StopReason::Owner),
    })
}

/// The remote tracks a listener has seen, and their latest statistics.
#[derive(Default)]
struct Tracks {
    voices: HashMap<TrackId, UserId>,
    voice_stats: HashMap<TrackId, TrackStats>,
    videos: HashMap<TrackId, (UserId, TrackKind, VideoStats)>,
    /// Why the engine stopped, once it has.
    stopped: Option<StopReason>,
}

impl Tracks {
    /// Notes which remote tracks exist and their latest statistics from an engine event.
    fn record(&mut self, event: MediaEvent) {
        match event {
            MediaEvent::RemoteTrackAdded {
                track_id,
                user_id,
                kind: TrackKind::Audio,
                ..
            } => {
                self.voices.insert(track_id, user_id);
            }
            MediaEvent::RemoteTrackAdded {
                track_id,
                user_id,
                kind,
                ..
            } => {
                self.videos
                    .insert(track_id, (user_id, kind, VideoStats::default()));
            }
            MediaEvent::Stats(stats) => self.voice_stats.extend(stats),
            MediaEvent::Stopped { reason } => {
                self.stopped.get_or_insert(reason);
            }
            MediaEvent::VideoStats(stats) => {
                for (track_id, s) in stats {
                    if let Some(entry) = self.videos.get_mut(&track_id) {
                        entry.2 = s;
                    }
                }
            }
            _ => {}
        }
    }
}
