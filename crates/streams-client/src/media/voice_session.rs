//! Blocking voice sessions for tools, bots and benchmarks, on top of [`RoomMedia`]:
//! [`publish_voice`] sends a source in real time; [`listen`] receives every remote audio track
//! (including ones published later), pulls each one like an output device would, and reports what
//! arrived. Both follow key epochs through the engine.
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use streams_proto::wire::TrackKind;
use streams_proto::{Identity, RoomId, UserId};

use crate::StreamsClient;
use crate::audio::analysis::level_dbfs;
use crate::audio::codec::VoiceSettings;
use crate::audio::source::AudioSource;
use crate::error::ClientError;
use crate::media::engine::{MediaCommand, MediaEvent, RoomMedia};
use crate::media::session::MediaError;
use crate::media::voice::{VoiceReceiver, decoded_frequency, percentile};

/// Samples per output period (10 ms at 48 kHz).
const OUTPUT_PERIOD_SAMPLES: usize = 480;

/// Wall-clock microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

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
    /// Encoding or keys failed.
    #[error("{0}")]
    Pipeline(String),
}

/// The local address to use for media towards `bridge_url`'s host (the route's source address).
pub fn local_ip_towards(bridge_url: &str) -> IpAddr {
    let host = bridge_url
        .split("://")
        .nth(1)
        .unwrap_or(bridge_url)
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:7800");
    let probe = UdpSocket::bind("0.0.0.0:0").and_then(|s| {
        s.connect(host)?;
        s.local_addr()
    });
    match probe {
        Ok(SocketAddr::V4(a)) if !a.ip().is_unspecified() => IpAddr::V4(*a.ip()),
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

/// What a publisher sent.
#[derive(Clone, Debug, Serialize)]
pub struct PublishReport {
    /// Frames sent.
    pub frames: u64,
    /// Frame duration, ms.
    pub frame_ms: u32,
    /// Key epochs used.
    pub epochs: Vec<u64>,
}

impl PublishReport {
    /// Takes a local track's counts from an engine event; `true` when the engine has stopped.
    fn record(&mut self, event: MediaEvent) -> bool {
        match event {
            MediaEvent::LocalStats { frames, epochs, .. } => {
                self.frames = frames;
                self.epochs = epochs;
                false
            }
            MediaEvent::Stopped { .. } => true,
            _ => false,
        }
    }
}

/// Publishes `source` in `room` for `duration`, in real time. The room's current key is used and
/// replaced at once when a new epoch arrives; removal from the room ends it early.
pub fn publish_voice(
    client: &StreamsClient,
    identity: &Identity,
    bridge_url: &str,
    room_id: &RoomId,
    source: Box<dyn AudioSource>,
    settings: VoiceSettings,
    duration: Duration,
) -> Result<PublishReport, VoiceError> {
    let frame_ms = settings.frame.millis();
    let media = RoomMedia::start(
        client.handle()?,
        identity.clone(),
        bridge_url,
        room_id.clone(),
    )?;
    // Only this track is of interest: no remote audio to receive.
    media.send(MediaCommand::SubscribeAll(false));
    media.send(MediaCommand::AddAudioTrack { source, settings });
    let mut report = PublishReport {
        frames: 0,
        frame_ms,
        epochs: Vec::new(),
    };
    let deadline = Instant::now() + duration;
    let mut stopped = false;
    while Instant::now() < deadline && !stopped {
        if let Ok(event) = media.events().recv_timeout(Duration::from_millis(50)) {
            stopped = report.record(event);
        }
    }
    // Stopping the engine reports the final counts.
    let events = media.events().clone();
    drop(media);
    for event in events.try_iter() {
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
    pub track_id: String,
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
    /// Median of capture of a frame's first sample → its arrival (frame duration, encoding, network).
    pub arrival_p50_ms: Option<f64>,
    /// Smoothed jitter, ms.
    pub jitter_ms: f64,
    /// Jitter buffer target delay, ms.
    pub buffer_delay_ms: f64,
    /// Every one-way latency measured, µs (for aggregation; not printed).
    #[serde(skip)]
    pub latencies_us: Vec<u64>,
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
    let media = RoomMedia::start(
        client.handle()?,
        identity.clone(),
        bridge_url,
        room_id.clone(),
    )?;
    let mixer = media.mixer();
    let mut senders: HashMap<String, UserId> = HashMap::new();
    // Kept here too: the engine drops a track's receiver when its stream ends.
    let mut receivers: HashMap<String, Arc<Mutex<VoiceReceiver>>> = HashMap::new();
    let mut pcm: HashMap<String, Vec<f32>> = HashMap::new();
    let start = Instant::now();
    let mut period = 0u32;
    while start.elapsed() < duration {
        period += 1;
        let due = start + Duration::from_millis(10) * period;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        for event in media.events().try_iter() {
            if let MediaEvent::RemoteTrackAdded {
                track_id, user_id, ..
            } = event
            {
                senders.insert(track_id, user_id);
            }
        }
        let tracks = mixer.lock().map(|m| m.track_ids()).unwrap_or_default();
        for track_id in tracks {
            if let Some(receiver) = mixer.lock().ok().and_then(|m| m.receiver(&track_id)) {
                receivers.entry(track_id).or_insert(receiver);
            }
        }
        for (track_id, receiver) in &receivers {
            if let Ok(mut r) = receiver.lock() {
                let samples = r.pull_samples(now_us(), OUTPUT_PERIOD_SAMPLES);
                pcm.entry(track_id.clone()).or_default().extend(samples);
            }
        }
    }
    let mut reports = Vec::new();
    for (track_id, user) in senders {
        let Some(receiver) = receivers.get(&track_id) else {
            continue;
        };
        let Ok(r) = receiver.lock() else { continue };
        let stats = r.stats();
        let lat = r.latencies_us();
        let ms = |v: Option<u64>| v.map(|us| us as f64 / 1000.0);
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
            latency_p50_ms: ms(percentile(lat, 0.5)),
            latency_p95_ms: ms(percentile(lat, 0.95)),
            arrival_p50_ms: ms(percentile(r.arrivals_us(), 0.5)),
            jitter_ms: stats.jitter_ms,
            buffer_delay_ms: stats.buffer_delay_ms,
            latencies_us: lat.to_vec(),
        });
    }
    drop(media);
    Ok(reports)
}
