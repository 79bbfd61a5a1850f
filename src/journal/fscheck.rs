//! Refuses a state directory on a network file system: SQLite's WAL mode needs shared memory
//! and POSIX locks that NFS, SMB, Lustre, GPFS, Ceph or sshfs do not provide reliably.
//!
//! The check reads the file system type with `statfs` (and, for FUSE, the mount's subtype in
//! `/proc/self/mountinfo`). It only reads; it must not create or change anything. The mirror
//! root is not checked: it may live on such file systems (see ARCHITECTURE.md).

use std::path::{Path, PathBuf};

/// The state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FsCheckError {
    /// It is on a network or cluster file system.
    #[error("state-dir {path} is on a {fs} file system; the journal (SQLite in WAL mode) needs a local file system (ext4, xfs, btrfs, zfs, tmpfs): set state-dir to a local directory such as /var/lib/dxmirror (the mirror root may stay on {fs})")]
    Network {
        /// The directory.
        path: PathBuf,
        /// The file system's name.
        fs: String,
    },
    /// `statfs` failed.
    #[error("cannot inspect the file system of state-dir {path}: {source}")]
    Io {
        /// The directory (or its nearest existing ancestor).
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Magic numbers (`f_type`) of file systems the journal must not live on.
const NETWORK_MAGICS: &[(u32, &str)] = &[
    (0x6969, "NFS"),
    (0x517B, "SMB"),
    (0xFF53_4D42, "CIFS"),
    (0xFE53_4D42, "SMB2"),
    (0x0BD0_0BD0, "Lustre"),
    (0x4750_4653, "GPFS"),
    (0x00C3_6400, "Ceph"),
    (0x5346_414F, "AFS"),
    (0x6B41_4653, "AFS"),
    (0x0102_1997, "9p"),
    (0x7375_7245, "Coda"),
    (0x564C, "NCP"),
    (0x1983_0326, "BeeGFS"),
    (0x7461_636F, "OCFS2"),
    (0x0116_1970, "GFS2"),
];
const FUSE_MAGIC: u32 = 0x6573_5546;
/// FUSE subtypes that are network file systems.
const NETWORK_FUSE: &[&str] = &[
    "sshfs",
    "s3fs",
    "gcsfuse",
    "rclone",
    "glusterfs",
    "ceph-fuse",
    "cephfs",
    "davfs",
    "juicefs",
    "lustre",
    "gpfs",
];

/// Names the network file system `f_type` denotes, if it is one.
pub fn network_fs_name(f_type: u32) -> Option<&'static str> {
    NETWORK_MAGICS
        .iter()
        .find(|(m, _)| *m == f_type)
        .map(|(_, n)| *n)
}

/// Refuses `dir` (or, if it does not exist yet, its nearest existing ancestor) when it is on
/// a network file system.
pub fn require_local_state_dir(dir: &Path) -> Result<(), FsCheckError> {
    let mut probe = dir.to_owned();
    while !probe.exists() {
        match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe = p.to_owned(),
            _ => {
                probe = PathBuf::from(".");
                break;
            }
        }
    }
    let st = rustix::fs::statfs(&probe).map_err(|e| FsCheckError::Io {
        path: probe.clone(),
        source: e.into(),
    })?;
    // f_type is a signed long on most targets; the magics are 32-bit.
    let f_type = (st.f_type as i64 & 0xFFFF_FFFF) as u32;
    if let Some(fs) = network_fs_name(f_type) {
        return Err(FsCheckError::Network {
            path: dir.to_owned(),
            fs: fs.to_owned(),
        });
    }
    if f_type == FUSE_MAGIC {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let canon = probe.canonicalize().unwrap_or(probe);
        if let Some(fstype) = mount_fstype(&mountinfo, &canon) {
            let sub = fstype.strip_prefix("fuse.").unwrap_or(&fstype);
            if NETWORK_FUSE.iter().any(|n| sub.starts_with(n)) {
                return Err(FsCheckError::Network {
                    path: dir.to_owned(),
                    fs: fstype,
                });
            }
        }
    }
    Ok(())
}

/// The type of the file system holding `path` as the mount table names it (`ext4`, `xfs`,
/// `nfs4`, `fuse.sshfs`, ...), when it can be read.
pub fn fs_type(path: &Path) -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mount_fstype(&mountinfo, &path.canonicalize().ok()?)
}

/// The file system type of the mount holding `path`, from `/proc/self/mountinfo` text.
fn mount_fstype(mountinfo: &str, path: &Path) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(mount_point) = fields.get(4).map(|m| unescape(m)) else {
            continue;
        };
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let Some(fstype) = fields.get(dash + 1) else {
            continue;
        };
        if path.starts_with(&mount_point) {
            let len = mount_point.len();
            if best.as_ref().is_none_or(|(l, _)| len >= *l) {
                best = Some((len, (*fstype).to_owned()));
            }
        }
    }
    best.map(|(_, t)| t)
}

/// Decodes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_magics_are_named() {
        assert_eq!(network_fs_name(0x6969), Some("NFS"));
        assert_eq!(network_fs_name(0x0BD0_0BD0), Some("Lustre"));
        assert_eq!(network_fs_name(0x4750_4653), Some("GPFS"));
        assert_eq!(network_fs_name(0xEF53), None); // ext4
    }

    #[test]
    fn local_temp_dir_is_accepted_even_before_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        require_local_state_dir(&dir.path().join("not/yet")).unwrap();
    }

    #[test]
    fn fuse_subtype_comes_from_the_longest_mount() {
        let info = "22 1 0:21 / / rw - ext4 /dev/sda1 rw\n\
                    40 22 0:40 / /mnt/remote\\040dir rw - fuse.sshfs host:/x rw\n";
        assert_eq!(
            mount_fstype(info, Path::new("/mnt/remote dir/state")).as_deref(),
            Some("fuse.sshfs")
        );
        assert_eq!(
            mount_fstype(info, Path::new("/var/lib")).as_deref(),
            Some("ext4")
        );
    }
}
