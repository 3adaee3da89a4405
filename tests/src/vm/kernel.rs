//! The stock kernel as an uncompressed `vmlinux`: Debian ships a bzImage whose payload is
//! compressed (xz for bookworm), and decompressing it in the emulated guest takes minutes, so
//! the payload is located through the boot protocol header and decompressed on the host. qemu
//! boots the resulting ELF through its PVH entry point.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context as _, bail, ensure};

use super::tools::{self, Tool};

/// How the payload is compressed (told by its magic bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    Xz,
    Zstd,
    Gzip,
}

impl Compression {
    fn detect(data: &[u8]) -> Option<Self> {
        if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(Self::Xz)
        } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Self::Zstd)
        } else if data.starts_with(&[0x1f, 0x8b]) {
            Some(Self::Gzip)
        } else {
            None
        }
    }

    fn tool(self) -> Tool {
        match self {
            Self::Xz => tools::XZ,
            Self::Zstd => tools::ZSTD,
            Self::Gzip => tools::GZIP,
        }
    }

    /// Decompressor arguments: to stdout, and for xz only the first stream (the kernel's build
    /// appends the uncompressed size after it).
    fn args(self) -> &'static [&'static str] {
        match self {
            Self::Xz => &["-dc", "--single-stream"],
            Self::Zstd | Self::Gzip => &["-dc"],
        }
    }

    /// Whether the build appended the uncompressed size (little-endian u32) to the payload.
    fn has_size_trailer(self) -> bool {
        !matches!(self, Self::Gzip)
    }
}

/// The compressed kernel inside a bzImage.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Payload<'a> {
    pub(crate) compression: Compression,
    pub(crate) data: &'a [u8],
}

impl Payload<'_> {
    /// The uncompressed size, when the build recorded it.
    pub(crate) fn expected_size(&self) -> Option<u64> {
        if !self.compression.has_size_trailer() || self.data.len() < 4 {
            return None;
        }
        let tail: [u8; 4] = self.data[self.data.len() - 4..].try_into().ok()?;
        Some(u64::from(u32::from_le_bytes(tail)))
    }
}

/// Finds the payload through the x86 boot protocol header (version 2.08+ records its offset
/// and length relative to the protected-mode code, which follows the setup sectors).
pub(crate) fn payload(bzimage: &[u8]) -> anyhow::Result<Payload<'_>> {
    let u16_at = |at: usize| {
        bzimage
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        bzimage
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    ensure!(
        bzimage.get(0x202..0x206) == Some(b"HdrS".as_slice()),
        "not a bzImage (no HdrS boot header)"
    );
    let version = u16_at(0x206).context("truncated boot header")?;
    ensure!(
        version >= 0x208,
        "boot protocol {version:#x} records no payload location"
    );
    let setup_sectors = match bzimage[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let offset = u32_at(0x248).context("truncated boot header")?;
    let length = u32_at(0x24c).context("truncated boot header")?;
    let start = (setup_sectors + 1) * 512 + offset;
    let data = bzimage
        .get(start..start + length)
        .context("payload lies outside the file")?;
    let Some(compression) = Compression::detect(data) else {
        bail!(
            "unknown kernel compression (magic {:02x?})",
            &data[..data.len().min(6)]
        );
    };
    Ok(Payload { compression, data })
}

/// Writes the uncompressed kernel of `bzimage` to `vmlinux` and checks that it is an ELF file of
/// the recorded size.
pub(crate) fn extract_vmlinux(bzimage: &Path, vmlinux: &Path) -> anyhow::Result<()> {
    let image = std::fs::read(bzimage).with_context(|| format!("reading {}", bzimage.display()))?;
    let payload = payload(&image).with_context(|| format!("reading {}", bzimage.display()))?;
    let compressed = vmlinux.with_extension("payload");
    std::fs::write(&compressed, payload.data)?;
    let input = std::fs::File::open(&compressed)?;
    let output = std::fs::File::create(vmlinux)
        .with_context(|| format!("creating {}", vmlinux.display()))?;
    let status = tools::command(payload.compression.tool())?
        .args(payload.compression.args())
        .stdin(input)
        .stdout(output)
        .stderr(Stdio::inherit())
        .status()
        .context("running the kernel decompressor")?;
    std::fs::remove_file(&compressed)?;
    ensure!(
        status.success(),
        "decompressing the kernel failed: {status}"
    );
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(&mut std::fs::File::open(vmlinux)?, &mut magic)?;
    ensure!(
        &magic == b"\x7fELF",
        "the decompressed kernel is not an ELF file"
    );
    if let Some(expected) = payload.expected_size() {
        let actual = std::fs::metadata(vmlinux)?.len();
        ensure!(
            actual == expected,
            "decompressed kernel is {actual} bytes, the image says {expected}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal bzImage: boot header fields and a payload after two setup sectors.
    fn fake_bzimage(payload: &[u8]) -> Vec<u8> {
        let setup_sectors = 2u8;
        let offset = 16u32;
        let mut image = vec![0u8; (usize::from(setup_sectors) + 1) * 512 + offset as usize];
        image[0x1f1] = setup_sectors;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        image[0x248..0x24c].copy_from_slice(&offset.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(payload);
        image.extend_from_slice(b"trailing setup data");
        image
    }

    #[test]
    fn finds_an_xz_payload_and_its_recorded_size() {
        let mut data = vec![0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2, 3];
        data.extend_from_slice(&1234u32.to_le_bytes());
        let image = fake_bzimage(&data);
        let found = payload(&image).unwrap();
        assert_eq!(found.compression, Compression::Xz);
        assert_eq!(found.data, data.as_slice());
        assert_eq!(found.expected_size(), Some(1234));
    }

    #[test]
    fn gzip_has_no_size_trailer() {
        let image = fake_bzimage(&[0x1f, 0x8b, 8, 0, 0, 0]);
        let found = payload(&image).unwrap();
        assert_eq!(found.compression, Compression::Gzip);
        assert_eq!(found.expected_size(), None);
    }

    #[test]
    fn rejects_what_is_not_a_bzimage_or_has_no_known_compression() {
        assert!(payload(&[0u8; 1024]).is_err());
        let err = payload(&fake_bzimage(b"plain")).unwrap_err().to_string();
        assert!(err.contains("unknown kernel compression"), "{err}");
        let mut truncated = fake_bzimage(&[0xfd, b'7', b'z', b'X', b'Z', 0]);
        truncated.truncate(truncated.len() - 25);
        assert!(payload(&truncated).is_err());
    }
}
