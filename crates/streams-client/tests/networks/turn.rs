//! Players who can reach nothing of the bridge's media — their UDP is dropped, and the bridge has
//! no media over TCP — but may reach a TURN server: coturn (Debian's `coturn`), on the router
//! between them and the bridge, with the TURN REST API secret the bridge shares
//! (`--use-auth-secret`). The router forwards only TCP (signaling) to the bridge. The bridge hands
//! each player short-lived credentials; the player's engine allocates a relay (over TCP or TLS when
//! all UDP is dropped, over UDP when UDP to coturn is let out) and ICE finds the relayed pair. The tone
//! and the video pattern arrive, and the bridge sees the media come from coturn's relayed
//! addresses, never from a player.
//!
//! ```text
//!  players 10.222.N.2 ──── 10.222.N.1 router + coturn 10.223.N.2 ──── 10.223.N.1 bridge
//! ```
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use streams_bridge::tls::{SELF_SIGNED_CERT, SELF_SIGNED_KEY};
use streams_bridge::turn::TurnRelays;
use streams_bridge::{Bridge, BridgeConfig, BridgeHandle, TlsServer, TlsSource};

use super::netns::{
    Child, End, Netns, assert_tone_and_pattern, json, nft, ok_stdout, player, room_for_two, veth,
};

/// coturn's relayed ports.
const RELAY_PORTS: std::ops::RangeInclusive<u16> = 49_200..=49_300;
const SECRET: &str = "streams-turn-test-secret";

/// The namespaces, their links and coturn.
struct Setup {
    players: Netns,
    /// Kept for its lifetime (coturn runs inside; deleting it ends the links).
    _turn: Netns,
    coturn: Child,
    /// coturn's pid file, database and TLS certificate (self-signed for its address; the players
    /// trust it as their platform's roots, `SSL_CERT_FILE`).
    coturn_dir: tempfile::TempDir,
    /// Where the players reach coturn.
    turn_ip: Ipv4Addr,
    /// coturn's address facing the bridge (its relayed addresses).
    relay_ip: Ipv4Addr,
    /// The bridge's address (signaling and media).
    bridge_ip: Ipv4Addr,
}

