//! CRI `ImageService` calls.

use k8s_cri::v1 as api;

use crate::CriError;
use crate::client::{CriClient, request, required_id, unary};

/// An `ImageSpec` naming `image` (a reference or an image ID).
pub fn image_spec(image: &str) -> api::ImageSpec {
    api::ImageSpec {
        image: image.into(),
        ..Default::default()
    }
}

impl CriClient {
    /// The image, or `None` when the runtime does not have it. Never pulls.
    pub async fn image_status(&self, image: &str) -> Result<Option<api::Image>, CriError> {
        let t = self.timeouts.default;
        let msg = api::ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose: false,
        };
        let reply = unary(
            "ImageStatus",
            t,
            self.images.clone().image_status(request(msg, t)),
        )
        .await;
        match reply {
            // CRI answers "absent" with an empty response; some runtimes say NotFound.
            Ok(reply) => Ok(reply.image.filter(|i| !i.id.is_empty())),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    pub async fn list_images(
        &self,
        filter: Option<api::ImageFilter>,
    ) -> Result<Vec<api::Image>, CriError> {
        let t = self.timeouts.default;
        let msg = api::ListImagesRequest { filter };
        Ok(unary(
            "ListImages",
            t,
            self.images.clone().list_images(request(msg, t)),
        )
        .await?
        .images)
    }

    /// Pulls an image from its registry; returns the image reference the runtime resolved.
    pub async fn pull_image(
        &self,
        image: api::ImageSpec,
        auth: Option<api::AuthConfig>,
        sandbox_config: Option<api::PodSandboxConfig>,
    ) -> Result<String, CriError> {
        let t = self.timeouts.pull_image;
        let msg = api::PullImageRequest {
            image: Some(image),
            auth,
            sandbox_config,
        };
        let reply = unary(
            "PullImage",
            t,
            self.images.clone().pull_image(request(msg, t)),
        )
        .await?;
        required_id(reply.image_ref, "PullImage", "image_ref")
    }

    /// Removes an image. Removing an absent image succeeds, as CRI specifies.
    pub async fn remove_image(&self, image: &str) -> Result<(), CriError> {
        let t = self.timeouts.default;
        let msg = api::RemoveImageRequest {
            image: Some(image_spec(image)),
        };
        unary(
            "RemoveImage",
            t,
            self.images.clone().remove_image(request(msg, t)),
        )
        .await?;
        Ok(())
    }

    /// Usage of the filesystems holding images (and, where the runtime splits them, containers).
    pub async fn image_fs_info(&self) -> Result<api::ImageFsInfoResponse, CriError> {
        let t = self.timeouts.default;
        let msg = api::ImageFsInfoRequest {};
        unary(
            "ImageFsInfo",
            t,
            self.images.clone().image_fs_info(request(msg, t)),
        )
        .await
    }
}
