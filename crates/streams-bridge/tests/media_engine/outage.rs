//! A 30 s outage of one member's network, longer than the bridge keeps a dropped connection: the
//! publisher's signaling goes through a proxy that resets it and refuses new connections, and its
//! media through a relay that drops everything, both ways, for 30 s. Nobody does anything: when the
//! path returns, the publisher's client reconnects (not as a resume: the grace has passed), its
//! engine rejoins and publishes its tone again, and the listener hears it within 2 s.
use std::sync::Arc;
use std::time::{Duration, Instant};

use streams_client::media::events::{MediaEvent, RejoinReason};
use streams_proto::Identity;
use streams_testkit::Direction;
use streams_testkit::udp_relay::{Impairment, UdpRelay};
use streams_testkit::ws_proxy::{Message, Verdict, WsProxy};

use super::common::*;

/// Every packet lost.
fn cut() -> Impairment {
    Impairment {
        drop_percent: 100.0,
        media_only: false,
        ..Impairment::default()
    }
}

#[test]
fn after_a_30_s_outage_the_publisher_rejoins_by_itself_and_is_heard_within_2_s() {
    let _serial = super::one_at_a_time();
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let bridge = bridge_with_users(&[&alice, &bob]);
    let url = bridge.handle.url();
    let media = bridge.handle.media_addr();
    // Alice's media goes through the relay: the answers she is given name it instead of the SFU.
    let relay = UdpRelay::start(media, 0x07a6e).unwrap();
    let (from, to) = (
        format!("{} {}", media.ip(), media.port()),
        format!("{} {}", relay.addr().ip(), relay.addr().port()),
    );
    let proxy = WsProxy::start(&url).unwrap();
    proxy.set_rule(Some(Arc::new(
        move |direction, message: &Message| match message {
            Message::Text(text) if direction == Direction::ToClient && text.contains(&from) => {
                Verdict::Replace(Message::text(text.replace(&from, &to)))
            }
            _ => Verdict::Pass,
        },
    )));
    let (a, b) = (connect(&proxy.url(), &alice), connect(&url, &bob));
    let room = create_room(&b, "outage", &[alice.user_id()]);
    let super::TonePair {
        listener: bobs,
        publisher: alices,
        mut mixer,
    } = super::tone_pair(&url, (&b, &bob), (&a, &alice), &room.id);
    let mut voiced: Vec<Instant> = Vec::new();
    super::play_voiced(&mut mixer, &mut voiced, Duration::from_secs(30), |v| {
        v.len() >= 100
    });
    assert!(
        relay.counts(Direction::ToServer).media > 0,
        "Alice's media takes the relay"
    );

    relay.impair(Direction::ToServer, cut());
    relay.impair(Direction::ToClient, cut());
    proxy.set_refusing(true);
    proxy.reset();
    super::play_voiced(&mut mixer, &mut voiced, Duration::from_secs(30), |_| false);
    relay.impair(Direction::ToServer, Impairment::default());
    relay.impair(Direction::ToClient, Impairment::default());
    proxy.set_refusing(false);
    let back = Instant::now();
    super::play_voiced(&mut mixer, &mut voiced, Duration::from_secs(20), |v| {
        v.iter().filter(|at| **at > back).count() >= 50
    });
    let again = voiced
        .iter()
        .find(|at| **at > back)
        .map(|at| at.duration_since(back))
        .expect("Bob hears Alice again after the outage");
    let events: Vec<MediaEvent> = alices.events().try_iter().collect();
    let reasons: Vec<&RejoinReason> = events
        .iter()
        .filter_map(|e| match e {
            MediaEvent::Reconnecting { reason } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 1, "one rejoin: {events:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, MediaEvent::Rejoined { .. })),
        "{events:?}"
    );
    drop(bobs);
    println!(
        "30 s outage ({:?}): Bob hears Alice again {:.2} s after the path is back",
        reasons[0],
        again.as_secs_f64()
    );
    assert!(again <= Duration::from_secs(2), "{again:?}");
    let heard_after = voiced.iter().filter(|at| **at > back).count();
    assert!(
        heard_after >= 50,
        "the tone keeps playing after the rejoin: {heard_after} periods"
    );
}
