//! Blocking voice sessions for tools, bots and benchmarks: [`publish_voice`] joins a room's media and
//! sends a source in real time; [`listen`] receives every remote audio track (including ones published
//! later) and reports what arrived. Both follow key epochs: a sender switches to a new epoch's key at
//! once; a receiver holds frames of an epoch it cannot open yet.
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use streams_proto::frame_crypto::DeviceSession;
use streams_proto::wire::{EventScope, StreamInfo, TrackAnnounce, TrackKind, TrackSubscription};
use streams_proto::{Identity, RoomId, RoomRecord, RoomSecret, UserId};

use crate::StreamsClient;
use crate::api::{ClientEvent, Operation, Reply, RoomEvent};
use crate::audio::codec::{FrameDuration, VoiceSettings};
use crate::audio::source::AudioSource;
use crate::error::ClientError;
use crate::media::session::{MediaError, MediaSession};
use crate::media::voice::{VoiceReceiver, VoiceSender, decoded_frequency, percentile};

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

fn negotiate(
    client: &StreamsClient,
    room: &RoomId,
    offer: String,
    publish: Vec<TrackAnnounce>,
    subscribe: Vec<TrackSubscription>,
) -> Result<String, VoiceError> {
    match client.call(Operation::Negotiate {
        room_id: room.clone(),
        offer,
        publish,
        subscribe,
    })? {
        Reply::Answer { answer, .. } => Ok(answer),
        other => Err(ClientError::Unexpected(format!("{other:?}")).into()),
    }
}

fn wait_connected(session: &mut MediaSession) -> Result<(), VoiceError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !session.is_connected() {
        if Instant::now() > deadline || session.has_failed() {
            return Err(
                MediaError::State("the media connection to the bridge did not come up").into(),
            );
        }
        session.run_until(Instant::now() + Duration::from_millis(10))?;
    }
    Ok(())
}

