//! A measured HRTF set ([`Hrtf`]) and the renderers made from it: each voice's real-time renderer
//! (for the audio thread) paired with the publisher that prepares its filters (off it).
use std::path::Path;

use sofar::reader::{Filter, OpenOptions, Sofar};
use sofar::render::{FilterPublisher, FilterTransition, RealtimeRenderer, Renderer, RendererPlan};

use super::{CROSSFADE, PARTITION, SpatialError, Vec3};
use crate::audio::SAMPLE_RATE;

/// A measured HRTF set, resampled to 48 kHz, with the FFT plan its renderers share.
pub struct Hrtf {
    sofa: Sofar,
    plan: RendererPlan,
}

impl Hrtf {
    /// Reads a SOFA file.
    pub fn load(path: &Path) -> Result<Self, SpatialError> {
        let error = |reason: String| SpatialError::Hrtf {
            path: path.display().to_string(),
            reason,
        };
        let sofa = OpenOptions::new()
            .sample_rate(SAMPLE_RATE as f32)
            .open(path)
            .map_err(|e| error(e.to_string()))?;
        let plan = RendererPlan::builder(sofa.filter_len())
            .with_sample_rate(SAMPLE_RATE as f32)
            .with_partition_len(PARTITION)
            .build()
            .map_err(|e| error(e.to_string()))?;
        Ok(Hrtf { sofa, plan })
    }

    /// The impulse responses for a local direction (right, up, forward).
    pub(super) fn filter(&self, local: Vec3) -> Filter {
        let mut filter = Filter::new(self.sofa.filter_len());
        // SOFA: x forward, y left, z up.
        self.sofa.filter(local[2], -local[0], local[1], &mut filter);
        filter
    }

    /// A renderer for the audio thread and the publisher of its filters.
    pub(super) fn renderer(&self) -> Option<(FilterPublisher, RealtimeRenderer)> {
        Renderer::builder(&self.plan)
            .with_filter_transition(FilterTransition::crossfade(CROSSFADE))
            .build()
            .ok()
            .map(Renderer::into_realtime)
    }
}
