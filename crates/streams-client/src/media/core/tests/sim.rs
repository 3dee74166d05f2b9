//! A simulated world for the core: two members' cores, the bridge's own SFU core
//! (`streams_bridge::sfu::SfuCore`: str0m sessions in ICE-lite answer mode with real ICE, DTLS-SRTP
//! and RTP, and its routing of each published track to its subscribers), a bridge that answers
//! signaling, and a network that carries datagrams with a fixed delay, all on simulated time. Tests
//! hold or refuse signaling replies and rotate keys.
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use streams_bridge::sfu::{MediaAddresses, SfuCore};
use streams_proto::epoch::Membership;
use streams_proto::wire::{ErrorCode, StreamInfo, WireError};
use streams_proto::{
    ContextId, EpochRecord, Identity, MediaId, Policy, PrivateMeta, RoomRecord, SignedMeta,
    TrackId, UserId,
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
    /// Samples pulled from each remote voice (by track id).
    pub heard: HashMap<TrackId, Vec<f32>>,
    /// Where the core hands its remote voices, and the voices taken from there.
    inbox: VoiceInbox,
    voices: HashMap<TrackId, Box<HandedVoice>>,
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
    sfu: SfuCore,
    /// Keyed by (time, sequence) so equal times keep their order.
    arrivals: BTreeMap<(Instant, u64), Arrival>,
    sequence: u64,
    next_pull: Instant,
    manager: Identity,
    room: Room,
    /// When each member's published frames reached the SFU, by (member, mid).
    pub arrivals_at_sfu: HashMap<(usize, MediaId), Vec<Instant>>,
    /// The room was deleted (its events lost): the bridge answers "no such room".
    pub room_gone: bool,
    /// Addresses members moved away from: what the SFU sends there is lost.
    retired: Vec<SocketAddr>,
    /// Fresh sockets the cores asked for ([`CoreOutput::Rebind`]).
    pub rebound: usize,
    /// Datagrams the SFU sent to a retired address.
    pub lost_to_old_addresses: u64,
    /// A member whose path is cut (every datagram to or from it lost) until then.
    cut: Option<(usize, Instant)>,
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
                    heard: HashMap::new(),
                    inbox,
                    voices: HashMap::new(),
                }
            })
            .collect();
        let sfu_addr = SocketAddr::from(([10, 0, 0, 100], 7000));
        // Recorded, so that each frame the SFU forwards is seen with the time it arrived.
        let addresses = MediaAddresses::new(sfu_addr, &[], &[]).expect("a bound address");
        let mut sfu = SfuCore::new(now, addresses);
        sfu.set_recorded(room.id.clone(), true);
        World {
            now,
            members,
            sfu_addr,
            sfu,
            arrivals: BTreeMap::new(),
            sequence: 0,
            next_pull: now,
            manager: alice,
            room,
            arrivals_at_sfu: HashMap::new(),
            room_gone: false,
            retired: Vec::new(),
            rebound: 0,
            lost_to_old_addresses: 0,
            cut: None,
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

    /// The bridge forgets member `m`'s media session (it restarted, or the grace of a dropped
    /// connection passed): the session ends, the others hear its stream is gone, and `m`'s
    /// signaling comes back as a fresh connection.
    pub fn forget_session(&mut self, m: usize) {
        for (room_id, stream_id) in self.sfu.close_conn(m as u64, Some(&self.room.id)) {
            for other in (0..self.members.len()).filter(|o| *o != m) {
                let event = RoomEvent::StreamUnpublished {
                    room_id: room_id.clone(),
                    stream_id,
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
        self.resync(m, false);
    }

    /// Member `m`'s address changes to `to` (its driver saw a new route and bound there): from
    /// now on what it sends comes from `to`, and what the SFU sends to the old address is lost.
    pub fn move_member(&mut self, m: usize, to: SocketAddr) {
        let from = std::mem::replace(&mut self.members[m].addr, to);
        self.retired.push(from);
        self.members[m].core.handle_local_address(self.now, to);
        self.drain();
    }

    /// Member `m`'s NAT maps it to a new public address `to` (a rebinding): what it sends reaches
    /// the SFU from `to`, what the SFU sends to the old mapping is lost, and its own local address
    /// (all its core knows) stays the same.
    pub fn rebind_nat(&mut self, m: usize, to: SocketAddr) {
        let from = std::mem::replace(&mut self.members[m].addr, to);
        self.retired.push(from);
    }

    /// Member `m`'s media path is cut for `span` from now: every datagram to or from it is lost.
    pub fn cut_path(&mut self, m: usize, span: Duration) {
        self.cut = Some((m, self.now + span));
    }

    fn is_cut(&self, m: usize) -> bool {
        self.cut
            .is_some_and(|(member, until)| member == m && self.now < until)
    }

    /// Member `m`'s signaling comes back after a drop, as the old connection (`resumed`) or not.
    pub fn resync(&mut self, m: usize, resumed: bool) {
        let event = RoomEvent::Resync { resumed };
        self.schedule(self.now + WIRE_DELAY, Arrival::Room { member: m, event });
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
    pub fn voice_stats(&mut self, m: usize) -> Vec<(TrackId, TrackStats)> {
        self.members[m].core.voice_stats()
    }

    fn next_time(&self) -> Instant {
        let mut next = self.next_pull;
        for member in &self.members {
            next = next.min(member.core.poll_timeout());
        }
        if let Some(at) = self.sfu.poll_timeout() {
            next = next.min(at);
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
                } => {
                    let source = self.members[member].addr;
                    let local = Some(self.sfu_addr.ip());
                    self.sfu.handle_datagram(now, source, local, &contents);
                }
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
                member.voices.insert(voice.track_id, voice);
            }
            for (id, voice) in &mut member.voices {
                if voice.playout.is_closed() {
                    continue;
                }
                voice.playout.pull_at(at, &mut period);
                member
                    .heard
                    .entry(*id)
                    .or_default()
                    .extend_from_slice(&period);
            }
        }
    }

    /// Takes every output of the cores and the SFU.
    fn drain(&mut self) {
        let now = self.now;
        let mut rebinding = Vec::new();
        for m in 0..self.members.len() {
            while let Some(output) = self.members[m].core.poll_output() {
                match output {
                    // A fresh socket: the next port, and a fresh NAT mapping with it.
                    CoreOutput::Rebind => rebinding.push(m),
                    CoreOutput::Transmit(t) => {
                        assert_eq!(t.destination, self.sfu_addr, "only the SFU is a peer");
                        if self.is_cut(m) {
                            continue;
                        }
                        let arrival = Arrival::Datagram {
                            to_sfu: true,
                            member: m,
                            contents: t.contents,
                        };
                        self.schedule(now + WIRE_DELAY, arrival);
                    }
                    CoreOutput::ToTurn(t) => panic!("no TURN server was handed out: {t:?}"),
                    CoreOutput::Signal { id, op } => self.bridge(m, id, op),
                    CoreOutput::Event(event) => self.members[m].events.push((now, event)),
                }
            }
        }
        self.sfu.handle_timeout(now);
        while let Some(t) = self.sfu.poll_transmit() {
            let Some(member) = self.members.iter().position(|x| x.addr == t.destination) else {
                assert!(
                    self.retired.contains(&t.destination),
                    "the SFU only answers members"
                );
                self.lost_to_old_addresses += 1;
                continue;
            };
            if self.is_cut(member) {
                continue;
            }
            let arrival = Arrival::Datagram {
                to_sfu: false,
                member,
                contents: t.contents,
            };
            self.schedule(now + WIRE_DELAY, arrival);
        }
        while let Some(frame) = self.sfu.poll_recorded() {
            if let Some(member) = self.member_of(&frame.user) {
                self.arrivals_at_sfu
                    .entry((member, frame.track.mid))
                    .or_default()
                    .push(frame.arrived);
            }
        }
        for m in rebinding {
            let old = self.members[m].addr;
            self.rebound += 1;
            self.move_member(m, SocketAddr::new(old.ip(), old.port() + 1));
        }
    }

    fn member_of(&self, user: &UserId) -> Option<usize> {
        self.members
            .iter()
            .position(|x| x.identity.user_id() == user)
    }

    /// The bridge's side of signaling: the SFU core applies negotiations and subscriptions.
    fn bridge(&mut self, m: usize, id: SignalId, op: Operation) {
        let mut delay = WIRE_DELAY * 2;
        let conn = m as u64;
        let result = match op {
            Operation::Subscribe(_) => Ok(Reply::Done),
            // No TURN on the simulated network.
            Operation::TurnServers => Ok(Reply::TurnServers(Vec::new())),
            Operation::CloseMedia(_) => {
                // As the bridge does: the session ends and the others hear its stream is gone.
                for (room_id, stream_id) in self.sfu.close_conn(conn, Some(&self.room.id)) {
                    for other in (0..self.members.len()).filter(|o| *o != m) {
                        let event = RoomEvent::StreamUnpublished {
                            room_id: room_id.clone(),
                            stream_id,
                        };
                        let arrival = Arrival::Room {
                            member: other,
                            event,
                        };
                        self.schedule(self.now + WIRE_DELAY, arrival);
                    }
                }
                Ok(Reply::Done)
            }
            Operation::GetRoom(_) | Operation::ListStreams(_) if self.room_gone => Err(
                ClientError::Bridge(WireError::new(ErrorCode::NotFound, "no such room")),
            ),
            Operation::GetRoom(_) => Ok(Reply::Room(Box::new(self.room.clone()))),
            Operation::ListStreams(_) => {
                delay += self.members[m].listing_delay;
                Ok(Reply::Streams(self.sfu.streams(&self.room.id)))
            }
            Operation::SetSubscriptions { subscribe, .. } => self
                .sfu
                .set_subscriptions(conn, &self.room.id, subscribe)
                .map(|()| Reply::Done)
                .map_err(ClientError::Bridge),
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
                        let user = self.members[m].identity.user_id().clone();
                        let room = self.room.id.clone();
                        let negotiated = self
                            .sfu
                            .negotiate(self.now, conn, room, user, &offer, publish, subscribe)
                            .map_err(ClientError::Bridge);
                        negotiated.map(|negotiated| {
                            let stream_id = negotiated.stream.stream_id;
                            if !negotiated.stream.tracks.is_empty() {
                                self.announce(m, negotiated.stream);
                            }
                            Reply::Answer {
                                answer: negotiated.answer,
                                stream_id,
                            }
                        })
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

    /// Tells the other members about member `m`'s stream.
    fn announce(&mut self, m: usize, stream: StreamInfo) {
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
}