/// Every epoch secret of `record` this identity can unwrap, by epoch.
fn secrets(record: &RoomRecord, identity: &Identity) -> HashMap<u64, RoomSecret> {
    record
        .epochs
        .iter()
        .filter_map(|e| e.unwrap_secret(identity).ok().map(|s| (e.epoch, s)))
        .collect()
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

/// Publishes `source` in `room` for `duration`, in real time. The room's current key is used and
/// replaced at once when a new epoch arrives.
pub fn publish_voice(
    client: &StreamsClient,
    identity: &Identity,
    bridge_url: &str,
    room_id: &RoomId,
    source: Box<dyn AudioSource>,
    settings: VoiceSettings,
    duration: Duration,
) -> Result<PublishReport, VoiceError> {
    client.subscribe(EventScope::Room(room_id.clone()))?;
    let room = client.get_room(room_id)?;
    let latest = room
        .record
        .latest()
        .ok_or_else(|| VoiceError::Pipeline("room without epochs".into()))?;
    let mut epoch = latest.epoch;
    let secret = latest.unwrap_secret(identity).map_err(ClientError::from)?;
    let device = DeviceSession::random();
    let encryptor = device
        .encryptor(&secret, epoch, identity.user_id(), 0)
        .map_err(ClientError::from)?;
    let frame_ms = settings.frame.millis();
    let mut sender = VoiceSender::new(source, settings, encryptor)
        .map_err(|e| VoiceError::Pipeline(e.to_string()))?;
    let mut session = MediaSession::bind(local_ip_towards(bridge_url))?;
    let (offer, send_mids, _) = session.offer(1, 0)?;
    let mid = send_mids[0].clone();
    let announce = TrackAnnounce {
        mid: mid.clone(),
        kind: TrackKind::Audio,
        key_id: sender.key_id(),
        frame_ms,
    };
    let answer = negotiate(client, room_id, offer, vec![announce], vec![])?;
    session.accept_answer(&answer)?;
    wait_connected(&mut session)?;

    let mut epochs = vec![epoch];
    // Pacing as a real capture device: frame i holds the samples of [start + i·frame,
    // start + (i+1)·frame); it can only be sent once its last sample exists, and its capture time is
    // that of its first sample.
    let start = Instant::now();
    let start_us = now_us();
    let frame = Duration::from_millis(u64::from(frame_ms));
    while start.elapsed() < duration {
        // A new epoch: switch keys at once.
        while let Ok(event) = client.events().try_recv() {
            if let ClientEvent::Room(RoomEvent::Updated(room)) = event
                && room.id == *room_id
                && room.key_epoch > epoch
            {
                let latest = room.record.latest().expect("verified rooms have epochs");
                match latest.unwrap_secret(identity) {
                    Ok(secret) => {
                        epoch = latest.epoch;
                        let next = device
                            .encryptor(&secret, epoch, identity.user_id(), 0)
                            .map_err(ClientError::from)?;
                        sender.set_encryptor(next);
                        epochs.push(epoch);
                    }
                    Err(_) => {
                        // Removed from the room: stop sending.
                        client.call(Operation::CloseMedia(room_id.clone()))?;
                        return Ok(PublishReport {
                            frames: sender.frames(),
                            frame_ms,
                            epochs,
                        });
                    }
                }
            }
        }
        let index = sender.frames();
        session.run_until(start + frame * (index as u32 + 1))?;
        let capture_us = start_us + index * u64::from(frame_ms) * 1000;
        let protected = sender
            .next_frame(capture_us)
            .map_err(|e| VoiceError::Pipeline(e.to_string()))?;
        session.write_audio(&mid, Instant::now(), sender.rtp_time(), &protected)?;
    }
    session.run_until(Instant::now() + Duration::from_millis(100))?;
    client.call(Operation::CloseMedia(room_id.clone()))?;
    session.close();
    Ok(PublishReport {
        frames: sender.frames(),
        frame_ms,
        epochs,
    })
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

struct Incoming {
    info_user: UserId,
    track_id: String,
    receiver: VoiceReceiver,
    pcm: Vec<f32>,
}

/// Receives every remote audio track of `room` for `duration` and reports each.
pub fn listen(
    client: &StreamsClient,
    identity: &Identity,
    bridge_url: &str,
    room_id: &RoomId,
    duration: Duration,
) -> Result<Vec<TrackReport>, VoiceError> {
    client.subscribe(EventScope::Room(room_id.clone()))?;
    let room = client.get_room(room_id)?;
    let mut known = secrets(&room.record, identity);
    let mut session = MediaSession::bind(local_ip_towards(bridge_url))?;
    let mut incoming: HashMap<String, Incoming> = HashMap::new();
    let mut subscriptions: Vec<TrackSubscription> = Vec::new();
    let Reply::Streams(streams) = client.call(Operation::ListStreams(room_id.clone()))? else {
        return Err(ClientError::Unexpected("streams".into()).into());
    };
    let mut pending: Vec<StreamInfo> = streams;

    let start = Instant::now();
    let mut tick = 0u64;
    while start.elapsed() < duration {
        // New streams: one more receiving m-line each, renegotiated as a whole.
        let fresh: Vec<_> = pending
            .drain(..)
            .filter(|s| &s.user_id != identity.user_id())
            .flat_map(|s| {
                let user = s.user_id.clone();
                s.tracks.into_iter().map(move |t| (user.clone(), t))
            })
            .filter(|(_, t)| {
                t.kind == TrackKind::Audio
                    && !subscriptions.iter().any(|s| s.track_id == t.track_id)
            })
            .collect();
        if !fresh.is_empty() {
            let (offer, _, mids) = session.offer(0, fresh.len())?;
            for ((user, track), mid) in fresh.into_iter().zip(mids) {
                let frame = if track.frame_ms == 10 {
                    FrameDuration::Ms10
                } else {
                    FrameDuration::Ms20
                };
                let mut receiver = VoiceReceiver::new(user.clone(), frame)
                    .map_err(|e| VoiceError::Pipeline(e.to_string()))?;
                for (epoch, secret) in &known {
                    receiver.add_epoch(*epoch, secret.clone(), now_us());
                }
                subscriptions.push(TrackSubscription {
                    mid: mid.clone(),
                    track_id: track.track_id.clone(),
                });
                incoming.insert(
                    mid,
                    Incoming {
                        info_user: user,
                        track_id: track.track_id,
                        receiver,
                        pcm: Vec::new(),
                    },
                );
            }
            let answer = negotiate(client, room_id, offer, vec![], subscriptions.clone())?;
            session.accept_answer(&answer)?;
        }
        while let Ok(event) = client.events().try_recv() {
            match event {
                ClientEvent::Room(RoomEvent::StreamPublished { room_id: r, stream })
                    if r == *room_id =>
                {
                    pending.push(stream);
                }
                ClientEvent::Room(RoomEvent::Updated(room)) if room.id == *room_id => {
                    for (epoch, secret) in secrets(&room.record, identity) {
                        if known.insert(epoch, secret.clone()).is_none() {
                            for track in incoming.values_mut() {
                                track.receiver.add_epoch(epoch, secret.clone(), now_us());
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        tick += 1;
        // The output side runs with 10 ms periods, like a typical audio device.
        let due = start + Duration::from_millis(10 * tick);
        while Instant::now() < due {
            for received in session.run_until_media(due)? {
                if let Some(track) = incoming.get_mut(&received.mid) {
                    track.receiver.accept(now_us(), received.data);
                }
            }
        }
        for track in incoming.values_mut() {
            let pcm = track.receiver.pull_samples(now_us(), OUTPUT_PERIOD_SAMPLES);
            track.pcm.extend(pcm);
        }
    }
    client.call(Operation::CloseMedia(room_id.clone()))?;
    session.close();
    Ok(incoming
        .into_values()
        .map(|t| {
            let stats = t.receiver.stats();
            let lat = t.receiver.latencies_us();
            let ms = |v: Option<u64>| v.map(|us| us as f64 / 1000.0);
            // Level over the audible part: the frames that were actually decoded or concealed.
            let voiced: Vec<f32> = t.pcm.iter().copied().filter(|s| *s != 0.0).collect();
            TrackReport {
                kind: TrackKind::Audio,
                user_id: t.info_user.to_string(),
                track_id: t.track_id,
                frames: stats.frames,
                lost: stats.lost,
                concealed: stats.concealed,
                fec_recovered: stats.fec_recovered,
                decrypt_failures: stats.decrypt_failures,
                freq_hz: decoded_frequency(&voiced),
                level_dbfs: crate::audio::analysis::level_dbfs(&voiced),
                latency_p50_ms: ms(percentile(lat, 0.5)),
                latency_p95_ms: ms(percentile(lat, 0.95)),
                arrival_p50_ms: ms(percentile(t.receiver.arrivals_us(), 0.5)),
                jitter_ms: stats.jitter_ms,
                buffer_delay_ms: stats.buffer_delay_ms,
                latencies_us: lat.to_vec(),
            }
        })
        .collect())
}
