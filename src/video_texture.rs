//! Video as textures: each remote video track's [`RemoteVideo`] image, and the [`LocalPreview`] of a
//! track this client publishes, are written in place from their latest-frame slot (the decoder or
//! capture thread never waits for Bevy; stale pictures are skipped). Each picture's RGBA buffer moves
//! into the image — no copy on the main thread, no new image: the handle and descriptor stay (a
//! new `Image` only when the picture size changes); writing through `Assets::get_mut` marks it
//! changed, so Bevy uploads it again and materials using it see the new picture.
use std::sync::Arc;

use bevy::asset::RenderAssetUsages;
use bevy::prelude::*;
use bevy::render::render_resource::{Extent3d, TextureDimension, TextureFormat};
use streams_client::video::receiver::{DecodedVideo, VideoSlot};

/// A remote video track's picture: an RGBA image written in place as pictures arrive (use the handle
/// on a sprite, a UI image or a material).
#[derive(Component, Debug, Clone)]
pub struct RemoteVideo {
    /// The image.
    pub image: Handle<Image>,
    /// Pictures written into it so far.
    pub frames_shown: u64,
}

/// What a local video track (camera, screen) captures, shown as an image written in place, on the
/// local track's entity (publish with `preview: true`).
#[derive(Component, Debug, Clone)]
pub struct LocalPreview {
    /// The image.
    pub image: Handle<Image>,
    /// Pictures written into it so far.
    pub frames_shown: u64,
}

/// The latest picture of a video track (for checks: the test pattern's stamp, …); its RGBA has moved
/// into the image, so `rgba` is `None` here.
#[derive(Component, Debug, Clone, Default)]
pub struct LatestPicture(pub Option<Arc<DecodedVideo>>);

/// Where a video image's pictures come from: a latest-frame slot (a remote track's decoder, a local
/// preview, or any producer of your own that puts pictures into a [`VideoSlot`]). Beside a
/// [`RemoteVideo`] (and a [`LatestPicture`]) it keeps that image up to date.
#[derive(Component)]
pub struct VideoFeed {
    slot: VideoSlot,
    seen: u64,
}

impl VideoFeed {
    /// Pictures from `slot`.
    pub fn new(slot: VideoSlot) -> Self {
        VideoFeed { slot, seen: 0 }
    }

    /// The newest picture not taken yet (owned: its pixels move into the image).
    fn take(&mut self) -> Option<DecodedVideo> {
        let (version, picture) = self.slot.take_newer_than(self.seen)?;
        self.seen = version;
        Some(picture)
    }
}

/// A black RGBA image (sRGB) to write pictures into.
pub(crate) fn blank_image(width: u32, height: u32) -> Image {
    Image::new_fill(
        Extent3d {
            width: width.max(1),
            height: height.max(1),
            depth_or_array_layers: 1,
        },
        TextureDimension::D2,
        &[0, 0, 0, 255],
        TextureFormat::Rgba8UnormSrgb,
        RenderAssetUsages::default(),
    )
}

/// Moves a picture's RGBA into `handle`'s image (no copy: the decoder made a fresh buffer for it);
/// the image's descriptor is kept unless the picture size changed.
fn write_picture(images: &mut Assets<Image>, handle: &Handle<Image>, picture: &mut DecodedVideo) {
    let Some(rgba) = picture.rgba.take() else {
        return;
    };
    let (width, height) = (
        picture.picture.width() as u32,
        picture.picture.height() as u32,
    );
    if rgba.len() != width as usize * height as usize * 4 {
        return;
    }
    if let Some(mut image) = images.get_mut(handle) {
        if image.width() != width || image.height() != height {
            *image = blank_image(width, height);
        }
        image.data = Some(rgba);
    }
}

/// An image that video pictures are written into: a remote track's or a local preview's.
pub(crate) trait VideoTexture:
    Component<Mutability = bevy::ecs::component::Mutable>
{
    /// The image.
    fn image(&self) -> &Handle<Image>;
    /// Counts one more picture shown.
    fn shown(&mut self);
}

impl VideoTexture for RemoteVideo {
    fn image(&self) -> &Handle<Image> {
        &self.image
    }

    fn shown(&mut self) {
        self.frames_shown += 1;
    }
}

impl VideoTexture for LocalPreview {
    fn image(&self) -> &Handle<Image> {
        &self.image
    }

    fn shown(&mut self) {
        self.frames_shown += 1;
    }
}

/// Writes each feed's newest picture into its `T` image (remote videos and local previews).
pub(crate) fn apply_video_frames<T: VideoTexture>(
    mut videos: Query<(&mut T, &mut VideoFeed, &mut LatestPicture)>,
    mut images: Option<ResMut<Assets<Image>>>,
) {
    for (mut video, mut feed, mut latest) in &mut videos {
        let Some(mut picture) = feed.take() else {
            continue;
        };
        if let Some(images) = images.as_mut() {
            write_picture(images, video.image(), &mut picture);
        }
        video.shown();
        latest.0 = Some(Arc::new(picture));
    }
}
