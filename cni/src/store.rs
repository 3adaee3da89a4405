//! The on-disk allocation store, in host-local's layout so either plugin can read it:
//! `<dataDir>/<network>/<ip>` holds `<containerID>\r\n<ifname>`, `last_reserved_ip.0` the last
//! address handed out; the directory itself is `flock`ed for the whole operation.

use std::fs::{self, File};
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::Ipv4Addr;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::config::{Attachment, IpRange};
use crate::error::CniError;
use crate::ipam::{self, Allocation};

const LAST_RESERVED: &str = "last_reserved_ip.0";
const LINE_BREAK: &str = "\r\n";

/// An exclusively locked allocation directory; the lock is released on drop.
#[derive(Debug)]
pub struct IpamStore {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl IpamStore {
    /// Creates the directory if needed and takes the exclusive lock (blocking).
    pub fn lock(dir: &Path) -> Result<Self, CniError> {
        let open_err = |err| CniError::io(format!("opening {}", dir.display()), err);
        // Usually there: one open, no mkdir.
        let handle = match File::open(dir) {
            Err(err) if err.kind() == ErrorKind::NotFound => {
                fs::create_dir_all(dir)
                    .map_err(|err| CniError::io(format!("creating {}", dir.display()), err))?;
                File::open(dir).map_err(open_err)?
            }
            other => other.map_err(open_err)?,
        };
        let lock = Flock::lock(handle, FlockArg::LockExclusive).map_err(|(_, errno)| {
            CniError::io(format!("locking {}", dir.display()), errno.into())
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    /// Every reserved address (files named by an IPv4 address).
    pub fn allocations(&self) -> Result<Vec<Allocation>, CniError> {
        let read_err = |err| CniError::io(format!("reading {}", self.dir.display()), err);
        let mut allocations = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let content = match read_small(&entry.path()) {
                Ok(content) => content,
                Err(err) if err.kind() == ErrorKind::NotFound => continue,
                Err(err) => return Err(read_err(err)),
            };
            let (container_id, ifname) = match content.split_once(LINE_BREAK) {
                Some((id, ifname)) => (id.trim().to_owned(), Some(ifname.trim().to_owned())),
                None => (content.trim().to_owned(), None),
            };
            allocations.push(Allocation {
                ip,
                container_id,
                ifname,
            });
        }
        allocations.sort_by_key(|a| a.ip);
        Ok(allocations)
    }

    /// Creates the allocation file (`O_EXCL`: `false` if the address is taken). A crash
    /// between create and write leaves an empty file that no attachment holds, which the next
    /// GC frees.
    fn reserve(&self, ip: Ipv4Addr, container_id: &str, ifname: &str) -> Result<bool, CniError> {
        let path = self.dir.join(ip.to_string());
        let mut file = match File::options().write(true).create_new(true).open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(err) => return Err(CniError::io(format!("reserving {ip}"), err)),
        };
        file.write_all(format!("{container_id}{LINE_BREAK}{ifname}").as_bytes())
            .map_err(|err| CniError::io(format!("writing {}", path.display()), err))?;
        Ok(true)
    }

    fn release(&self, ip: Ipv4Addr) -> Result<(), CniError> {
        match fs::remove_file(self.dir.join(ip.to_string())) {
            Err(err) if err.kind() != ErrorKind::NotFound => {
                Err(CniError::io(format!("releasing {ip}"), err))
            }
            _ => Ok(()),
        }
    }

    /// The attachment's address: the one it already holds (repeated ADD), else the next free one.
    pub fn allocate(
        &self,
        range: &IpRange,
        container_id: &str,
        ifname: &str,
    ) -> Result<Ipv4Addr, CniError> {
        let allocations = self.allocations()?;
        if let Some(held) = allocations
            .iter()
            .find(|a| a.held_by(container_id, ifname) && range.subnet.contains(a.ip))
        {
            return Ok(held.ip);
        }
        // Sorted by address (see `allocations`).
        let taken = |ip: Ipv4Addr| allocations.binary_search_by_key(&ip, |a| a.ip).is_ok();
        let mut pointer = LastReserved::open(&self.dir)?;
        let mut last = pointer.ip;
        // Normally the first candidate wins; a file created behind our back (another writer not
        // honouring the lock) only makes us move on.
        for _ in 0..16 {
            let ip = ipam::next_free(range, last, taken)
                .ok_or_else(|| CniError::NoAddresses(format!("{}-{}", range.start, range.end)))?;
            if self.reserve(ip, container_id, ifname)? {
                pointer.store(ip)?;
                return Ok(ip);
            }
            last = Some(ip);
        }
        Err(CniError::NoAddresses(format!(
            "{}-{}",
            range.start, range.end
        )))
    }

    /// The attachment's address, if it holds one.
    pub fn find(&self, container_id: &str, ifname: &str) -> Result<Option<Ipv4Addr>, CniError> {
        Ok(self
            .allocations()?
            .into_iter()
            .find(|a| a.held_by(container_id, ifname))
            .map(|a| a.ip))
    }

    /// Releases whatever the attachment holds (nothing held is fine).
    pub fn release_owner(&self, container_id: &str, ifname: &str) -> Result<(), CniError> {
        for alloc in self.allocations()? {
            if alloc.held_by(container_id, ifname) {
                self.release(alloc.ip)?;
            }
        }
        Ok(())
    }

    /// Releases every allocation not held by one of `valid`; returns what was freed.
    pub fn gc(&self, valid: &[Attachment]) -> Result<Vec<Ipv4Addr>, CniError> {
        let allocations = self.allocations()?;
        let stale = ipam::stale_allocations(&allocations, valid);
        for alloc in &stale {
            self.release(alloc.ip)?;
        }
        Ok(stale.iter().map(|a| a.ip).collect())
    }
}

/// `last_reserved_ip.0`, open for reading and rewriting: one open for both.
struct LastReserved {
    file: File,
    ip: Option<Ipv4Addr>,
    len: usize,
}

impl LastReserved {
    fn open(dir: &Path) -> Result<Self, CniError> {
        let err = |err| CniError::io("opening last_reserved_ip", err);
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LAST_RESERVED))
            .map_err(err)?;
        let mut buf = [0u8; 64];
        let len = read_into(&file, &mut buf).map_err(err)?;
        let ip = std::str::from_utf8(&buf[..len])
            .ok()
            .and_then(|text| text.trim().parse().ok());
        Ok(Self { file, ip, len })
    }

