//! The atomic writer of the API-backed volumes (upstream's layout, our code): a volume's files
//! live in a hidden timestamped directory (`..2026_11_24_01_02_03.123456789`), `..data` is a
//! symlink to the current one, and each visible top-level name is a symlink through `..data`
//! (`app.conf -> ..data/app.conf`). An update writes a complete new directory and swaps
//! `..data` with one `rename`, so a reader in the container sees either the old set of files
//! or the new one — never a half-written file or a mix.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::super::projection::{FileContent, Payload};

/// The symlink to the current payload directory.
pub const DATA_LINK: &str = "..data";
const DATA_LINK_TMP: &str = "..data_tmp";
const DIR_MODE: u32 = 0o755;

/// Writes `payload` into `dir` (which exists). Returns whether anything changed; a payload
/// equal to what is there leaves the directory untouched.
pub fn write_payload(dir: &Path, payload: &Payload, fs_group: Option<u32>) -> io::Result<bool> {
    let current = fs::read_link(dir.join(DATA_LINK)).ok();
    let visible: BTreeSet<OsString> = payload.keys().filter_map(|p| top_level(p)).collect();
    if let Some(current) = &current
        && matches_payload(&dir.join(current), payload)?
    {
        let links_ok = visible.iter().all(|name| link_is_right(dir, name));
        if !links_ok {
            link_visible(dir, &visible)?;
        }
        remove_stale(dir, &visible, current.as_os_str())?;
        return Ok(!links_ok);
    }

    let name = new_dir_name(dir)?;
    let new_dir = dir.join(&name);
    fs::create_dir(&new_dir)?;
    fs::set_permissions(&new_dir, fs::Permissions::from_mode(DIR_MODE))?;
    if let Err(err) = write_files(&new_dir, payload, fs_group) {
        let _ = fs::remove_dir_all(&new_dir);
        return Err(err);
    }
    let tmp = dir.join(DATA_LINK_TMP);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    symlink(&name, &tmp)?;
    fs::rename(&tmp, dir.join(DATA_LINK))?;
    link_visible(dir, &visible)?;
    remove_stale(dir, &visible, &name)?;
    Ok(true)
}

/// The first component of a payload path: the name visible at the volume's top.
fn top_level(path: &Path) -> Option<OsString> {
    match path.components().next() {
        Some(Component::Normal(name)) => Some(name.to_os_string()),
        _ => None,
    }
}

fn link_target(name: &OsString) -> PathBuf {
    Path::new(DATA_LINK).join(name)
}

fn link_is_right(dir: &Path, name: &OsString) -> bool {
    fs::read_link(dir.join(name)).is_ok_and(|t| t == link_target(name))
}

/// Points each visible name at `..data/<name>`, replacing whatever was there atomically.
fn link_visible(dir: &Path, visible: &BTreeSet<OsString>) -> io::Result<()> {
    for name in visible {
        if link_is_right(dir, name) {
            continue;
        }
        let tmp = dir.join(format!("..link_tmp_{}", name.to_string_lossy()));
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        symlink(link_target(name), &tmp)?;
        if let Err(err) = fs::rename(&tmp, dir.join(name)) {
            let _ = fs::remove_file(&tmp);
            return Err(err);
        }
    }
    Ok(())
}

