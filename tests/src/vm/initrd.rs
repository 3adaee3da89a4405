//! The guest's small initrd: busybox, the few modules that mounting the root disk takes (found
//! with their dependencies in the kernel's `modules.dep`) and an `/init` that loads them in
//! order. Written as an uncompressed newc cpio archive: nothing to decompress under emulation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context as _, bail};

use super::guest;

/// Builds the initrd for the kernel `version` installed in `rootfs`; returns the archive.
pub(crate) fn build(rootfs: &Path, version: &str) -> anyhow::Result<Vec<u8>> {
    let modules_dir = rootfs.join("lib/modules").join(version);
    let read = |name: &str| {
        let path = modules_dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let order = load_order(
        &read("modules.dep")?,
        &read("modules.builtin")?,
        guest::INITRD_MODULES,
    )?;
    let mut archive = Cpio::default();
    for dir in ["bin", "dev", "proc", "sys", "newroot"] {
        archive.dir(dir);
    }
    let busybox = rootfs.join("bin/busybox");
    let busybox = std::fs::read(&busybox)
        .with_context(|| format!("reading {} (busybox-static)", busybox.display()))?;
    archive.file("bin/busybox", 0o755, &busybox);
    let mut parents = BTreeSet::new();
    for module in &order {
        for parent in Path::new(module).ancestors().skip(1) {
            if !parent.as_os_str().is_empty() {
                parents.insert(parent.to_string_lossy().into_owned());
            }
        }
    }
    // BTreeSet order puts each parent before its children.
    for parent in &parents {
        archive.dir(parent);
    }
    for module in &order {
        let data = std::fs::read(modules_dir.join(module))
            .with_context(|| format!("reading module {module}"))?;
        archive.file(module, 0o644, &data);
    }
    archive.file("init", 0o755, guest::init_script(&order).as_bytes());
    Ok(archive.finish())
}

/// The module files (paths relative to the modules directory) to load for `wanted`, each after
/// its dependencies. Built-in modules need no loading; a module found in neither list is an
/// error, and so is a compressed one (busybox's insmod takes plain `.ko` files).
pub(crate) fn load_order(
    modules_dep: &str,
    modules_builtin: &str,
    wanted: &[&str],
) -> anyhow::Result<Vec<String>> {
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in modules_dep.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        let requires = rest.split_whitespace().map(module_name).collect();
        deps.insert(module_name(path), (path.to_owned(), requires));
    }
    let builtin: BTreeSet<String> = modules_builtin.lines().map(module_name).collect();

    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    for name in wanted {
        visit(
            &normalise(name),
            &deps,
            &builtin,
            &mut done,
            &mut Vec::new(),
            &mut order,
        )?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    deps: &BTreeMap<String, (String, Vec<String>)>,
    builtin: &BTreeSet<String>,
    done: &mut BTreeSet<String>,
    stack: &mut Vec<String>,
    order: &mut Vec<String>,
) -> anyhow::Result<()> {
    if done.contains(name) || builtin.contains(name) {
        return Ok(());
    }
    if stack.iter().any(|s| s == name) {
        bail!("module dependency cycle: {} -> {name}", stack.join(" -> "));
    }
    let Some((path, requires)) = deps.get(name) else {
        bail!("kernel module {name} is neither in modules.dep nor built in");
    };
    if !path.ends_with(".ko") {
        bail!("module {path} is compressed; the initrd's insmod needs plain .ko files");
    }
    stack.push(name.to_owned());
    for dep in requires {
        visit(dep, deps, builtin, done, stack, order)?;
    }
    stack.pop();
    done.insert(name.to_owned());
    order.push(path.clone());
    Ok(())
}

/// `kernel/drivers/virtio/virtio_pci.ko` → `virtio_pci` (dashes and underscores are one).
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalise(stem)
}

fn normalise(name: &str) -> String {
    name.trim().replace('-', "_")
}

