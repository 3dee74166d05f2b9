//! The SFU core on simulated time: members are str0m peers with the clients' media profile (real
//! ICE, DTLS-SRTP and RTP) exchanging datagrams with the core in memory, one millisecond apart.
//! `addressing.rs`: the core behind a 1:1 NAT, and datagrams from strangers.
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use streams_proto::wire::{ErrorCode, TrackAnnounce, TrackKind, TrackSubscription};
use streams_proto::{Identity, MediaId, RoomId, StreamId, TrackId};

use super::{KEYFRAME_REQUEST_GAP, MAX_SUBSCRIPTIONS, MediaAddresses, SfuCore};

mod addressing;

const STEP: Duration = Duration::from_millis(1);
const SFU: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 100)),
    7000,
);

/// A member's peer connection and what it received.
struct Member {
    rtc: Rtc,
    addr: SocketAddr,
    conn: u64,
    /// Its sending m-lines (audio, then video if any).
    sending: Vec<Mid>,
    /// Its receiving m-lines.
    receiving: Vec<Mid>,
    /// Frames received: (m-line, payload).
    received: Vec<(Mid, Vec<u8>)>,
    stream: StreamId,
    /// The SFU's SDP answer to its offer.
    answer: String,
}

struct World {
    now: Instant,
    /// Steps of [`STEP`] run so far.
    tick: u64,
    sfu: SfuCore,
    /// Where members send the SFU's datagrams (its announced address), and where the SFU's
    /// replies come from as they see them.
    public: SocketAddr,
    members: Vec<Member>,
    room: RoomId,
    /// Every Nth RTP packet the SFU sends to this address is lost (none when `None`).
    lossy_downlink: Option<(SocketAddr, u64)>,
    /// RTP packets sent to the lossy address so far.
    downlink_packets: u64,
}

/// Whether an SRTP datagram carries RTP (not RTCP, RFC 5761: RTCP types 192 to 223).
fn is_rtp(datagram: &[u8]) -> bool {
    matches!(datagram, [128..=191, second, ..] if !(192..=223).contains(second))
}

fn media_id(mid: Mid) -> MediaId {
    streams_rtc::mid::to_media_id(mid).unwrap()
}

impl World {
    fn new() -> World {
        World::announcing(&[])
    }

    /// A world whose SFU, bound at [`SFU`], announces `public` (a 1:1 NAT between it and the
    /// members rewrites `public` to [`SFU`] and back).
    fn announcing(public: &[IpAddr]) -> World {
        streams_rtc::dtls::prepare();
        let now = Instant::now();
        let addresses = MediaAddresses::new(SFU, public, &[]).unwrap();
        World {
            now,
            tick: 0,
            public: addresses.announced()[0],
            sfu: SfuCore::new(now, addresses),
            members: Vec::new(),
            room: RoomId::random(),
            lossy_downlink: None,
            downlink_packets: 0,
        }
    }

    /// A member who sends `send` and receives `receive` (kinds), negotiated with `subscribe`
    /// (which of the remote tracks its receiving m-lines carry, in order).
    fn join(&mut self, send: &[MediaKind], receive: &[MediaKind], subscribe: &[TrackId]) -> usize {
        let index = self.members.len();
        let addr = SocketAddr::from(([10, 0, 0, 1 + index as u8], 5000));
        let mut rtc = streams_rtc::profile().unwrap().build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut api = rtc.sdp_api();
        let sending: Vec<Mid> = send
            .iter()
            .map(|kind| api.add_media(*kind, Direction::SendOnly, None, None, None))
            .collect();
        let receiving: Vec<Mid> = receive
            .iter()
            .map(|kind| api.add_media(*kind, Direction::RecvOnly, None, None, None))
            .collect();
        let (offer, pending) = api.apply().unwrap();
        let publish = sending
            .iter()
            .zip(send)
            .map(|(mid, kind)| TrackAnnounce {
                mid: media_id(*mid),
                kind: if *kind == MediaKind::Audio {
                    TrackKind::Audio
                } else {
                    TrackKind::Video
                },
                key_id: 1,
                frame_ms: 20,
            })
            .collect();
        let subscriptions = receiving
            .iter()
            .zip(subscribe)
            .map(|(mid, track)| TrackSubscription {
                mid: media_id(*mid),
                track_id: *track,
            })
            .collect();
        let user = Identity::generate().user_id().clone();
        let conn = index as u64 + 1;
        let negotiated = self
            .sfu
            .negotiate(
                self.now,
                conn,
                self.room.clone(),
                user,
                &offer.to_sdp_string(),
                publish,
                subscriptions,
            )
            .unwrap();
        let answer = SdpAnswer::from_sdp_string(&negotiated.answer).unwrap();
        rtc.sdp_api().accept_answer(pending, answer).unwrap();
        self.members.push(Member {
            rtc,
            addr,
            conn,
            sending,
            receiving,
            received: Vec::new(),
            stream: negotiated.stream.stream_id,
            answer: negotiated.answer,
        });
        index
    }

