//! Where voices are heard from: a listener's [`Pose`], distance attenuation ([`Attenuation`], after
//! WebAudio's PannerNode) and equal-power panning gains. Plain values and arithmetic.
use super::Vec3;

/// Where a listener is and where it looks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pose {
    /// Position.
    pub position: Vec3,
    /// The direction it faces (unit length).
    pub forward: Vec3,
    /// Its up direction (unit length).
    pub up: Vec3,
}

impl Default for Pose {
    fn default() -> Self {
        Pose {
            position: [0.0; 3],
            forward: [0.0, 0.0, -1.0],
            up: [0.0, 1.0, 0.0],
        }
    }
}

fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

pub(super) fn dot(a: Vec3, b: Vec3) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

impl Pose {
    /// Where `point` is as this listener hears it: (right, up, forward) components of the unit
    /// direction towards it, and its distance.
    pub fn hear(&self, point: Vec3) -> (Vec3, f32) {
        let offset = sub(point, self.position);
        let distance = dot(offset, offset).sqrt();
        if distance < 1e-6 {
            return ([0.0, 0.0, 1.0], 0.0);
        }
        let right = cross(self.forward, self.up);
        let local = [
            dot(offset, right) / distance,
            dot(offset, self.up) / distance,
            dot(offset, self.forward) / distance,
        ];
        (local, distance)
    }
}

/// How loudness falls with distance (WebAudio's `distanceModel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DistanceModel {
    /// `ref / (ref + rolloff · (max(d, ref) − ref))`.
    #[default]
    Inverse,
    /// `1 − rolloff · (clamp(d, ref, max) − ref) / (max − ref)`.
    Linear,
    /// `(max(d, ref) / ref)^−rolloff`.
    Exponential,
}

/// Distance attenuation (WebAudio PannerNode parameters).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attenuation {
    /// The model.
    pub model: DistanceModel,
    /// Distance at which the gain is 1.
    pub ref_distance: f32,
    /// Beyond this the linear model is silent; the others stop falling... and proximity unsubscribes.
    pub max_distance: f32,
    /// How fast the gain falls.
    pub rolloff: f32,
}

impl Default for Attenuation {
    fn default() -> Self {
        Attenuation {
            model: DistanceModel::Inverse,
            ref_distance: 1.0,
            max_distance: 10_000.0,
            rolloff: 1.0,
        }
    }
}

impl Attenuation {
    /// The gain at `distance`.
    pub fn gain(&self, distance: f32) -> f32 {
        let reference = self.ref_distance.max(1e-3);
        match self.model {
            DistanceModel::Inverse => {
                let d = distance.max(reference);
                reference / (reference + self.rolloff.max(0.0) * (d - reference))
            }
            DistanceModel::Linear => {
                let max = self.max_distance.max(reference);
                if max <= reference {
                    return 1.0;
                }
                let d = distance.clamp(reference, max);
                (1.0 - self.rolloff.clamp(0.0, 1.0) * (d - reference) / (max - reference)).max(0.0)
            }
            DistanceModel::Exponential => {
                let d = distance.max(reference);
                (d / reference).powf(-self.rolloff.max(0.0))
            }
        }
    }
}

/// WebAudio's equal-power gains (left, right) for a local direction (right, up, forward).
pub fn equal_power_gains(local: Vec3) -> (f32, f32) {
    let mut azimuth = local[0].atan2(local[2]).to_degrees();
    // Sources behind are panned like their mirror image in front.
    if azimuth > 90.0 {
        azimuth = 180.0 - azimuth;
    } else if azimuth < -90.0 {
        azimuth = -180.0 - azimuth;
    }
    let x = (azimuth + 90.0) / 180.0;
    let angle = x * std::f32::consts::FRAC_PI_2;
    (angle.cos(), angle.sin())
}
