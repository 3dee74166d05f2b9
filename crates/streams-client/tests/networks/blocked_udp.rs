//! Players whose network blocks UDP: a bot and a listener in a namespace whose nftables drop every
//! UDP datagram to the bridge. The bridge serves ICE-TCP (`media_tcp_listen`), so their media goes
//! over TCP streams to it with nothing changed on their side: the tone and the video pattern
//! arrive. Then the media TCP port is blocked too, and with no path at all the bot says so (naming
//! ICE) within 10 s.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use streams_bridge::{Bridge, BridgeConfig, BridgeHandle};

use super::netns::{
    End, Netns, assert_tone_and_pattern, json, nft, ok_stdout, player, room_for_two, veth,
};

/// The players' namespace, joined to this one (the bridge's) by a veth pair.
struct Players {
    ns: Netns,
    bridge_ip: Ipv4Addr,
}

impl Players {
    fn create() -> Players {
        let (ns, id) = Netns::claim("streams-tcp");
        let bridge_ip = Ipv4Addr::new(10, 215, id, 1);
        veth(
            End {
                ns: None,
                dev: &format!("stch{id}"),
                addr: &format!("{bridge_ip}/30"),
            },
            End {
                ns: Some(&ns),
                dev: &format!("stcn{id}"),
                addr: &format!("10.215.{id}.2/30"),
            },
        );
        Players { ns, bridge_ip }
    }

    /// Loads nftables `rules` in the players' namespace.
    fn nft(&self, rules: &str) {
        nft(&self.ns, rules);
    }

    /// Drops (and counts) every UDP datagram to the bridge, and counts the TCP segments to its
    /// media port.
    fn block_udp(&self, media_tcp_port: u16) {
        let bridge = self.bridge_ip;
        self.nft(&format!(
            "table ip no_udp {{
                chain output {{
                    type filter hook output priority filter;
                    ip daddr {bridge} ip protocol udp counter drop
                    ip daddr {bridge} tcp dport {media_tcp_port} counter accept
                }}
            }}"
        ));
    }

    /// Drops the TCP segments to the media port as well: no media path is left.
    fn block_media_tcp(&self, media_tcp_port: u16) {
        let bridge = self.bridge_ip;
        self.nft(&format!(
            "table ip no_media_tcp {{
                chain output {{
                    type filter hook output priority filter;
                    ip daddr {bridge} tcp dport {media_tcp_port} drop
                }}
            }}"
        ));
    }

    /// The packet counts of the `no_udp` table's rules: (UDP dropped, TCP to the media port).
    fn counted(&self) -> (u64, u64) {
        let out = self
            .ns
            .command("nft")
            .args(["list", "table", "ip", "no_udp"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let counts: Vec<u64> = text
            .split("counter packets ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .collect();
        assert_eq!(counts.len(), 2, "{text}");
        (counts[0], counts[1])
    }

    /// `streams` as a player runs it, against `bridge`.
    fn player(&self, bridge: &BridgeHandle, key: &Path) -> Command {
        let url = format!("ws://{}:{}", self.bridge_ip, bridge.addr().port());
        player(&self.ns, &url, key)
    }
}

#[test]
fn with_udp_blocked_media_flows_over_ice_tcp_and_with_no_path_the_bot_says_so() {
    let _serial = super::one_at_a_time();
    let players = Players::create();
    let host = IpAddr::V4(players.bridge_ip);
    let bridge = Bridge::spawn(BridgeConfig {
        listen: SocketAddr::new(host, 0),
        media_listen: SocketAddr::new(host, 0),
        media_tcp_listen: Some(SocketAddr::new(host, 0)),
        ..BridgeConfig::ephemeral()
    })
    .unwrap();
    let tcp = bridge.media_tcp_addrs()[0];
    assert_eq!(bridge.media_tcp_announced(), vec![vec![tcp]]);
    players.block_udp(tcp.port());

    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, room_id) =
        room_for_two(dir.path(), "No UDP", |key| players.player(&bridge, key));

    let listener = players
        .player(&bridge, &bob)
        .args(["listen", "--room", &room_id, "--seconds", "9", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let sent = json(&ok_stdout(
        players
            .player(&bridge, &alice)
            .args([
                "bot",
                "--room",
                &room_id,
                "--tone",
                "440",
                "--video",
                "pattern",
                "--seconds",
                "4",
                "--json",
            ])
            .output()
            .unwrap(),
    ));
    let heard = ok_stdout(listener.wait_with_output().unwrap());
    let (audio, video) = assert_tone_and_pattern(&sent, &heard);
    let (udp_dropped, tcp_sent) = players.counted();
    assert!(
        udp_dropped > 0,
        "the players tried UDP first (ICE checks), and it was dropped"
    );
    assert!(
        tcp_sent > 100,
        "the media went over TCP: {tcp_sent} segments"
    );

    // No path at all: the bot fails, naming ICE, within 10 s.
    players.block_media_tcp(tcp.port());
    let started = Instant::now();
    let out = players
        .player(&bridge, &alice)
        .args(["bot", "--room", &room_id, "--tone", "440", "--seconds", "3"])
        .output()
        .unwrap();
    let failed_after = started.elapsed();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the bot reported success: {said}");
    assert!(said.contains("ICE"), "{said}");
    assert!(
        failed_after.as_secs_f64() < 10.0,
        "{failed_after:?}: {said}"
    );
    println!(
        "UDP blocked: over ICE-TCP {} of {} audio frames at {} Hz, {} of {} video frames at \
         {} fps, PSNR {} dB ({udp_dropped} UDP datagrams dropped, {tcp_sent} TCP segments to the \
         media port); with TCP blocked too the bot failed after {:.1} s: {}",
        audio["frames"],
        sent["frames"],
        audio["freq_hz"],
        video["frames"],
        sent["video"]["frames"],
        video["fps"],
        video["psnr_db"],
        failed_after.as_secs_f64(),
        said.trim()
    );
}
