//! A load peer: one WebRTC connection (str0m, DTLS-SRTP) on its own UDP socket, driven as a Tokio
//! task. A publisher sends an Opus-sized frame every 20 ms whose first 8 bytes are its send time (µs
//! since the Unix epoch; every peer runs on this machine, one clock), and in the video variant an
//! H.264 frame 30 times a second (one opaque NAL unit of the configured size, as our carriage
//! sends). A subscriber counts the voice frames it receives — after SRTP authentication and
//! depacketization, one packet each — with their one-way latency, and the video frames and video
//! packets (str0m's ingress statistics, every 200 ms). The same peer serves both servers: only the
//! signaling differs.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

/// Bytes of each synthetic voice frame (a 20 ms Opus frame at ~32 kbit/s).
pub const FRAME_BYTES: usize = 80;
/// Frames per second per publisher.
pub const FRAMES_PER_SECOND: u64 = 50;
/// Video frames per second per publisher (video variant).
pub const VIDEO_FPS: u64 = 30;
/// Media workers whose egress is counted apart.
pub const MAX_WORKERS: usize = 16;

/// What the peers share with the scenario: start/stop, and what they counted.
#[derive(Default)]
pub struct Counters {
    /// Publishers send while this is set.
    pub sending: AtomicBool,
    /// Every peer ends when this is set.
    pub stop: AtomicBool,
    /// Frames sent by all publishers.
    pub sent: AtomicU64,
    /// Frames received by all subscribers.
    pub received: AtomicU64,
    /// Peers whose DTLS-SRTP connection is up.
    pub connected: AtomicU64,
    /// Latencies (µs) of received frames, sampled (every 8th).
    pub latencies: std::sync::Mutex<Vec<u64>>,
    /// Video frames received by all subscribers.
    pub video_frames: AtomicU64,
    /// Video packets received by all subscribers (from ingress statistics).
    pub video_packets: AtomicU64,
    /// Voice frames and video packets received, by the server's worker that forwarded them.
    pub egress_by_worker: [AtomicU64; MAX_WORKERS],
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A peer before its connection runs: its Rtc and socket.
pub struct Peer {
    rtc: Rtc,
    socket: std::net::UdpSocket,
    local: SocketAddr,
    /// The sending m-line of a publisher.
    pub send_mid: Option<Mid>,
    /// The sending video m-line of a publisher (video variant).
    pub send_video_mid: Option<Mid>,
    /// Bytes of each video frame.
    video_frame_bytes: usize,
    /// Which of the server's media workers forwards to it (below [`MAX_WORKERS`]; 0 with one).
    pub worker: usize,
}

impl Peer {
    /// A peer with a host candidate on `ip`.
    pub fn bind(ip: IpAddr) -> Result<Peer, String> {
        let socket =
            std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).map_err(|e| e.to_string())?;
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .enable_h264(true)
            .set_stats_interval(Some(Duration::from_millis(200)))
            .build(Instant::now());
        let candidate = Candidate::host(local, "udp").map_err(|e| e.to_string())?;
        rtc.add_local_candidate(candidate);
        Ok(Peer {
            rtc,
            socket,
            local,
            send_mid: None,
            send_video_mid: None,
            video_frame_bytes: 0,
            worker: 0,
        })
    }

