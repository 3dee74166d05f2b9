//! The H.264 codec of video tracks (OpenH264, built from source): a real-time [`VideoEncoder`] whose
//! bitrate follows the bandwidth estimate at run time and that emits a keyframe on request, and a
//! [`VideoDecoder`] into packed I420 (and RGBA for textures).
use openh264::OpenH264API;
use openh264::decoder::Decoder;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod,
    RateControlMode, UsageType,
};
use openh264::formats::YUVSource;

use crate::video::VideoError;
use crate::video::frame::I420Frame;

fn codec_error(e: impl std::fmt::Display) -> VideoError {
    VideoError::Codec(e.to_string())
}

/// How a local video track is encoded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VideoSettings {
    /// Bitrate to start at, bits/s (the bandwidth estimate moves it between the bounds below).
    pub start_bitrate: u32,
    /// Lowest bitrate the estimate may push it to.
    pub min_bitrate: u32,
    /// Highest bitrate, and what the bandwidth estimator probes for.
    pub max_bitrate: u32,
    /// A periodic keyframe every this many frames; `None`: only the first, and on request (PLI/FIR).
    pub keyframe_interval: Option<u32>,
    /// Tune for screen content (text, sharp edges) rather than camera video.
    pub screen_content: bool,
}

impl VideoSettings {
    /// Settings for a picture of `width` × `height` at `fps`: about 0.1 bit per pixel per frame at
    /// the start, up to twice that; periodic keyframes off (receivers ask when they need one).
    pub fn for_picture(width: usize, height: usize, fps: u32) -> Self {
        let pixels_per_second = (width * height) as u64 * u64::from(fps.max(1));
        let start = (pixels_per_second / 10).clamp(150_000, 4_000_000) as u32;
        VideoSettings {
            start_bitrate: start,
            min_bitrate: 50_000,
            max_bitrate: start * 2,
            keyframe_interval: None,
            screen_content: false,
        }
    }

    fn check(&self) -> Result<(), VideoError> {
        if self.min_bitrate == 0
            || self.min_bitrate > self.start_bitrate
            || self.start_bitrate > self.max_bitrate
            || self.max_bitrate > 50_000_000
        {
            return Err(VideoError::Invalid(format!(
                "bitrates must satisfy 0 < min ≤ start ≤ max ≤ 50 Mbit/s: {self:?}"
            )));
        }
        Ok(())
    }
}

/// One encoded picture.
#[derive(Clone, Debug)]
pub struct EncodedPicture {
    /// Annex B NAL units (with SPS/PPS before a keyframe).
    pub data: Vec<u8>,
    /// An IDR picture: decodable on its own.
    pub keyframe: bool,
}

/// A real-time H.264 encoder (constrained baseline, one slice per picture). Like WebRTC's frame
/// dropper, it skips a picture rather than overshoot the bitrate (a skipped picture is simply not sent).
pub struct VideoEncoder {
    inner: Encoder,
    settings: VideoSettings,
    bitrate: u32,
    /// The bitrate the encoder has been told (applied before the next picture).
    applied: u32,
    started: bool,
    keyframe_requested: bool,
}

