//! `sfu-scale`: the fan-out scenario at growing load, to find where a server stops keeping up.
//! Two shapes: `wide` is 1 room × 10 publishers × S subscribers (S = 10, 20, 40, …, doubling),
//! `rooms` is R rooms × 4 publishers × 4 subscribers (R = 2, 4, 8, …). Each step runs every
//! target still going, one after the other (so a phase of a noisy machine hits both alike); a
//! target stops at the first step that loses more than 1 % or whose load side ran out of core
//! (`"valid": false`), or that fails. One JSON line per run, then one per target saying where it
//! stopped, with that run's figures and those of the last step it passed.
use serde_json::{Value, json};

use crate::fanout::{Load, Target, run};

/// Loss beyond which a step has failed, percent.
const LOSS_LIMIT_PCT: f64 = 1.0;

/// The shape of the growing load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One room, 10 publishers, more and more subscribers.
    Wide,
    /// More and more rooms of 4 publishers and 4 subscribers.
    Rooms,
}

impl Shape {
    /// `wide` or `rooms`.
    pub fn parse(name: &str) -> Result<Shape, String> {
        match name {
            "wide" => Ok(Shape::Wide),
            "rooms" => Ok(Shape::Rooms),
            other => Err(format!("unknown shape {other} (wide or rooms)")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Shape::Wide => "wide",
            Shape::Rooms => "rooms",
        }
    }

    /// The load of step `step` (0 first).
    fn load(self, step: u32, seconds: u64, media_workers: usize) -> Load {
        let doubling = 1usize << step;
        let (rooms, publishers, subscribers) = match self {
            Shape::Wide => (1, 10, 10 * doubling),
            Shape::Rooms => (2 * doubling, 4, 4),
        };
        Load {
            rooms,
            publishers,
            subscribers,
            seconds,
            video_kbps: 0,
            media_workers,
        }
    }
}

/// Why a target stopped.
fn stopped_by(line: &Value) -> Option<&'static str> {
    if !line["valid"].as_bool().unwrap_or(false) {
        Some("load generator out of core")
    } else if line["loss_pct"].as_f64().unwrap_or(100.0) > LOSS_LIMIT_PCT {
        Some("loss")
    } else {
        None
    }
}

/// The figures that say how a step went.
fn point(line: &Value) -> Value {
    let fields = [
        "rooms",
        "publishers",
        "subscribers",
        "egress_pps",
        "egress_pps_per_core",
        "server_cpu_pct",
        "loss_pct",
        "p95_ms",
        "server_rss_mb",
        "load_cpu_pct",
    ];
    Value::Object(
        fields
            .iter()
            .map(|f| (f.to_string(), line[*f].clone()))
            .collect(),
    )
}

/// Steps `shape` up to `max_steps` times for each of `targets`.
pub fn sfu_scale(
    shape: Shape,
    targets: &[Target],
    seconds: u64,
    media_workers: usize,
    max_steps: u32,
) -> Result<Vec<Value>, String> {
    let mut lines = Vec::new();
    // Per target: the last step passed, and why it stopped once it has.
    let mut last_good: Vec<Option<Value>> = vec![None; targets.len()];
    let mut stopped: Vec<Option<Value>> = vec![None; targets.len()];
    for step in 0..max_steps {
        let load = shape.load(step, seconds, media_workers);
        for (i, target) in targets.iter().enumerate() {
            if stopped[i].is_some() {
                continue;
            }
            let line = match run(*target, load) {
                Ok(mut line) => {
                    line["scale_shape"] = json!(shape.name());
                    line["scale_step"] = json!(step);
                    line
                }
                Err(e) => {
                    stopped[i] = Some(json!({"stopped_by": "error", "error": e, "step": step}));
                    continue;
                }
            };
            match stopped_by(&line) {
                Some(reason) => {
                    stopped[i] = Some(json!({
                        "stopped_by": reason, "step": step, "at": point(&line),
                    }))
                }
                None => last_good[i] = Some(point(&line)),
            }
            eprintln!(
                "sfu-scale {} step {step} {}: {} pps per core, loss {} %",
                shape.name(),
                target.name(),
                line["egress_pps_per_core"],
                line["loss_pct"]
            );
            lines.push(line);
        }
        if stopped.iter().all(Option::is_some) {
            break;
        }
    }
    for (i, target) in targets.iter().enumerate() {
        let mut summary = stopped[i].take().unwrap_or_else(
            || json!({"stopped_by": format!("still going after {max_steps} steps")}),
        );
        summary["scenario"] = json!("sfu-scale");
        summary["shape"] = json!(shape.name());
        summary["target"] = json!(target.name());
        summary["last_good"] = last_good[i].take().unwrap_or(Value::Null);
        lines.push(summary);
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shapes_double_what_grows_and_keep_the_rest() {
        let wide: Vec<(usize, usize, usize)> = (0..3)
            .map(|s| Shape::Wide.load(s, 5, 1))
            .map(|l| (l.rooms, l.publishers, l.subscribers))
            .collect();
        assert_eq!(wide, vec![(1, 10, 10), (1, 10, 20), (1, 10, 40)]);
        let rooms: Vec<usize> = (0..3).map(|s| Shape::Rooms.load(s, 5, 2).rooms).collect();
        assert_eq!(rooms, vec![2, 4, 8]);
    }

    #[test]
    fn a_step_fails_on_loss_or_an_invalid_load_side() {
        assert_eq!(stopped_by(&json!({"valid": true, "loss_pct": 0.2})), None);
        assert_eq!(
            stopped_by(&json!({"valid": true, "loss_pct": 1.5})),
            Some("loss")
        );
        assert_eq!(
            stopped_by(&json!({"valid": false, "loss_pct": 0.0})),
            Some("load generator out of core")
        );
    }
}