impl Setup {
    /// The namespaces and coturn; with `udp_to_turn`, UDP to coturn's port is let out (TURN over
    /// UDP), otherwise no UDP at all.
    fn create(udp_to_turn: bool) -> Setup {
        let (players, id) = Netns::claim("streams-tp");
        let turn = Netns::create(&format!("streams-tt-{id}"));
        let ip = |net: u8, last: u8| Ipv4Addr::new(10, net, id, last);
        let link = |a: (Option<&Netns>, &str, Ipv4Addr), b: (Option<&Netns>, &str, Ipv4Addr)| {
            veth(
                End {
                    ns: a.0,
                    dev: &format!("{}{id}", a.1),
                    addr: &format!("{}/30", a.2),
                },
                End {
                    ns: b.0,
                    dev: &format!("{}{id}", b.1),
                    addr: &format!("{}/30", b.2),
                },
            );
        };
        link(
            (Some(&turn), "sttp", ip(222, 1)),
            (Some(&players), "stpt", ip(222, 2)),
        );
        link(
            (None, "sthb", ip(223, 1)),
            (Some(&turn), "sttb", ip(223, 2)),
        );
        // The router: signaling (TCP) through to the bridge, nothing else; the bridge's way back.
        turn.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        turn.exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &ip(223, 1).to_string(),
        ]);
        players.exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &ip(222, 1).to_string(),
        ]);
        super::netns::sh(&[
            "ip",
            "route",
            "add",
            &format!("10.222.{id}.0/30"),
            "via",
            &ip(223, 2).to_string(),
        ]);
        nft(
            &turn,
            "table ip router {
                chain forward {
                    type filter hook forward priority filter; policy drop;
                    ip protocol tcp accept
                }
            }",
        );
        // No UDP leaves the players' namespace (but to coturn's port, if asked): no direct media.
        let turn_udp = if udp_to_turn {
            format!("ip daddr {} udp dport 3478 accept", ip(222, 1))
        } else {
            String::new()
        };
        let rules = format!(
            "table ip no_udp {{
                chain output {{
                    type filter hook output priority filter;
                    {turn_udp}
                    ip protocol udp counter drop
                }}
            }}"
        );
        nft(&players, &rules);

        let (turn_ip, relay_ip, media_ip) = (ip(222, 1), ip(223, 2), ip(223, 1));
        let (min, max) = (
            RELAY_PORTS.start().to_string(),
            RELAY_PORTS.end().to_string(),
        );
        let coturn_dir = tempfile::tempdir().unwrap();
        let own = |name: &str| coturn_dir.path().join(name).to_str().unwrap().to_owned();
        TlsServer::load(&TlsSource::SelfSigned {
            dir: coturn_dir.path().to_owned(),
            names: vec![turn_ip.to_string()],
        })
        .unwrap();
        let coturn = turn
            .command("turnserver")
            .args(["-n", "--no-cli", "--no-dtls", "--fingerprint"])
            .args(["--tls-listening-port", "5349"])
            .args([
                "--cert",
                &own(SELF_SIGNED_CERT),
                "--pkey",
                &own(SELF_SIGNED_KEY),
            ])
            .args([
                "--listening-ip",
                &turn_ip.to_string(),
                "--listening-port",
                "3478",
            ])
            .args(["--relay-ip", &relay_ip.to_string()])
            .args(["--min-port", &min, "--max-port", &max])
            .args(["--use-auth-secret", "--static-auth-secret", SECRET])
            // As the README's deployment does: relay to the bridge's media address only.
            .args(["--denied-peer-ip", "0.0.0.0-255.255.255.255"])
            .args(["--allowed-peer-ip", &media_ip.to_string()])
            .args([
                "--realm",
                "streams.test",
                "--log-file",
                "stdout",
                "--simple-log",
            ])
            .args([
                "--pidfile",
                &own("turnserver.pid"),
                "--userdb",
                &own("turndb"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coturn's turnserver (apt-get install coturn)");
        let setup = Setup {
            players,
            _turn: turn,
            coturn: Child(coturn),
            coturn_dir,
            turn_ip,
            relay_ip,
            bridge_ip: media_ip,
        };
        setup.wait_for_coturn();
        setup
    }

    /// Until coturn accepts TCP from the players' side (it starts in well under a second).
    fn wait_for_coturn(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let target = format!("{}:3478", self.turn_ip);
        loop {
            let probe = self
                .players
                .command("bash")
                .args([
                    "-c",
                    &format!("exec 3<>/dev/tcp/{}", target.replace(':', "/")),
                ])
                .output()
                .unwrap();
            if probe.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "coturn did not listen at {target}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `streams` as a player runs it, against `bridge`.
    fn player(&self, bridge: &BridgeHandle, key: &Path) -> Command {
        let url = format!("ws://{}:{}", self.bridge_ip, bridge.addr().port());
        let mut command = player(&self.players, &url, key);
        command.env(
            "SSL_CERT_FILE",
            self.coturn_dir.path().join(SELF_SIGNED_CERT),
        );
        command
    }
}

#[test]
fn with_only_tcp_to_a_turn_server_media_is_relayed_through_coturn() {
    let _serial = super::one_at_a_time();
    relayed_call(Setup::create(false), "turn", "?transport=tcp");
}

/// The same over UDP to coturn (its channels, ChannelData both ways).
#[test]
fn with_only_udp_to_a_turn_server_media_is_relayed_through_coturn() {
    let _serial = super::one_at_a_time();
    relayed_call(Setup::create(true), "turn", "");
}

/// The same over TLS to coturn (`turns:`, its certificate checked against the players' roots).
#[test]
fn with_only_tls_to_a_turn_server_media_is_relayed_through_coturn() {
    let _serial = super::one_at_a_time();
    relayed_call(Setup::create(false), "turns", "");
}

/// A bot and a listener in the players' namespace, the bridge handing out `{scheme}:IP{query}`:
/// the tone and the pattern arrive, and the bridge's media comes only from coturn.
fn relayed_call(mut setup: Setup, scheme: &str, query: &str) {
    let bridge = Bridge::spawn(BridgeConfig {
        listen: SocketAddr::new(IpAddr::V4(setup.bridge_ip), 0),
        media_listen: SocketAddr::new(IpAddr::V4(setup.bridge_ip), 0),
        turn: Some(TurnRelays {
            urls: vec![
                format!("{scheme}:{}{query}", setup.turn_ip)
                    .parse()
                    .unwrap(),
            ],
            secret: SECRET.into(),
            ttl: Duration::from_secs(600),
        }),
        ..BridgeConfig::ephemeral()
    })
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, room_id) =
        room_for_two(dir.path(), "Relayed", |key| setup.player(&bridge, key));
    let listener = setup
        .player(&bridge, &bob)
        .args(["listen", "--room", &room_id, "--seconds", "9", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bot = setup
        .player(&bridge, &alice)
        .args([
            "bot", "--room", &room_id, "--tone", "440", "--video", "pattern",
        ])
        .args(["--seconds", "5", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Mid-call: where the bridge's media comes from.
    std::thread::sleep(Duration::from_secs(4));
    let peers = bridge.media_peer_addresses();
    let sent = json(&ok_stdout(bot.wait_with_output().unwrap()));
    let heard = ok_stdout(listener.wait_with_output().unwrap());
    assert!(
        setup.coturn.0.try_wait().unwrap().is_none(),
        "coturn is still running"
    );

    println!("the bridge received media from {peers:?}");
    assert!(!peers.is_empty(), "the bridge saw no media");
    for peer in &peers {
        assert_eq!(
            peer.ip(),
            IpAddr::V4(setup.relay_ip),
            "media came from {peer}, not through coturn"
        );
        assert!(RELAY_PORTS.contains(&peer.port()), "{peer}");
    }
    let (audio, video) = assert_tone_and_pattern(&sent, &heard);
    println!("relayed ({scheme} {query:?}): sent {sent}\nheard audio {audio}\nheard video {video}");
}