impl VideoEncoder {
    /// An encoder for pictures at `fps`.
    pub fn new(settings: VideoSettings, fps: u32) -> Result<Self, VideoError> {
        settings.check()?;
        let usage = if settings.screen_content {
            UsageType::ScreenContentRealTime
        } else {
            UsageType::CameraVideoRealTime
        };
        let period = settings.keyframe_interval.unwrap_or(0);
        // OpenH264 takes the start bitrate as its ceiling too; the real ceiling is raised once the
        // encoder exists (after its first picture), so the first keyframe is sized for the start.
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(settings.start_bitrate))
            .max_frame_rate(FrameRate::from_hz(fps.max(1) as f32))
            .usage_type(usage)
            .rate_control_mode(RateControlMode::Bitrate)
            .skip_frames(true)
            .complexity(Complexity::Low)
            .scene_change_detect(false)
            .background_detection(false)
            .intra_frame_period(IntraFramePeriod::from_num_frames(period))
            .num_threads(1);
        let inner =
            Encoder::with_api_config(OpenH264API::from_source(), config).map_err(codec_error)?;
        Ok(VideoEncoder {
            inner,
            settings,
            bitrate: settings.start_bitrate,
            applied: settings.start_bitrate,
            started: false,
            keyframe_requested: false,
        })
    }

    /// The target bitrate now, bits/s.
    pub fn bitrate(&self) -> u32 {
        self.bitrate
    }

    /// Sets the target bitrate (clamped to the settings' bounds); takes effect at the next picture.
    pub fn set_bitrate(&mut self, bps: u32) {
        self.bitrate = bps.clamp(self.settings.min_bitrate, self.settings.max_bitrate);
    }

    /// Makes the next picture a keyframe.
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    /// Encodes one picture. `None` when the encoder produced nothing for it.
    pub fn encode(&mut self, picture: &I420Frame) -> Result<Option<EncodedPicture>, VideoError> {
        if self.started && self.applied != self.bitrate {
            self.apply_bitrate()?;
        }
        if self.keyframe_requested && self.started {
            self.inner.force_intra_frame();
        }
        self.keyframe_requested = false;
        let stream = self.inner.encode(picture).map_err(codec_error)?;
        let keyframe = matches!(stream.frame_type(), FrameType::IDR | FrameType::I);
        let skipped = matches!(stream.frame_type(), FrameType::Skip | FrameType::Invalid);
        let data = stream.to_vec();
        let first = !self.started;
        self.started = true;
        if first {
            // The encoder exists only after its first picture: now the ceiling can be raised.
            // Both the stream's and the (only) spatial layer's ceiling.
            for layer in [
                openh264_sys2::SPATIAL_LAYER_ALL,
                openh264_sys2::SPATIAL_LAYER_0,
            ] {
                self.set_option(
                    openh264_sys2::ENCODER_OPTION_MAX_BITRATE,
                    layer,
                    self.settings.max_bitrate,
                )?;
            }
            self.apply_bitrate()?;
        }
        if skipped || data.is_empty() {
            return Ok(None);
        }
        Ok(Some(EncodedPicture { data, keyframe }))
    }

    fn apply_bitrate(&mut self) -> Result<(), VideoError> {
        self.set_option(
            openh264_sys2::ENCODER_OPTION_BITRATE,
            openh264_sys2::SPATIAL_LAYER_ALL,
            self.bitrate,
        )?;
        self.applied = self.bitrate;
        Ok(())
    }

    /// Sets a bitrate option (target or ceiling) of `layer`.
    fn set_option(
        &mut self,
        option: openh264_sys2::ENCODER_OPTION,
        layer: openh264_sys2::LAYER_NUM,
        bps: u32,
    ) -> Result<(), VideoError> {
        let mut info = openh264_sys2::SBitrateInfo {
            iLayer: layer,
            iBitrate: bps.min(i32::MAX as u32) as i32,
        };
        // SAFETY: the bitrate options take a pointer to an SBitrateInfo, which lives for the
        // duration of the call; the encoder is initialized (it has encoded a picture).
        let status = unsafe {
            self.inner
                .raw_api()
                .set_option(option, (&raw mut info).cast())
        };
        if status != 0 {
            return Err(VideoError::Codec(format!(
                "setting bitrate option {option} to {bps} failed ({status})"
            )));
        }
        Ok(())
    }
}

/// Whether an Annex B bitstream holds an IDR picture (judged from the decrypted bitstream, not from
/// anything the bridge could change).
pub fn is_keyframe(bitstream: &[u8]) -> bool {
    openh264::nal_units(bitstream).any(|nal| {
        let header = nal.iter().skip_while(|&&b| b == 0).nth(1);
        header.is_some_and(|h| h & 0x1f == 5)
    })
}

/// An H.264 decoder.
pub struct VideoDecoder {
    inner: Decoder,
}

impl VideoDecoder {
    /// A decoder.
    pub fn new() -> Result<Self, VideoError> {
        Ok(VideoDecoder {
            inner: Decoder::new().map_err(codec_error)?,
        })
    }