    fn track(&self, member: usize, sending: usize) -> TrackId {
        let m = &self.members[member];
        TrackId::new(m.stream, media_id(m.sending[sending]))
    }

    fn connected(&self) -> bool {
        self.members.iter().all(|m| m.rtc.is_connected())
    }

    /// Runs `span` of simulated time; `each` runs every step (to send media).
    fn run(&mut self, span: Duration, mut each: impl FnMut(&mut World)) {
        let end = self.now + span;
        while self.now < end {
            self.now += STEP;
            self.tick += 1;
            each(self);
            self.exchange();
        }
    }

    /// Delivers every datagram due, both ways, until nobody has more to say.
    fn exchange(&mut self) {
        let now = self.now;
        for _ in 0..16 {
            let mut moved = false;
            for m in &mut self.members {
                m.rtc.handle_input(Input::Timeout(now)).unwrap();
                loop {
                    match m.rtc.poll_output().unwrap() {
                        Output::Timeout(_) => break,
                        Output::Transmit(t) => {
                            assert_eq!(t.destination, self.public, "sent where announced");
                            self.sfu
                                .handle_datagram(now, m.addr, Some(SFU.ip()), &t.contents);
                            moved = true;
                        }
                        Output::Event(Event::MediaData(data)) => {
                            m.received.push((data.mid, data.data.to_vec()));
                        }
                        Output::Event(_) => {}
                    }
                }
            }
            self.sfu.handle_timeout(now);
            while let Some(t) = self.sfu.poll_transmit() {
                moved = true;
                if let Some((addr, every)) = self.lossy_downlink
                    && addr == t.destination
                    && is_rtp(&t.contents)
                {
                    self.downlink_packets += 1;
                    if self.downlink_packets.is_multiple_of(every) {
                        continue;
                    }
                }
                let Some(m) = self.members.iter_mut().find(|m| m.addr == t.destination) else {
                    continue;
                };
                let input = Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source: self.public,
                        destination: m.addr,
                        contents: t.contents.as_slice().try_into().unwrap(),
                    },
                );
                m.rtc.handle_input(input).unwrap();
            }
            if !moved {
                return;
            }
        }
    }

    /// Member `m` sends frame `n` on its sending m-line `line` (audio every 20 ms, 48 kHz).
    fn send(&mut self, m: usize, line: usize, n: u64, payload: &[u8]) {
        let now = self.now;
        let member = &mut self.members[m];
        let mid = member.sending[line];
        let writer = member.rtc.writer(mid).unwrap();
        let pt = writer.payload_params().next().unwrap().pt();
        let (time, rate) = if line == 0 {
            (n * 960, Frequency::FORTY_EIGHT_KHZ)
        } else {
            (n * 3000, Frequency::NINETY_KHZ)
        };
        writer
            .write(pt, now, MediaTime::new(time, rate), payload.to_vec())
            .unwrap();
    }

    fn connect(&mut self) {
        self.run(Duration::from_millis(500), |_| {});
        assert!(self.connected(), "every member is connected");
    }

    /// Runs `span` while member `m` sends a voice frame every 20 ms.
    fn talk(&mut self, m: usize, span: Duration) {
        let mut n = 0;
        self.run(span, |world| {
            if world.tick % 20 == 0 {
                n += 1;
                world.send(m, 0, n, &[0xAB; 80]);
            }
        });
    }
}

