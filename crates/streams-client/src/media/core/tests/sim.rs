//! A simulated world for the core: two members' cores, an SFU made of str0m peers in ICE-lite answer
//! mode (real ICE, DTLS-SRTP and RTP, forwarding each published track to its subscribers, never
//! back to its sender), a bridge that answers signaling, and a network that carries datagrams with
//! a fixed delay, all on simulated time. Tests hold or refuse signaling replies and rotate keys.
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::net::{Protocol, Receive};
use str0m::rtp::Extension;
use str0m::{Candidate, Event, Input, Output, Rtc};
use streams_proto::epoch::Membership;
use streams_proto::wire::{ErrorCode, StreamInfo, TrackInfo, WireError};
use streams_proto::{
    ContextId, EpochRecord, Identity, Policy, PrivateMeta, RoomRecord, SignedMeta, UserId,
};

use crate::api::{Operation, Reply, Room, RoomEvent};
use crate::audio::codec::VoiceSettings;
use crate::audio::handoff::{HandedVoice, VoiceInbox, VoiceOutput};
use crate::audio::source::ToneSource;
use crate::clock::wall_us;
use crate::error::ClientError;
use crate::media::core::{CoreConfig, CoreOutput, RoomMediaCore, SignalId};
use crate::media::events::{MediaCommand, MediaEvent, MediaOptions};
use crate::media::voice::TrackStats;

/// One-way delay of every datagram and every signaling message.
pub const WIRE_DELAY: Duration = Duration::from_millis(2);
/// How often each member's output side pulls its remote voices.
const OUTPUT_PERIOD: Duration = Duration::from_millis(10);

/// What the bridge does with a member's next negotiation.
#[derive(Clone, Debug)]
pub enum NegotiationPolicy {
    /// Apply it and answer after [`WIRE_DELAY`].
    Answer,
    /// Apply it, but hold the reply back this long.
    Hold(Duration),
    /// Answer with this error (applying nothing), once; then answer again.
    FailOnce(ClientError),
}

pub struct Member {
    pub identity: Identity,
    pub addr: SocketAddr,
    pub core: RoomMediaCore,
    pub events: Vec<(Instant, MediaEvent)>,
    pub negotiation: NegotiationPolicy,
    /// Added to the trip of this member's listing replies (a listing computed now, arriving late).
    pub listing_delay: Duration,
    stream_id: u64,
    /// Samples pulled from each remote voice (by track id).
    pub heard: HashMap<String, Vec<f32>>,
    /// Where the core hands its remote voices, and the voices taken from there.
    inbox: VoiceInbox,
    voices: HashMap<String, Box<HandedVoice>>,
}

struct SfuSession {
    rtc: Rtc,
    /// Published tracks: mid → track.
    published: Vec<(String, TrackInfo)>,
    /// Receiving m-lines: mid → track id.
    subscribed: Vec<(String, String)>,
    /// When its timers are next due.
    timeout: Instant,
}

/// Something that reaches its target at a given time.
enum Arrival {
    /// A datagram to a member (from the SFU) or to the SFU (from a member).
    Datagram {
        to_sfu: bool,
        member: usize,
        contents: Vec<u8>,
    },
    Reply {
        member: usize,
        id: SignalId,
        result: Result<Reply, ClientError>,
    },
    Room {
        member: usize,
        event: RoomEvent,
    },
}

pub struct World {
    pub now: Instant,
    pub members: Vec<Member>,
    sfu_addr: SocketAddr,
    sessions: HashMap<usize, SfuSession>,
    /// Keyed by (time, sequence) so equal times keep their order.
    arrivals: BTreeMap<(Instant, u64), Arrival>,
    sequence: u64,
    next_pull: Instant,
    manager: Identity,
    room: Room,
    /// When each member's published frames reached the SFU, by (member, mid).
    pub arrivals_at_sfu: HashMap<(usize, String), Vec<Instant>>,
}

fn room_of(record: RoomRecord, users: Vec<UserId>, manager: &Identity) -> Room {
    let latest = record.latest().expect("a record has its genesis");
    Room {
        id: record.id.clone(),
        context_id: record.context_id.clone(),
        created_at: 0,
        created_by: manager.user_id().clone(),
        modified_at: 0,
        modified_by: manager.user_id().clone(),
        version: record.version,
        users,
        managers: vec![manager.user_id().clone()],
        policy: Policy::default(),
        key_epoch: latest.epoch,
        public_meta: Vec::new(),
        private: None,
        role: streams_proto::policy::Role::User,
        record,
    }
}

