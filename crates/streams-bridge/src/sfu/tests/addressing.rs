//! Who the core talks to: behind a 1:1 NAT its sessions announce the public address, datagrams
//! arrive at the private one it is bound to, and media flows; datagrams from strangers are dropped.
use std::net::SocketAddr;
use std::time::Duration;

use str0m::media::MediaKind;

use super::{SFU, World};

#[test]
fn behind_a_one_to_one_nat_sessions_announce_the_public_address_and_media_flows() {
    let public = "203.0.113.7".parse().unwrap();
    let mut world = World::announcing(&[public]);
    let alice = world.join(&[MediaKind::Audio], &[], &[]);
    let voice = world.track(alice, 0);
    let bob = world.join(&[], &[MediaKind::Audio], &[voice]);
    let candidates: Vec<&str> = world.members[bob]
        .answer
        .lines()
        .filter(|l| l.starts_with("a=candidate"))
        .collect();
    assert_eq!(candidates.len(), 1, "{candidates:?}");
    assert!(candidates[0].contains("203.0.113.7 7000"), "{candidates:?}");
    assert!(!world.members[bob].answer.contains(&SFU.ip().to_string()));
    world.connect();
    world.talk(alice, Duration::from_secs(1));
    let heard = world.members[bob].received.len();
    assert!(heard >= 45, "Bob received {heard} frames through the NAT");
}

#[test]
fn datagrams_from_strangers_are_dropped() {
    let mut world = World::new();
    world.join(&[MediaKind::Audio], &[], &[]);
    let stranger = SocketAddr::from(([10, 9, 9, 9], 4000));
    let now = world.now;
    // An RTP-looking packet, a DTLS-looking one, a STUN-looking one with no valid credentials,
    // an empty datagram and noise: none reaches a session or makes the core send anything.
    let mut rtp = vec![0x80, 111, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7];
    rtp.extend([0u8; 40]);
    let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    stun.extend([7u8; 12]);
    for datagram in [
        rtp,
        vec![22, 254, 253, 0, 0],
        stun,
        vec![],
        vec![0xFF; 1500],
    ] {
        world
            .sfu
            .handle_datagram(now, stranger, Some(SFU.ip()), &datagram);
    }
    world.sfu.handle_timeout(now);
    assert!(world.sfu.by_source.is_empty());
    while let Some(t) = world.sfu.poll_transmit() {
        assert_ne!(t.destination, stranger, "the core answered a stranger");
    }
}