#[test]
fn a_published_track_reaches_its_subscribers_and_nobody_else() {
    let mut world = World::new();
    let alice = world.join(&[MediaKind::Audio], &[], &[]);
    let voice = world.track(alice, 0);
    let bob = world.join(&[], &[MediaKind::Audio], &[voice]);
    let carol = world.join(&[], &[MediaKind::Audio], &[]);
    world.connect();
    world.talk(alice, Duration::from_secs(1));
    let bobs = &world.members[bob].received;
    assert!(bobs.len() >= 45, "Bob received {} frames", bobs.len());
    assert!(
        bobs.iter()
            .all(|(mid, data)| *mid == world.members[bob].receiving[0] && data == &[0xAB; 80])
    );
    assert!(
        world.members[carol].received.is_empty(),
        "Carol subscribed to nothing"
    );
    assert!(
        world.members[alice].received.is_empty(),
        "nothing comes back to its sender"
    );
    assert_eq!(world.sfu.routes.leg_count(), 1);
}

#[test]
fn subscriptions_change_what_flows_and_closing_a_publisher_ends_its_routes() {
    let mut world = World::new();
    let alice = world.join(&[MediaKind::Audio], &[], &[]);
    let voice = world.track(alice, 0);
    let bob = world.join(&[], &[MediaKind::Audio], &[]);
    world.connect();
    world.talk(alice, Duration::from_millis(300));
    assert!(world.members[bob].received.is_empty());

    let bob_conn = world.members[bob].conn;
    let line = media_id(world.members[bob].receiving[0]);
    let subscribe = vec![TrackSubscription {
        mid: line,
        track_id: voice,
    }];
    world
        .sfu
        .set_subscriptions(bob_conn, &world.room, subscribe)
        .unwrap();
    world.talk(alice, Duration::from_millis(500));
    let heard = world.members[bob].received.len();
    assert!(heard >= 20, "Bob hears Alice once subscribed: {heard}");

    let closed = world.sfu.close_conn(world.members[alice].conn, None);
    assert_eq!(closed, vec![(world.room.clone(), voice.stream)]);
    assert_eq!(world.sfu.routes.leg_count(), 0);
    let bob_session = world.sfu.by_stream[&world.members[bob].stream];
    assert!(world.sfu.sessions[bob_session].subscribed.is_empty());
    assert!(world.sfu.streams(&world.room).is_empty());
    // Her peer goes on sending into a session that is gone: nothing reaches Bob.
    world.talk(alice, Duration::from_millis(300));
    assert_eq!(world.members[bob].received.len(), heard);
}

#[test]
fn only_tracks_published_in_the_room_can_be_subscribed() {
    let mut world = World::new();
    let alice = world.join(&[MediaKind::Audio], &[], &[]);
    let voice = world.track(alice, 0);
    let line = MediaId::parse("0").unwrap();
    let bob = world.join(&[], &[MediaKind::Audio], &[]);
    let bob_conn = world.members[bob].conn;
    let unknown = TrackId::new(StreamId(999), voice.mid);
    let refused = world
        .sfu
        .set_subscriptions(
            bob_conn,
            &world.room,
            vec![TrackSubscription {
                mid: line,
                track_id: unknown,
            }],
        )
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::NotFound);
    // The same track, asked for from another room, is not found there either.
    let elsewhere = RoomId::random();
    let refused = world
        .sfu
        .set_subscriptions(
            bob_conn,
            &elsewhere,
            vec![TrackSubscription {
                mid: line,
                track_id: voice,
            }],
        )
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::NotFound);
    let too_many = vec![
        TrackSubscription {
            mid: line,
            track_id: voice
        };
        MAX_SUBSCRIPTIONS + 1
    ];
    let refused = world
        .sfu
        .set_subscriptions(bob_conn, &world.room, too_many)
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::Invalid);
    // One m-line cannot carry two tracks.
    let other = world.join(&[MediaKind::Audio], &[], &[]);
    let second = world.track(other, 0);
    let twice = vec![
        TrackSubscription {
            mid: line,
            track_id: voice,
        },
        TrackSubscription {
            mid: line,
            track_id: second,
        },
    ];
    let refused = world
        .sfu
        .set_subscriptions(bob_conn, &world.room, twice)
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::Invalid);
    assert_eq!(world.sfu.routes.leg_count(), 0);
    // A session that does not exist yet is an error, not a new session.
    let refused = world
        .sfu
        .set_subscriptions(77, &world.room, vec![])
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::Invalid);
    assert_eq!(world.sfu.session_count(), 3);
}

