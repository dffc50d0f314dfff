//! The file-system calls the store makes, behind a small trait: [`OsDisk`] runs them, and in
//! tests `FaultyDisk` fails chosen ones (`ENOSPC`, `EIO`, …) so every error path of the store
//! can be driven without filling a real disk. (Root ignores permission bits, so a read-only
//! directory cannot stand in for a full disk in CI, which runs as root.)
//!
//! Every call takes the path it is about, also for operations on an open [`File`], so that
//! errors and faults can name it.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// File-system operations of the store. Implementations must be cheap to call from the
/// writer thread (no caching, no background work).
pub trait Disk: Send + std::fmt::Debug {
    /// `mkdir -p`.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates (or truncates) `path`, writes `bytes` and fsyncs it.
    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// `rename(2)`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// `link(2)`: a second name for the same file.
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// `unlink(2)`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// fsyncs a directory (makes renames and links in it durable).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Whether two names are the same file (device and inode).
    fn same_file(&self, a: &Path, b: &Path) -> io::Result<bool>;
    /// Reads a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// The entries of a directory, as paths (unordered).
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Last modification time.
    fn modified(&self, path: &Path) -> io::Result<std::time::SystemTime>;
    /// Opens an existing file for writing (no truncation).
    fn open_rw(&self, path: &Path) -> io::Result<File>;
    /// Writes all of `bytes` at `offset` of `file` (named `path`).
    fn write_at(&self, file: &File, path: &Path, bytes: &[u8], offset: u64) -> io::Result<()>;
    /// Truncates or extends `file` (named `path`) to `len` bytes.
    fn set_len(&self, file: &File, path: &Path, len: u64) -> io::Result<()>;
    /// fsyncs `file` (named `path`).
    fn sync_file(&self, file: &File, path: &Path) -> io::Result<()>;
    /// Bytes an unprivileged user may still write on the filesystem holding `dir`
    /// (`statvfs`: `f_bavail * f_frsize`).
    fn free_bytes(&self, dir: &Path) -> io::Result<u64>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct OsDisk;

impl Disk for OsDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let mut f = File::create(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::hard_link(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn same_file(&self, a: &Path, b: &Path) -> io::Result<bool> {
        let (a, b) = (fs::metadata(a)?, fs::metadata(b)?);
        Ok(a.dev() == b.dev() && a.ino() == b.ino())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir)? {
            out.push(e?.path());
        }
        Ok(out)
    }

    fn modified(&self, path: &Path) -> io::Result<std::time::SystemTime> {
        fs::symlink_metadata(path)?.modified()
    }

    fn open_rw(&self, path: &Path) -> io::Result<File> {
        fs::OpenOptions::new().write(true).open(path)
    }

    fn write_at(&self, file: &File, _path: &Path, bytes: &[u8], offset: u64) -> io::Result<()> {
        file.write_all_at(bytes, offset)
    }

    fn set_len(&self, file: &File, _path: &Path, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    fn sync_file(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_all()
    }

    fn free_bytes(&self, dir: &Path) -> io::Result<u64> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid NUL-terminated path and `s` a valid out-pointer.
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // The field types differ between targets (u32 on some 32-bit ones).
        #[allow(clippy::unnecessary_cast)]
        Ok((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
    }
}

/// Test double: [`OsDisk`] with injected failures.
#[cfg(test)]
pub(crate) mod faulty {
    use super::*;
    use std::sync::{Arc, Mutex, MutexGuard};

    /// An operation of [`Disk`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Op {
        CreateDir,
        WriteFile,
        Rename,
        HardLink,
        Remove,
        SyncDir,
        Read,
        List,
        OpenRw,
        WriteAt,
        SetLen,
        SyncFile,
    }

    #[derive(Debug)]
    struct Fault {
        op: Op,
        path_contains: String,
        errno: i32,
        /// Failures left; `None` = always.
        left: Option<u32>,
    }

    #[derive(Debug, Default)]
    struct State {
        faults: Vec<Fault>,
        free: Option<u64>,
        calls: Vec<(Op, PathBuf)>,
    }

    /// [`OsDisk`] failing the operations it is told to. Clones share the same state, so a
    /// test keeps one to change the faults while the store owns another.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct FaultyDisk(Arc<Mutex<State>>);

    impl FaultyDisk {
        fn state(&self) -> MutexGuard<'_, State> {
            match self.0.lock() {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            }
        }

        /// Fails every `op` on a path containing `path_contains` with `errno`.
        pub(crate) fn fail(&self, op: Op, path_contains: &str, errno: i32) {
            self.state().faults.push(Fault {
                op,
                path_contains: path_contains.into(),
                errno,
                left: None,
            });
        }

        /// Fails the next `times` such operations only.
        pub(crate) fn fail_times(&self, op: Op, path_contains: &str, errno: i32, times: u32) {
            self.state().faults.push(Fault {
                op,
                path_contains: path_contains.into(),
                errno,
                left: Some(times),
            });
        }

        /// Removes every fault.
        pub(crate) fn heal(&self) {
            self.state().faults.clear();
        }

        /// Makes [`Disk::free_bytes`] report `bytes` (`None`: the real value).
        pub(crate) fn set_free(&self, bytes: Option<u64>) {
            self.state().free = bytes;
        }

        /// How many times `op` was called on a path containing `path_contains`.
        pub(crate) fn calls(&self, op: Op, path_contains: &str) -> usize {
            self.state()
                .calls
                .iter()
                .filter(|(o, p)| *o == op && p.to_string_lossy().contains(path_contains))
                .count()
        }

        fn check(&self, op: Op, path: &Path) -> io::Result<()> {
            let mut s = self.state();
            s.calls.push((op, path.to_owned()));
            let text = path.to_string_lossy();
            let hit = s.faults.iter_mut().find(|f| {
                f.op == op && text.contains(&f.path_contains) && f.left.is_none_or(|n| n > 0)
            });
            match hit {
                Some(f) => {
                    if let Some(n) = f.left.as_mut() {
                        *n -= 1;
                    }
                    Err(io::Error::from_raw_os_error(f.errno))
                }
                None => Ok(()),
            }
        }
    }

    impl Disk for FaultyDisk {
        fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
            self.check(Op::CreateDir, dir)?;
            OsDisk.create_dir_all(dir)
        }
        fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
            if let Err(e) = self.check(Op::WriteFile, path) {
                // Like a full disk: the file is created, then the write fails.
                File::create(path)?;
                return Err(e);
            }
            OsDisk.write_file(path, bytes)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.check(Op::Rename, to)?;
            OsDisk.rename(from, to)
        }
        fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.check(Op::HardLink, to)?;
            OsDisk.hard_link(from, to)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            self.check(Op::Remove, path)?;
            OsDisk.remove_file(path)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            self.check(Op::SyncDir, dir)?;
            OsDisk.sync_dir(dir)
        }
        fn same_file(&self, a: &Path, b: &Path) -> io::Result<bool> {
            OsDisk.same_file(a, b)
        }
        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            self.check(Op::Read, path)?;
            OsDisk.read(path)
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
            self.check(Op::List, dir)?;
            OsDisk.list(dir)
        }
        fn modified(&self, path: &Path) -> io::Result<std::time::SystemTime> {
            OsDisk.modified(path)
        }
        fn open_rw(&self, path: &Path) -> io::Result<File> {
            self.check(Op::OpenRw, path)?;
            OsDisk.open_rw(path)
        }
        fn write_at(&self, file: &File, path: &Path, bytes: &[u8], offset: u64) -> io::Result<()> {
            if let Err(e) = self.check(Op::WriteAt, path) {
                // Like a full disk: part of the bytes fit.
                OsDisk.write_at(file, path, &bytes[..bytes.len() / 2], offset)?;
                return Err(e);
            }
            OsDisk.write_at(file, path, bytes, offset)
        }
        fn set_len(&self, file: &File, path: &Path, len: u64) -> io::Result<()> {
            self.check(Op::SetLen, path)?;
            OsDisk.set_len(file, path, len)
        }
        fn sync_file(&self, file: &File, path: &Path) -> io::Result<()> {
            self.check(Op::SyncFile, path)?;
            OsDisk.sync_file(file, path)
        }
        fn free_bytes(&self, dir: &Path) -> io::Result<u64> {
            match self.state().free {
                Some(b) => Ok(b),
                None => OsDisk.free_bytes(dir),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::faulty::{FaultyDisk, Op};
    use super::*;

    #[test]
    fn os_disk_reports_free_space_and_faults_are_injected_and_counted() {
        let dir = std::env::temp_dir().join(format!("lc-disk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        OsDisk.create_dir_all(&dir).expect("mkdir");
        assert!(OsDisk.free_bytes(&dir).expect("statvfs") > 0);
        assert!(OsDisk.free_bytes(&dir.join("missing")).is_err());
        let d = FaultyDisk::default();
        d.fail_times(Op::WriteFile, "x.json", libc::ENOSPC, 1);
        let p = dir.join("x.json");
        let e = d.write_file(&p, b"{}").expect_err("injected");
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(fs::read(&p).expect("created empty"), b"");
        d.write_file(&p, b"{}").expect("only once");
        assert_eq!(d.calls(Op::WriteFile, "x.json"), 2);
        d.set_free(Some(7));
        assert_eq!(d.free_bytes(&dir).expect("free"), 7);
        let q = dir.join("y.json");
        d.hard_link(&p, &q).expect("link");
        assert!(d.same_file(&p, &q).expect("same"));
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