/// Removes visible links no longer in the payload and every hidden directory but `keep`.
fn remove_stale(
    dir: &Path,
    visible: &BTreeSet<OsString>,
    keep: &std::ffi::OsStr,
) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let file_type = entry.file_type()?;
        let hidden = name.to_string_lossy().starts_with("..");
        if hidden {
            if file_type.is_dir() && name != keep {
                fs::remove_dir_all(entry.path())?;
            }
        } else if file_type.is_symlink()
            && !visible.contains(&name)
            && fs::read_link(entry.path()).is_ok_and(|t| t.starts_with(DATA_LINK))
        {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn write_files(root: &Path, payload: &Payload, fs_group: Option<u32>) -> io::Result<()> {
    for (path, file) in payload {
        let target = root.join(path);
        if let Some(parent) = target.parent().filter(|p| *p != root) {
            create_dirs(root, parent, fs_group)?;
        }
        write_file(&target, file, fs_group)?;
    }
    if let Some(gid) = fs_group {
        std::os::unix::fs::lchown(root, None, Some(gid))?;
    }
    Ok(())
}

/// Creates the directories between `root` and `dir` (0755, group `fs_group`).
fn create_dirs(root: &Path, dir: &Path, fs_group: Option<u32>) -> io::Result<()> {
    let mut current = root.to_path_buf();
    for component in dir.strip_prefix(root).unwrap_or(dir).components() {
        current.push(component);
        match fs::create_dir(&current) {
            Ok(()) => {
                fs::set_permissions(&current, fs::Permissions::from_mode(DIR_MODE))?;
                if let Some(gid) = fs_group {
                    std::os::unix::fs::lchown(&current, None, Some(gid))?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A new file (never through a symlink), its data, then its mode and group. With an fsGroup
/// the group may read it, as upstream's volume ownership does for read-only volumes.
fn write_file(path: &Path, file: &FileContent, fs_group: Option<u32>) -> io::Result<()> {
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    out.write_all(&file.data)?;
    let mut mode = file.mode;
    if let Some(gid) = fs_group {
        std::os::unix::fs::fchown(&out, None, Some(gid))?;
        mode |= 0o440;
    }
    out.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Whether the directory holds exactly the payload: the same files, data and modes.
fn matches_payload(dir: &Path, payload: &Payload) -> io::Result<bool> {
    let mut found = 0usize;
    if !walk_matches(dir, Path::new(""), payload, &mut found)? {
        return Ok(false);
    }
    Ok(found == payload.len())
}

fn walk_matches(
    dir: &Path,
    relative: &Path,
    payload: &Payload,
    found: &mut usize,
) -> io::Result<bool> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = relative.join(entry.file_name());
        let meta = entry.metadata()?;
        if meta.is_dir() {
            if !walk_matches(&entry.path(), &path, payload, found)? {
                return Ok(false);
            }
            continue;
        }
        let Some(want) = payload.get(&path) else {
            return Ok(false);
        };
        if !meta.is_file()
            || meta.permissions().mode() & 0o777 & !0o440 != want.mode & !0o440
            || meta.len() != want.data.len() as u64
            || fs::read(entry.path())? != want.data
        {
            return Ok(false);
        }
        *found += 1;
    }
    Ok(true)
}

/// `..YYYY_MM_DD_HH_MM_SS.nnnnnnnnn` (UTC) for now, unique in `dir`.
fn new_dir_name(dir: &Path) -> io::Result<OsString> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (year, month, day) = civil_date(secs / 86_400);
    let rem = secs % 86_400;
    let mut nanos = now.subsec_nanos();
    loop {
        let name = format!(
            "..{year:04}_{month:02}_{day:02}_{:02}_{:02}_{:02}.{nanos:09}",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        );
        if !dir.join(&name).exists() {
            return Ok(name.into());
        }
        nanos = nanos.wrapping_add(1);
    }
}

/// The Gregorian date of a day count since 1970-01-01.
fn civil_date(days: u64) -> (u64, u64, u64) {
    // Howard Hinnant's days-to-civil algorithm, for non-negative day counts.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(files: &[(&str, &str, u32)]) -> Payload {
        files
            .iter()
            .map(|(p, d, m)| {
                (
                    PathBuf::from(p),
                    FileContent {
                        data: d.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "kwk-atomic-{}-{}",
            std::process::id(),
            new_dir_name(Path::new("/nonexistent"))
                .unwrap()
                .to_string_lossy()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("..2"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(20_781), (2026, 11, 24));
    }

    #[test]
    fn writes_swaps_and_cleans_up() {
        let dir = tempdir();
        let first = payload(&[("a.conf", "one", 0o644), ("sub/b", "two", 0o600)]);
        assert!(write_payload(&dir, &first, None).unwrap());
        assert_eq!(listing(&dir), ["..data", "a.conf", "sub"]);
        assert_eq!(fs::read_to_string(dir.join("a.conf")).unwrap(), "one");
        assert_eq!(fs::read_to_string(dir.join("sub/b")).unwrap(), "two");
        let mode = fs::metadata(dir.join("sub/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let data_dir = fs::read_link(dir.join(DATA_LINK)).unwrap();

        // The same payload again: nothing changes.
        assert!(!write_payload(&dir, &first, None).unwrap());
        assert_eq!(fs::read_link(dir.join(DATA_LINK)).unwrap(), data_dir);

        // A mode change alone is a change.
        let chmod = payload(&[("a.conf", "one", 0o640), ("sub/b", "two", 0o600)]);
        assert!(write_payload(&dir, &chmod, None).unwrap());

        // A new payload: a key gone, one added, one changed; the old directory is removed.
        let second = payload(&[("a.conf", "ONE", 0o644), ("c", "three", 0o644)]);
        assert!(write_payload(&dir, &second, None).unwrap());
        assert_eq!(listing(&dir), ["..data", "a.conf", "c"]);
        assert_eq!(fs::read_to_string(dir.join("a.conf")).unwrap(), "ONE");
        let hidden: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("..2")
            })
            .collect();
        assert_eq!(hidden.len(), 1);

        // An empty payload (an optional object that is gone) leaves only `..data`.
        assert!(write_payload(&dir, &Payload::new(), None).unwrap());
        assert_eq!(listing(&dir), ["..data"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_reader_never_sees_a_mix_of_two_versions() {
        let dir = tempdir();
        let version = |v: usize| {
            let body = format!("{v}:").repeat(2000);
            payload(&[("a", &body, 0o644), ("b", &body, 0o644)])
        };
        write_payload(&dir, &version(0), None).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Both files through one resolution of `..data`, as a reader of a
                    // directory snapshot would (open the directory, then read inside it).
                    let Ok(data) = fs::canonicalize(dir.join(DATA_LINK)) else {
                        continue;
                    };
                    let (Ok(a), Ok(b)) = (
                        fs::read_to_string(data.join("a")),
                        fs::read_to_string(data.join("b")),
                    ) else {
                        continue; // that version was removed after the swap: read again
                    };
                    assert_eq!(a, b, "a reader saw two versions at once");
                    let prefix = a.split(':').next().unwrap().to_string();
                    assert_eq!(a, format!("{prefix}:").repeat(2000), "a half-written file");
                    if let Ok(single) = fs::read_to_string(dir.join("a")) {
                        let p = single.split(':').next().unwrap().to_string();
                        assert_eq!(single, format!("{p}:").repeat(2000), "a half-written file");
                    }
                    reads += 1;
                }
                reads
            })
        };
        for v in 1..200 {
            write_payload(&dir, &version(v), None).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let reads = reader.join().unwrap();
        assert!(reads > 0);
        fs::remove_dir_all(&dir).unwrap();
    }
}