    /// Decodes one picture's bitstream; `rgba`, when given, also receives the picture as RGBA (resized
    /// to fit). `None` when the decoder needs more data.
    pub fn decode(
        &mut self,
        bitstream: &[u8],
        rgba: Option<&mut Vec<u8>>,
    ) -> Result<Option<I420Frame>, VideoError> {
        let Some(picture) = self.inner.decode(bitstream).map_err(codec_error)? else {
            return Ok(None);
        };
        let (width, height) = picture.dimensions();
        let (ys, us, vs) = picture.strides();
        let frame = I420Frame::from_planes(
            width,
            height,
            [picture.y(), picture.u(), picture.v()],
            [ys, us, vs],
        );
        if let Some(rgba) = rgba {
            rgba.resize(width * height * 4, 0);
            picture.write_rgba8(rgba);
        }
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::frame::luma_psnr;
    use crate::video::pattern::{PatternSource, read_stamp};
    use crate::video::source::VideoSource;

    #[test]
    fn pattern_frames_encode_and_decode_with_their_stamp_and_good_psnr() {
        let mut source = PatternSource::new(320, 240, 30).unwrap();
        let mut encoder = VideoEncoder::new(VideoSettings::for_picture(320, 240, 30), 30).unwrap();
        let mut decoder = VideoDecoder::new().unwrap();
        let mut keyframes = 0;
        let mut rgba = Vec::new();
        for n in 0..30u64 {
            if n == 20 {
                encoder.request_keyframe();
            }
            let picture = source.next_frame(1_000_000 + n * 33_333).unwrap();
            let encoded = encoder
                .encode(&picture)
                .unwrap()
                .expect("no frame skipping");
            assert_eq!(encoded.keyframe, is_keyframe(&encoded.data));
            keyframes += usize::from(encoded.keyframe);
            if n == 20 {
                assert!(encoded.keyframe, "a requested keyframe is the next picture");
            }
            let decoded = decoder
                .decode(&encoded.data, Some(&mut rgba))
                .unwrap()
                .unwrap();
            let stamp = read_stamp(&decoded).expect("stamp readable");
            assert_eq!(u64::from(stamp.frame), n);
            let psnr = luma_psnr(&picture, &decoded).unwrap();
            assert!(psnr >= 30.0, "frame {n}: {psnr:.1} dB");
        }
        assert_eq!(keyframes, 2, "the first picture and the requested one only");
        assert_eq!(rgba.len(), 320 * 240 * 4);
    }

    #[test]
    fn the_bitrate_follows_what_it_is_told_within_bounds() {
        let settings = VideoSettings::for_picture(320, 240, 30);
        let mut encoder = VideoEncoder::new(settings, 30).unwrap();
        let mut source = PatternSource::new(320, 240, 30).unwrap();
        let mut bytes_at = |encoder: &mut VideoEncoder, frames: u64| -> usize {
            (0..frames)
                .map(|n| {
                    let p = source.next_frame(n * 33_333).unwrap();
                    encoder.encode(&p).unwrap().map_or(0, |e| e.data.len())
                })
                .sum()
        };
        bytes_at(&mut encoder, 30);
        // Above the start bitrate, up to the ceiling, is allowed too.
        encoder.set_bitrate(settings.max_bitrate);
        bytes_at(&mut encoder, 30);
        let high = bytes_at(&mut encoder, 60);
        encoder.set_bitrate(60_000);
        bytes_at(&mut encoder, 30);
        let low = bytes_at(&mut encoder, 60);
        assert!(
            low * 2 < high,
            "60 kbit/s: {low} bytes vs start: {high} bytes"
        );
        encoder.set_bitrate(1);
        assert_eq!(encoder.bitrate(), settings.min_bitrate);
        assert!(
            VideoEncoder::new(
                VideoSettings {
                    min_bitrate: 0,
                    ..settings
                },
                30
            )
            .is_err()
        );
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_crash() {
        let mut decoder = VideoDecoder::new().unwrap();
        let garbage = [0u8, 0, 0, 1, 0x65, 0xff, 0x13, 0x77, 0x00, 0x42];
        let result = decoder.decode(&garbage, None);
        assert!(!matches!(result, Ok(Some(_))));
    }
}
