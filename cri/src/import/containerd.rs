//! The thin effect layer of imports: containerd's native content, images, snapshots, diff and
//! leases services, each call namespaced (and, inside an import, leased) through gRPC metadata.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, SystemTime};

use containerd_client::services::v1 as svc;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::{self as snap, snapshots_client::SnapshotsClient};
use containerd_client::types::{Descriptor, Mount};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use super::ImportError;
use super::archive::{BlobRef, Member};
use crate::CriError;
use crate::client::unary;
use crate::connect::{ConnectOptions, connect_unix};

/// Content is streamed in chunks of this size (containerd accepts up to 16 MiB per message).
const CHUNK_BYTES: usize = 1024 * 1024;

/// A client for containerd's native API, bound to one namespace.
#[derive(Debug, Clone)]
pub struct ContainerdClient {
    channel: Channel,
    namespace: String,
    timeout: Duration,
}

impl ContainerdClient {
    /// Connects to containerd's gRPC socket. CRI lives in namespace `k8s.io`.
    pub async fn connect(
        socket: &Path,
        options: &ConnectOptions,
        namespace: &str,
    ) -> Result<Self, CriError> {
        let channel = connect_unix(socket, options).await?;
        Ok(Self::from_channel(channel, namespace))
    }

    pub fn from_channel(channel: Channel, namespace: &str) -> Self {
        Self {
            channel,
            namespace: namespace.to_owned(),
            timeout: Duration::from_secs(120),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A request with the namespace and, inside an import, the lease that protects new objects
    /// from garbage collection until the image record refers to them.
    fn request<T>(
        &self,
        call: &'static str,
        message: T,
        lease: Option<&str>,
    ) -> Result<tonic::Request<T>, CriError> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        let metadata = request.metadata_mut();
        let value = |v: &str| {
            MetadataValue::try_from(v).map_err(|_| CriError::InvalidMetadata {
                call,
                value: v.to_owned(),
            })
        };
        metadata.insert("containerd-namespace", value(&self.namespace)?);
        if let Some(lease) = lease {
            metadata.insert("containerd-lease", value(lease)?);
        }
        Ok(request)
    }

    /// The digest the image `name` points at, or `None`.
    pub async fn image_target(&self, name: &str) -> Result<Option<String>, CriError> {
        let msg = svc::GetImageRequest {
            name: name.to_owned(),
        };
        let request = self.request("images.Get", msg, None)?;
        let mut images = ImagesClient::new(self.channel.clone());
        match unary("images.Get", self.timeout, images.get(request)).await {
            Ok(reply) => Ok(reply.image.and_then(|i| i.target).map(|t| t.digest)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Content store metadata of a blob (its labels, creation and update times), or `None`.
    pub async fn content_info(&self, digest: &str) -> Result<Option<svc::Info>, CriError> {
        let request = self.request(
            "content.Info",
            svc::InfoRequest {
                digest: digest.to_owned(),
            },
            None,
        )?;
        let mut content = ContentClient::new(self.channel.clone());
        match unary("content.Info", self.timeout, content.info(request)).await {
            Ok(reply) => Ok(reply.info),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Whether a committed snapshot named `key` exists.
    pub async fn snapshot_exists(&self, snapshotter: &str, key: &str) -> Result<bool, CriError> {
        let msg = snap::StatSnapshotRequest {
            snapshotter: snapshotter.to_owned(),
            key: key.to_owned(),
        };
        let request = self.request("snapshots.Stat", msg, None)?;
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        match unary("snapshots.Stat", self.timeout, snapshots.stat(request)).await {
            Ok(_) => Ok(true),
            Err(err) if err.is_not_found() => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Creates a lease that expires by itself after `expire`, in case we die mid-import.
    pub async fn create_lease(&self, id: &str, expire: Duration) -> Result<(), CriError> {
        let expiry = rfc3339(SystemTime::now() + expire);
        let msg = svc::CreateRequest {
            id: id.to_owned(),
            labels: HashMap::from([("containerd.io/gc.expire".to_owned(), expiry)]),
        };
        let request = self.request("leases.Create", msg, None)?;
        let mut leases = LeasesClient::new(self.channel.clone());
        unary("leases.Create", self.timeout, leases.create(request)).await?;
        Ok(())
    }

    pub async fn delete_lease(&self, id: &str) -> Result<(), CriError> {
        let request = self.request(
            "leases.Delete",
            svc::DeleteRequest {
                id: id.to_owned(),
                sync: false,
            },
            None,
        )?;
        let mut leases = LeasesClient::new(self.channel.clone());
        match unary("leases.Delete", self.timeout, leases.delete(request)).await {
            Ok(_) => Ok(()),
            Err(err) if err.is_not_found() => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Streams `member` of the archive at `archive` into the content store as `blob`. An
    /// existing blob counts as written (someone else got there first).
    pub async fn write_blob(
        &self,
        archive: &Path,
        member: Member,
        blob: &BlobRef,
        labels: &BTreeMap<String, String>,
        lease: &str,
    ) -> Result<(), ImportError> {
        if member.size != blob.size as u64 {
            return Err(ImportError::Unsupported {
                path: archive.to_owned(),
                reason: format!(
                    "blob {} is {} bytes, its descriptor says {}",
                    blob.digest, member.size, blob.size
                ),
            });
        }
        let read_err = |source| ImportError::Read {
            path: archive.to_owned(),
            source,
        };
        let mut file = tokio::fs::File::open(archive).await.map_err(read_err)?;
        file.seek(std::io::SeekFrom::Start(member.offset))
            .await
            .map_err(read_err)?;

        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let write_ref = format!("kwk-import-{}", blob.digest);
        let first = svc::WriteContentRequest {
            action: svc::WriteAction::Write as i32,
            r#ref: write_ref.clone(),
            total: blob.size,
            expected: blob.digest.clone(),
            ..Default::default()
        };
        // The first message (ref, total, expected) opens the writer; data and commit follow.
        tx.send(first).await.ok();
        let request = self.request(
            "content.Write",
            tokio_stream::wrappers::ReceiverStream::new(rx),
            Some(lease),
        )?;
        let mut content = ContentClient::new(self.channel.clone());
        let labels: HashMap<String, String> = labels.clone().into_iter().collect();
        let digest = blob.digest.clone();
        let total = blob.size;

        let producer = async move {
            let mut offset: u64 = 0;
            let mut buf = vec![0u8; CHUNK_BYTES];
            while offset < member.size {
                let want = usize::try_from(member.size - offset)
                    .unwrap_or(CHUNK_BYTES)
                    .min(CHUNK_BYTES);
                file.read_exact(&mut buf[..want]).await.map_err(read_err)?;
                let msg = svc::WriteContentRequest {
                    action: svc::WriteAction::Write as i32,
                    r#ref: write_ref.clone(),
                    offset: offset as i64,
                    data: buf[..want].to_vec(),
                    ..Default::default()
                };
                offset += want as u64;
                if tx.send(msg).await.is_err() {
                    return Ok(()); // the call ended early; its result tells why
                }
            }
            let commit = svc::WriteContentRequest {
                action: svc::WriteAction::Commit as i32,
                r#ref: write_ref,
                total,
                expected: digest,
                offset: offset as i64,
                labels,
                ..Default::default()
            };
            tx.send(commit).await.ok();
            Ok::<(), ImportError>(())
        };
        let consumer = async {
            let mut responses = content
                .write(request)
                .await
                .map_err(|s| CriError::from_status("content.Write", &s))?
                .into_inner();
            while responses
                .message()
                .await
                .map_err(|s| CriError::from_status("content.Write", &s))?
                .is_some()
            {}
            Ok::<(), CriError>(())
        };
        let (produced, consumed) =
            tokio::time::timeout(self.timeout, async { tokio::join!(producer, consumer) })
                .await
                .map_err(|_| CriError::Timeout {
                    call: "content.Write",
                    timeout: self.timeout,
                })?;
        match consumed {
            Err(CriError::Status {
                code: tonic::Code::AlreadyExists,
                ..
            }) => {}
            other => other?,
        }
        produced
    }

    /// Sets labels on an existing blob, leaving its other labels alone.
    pub async fn label_blob(
        &self,
        digest: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), CriError> {
        let info = svc::Info {
            digest: digest.to_owned(),
            labels: labels.clone().into_iter().collect(),
            ..Default::default()
        };
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        let msg = svc::UpdateRequest {
            info: Some(info),
            update_mask: Some(prost_types::FieldMask { paths }),
        };
        let request = self.request("content.Update", msg, None)?;
        let mut content = ContentClient::new(self.channel.clone());
        unary("content.Update", self.timeout, content.update(request)).await?;
        Ok(())
    }

    /// Unpacks one layer: prepare an active snapshot on `parent`, apply the layer into its
    /// mounts, commit it as `chain_id`. Returns the diff ID the differ computed.
    pub async fn unpack_layer(
        &self,
        snapshotter: &str,
        layer: &BlobRef,
        chain_id: &str,
        parent: Option<&str>,
        lease: &str,
    ) -> Result<String, CriError> {
        let key = format!("kwk-extract-{}-{chain_id}", unique_suffix());
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        let prepare = snap::PrepareSnapshotRequest {
            snapshotter: snapshotter.to_owned(),
            key: key.clone(),
            parent: parent.unwrap_or_default().to_owned(),
            labels: HashMap::new(),
        };
        let request = self.request("snapshots.Prepare", prepare, Some(lease))?;
        let mounts: Vec<Mount> = unary(
            "snapshots.Prepare",
            self.timeout,
            snapshots.prepare(request),
        )
        .await?
        .mounts;

        let applied = self.apply(layer, mounts, lease).await;
        let committed = match applied {
            Ok(diff_id) => {
                let commit = snap::CommitSnapshotRequest {
                    snapshotter: snapshotter.to_owned(),
                    name: chain_id.to_owned(),
                    key: key.clone(),
                    labels: HashMap::new(),
                };
                let request = self.request("snapshots.Commit", commit, Some(lease))?;
                match unary("snapshots.Commit", self.timeout, snapshots.commit(request)).await {
                    Ok(_) => return Ok(diff_id),
                    // Another importer committed the same chain first: ours is redundant.
                    Err(CriError::Status {
                        code: tonic::Code::AlreadyExists,
                        ..
                    }) => Ok(diff_id),
                    Err(err) => Err(err),
                }
            }
            Err(err) => Err(err),
        };
        // Not committed: drop the active snapshot so nothing half-applied is left.
        let remove = snap::RemoveSnapshotRequest {
            snapshotter: snapshotter.to_owned(),
            key,
        };
        if let Ok(request) = self.request("snapshots.Remove", remove, Some(lease)) {
            let _ = unary("snapshots.Remove", self.timeout, snapshots.remove(request)).await;
        }
        committed
    }

    async fn apply(
        &self,
        layer: &BlobRef,
        mounts: Vec<Mount>,
        lease: &str,
    ) -> Result<String, CriError> {
        let msg = svc::ApplyRequest {
            diff: Some(Descriptor {
                media_type: layer.media_type.clone(),
                digest: layer.digest.clone(),
                size: layer.size,
                annotations: HashMap::new(),
            }),
            mounts,
            ..Default::default()
        };
        let request = self.request("diff.Apply", msg, Some(lease))?;
        let mut diff = DiffClient::new(self.channel.clone());
        let reply = unary("diff.Apply", self.timeout, diff.apply(request)).await?;
        reply
            .applied
            .map(|d| d.digest)
            .ok_or(CriError::MissingField {
                call: "diff.Apply",
                field: "applied",
            })
    }

    /// Creates the image record, or repoints it when `update`.
    pub async fn put_image(
        &self,
        name: &str,
        target: &BlobRef,
        labels: &BTreeMap<String, String>,
        update: bool,
        lease: &str,
    ) -> Result<(), CriError> {
        let image = svc::Image {
            name: name.to_owned(),
            labels: labels.clone().into_iter().collect(),
            target: Some(Descriptor {
                media_type: target.media_type.clone(),
                digest: target.digest.clone(),
                size: target.size,
                annotations: HashMap::new(),
            }),
            created_at: None,
            updated_at: None,
        };
        let mut images = ImagesClient::new(self.channel.clone());
        if !update {
            let msg = svc::CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            };
            let request = self.request("images.Create", msg, Some(lease))?;
            match unary("images.Create", self.timeout, images.create(request)).await {
                Ok(_) => return Ok(()),
                // Created meanwhile: fall through to an update.
                Err(CriError::Status {
                    code: tonic::Code::AlreadyExists,
                    ..
                }) => {}
                Err(err) => return Err(err),
            }
        }
        let mut paths = vec!["target".to_owned()];
        paths.extend(labels.keys().map(|k| format!("labels.{k}")));
        let msg = svc::UpdateImageRequest {
            image: Some(image),
            update_mask: Some(prost_types::FieldMask { paths }),
            source_date_epoch: None,
        };
        let request = self.request("images.Update", msg, Some(lease))?;
        unary("images.Update", self.timeout, images.update(request)).await?;
        Ok(())
    }
}

/// A suffix that keeps concurrent importers' keys apart.
pub(crate) fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

/// Formats a time as RFC 3339 in UTC, second precision (containerd's `gc.expire` format).
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_795_000_000)), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(at(4_107_542_399)), "2100-02-28T23:59:59Z");
    }
}