#[test]
fn keyframe_requests_reach_the_publisher_at_most_once_per_gap() {
    let mut world = World::new();
    let alice = world.join(&[MediaKind::Audio, MediaKind::Video], &[], &[]);
    let camera = world.track(alice, 1);
    let bob = world.join(&[], &[MediaKind::Video], &[camera]);
    world.connect();
    let mut n = 0;
    let mut frame = vec![0, 0, 0, 1, 0x65];
    frame.resize(400, 0x5A);
    frame.push(0x80);
    let mut send_video = |world: &mut World, span: Duration| {
        world.run(span, |world| {
            if world.tick % 33 == 0 {
                n += 1;
                world.send(alice, 1, n, &frame);
            }
        });
    };
    send_video(&mut world, Duration::from_millis(300));
    assert!(!world.members[bob].received.is_empty(), "the video flows");
    // Congestion feedback runs on video m-lines only, on both ends.
    let twcc = |rtc: &str0m::Rtc, mid: Mid| {
        let extmap = rtc.media(mid).unwrap().remote_extmap();
        extmap
            .id_of(str0m::rtp::Extension::TransportSequenceNumber)
            .is_some()
    };
    let (voice, video) = (
        world.members[alice].sending[0],
        world.members[alice].sending[1],
    );
    assert!(!twcc(&world.members[alice].rtc, voice) && twcc(&world.members[alice].rtc, video));
    let alice_session = world.sfu.by_stream[&world.members[alice].stream];
    let sfu_rtc = &world.sfu.sessions[alice_session].rtc;
    assert!(!twcc(sfu_rtc, voice) && twcc(sfu_rtc, video));
    let ask = |world: &mut World| {
        let mid = world.members[bob].receiving[0];
        let mut writer = world.members[bob].rtc.writer(mid).unwrap();
        writer
            .request_keyframe(None, KeyframeRequestKind::Pli)
            .unwrap();
    };
    ask(&mut world);
    send_video(&mut world, Duration::from_millis(20));
    ask(&mut world);
    send_video(&mut world, Duration::from_millis(20));
    assert_eq!(
        world.sfu.keyframe_requests_forwarded(),
        1,
        "two requests 20 ms apart are one"
    );
    send_video(&mut world, KEYFRAME_REQUEST_GAP);
    ask(&mut world);
    send_video(&mut world, Duration::from_millis(50));
    assert_eq!(world.sfu.keyframe_requests_forwarded(), 2);
}

#[test]
fn video_lost_on_the_way_to_a_subscriber_is_resent_by_the_sfu() {
    let mut world = World::new();
    let alice = world.join(&[MediaKind::Audio, MediaKind::Video], &[], &[]);
    let camera = world.track(alice, 1);
    let bob = world.join(&[], &[MediaKind::Video], &[camera]);
    world.connect();
    // Every 9th packet to Bob is lost; each frame spans several packets, so most frames lose one.
    world.lossy_downlink = Some((world.members[bob].addr, 9));
    let frames: Vec<Vec<u8>> = (0..30u8)
        .map(|n| {
            let mut frame = vec![0, 0, 0, 1, 0x65];
            frame.extend((0..4000).map(|i| (i as u8) ^ n | 1));
            frame
        })
        .collect();
    let mut n = 0;
    world.run(Duration::from_secs(1), |world| {
        if world.tick % 33 == 0 && n < frames.len() {
            world.send(alice, 1, n as u64 + 1, &frames[n]);
            n += 1;
        }
    });
    world.lossy_downlink = None;
    world.run(Duration::from_millis(500), |_| {});
    assert!(
        world.downlink_packets > 90,
        "{} packets",
        world.downlink_packets
    );
    let received: Vec<&Vec<u8>> = world.members[bob].received.iter().map(|(_, f)| f).collect();
    assert_eq!(
        received,
        frames.iter().collect::<Vec<_>>(),
        "every frame arrives whole, in order"
    );
}