    /// An offer with one sending audio m-line (and a video one with `video_kbps` > 0: a publisher),
    /// or receiving ones (a subscriber: `recv_audio` and `recv_video` of them); the receiving mids.
    pub fn offer(
        &mut self,
        send: bool,
        video_kbps: u32,
        recv_audio: usize,
        recv_video: usize,
    ) -> (String, SdpPendingOffer, Vec<Mid>, Vec<Mid>) {
        let mut api = self.rtc.sdp_api();
        if send {
            self.send_mid =
                Some(api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
            if video_kbps > 0 {
                self.send_video_mid =
                    Some(api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None));
                self.video_frame_bytes =
                    (video_kbps as usize * 1000 / 8 / VIDEO_FPS as usize).max(16);
            }
        }
        let mut audio_mids = Vec::new();
        for _ in 0..recv_audio {
            audio_mids.push(api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None));
        }
        let mut video_mids = Vec::new();
        for _ in 0..recv_video {
            video_mids.push(api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None));
        }
        let (offer, pending) = api.apply().expect("media were added");
        (offer.to_sdp_string(), pending, audio_mids, video_mids)
    }

    /// One video frame: a NAL unit (IDR once a second, else non-IDR) of opaque bytes with no zero
    /// byte, closed by a stop byte — what our carriage sends, and what any H.264 forwarder passes.
    fn video_frame(&self, index: u64) -> Vec<u8> {
        let header = if index.is_multiple_of(VIDEO_FPS) {
            0x65
        } else {
            0x61
        };
        let mut frame = vec![0, 0, 0, 1, header];
        frame.resize(5 + self.video_frame_bytes, 0x5A);
        frame.push(0x80);
        frame
    }

    /// Applies the server's answer to our offer.
    pub fn accept_answer(&mut self, pending: SdpPendingOffer, answer: &str) -> Result<(), String> {
        let answer = SdpAnswer::from_sdp_string(answer).map_err(|e| e.to_string())?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| e.to_string())
    }

    /// Answers the server's offer (a Janus subscriber).
    pub fn accept_offer(&mut self, offer: &str) -> Result<String, String> {
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| e.to_string())?;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| e.to_string())?;
        Ok(answer.to_sdp_string())
    }

    /// Runs the connection until `counters.stop`.
    pub async fn run(mut self, counters: Arc<Counters>) {
        let Ok(socket) = self
            .socket
            .set_nonblocking(true)
            .and_then(|()| UdpSocket::from_std(self.socket.try_clone().expect("socket")))
        else {
            return;
        };
        let mut buf = vec![0u8; 2000];
        let mut connected = false;
        let mut video_mids: std::collections::HashSet<Mid> = std::collections::HashSet::new();
        let mut ingress: std::collections::HashMap<Mid, u64> = std::collections::HashMap::new();
        let by_worker = &counters.egress_by_worker[self.worker.min(MAX_WORKERS - 1)];
        let video_period = Duration::from_micros(1_000_000 / VIDEO_FPS);
        let mut next_video = Instant::now();
        let mut video_index = 0u64;
        let mut next_frame = Instant::now();
        let mut frame_index = 0u64;
        let mut sampled = 0u64;
        let mut payload = vec![0u8; FRAME_BYTES];
        let period = Duration::from_micros(1_000_000 / FRAMES_PER_SECOND);
        while !counters.stop.load(Ordering::Relaxed) {
            // Everything str0m wants to send, then when it next needs time.
            let timeout = loop {
                match self.rtc.poll_output() {
                    Ok(Output::Transmit(t)) => {
                        let _ = socket.send_to(&t.contents, t.destination).await;
                    }
                    Ok(Output::Timeout(at)) => break at,
                    Ok(Output::Event(event)) => match event {
                        Event::Connected => {
                            connected = true;
                            counters.connected.fetch_add(1, Ordering::Relaxed);
                        }
                        Event::MediaData(data)
                            if data.params.spec().codec == str0m::format::Codec::H264 =>
                        {
                            video_mids.insert(data.mid);
                            counters.video_frames.fetch_add(1, Ordering::Relaxed);
                        }
                        Event::MediaIngressStats(stats) => {
                            let last = ingress.insert(stats.mid, stats.packets).unwrap_or(0);
                            if video_mids.contains(&stats.mid) {
                                let packets = stats.packets.saturating_sub(last);
                                counters.video_packets.fetch_add(packets, Ordering::Relaxed);
                                by_worker.fetch_add(packets, Ordering::Relaxed);
                            }
                        }
                        Event::MediaData(data) => {
                            counters.received.fetch_add(1, Ordering::Relaxed);
                            by_worker.fetch_add(1, Ordering::Relaxed);
                            sampled += 1;
                            if sampled.is_multiple_of(8) && data.data.len() >= 8 {
                                let mut sent = [0u8; 8];
                                sent.copy_from_slice(&data.data[..8]);
                                let latency = now_us().saturating_sub(u64::from_be_bytes(sent));
                                if let Ok(mut l) = counters.latencies.lock() {
                                    l.push(latency);
                                }
                            }
                        }
                        _ => {}
                    },
                    Err(_) => return,
                }
            };
            let sending =
                connected && self.send_mid.is_some() && counters.sending.load(Ordering::Relaxed);
            let wake = if sending {
                timeout.min(next_frame)
            } else {
                timeout
            };
            let wait = wake
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50));
            tokio::select! {
                received = socket.recv_from(&mut buf) => {
                    if let Ok((n, source)) = received
                        && let Ok(contents) = buf[..n].try_into()
                    {
                        let input = Input::Receive(
                            Instant::now(),
                            Receive {
                                proto: Protocol::Udp,
                                source,
                                destination: self.local,
                                contents,
                            },
                        );
                        if self.rtc.handle_input(input).is_err() {
                            return;
                        }
                    }
                }
                _ = tokio::time::sleep(wait) => {
                    if self.rtc.handle_input(Input::Timeout(Instant::now())).is_err() {
                        return;
                    }
                }
            }
            if sending && Instant::now() >= next_frame {
                next_frame += period;
                let pt = self.send_mid.and_then(|mid| {
                    let writer = self.rtc.writer(mid)?;
                    writer.payload_params().next().map(|p| p.pt())
                });
                if let (Some(mid), Some(pt)) = (self.send_mid, pt)
                    && let Some(writer) = self.rtc.writer(mid)
                {
                    payload[..8].copy_from_slice(&now_us().to_be_bytes());
                    let time =
                        MediaTime::new(frame_index * 960, str0m::media::Frequency::FORTY_EIGHT_KHZ);
                    if writer
                        .write(pt, Instant::now(), time, payload.clone())
                        .is_ok()
                    {
                        counters.sent.fetch_add(1, Ordering::Relaxed);
                    }
                    frame_index += 1;
                }
            } else if !sending {
                next_frame = Instant::now();
                next_video = Instant::now();
            }
            if sending
                && Instant::now() >= next_video
                && let Some(mid) = self.send_video_mid
            {
                next_video += video_period;
                let frame = self.video_frame(video_index);
                let pt = self
                    .rtc
                    .writer(mid)
                    .and_then(|writer| writer.payload_params().next().map(|p| p.pt()));
                if let (Some(pt), Some(writer)) = (pt, self.rtc.writer(mid)) {
                    let time =
                        MediaTime::new(video_index * 3000, str0m::media::Frequency::NINETY_KHZ);
                    let _ = writer.write(pt, Instant::now(), time, frame);
                    video_index += 1;
                }
            }
        }
    }
}