    /// Rewrites the pointer in place: on ext4 a truncate to zero (`O_TRUNC`) or a rename over
    /// the old file forces a data flush (`auto_da_alloc`), which costs milliseconds. Cut to
    /// length only when the text got shorter: each metadata change is a journal handle, which
    /// waits while the journal commits.
    fn store(&mut self, ip: Ipv4Addr) -> Result<(), CniError> {
        let err = |err| CniError::io("writing last_reserved_ip", err);
        let text = ip.to_string();
        self.file.write_all_at(text.as_bytes(), 0).map_err(err)?;
        if self.len > text.len() {
            self.file.set_len(text.len() as u64).map_err(err)?;
        }
        self.ip = Some(ip);
        self.len = text.len();
        Ok(())
    }
}

/// Reads from the start of `file` into `buf` until it is full or the file ends; the length read.
/// One `read` for a small file: a short read of a regular file is its end.
fn read_into(mut file: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len < buf.len() {
                    break;
                }
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(len)
}

/// A small file's text, such as an allocation file (`<containerID>\r\n<ifname>`: well under
/// 512 bytes; anything longer is cut there, which no valid ID reaches) or a sysctl. Open, one read, close: `read_to_string`
/// would also `stat` the file and read again to see its end.
pub(crate) fn read_small(path: &Path) -> std::io::Result<String> {
    let mut buf = [0u8; 512];
    let len = read_into(&File::open(path)?, &mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..len]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RangeConf;

    fn range() -> IpRange {
        IpRange::from_conf(&RangeConf {
            subnet: Some("10.5.0.0/29".into()),
            ..RangeConf::default()
        })
        .expect("range")
    }

    #[test]
    fn allocate_repeat_release_exhaust_gc() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("net");
        let store = IpamStore::lock(&dir).expect("lock");
        let range = range();
        let a = store.allocate(&range, "a", "eth0").expect("a");
        assert_eq!(a, Ipv4Addr::new(10, 5, 0, 2));
        assert_eq!(store.allocate(&range, "a", "eth0").expect("again"), a);
        assert_eq!(
            fs::read_to_string(dir.join("10.5.0.2")).expect("file"),
            "a\r\neth0"
        );
        let b = store.allocate(&range, "a", "eth1").expect("second ifname");
        assert_ne!(a, b);
        for id in ["c", "d", "e"] {
            store.allocate(&range, id, "eth0").expect("fill");
        }
        // 10.5.0.2..=6 handed out: the /29 has no more (gateway .1, broadcast .7).
        let err = store.allocate(&range, "g", "eth0").expect_err("exhausted");
        assert_eq!(err.code(), crate::error::CODE_NO_ADDRESSES);
        store.release_owner("a", "eth0").expect("release");
        store.release_owner("a", "eth0").expect("release twice");
        assert_eq!(store.find("a", "eth0").expect("find"), None);
        assert_eq!(store.allocate(&range, "g", "eth0").expect("freed"), a);
        let freed = store
            .gc(&[Attachment {
                container_id: "g".into(),
                ifname: "eth0".into(),
            }])
            .expect("gc");
        assert_eq!(freed.len(), 4);
        let left: Vec<Ipv4Addr> = store
            .allocations()
            .expect("list")
            .iter()
            .map(|a| a.ip)
            .collect();
        assert_eq!(left, [a]);
        assert!(
            dir.join(LAST_RESERVED).exists(),
            "gc keeps the last-reserved pointer"
        );
    }

    #[test]
    fn last_reserved_pointer_rewritten_in_place() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut pointer = LastReserved::open(tmp.path()).expect("open");
        assert_eq!(pointer.ip, None, "a new store has no pointer");
        pointer.store(Ipv4Addr::new(10, 0, 0, 100)).expect("write");
        pointer.store(Ipv4Addr::new(10, 0, 0, 9)).expect("shorter");
        assert_eq!(
            fs::read_to_string(tmp.path().join(LAST_RESERVED)).expect("read"),
            "10.0.0.9"
        );
        let mut pointer = LastReserved::open(tmp.path()).expect("reopen");
        assert_eq!(pointer.ip, Some(Ipv4Addr::new(10, 0, 0, 9)));
        // Longer and same-length texts overwrite without a truncate.
        for (ip, text) in [
            (Ipv4Addr::new(10, 0, 0, 10), "10.0.0.10"),
            (Ipv4Addr::new(10, 0, 0, 11), "10.0.0.11"),
        ] {
            pointer.store(ip).expect("write");
            assert_eq!(
                fs::read_to_string(tmp.path().join(LAST_RESERVED)).expect("read"),
                text
            );
        }
        // host-local's own format (a trailing newline) and garbage both parse as expected.
        fs::write(tmp.path().join(LAST_RESERVED), "10.0.0.77\n").expect("write");
        assert_eq!(
            LastReserved::open(tmp.path()).expect("open").ip,
            Some(Ipv4Addr::new(10, 0, 0, 77))
        );
        fs::write(tmp.path().join(LAST_RESERVED), "not an address").expect("write");
        assert_eq!(LastReserved::open(tmp.path()).expect("open").ip, None);
    }

    #[test]
    fn allocation_files_read_whole_and_cut_at_512_bytes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("f");
        for text in ["", "a\r\neth0", &"x".repeat(511), &"y".repeat(512)] {
            fs::write(&path, text).expect("write");
            assert_eq!(read_small(&path).expect("read"), text);
        }
        fs::write(&path, "z".repeat(700)).expect("write");
        assert_eq!(read_small(&path).expect("read"), "z".repeat(512));
    }

    #[test]
    fn crash_leftover_empty_file_is_taken_until_gc() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = IpamStore::lock(tmp.path()).expect("lock");
        fs::write(tmp.path().join("10.5.0.2"), b"").expect("empty allocation");
        assert_eq!(
            store.allocate(&range(), "a", "eth0").expect("a"),
            Ipv4Addr::new(10, 5, 0, 3)
        );
        let freed = store
            .gc(&[Attachment {
                container_id: "a".into(),
                ifname: "eth0".into(),
            }])
            .expect("gc");
        assert_eq!(freed, [Ipv4Addr::new(10, 5, 0, 2)]);
    }

    #[test]
    fn concurrent_lockers_serialize() {
        // Two threads allocating at once through separate locks never get the same address.
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_owned();
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    IpamStore::lock(&dir)
                        .expect("lock")
                        .allocate(&range(), &format!("c{i}"), "eth0")
                        .expect("allocate")
                })
            })
            .collect();
        let ips: std::collections::HashSet<Ipv4Addr> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        assert_eq!(ips.len(), 4);
    }
}