impl World {
    /// Alice (a manager) and Bob in a fresh room, each with a core that has made its first
    /// requests; nobody publishes yet.
    pub fn new() -> World {
        let alice = Identity::generate();
        let bob = Identity::generate();
        let users = vec![alice.user_id().clone(), bob.user_id().clone()];
        let membership = Membership {
            users: users.clone(),
            managers: vec![alice.user_id().clone()],
            policy: Policy::default(),
        };
        let (genesis, secret) =
            EpochRecord::genesis(&alice, ContextId::default(), membership, 0).unwrap();
        let meta = SignedMeta::seal(
            &alice,
            &genesis,
            &secret,
            1,
            vec![],
            &PrivateMeta::default(),
        )
        .unwrap();
        let record = RoomRecord {
            id: genesis.room_id.clone(),
            context_id: genesis.context_id.clone(),
            created_at: 0,
            created_by: alice.user_id().clone(),
            modified_at: 0,
            modified_by: alice.user_id().clone(),
            version: 1,
            meta,
            epochs: vec![genesis],
        };
        let room = room_of(record, users, &alice);
        let now = Instant::now();
        let members = [(alice.clone(), 1u8), (bob, 2u8)]
            .into_iter()
            .map(|(identity, host)| {
                let addr = SocketAddr::from(([10, 0, 0, host], 5000));
                let (output, inbox) = VoiceOutput::new();
                let config = CoreConfig {
                    identity: identity.clone(),
                    room_id: room.id.clone(),
                    local: addr,
                    options: MediaOptions {
                        voice_output: Some(output),
                        ..MediaOptions::default()
                    },
                    wake: std::sync::Arc::new(|| {}),
                    videos: Default::default(),
                };
                Member {
                    identity,
                    addr,
                    core: RoomMediaCore::new(now, config).unwrap(),
                    events: Vec::new(),
                    negotiation: NegotiationPolicy::Answer,
                    listing_delay: Duration::ZERO,
                    stream_id: u64::from(host),
                    heard: HashMap::new(),
                    inbox,
                    voices: HashMap::new(),
                }
            })
            .collect();
        World {
            now,
            members,
            sfu_addr: SocketAddr::from(([10, 0, 0, 100], 7000)),
            sessions: HashMap::new(),
            arrivals: BTreeMap::new(),
            sequence: 0,
            next_pull: now,
            manager: alice,
            room,
            arrivals_at_sfu: HashMap::new(),
        }
    }

    /// Member `m` publishes a 440 Hz (or `hz`) tone.
    pub fn publish_tone(&mut self, m: usize, hz: f64) {
        let command = MediaCommand::AddAudioTrack {
            source: Box::new(ToneSource::new(hz, 0.5)),
            settings: VoiceSettings::default(),
        };
        self.members[m].core.handle_command(self.now, command);
    }

    /// A new key epoch (same members), reaching member `first` at once and the other `later`.
    pub fn rotate_keys(&mut self, first: usize, later: Duration) {
        let latest = self.room.record.latest().unwrap().clone();
        let membership = latest.membership();
        let (next, _) = latest.next(&self.manager, membership, 0).unwrap();
        self.room.record.epochs.push(next);
        self.room.key_epoch += 1;
        for m in 0..self.members.len() {
            let delay = if m == first { Duration::ZERO } else { later };
            let event = RoomEvent::Updated(Box::new(self.room.clone()));
            self.schedule(self.now + delay, Arrival::Room { member: m, event });
        }
    }

    /// Runs the world for `span` of simulated time.
    pub fn run_for(&mut self, span: Duration) {
        let end = self.now + span;
        loop {
            self.step();
            let next = self.next_time().min(end);
            if self.now >= end {
                return;
            }
            // Always move on a little: timers that are due now were just run.
            self.now = next.max(self.now + Duration::from_micros(100));
        }
    }