/// A newc ("070701") cpio archive, the format the kernel unpacks into its initial root.
#[derive(Debug, Default)]
pub(crate) struct Cpio {
    bytes: Vec<u8>,
    next_inode: u32,
}

impl Cpio {
    pub(crate) fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_000 | 0o755, &[]);
    }

    pub(crate) fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | (mode & 0o7777), data);
    }

    /// Appends the trailer and returns the archive.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.bytes
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.next_inode += 1;
        let name_size = name.len() + 1; // with its NUL
        let nlink = if mode & 0o040_000 != 0 { 2 } else { 1 };
        // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
        // rdevminor, namesize, check: each eight hex digits.
        let fields = [
            self.next_inode as usize,
            mode as usize,
            0,
            0,
            nlink,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name_size,
            0,
        ];
        self.bytes.extend_from_slice(b"070701");
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{:08x}", field as u32).as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    /// Header plus name, and data, each end on a four-byte boundary.
    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/crypto/crc32c_generic.ko:
kernel/fs/xz/xzmod.ko.xz:
";

    fn position(order: &[String], name: &str) -> usize {
        order
            .iter()
            .position(|p| module_name(p) == name)
            .unwrap_or_else(|| panic!("{name} missing from {order:?}"))
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let order = load_order(DEP, "", &["virtio_pci", "virtio_blk", "ext4"]).unwrap();
        assert_eq!(order.len(), 9, "{order:?}");
        for (before, after) in [
            ("virtio", "virtio_pci"),
            ("virtio_ring", "virtio_pci"),
            ("virtio_pci", "virtio_blk"),
            ("jbd2", "ext4"),
            ("crc16", "ext4"),
        ] {
            assert!(
                position(&order, before) < position(&order, after),
                "{order:?}"
            );
        }
    }

    #[test]
    fn builtin_modules_are_skipped_and_unknown_ones_fail() {
        let order = load_order(DEP, "kernel/fs/jbd2/jbd2.ko\n", &["ext4"]).unwrap();
        assert!(!order.iter().any(|p| p.contains("jbd2")), "{order:?}");
        let only_builtin = load_order(DEP, "kernel/fs/nine.ko\n", &["nine"]).unwrap();
        assert!(only_builtin.is_empty());
        let err = load_order(DEP, "", &["no_such"]).unwrap_err().to_string();
        assert!(err.contains("no_such"), "{err}");
        let err = load_order(DEP, "", &["xzmod"]).unwrap_err().to_string();
        assert!(err.contains("compressed"), "{err}");
    }

    #[test]
    fn dashes_and_underscores_name_the_same_module() {
        let dep = "kernel/a/foo-bar.ko: kernel/a/dep_x.ko\nkernel/a/dep_x.ko:\n";
        let order = load_order(dep, "", &["foo_bar"]).unwrap();
        assert_eq!(order, ["kernel/a/dep_x.ko", "kernel/a/foo-bar.ko"]);
    }

    #[test]
    fn cpio_entries_are_aligned_and_end_in_a_trailer() {
        let mut cpio = Cpio::default();
        cpio.dir("bin");
        cpio.file("bin/x", 0o755, b"hello");
        let bytes = cpio.finish();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        // First entry: inode 1, a directory 0755.
        assert_eq!(&bytes[6..14], b"00000001");
        assert_eq!(&bytes[14..22], b"000041ed");
        // The file's header starts on a 4-byte boundary after "bin\0" padded.
        // A 110-byte header and "bin\0" end at 114; the next header starts at 116.
        let second = (110 + 4usize).next_multiple_of(4);
        assert_eq!(second, 116);
        assert_eq!(&bytes[second..second + 6], b"070701");
        assert_eq!(&bytes[second + 14..second + 22], b"000081ed");
        assert_eq!(&bytes[second + 54..second + 62], b"00000005"); // filesize
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!"));
    }
}