#[test]
fn an_m_line_moved_to_another_publisher_carries_it_at_once() {
    let mut world = World::new();
    let alice = world.join(&[MediaKind::Audio], &[], &[]);
    let carol = world.join(&[MediaKind::Audio], &[], &[]);
    let (alices, carols) = (world.track(alice, 0), world.track(carol, 0));
    let bob = world.join(&[], &[MediaKind::Audio], &[alices]);
    world.connect();
    let both_talk = |world: &mut World, span: Duration| {
        let mut n = 0;
        world.run(span, |world| {
            if world.tick % 20 == 0 {
                n += 1;
                world.send(alice, 0, n, &[0xA1; 80]);
                world.send(carol, 0, n, &[0xC0; 80]);
            }
        });
    };
    both_talk(&mut world, Duration::from_millis(400));
    let from_alice = world.members[bob].received.len();
    assert!(from_alice >= 15, "{from_alice} frames from Alice");
    let line = media_id(world.members[bob].receiving[0]);
    let subscribe = vec![TrackSubscription {
        mid: line,
        track_id: carols,
    }];
    let bob_conn = world.members[bob].conn;
    world
        .sfu
        .set_subscriptions(bob_conn, &world.room, subscribe)
        .unwrap();
    both_talk(&mut world, Duration::from_millis(400));
    let after: Vec<&[u8]> = world.members[bob].received[from_alice..]
        .iter()
        .map(|(_, f)| f.as_slice())
        .collect();
    // Bob's stream goes on without a gap: Carol's frames from the first one sent after the move.
    assert!(after.len() >= 18, "{} frames after the move", after.len());
    assert!(after.iter().all(|f| *f == [0xC0; 80]), "only Carol now");
}

#[test]
fn sessions_whose_peers_vanish_end_on_the_core_s_own_deadlines_and_their_streams_are_lost() {
    let mut world = World::new();
    let publisher = world.join(&[MediaKind::Audio], &[], &[]);
    let track = world.track(publisher, 0);
    world.join(&[], &[MediaKind::Audio], &[track]);
    world.connect();
    assert_eq!(world.sfu.routes.leg_count(), 1);
    // Both peers vanish. The core is driven only at the deadlines it asks for: each is in the
    // future (no busy loop), and they come until ICE gives up on both sessions.
    let mut now = world.now;
    let mut wake_ups = 0;
    while world.sfu.session_count() > 0 {
        let at = world
            .sfu
            .poll_timeout()
            .expect("live sessions have a deadline");
        assert!(at >= now, "a deadline in the past");
        now = at;
        world.sfu.handle_timeout(now);
        while world.sfu.poll_transmit().is_some() {}
        wake_ups += 1;
        assert!(wake_ups < 2_000, "{wake_ups} wake-ups for an idle SFU");
        assert!(
            now - world.now < Duration::from_secs(120),
            "the sessions outlived their peers by two minutes"
        );
    }
    assert_eq!(world.sfu.routes.leg_count(), 0);
    assert!(world.sfu.by_source.is_empty());
    assert_eq!(world.sfu.poll_timeout(), None);
    // The publisher's stream is handed out once, for the room to be told; the subscriber
    // published nothing.
    let publisher_stream = world.members[publisher].stream;
    assert_eq!(
        world.sfu.poll_lost(),
        Some((world.room.clone(), publisher_stream))
    );
    assert_eq!(world.sfu.poll_lost(), None);
}

#[test]
fn sessions_closed_by_signaling_are_not_reported_lost() {
    let mut world = World::new();
    let publisher = world.join(&[MediaKind::Audio], &[], &[]);
    world.connect();
    let conn = world.members[publisher].conn;
    let closed = world.sfu.close_conn(conn, None);
    assert_eq!(closed.len(), 1, "the caller is told instead");
    world.sfu.handle_timeout(world.now);
    assert_eq!(world.sfu.poll_lost(), None);
}