    /// Runs until `done` holds, at most `limit` of simulated time.
    pub fn run_until(&mut self, limit: Duration, done: impl Fn(&mut World) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            self.run_for(Duration::from_millis(5));
            if done(self) {
                return true;
            }
        }
        false
    }

    /// Whether member `m` has reported `event` (by a predicate).
    pub fn saw(&self, m: usize, matches: impl Fn(&MediaEvent) -> bool) -> bool {
        self.members[m].events.iter().any(|(_, e)| matches(e))
    }

    /// The statistics of every remote voice member `m` receives.
    pub fn voice_stats(&mut self, m: usize) -> Vec<(String, TrackStats)> {
        self.members[m].core.voice_stats()
    }

    fn next_time(&self) -> Instant {
        let mut next = self.next_pull;
        for member in &self.members {
            next = next.min(member.core.poll_timeout());
        }
        for session in self.sessions.values() {
            next = next.min(session.timeout);
        }
        if let Some(((at, _), _)) = self.arrivals.first_key_value() {
            next = next.min(*at);
        }
        next
    }

    fn schedule(&mut self, at: Instant, arrival: Arrival) {
        self.sequence += 1;
        self.arrivals.insert((at, self.sequence), arrival);
    }

    /// Everything due at `now`, until nothing more is.
    fn step(&mut self) {
        let now = self.now;
        while let Some(entry) = self.arrivals.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Arrival::Datagram {
                    to_sfu: true,
                    member,
                    contents,
                } => self.sfu_receive(member, &contents),
                Arrival::Datagram {
                    to_sfu: false,
                    member,
                    contents,
                } => {
                    let sfu = self.sfu_addr;
                    self.members[member]
                        .core
                        .handle_datagram(now, sfu, &contents);
                }
                Arrival::Reply { member, id, result } => {
                    self.members[member]
                        .core
                        .handle_signal_reply(now, id, result);
                }
                Arrival::Room { member, event } => {
                    self.members[member].core.handle_room_event(now, event);
                }
            }
            self.drain();
        }
        for m in 0..self.members.len() {
            self.members[m].core.handle_timeout(now);
        }
        for session in self.sessions.values_mut() {
            let _ = session.rtc.handle_input(Input::Timeout(now));
        }
        if now >= self.next_pull {
            self.next_pull = now + OUTPUT_PERIOD;
            self.pull_voices();
        }
        self.drain();
    }

    /// What each member's output device would do: pull 10 ms of every remote voice it was handed.
    fn pull_voices(&mut self) {
        let at = wall_us(self.now);
        let mut period = [0.0f32; 480];
        for member in &mut self.members {
            while let Some(voice) = member.inbox.take() {
                member.voices.insert(voice.track_id.clone(), voice);
            }
            for (id, voice) in &mut member.voices {
                if voice.playout.is_closed() {
                    continue;
                }
                voice.playout.pull_at(at, &mut period);
                member
                    .heard
                    .entry(id.clone())
                    .or_default()
                    .extend_from_slice(&period);
            }
        }
    }

    /// Takes every output of the cores and the SFU.
    fn drain(&mut self) {
        let now = self.now;
        for m in 0..self.members.len() {
            while let Some(output) = self.members[m].core.poll_output() {
                match output {
                    CoreOutput::Transmit(t) => {
                        assert_eq!(t.destination, self.sfu_addr, "only the SFU is a peer");
                        let arrival = Arrival::Datagram {
                            to_sfu: true,
                            member: m,
                            contents: t.contents,
                        };
                        self.schedule(now + WIRE_DELAY, arrival);
                    }
                    CoreOutput::Signal { id, op } => self.bridge(m, id, op),
                    CoreOutput::Event(event) => self.members[m].events.push((now, event)),
                }
            }
        }
        let mut forwards = Vec::new();
        for (&m, session) in &mut self.sessions {
            loop {
                match session.rtc.poll_output() {
                    Ok(Output::Transmit(t)) => {
                        let member = self
                            .members
                            .iter()
                            .position(|x| x.addr == t.destination)
                            .expect("the SFU only answers members");
                        let arrival = Arrival::Datagram {
                            to_sfu: false,
                            member,
                            contents: t.contents.into(),
                        };
                        self.sequence += 1;
                        self.arrivals
                            .insert((now + WIRE_DELAY, self.sequence), arrival);
                    }
                    Ok(Output::Event(Event::MediaData(data))) => forwards.push((m, data)),
                    Ok(Output::Event(_)) => {}
                    Ok(Output::Timeout(t)) => {
                        session.timeout = t;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        let again = !forwards.is_empty();
        for (m, data) in forwards {
            self.forward(m, data);
        }
        if again {
            self.drain();
        }
    }

    fn sfu_receive(&mut self, member: usize, contents: &[u8]) {
        let source = self.members[member].addr;
        let Some(session) = self.sessions.get_mut(&member) else {
            return;
        };
        let input = Input::Receive(
            self.now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.sfu_addr,
                contents: contents.try_into().unwrap(),
            },
        );
        session.rtc.handle_input(input).unwrap();
    }

    /// A published frame reaches every subscriber of its track.
    fn forward(&mut self, from: usize, data: str0m::media::MediaData) {
        let mid = data.mid.to_string();
        self.arrivals_at_sfu
            .entry((from, mid.clone()))
            .or_default()
            .push(data.network_time);
        let track = format!("{}:{mid}", self.members[from].stream_id);
        for (_, session) in self.sessions.iter_mut().filter(|(m, _)| **m != from) {
            for (sub_mid, _) in session.subscribed.iter().filter(|(_, t)| *t == track) {
                let Some(writer) = session.rtc.writer(sub_mid.as_str().into()) else {
                    continue;
                };
                let Some(pt) = writer
                    .payload_params()
                    .find(|p| p.spec().codec == data.params.spec().codec)
                    .map(|p| p.pt())
                else {
                    continue;
                };
                writer
                    .write(pt, data.network_time, data.time, data.data.clone())
                    .unwrap();
            }
        }
    }

    /// The bridge's side of signaling.
    fn bridge(&mut self, m: usize, id: SignalId, op: Operation) {
        let mut delay = WIRE_DELAY * 2;
        let result = match op {
            Operation::Subscribe(_) | Operation::CloseMedia(_) => Ok(Reply::Done),
            Operation::GetRoom(_) => Ok(Reply::Room(Box::new(self.room.clone()))),
            Operation::ListStreams(_) => {
                delay += self.members[m].listing_delay;
                Ok(Reply::Streams(self.streams()))
            }
            Operation::SetSubscriptions { subscribe, .. } => {
                if let Some(session) = self.sessions.get_mut(&m) {
                    session.subscribed =
                        subscribe.into_iter().map(|s| (s.mid, s.track_id)).collect();
                }
                Ok(Reply::Done)
            }
            Operation::Negotiate {
                offer,
                publish,
                subscribe,
                ..
            } => {
                match std::mem::replace(&mut self.members[m].negotiation, NegotiationPolicy::Answer)
                {
                    NegotiationPolicy::FailOnce(error) => Err(error),
                    policy => {
                        if let NegotiationPolicy::Hold(hold) = policy {
                            delay = hold;
                        }
                        let stream_id = self.members[m].stream_id;
                        let tracks: Vec<(String, TrackInfo)> = publish
                            .into_iter()
                            .map(|t| {
                                let info = TrackInfo {
                                    track_id: format!("{stream_id}:{}", t.mid),
                                    kind: t.kind,
                                    key_id: t.key_id,
                                    frame_ms: t.frame_ms,
                                };
                                (t.mid, info)
                            })
                            .collect();
                        let subscribed =
                            subscribe.into_iter().map(|s| (s.mid, s.track_id)).collect();
                        let answer = self.answer(m, &offer, tracks.clone(), subscribed);
                        if !tracks.is_empty() {
                            self.announce(m, tracks);
                        }
                        answer.map(|answer| Reply::Answer { answer, stream_id })
                    }
                }
            }
            other => Err(ClientError::Invalid(format!(
                "the simulated bridge: {other:?}"
            ))),
        };
        let arrival = Arrival::Reply {
            member: m,
            id,
            result,
        };
        self.schedule(self.now + delay, arrival);
    }

    fn answer(
        &mut self,
        m: usize,
        offer: &str,
        published: Vec<(String, TrackInfo)>,
        subscribed: Vec<(String, String)>,
    ) -> Result<String, ClientError> {
        let sfu = self.sfu_addr;
        let now = self.now;
        let session = self.sessions.entry(m).or_insert_with(|| {
            let mut rtc = Rtc::builder()
                .set_ice_lite(true)
                .clear_codecs()
                .enable_opus(true, false)
                .enable_h264(true)
                .clear_extension_map()
                .set_extension(3, Extension::TransportSequenceNumber)
                .set_extension(4, Extension::RtpMid)
                .build(now);
            rtc.add_local_candidate(Candidate::host(sfu, "udp").unwrap());
            SfuSession {
                rtc,
                published: Vec::new(),
                subscribed: Vec::new(),
                timeout: now,
            }
        });
        let refused = |e: &dyn std::fmt::Display| {
            ClientError::Bridge(WireError::new(ErrorCode::Invalid, e.to_string()))
        };
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| refused(&e))?;
        let answer = session
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| refused(&e))?;
        session.published = published;
        session.subscribed = subscribed;
        Ok(answer.to_sdp_string())
    }

    /// Tells the other members about member `m`'s tracks.
    fn announce(&mut self, m: usize, tracks: Vec<(String, TrackInfo)>) {
        let stream = StreamInfo {
            stream_id: self.members[m].stream_id,
            user_id: self.members[m].identity.user_id().clone(),
            tracks: tracks.into_iter().map(|(_, t)| t).collect(),
        };
        for other in (0..self.members.len()).filter(|o| *o != m) {
            let event = RoomEvent::StreamUpdated {
                room_id: self.room.id.clone(),
                stream: stream.clone(),
            };
            self.schedule(
                self.now + WIRE_DELAY,
                Arrival::Room {
                    member: other,
                    event,
                },
            );
        }
    }

    fn streams(&self) -> Vec<StreamInfo> {
        self.sessions
            .iter()
            .filter(|(_, s)| !s.published.is_empty())
            .map(|(m, s)| StreamInfo {
                stream_id: self.members[*m].stream_id,
                user_id: self.members[*m].identity.user_id().clone(),
                tracks: s.published.iter().map(|(_, t)| t.clone()).collect(),
            })
            .collect()
    }
}
