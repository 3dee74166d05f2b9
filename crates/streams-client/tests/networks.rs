//! Calls across networks built of namespaces, veth pairs and nftables (see `networks/netns.rs`):
//! the encoder following a narrowed link, a bridge behind a 1:1 NAT, players whose UDP is
//! blocked, a player whose address changes mid-call. One test binary, so Bevy-free network tests
//! link once; they run one at a time (each sends real-time media).
#[path = "networks/bandwidth.rs"]
mod bandwidth;
#[path = "networks/blocked_udp.rs"]
mod blocked_udp;
#[path = "networks/moving.rs"]
mod moving;
#[path = "networks/nat.rs"]
mod nat;
#[path = "networks/netns.rs"]
mod netns;
#[path = "networks/turn.rs"]
mod turn;

/// Every test here sends real-time media: on a 2-core machine they run one at a time, so that
/// what they measure is the network they build, not each other.
static REAL_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    REAL_TIME.lock().unwrap_or_else(|p| p.into_inner())
}
