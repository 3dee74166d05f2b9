//! The video encoder follows the network: a `streams bot` publishes the test pattern from inside a
//! network namespace of its own, over a veth pair to the bridge; a token bucket (`tc … tbf`) on its
//! uplink narrows the link and the encoder's target bitrate (from str0m's TWCC bandwidth estimate)
//! must come down under it, then climb back when the limit is lifted. Needs root and iproute2 (CI
//! runs as root and installs it). Private addresses in a namespace of our own; nothing else is
//! touched.
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use streams_bridge::{Bridge, BridgeConfig};

use super::netns::{Child, End, Netns, STREAMS, keygen, veth};

/// A namespace joined to this one by a veth pair (deleted with it).
struct Namespace {
    ns: Netns,
    inner_dev: String,
    host_ip: Ipv4Addr,
}

impl Namespace {
    fn create() -> Namespace {
        let (ns, id) = Netns::claim("streams-bw");
        let (host_dev, inner_dev) = (format!("sbwh{id}"), format!("sbwn{id}"));
        let host_ip = Ipv4Addr::new(10, 213, id, 1);
        veth(
            End {
                ns: None,
                dev: &host_dev,
                addr: &format!("{host_ip}/30"),
            },
            End {
                ns: Some(&ns),
                dev: &inner_dev,
                addr: &format!("10.213.{id}.2/30"),
            },
        );
        Namespace {
            ns,
            inner_dev,
            host_ip,
        }
    }

    /// Limits what leaves the namespace to `kbit` kbit/s.
    fn limit_uplink(&self, kbit: u32) {
        self.ns.exec(&[
            "tc",
            "qdisc",
            "replace",
            "dev",
            &self.inner_dev,
            "root",
            "tbf",
            "rate",
            &format!("{kbit}kbit"),
            "burst",
            "16kb",
            "latency",
            "100ms",
        ]);
    }

    fn lift_limit(&self) {
        self.ns
            .exec(&["tc", "qdisc", "del", "dev", &self.inner_dev, "root"]);
    }
}

/// The encoder's target bitrate (kbit/s) averaged over the progress lines of `window`.
fn mean_target(lines: &mpsc::Receiver<serde_json::Value>, window: Duration) -> f64 {
    let deadline = Instant::now() + window;
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some(bps) = line["progress"]["video"]["target_bitrate"].as_f64() {
            seen.push(bps / 1000.0);
        }
    }
    assert!(!seen.is_empty(), "no progress lines from the bot");
    seen.iter().sum::<f64>() / seen.len() as f64
}

/// Means over consecutive 4 s windows until one satisfies `settled`, within `limit`: how fast the
/// estimate moves depends on how busy the machine is, where it settles does not. Returns the mean and
/// how long it took; panics with the last mean when the limit passes.
fn settle(
    lines: &mpsc::Receiver<serde_json::Value>,
    limit: Duration,
    what: &str,
    settled: impl Fn(f64) -> bool,
) -> (f64, Duration) {
    let start = Instant::now();
    loop {
        let mean = mean_target(lines, Duration::from_secs(4));
        if settled(mean) {
            return (mean, start.elapsed());
        }
        assert!(
            start.elapsed() < limit,
            "{what}: the target bitrate stayed at {mean:.0} kbit/s for {limit:?}"
        );
    }
}

#[test]
fn the_encoder_bitrate_follows_a_narrowed_link_down_and_back_up() {
    let _serial = super::one_at_a_time();
    let ns = Namespace::create();
    let host = IpAddr::V4(ns.host_ip);
    let bridge = Bridge::spawn(BridgeConfig {
        listen: SocketAddr::new(host, 0),
        media_listen: SocketAddr::new(host, 0),
        ..BridgeConfig::ephemeral()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("alice.key");
    keygen(&key);
    let out = Command::new(STREAMS)
        // The bridge is on a private veth address inside the test's namespace: plain ws:// there
        // is allowed explicitly.
        .args(["--insecure", "--bridge", &bridge.url(), "--key"])
        .arg(&key)
        .args(["room", "create", "--name", "narrow"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let room = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let mut bot = ns
        .ns
        .command(STREAMS)
        .args(["--insecure", "--bridge", &bridge.url(), "--key"])
        .arg(&key)
        .args([
            "--json",
            "bot",
            "--room",
            &room,
            "--video",
            "pattern",
            "--width",
            "640",
            "--height",
            "360",
            "--fps",
            "30",
            "--seconds",
            "300",
            "--progress",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = bot.stdout.take().unwrap();
    let bot = Child(bot);
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) {
                let _ = tx.send(value);
            }
        }
    });

    // Open link: the estimate climbs towards the encoder's ceiling (1382 kbit/s at 640×360, 30 fps).
    let limit = Duration::from_secs(60);
    let (open, t_open) = settle(&lines, limit, "open link", |kbit| kbit >= 600.0);
    ns.limit_uplink(300);
    let (narrow, t_narrow) = settle(&lines, limit, "300 kbit/s link", |kbit| kbit <= 300.0);
    ns.lift_limit();
    // Back up: well above what the narrow link allowed, and above the limit itself.
    let (widened, t_widened) = settle(&lines, limit, "lifted limit", |kbit| {
        kbit >= 2.0 * narrow && kbit > 300.0
    });
    drop(bot);
    println!(
        "target bitrate: open {open:.0} kbit/s after {t_open:?}, 300 kbit/s link {narrow:.0} after \
         {t_narrow:?}, lifted {widened:.0} after {t_widened:?}"
    );
}
