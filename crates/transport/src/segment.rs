//! A named shared-memory segment under `/dev/shm`: created `O_EXCL` with mode 0600 by one
//! process, opened by others, removed by its creator when dropped.
//!
//! This module and the ring are where unsafe code lives: a mapping shared with another
//! process can change under us at any time, so it is only ever seen as atomics here and
//! every value read from it is untrusted.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64};

use memmap2::{MmapOptions, MmapRaw};

use crate::SetupError;

/// A shared mapping of a file in `/dev/shm` (or any path on a tmpfs).
#[derive(Debug)]
pub struct Segment {
    map: MmapRaw,
    path: PathBuf,
    len: usize,
    owner: bool,
    _file: Option<File>,
}

impl Segment {
    /// Creates a new segment of `len` bytes (a non-zero multiple of 8), zero-filled.
    /// Fails if the path exists. The creator removes the file when the segment is dropped.
    pub fn create(path: &Path, len: usize) -> Result<Segment, SetupError> {
        Segment::create_with(path, len, false)
    }

    /// [`Segment::create`]; with `populate`, the file's pages are allocated now and mapped
    /// in advance (`fallocate`, `MAP_POPULATE`), so no page fault lands in a timed part.
    pub fn create_with(path: &Path, len: usize, populate: bool) -> Result<Segment, SetupError> {
        if len == 0 || len % 8 != 0 {
            return Err(SetupError::Invalid(format!(
                "segment length {len} is not a positive multiple of 8"
            )));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| SetupError::io("create segment", path.display(), e))?;
        let seg = (|| {
            file.set_len(len as u64)
                .map_err(|e| SetupError::io("size segment", path.display(), e))?;
            if populate {
                nix::fcntl::fallocate(
                    &file,
                    nix::fcntl::FallocateFlags::empty(),
                    0,
                    len as libc::off_t,
                )
                .map_err(|e| {
                    SetupError::io("allocate segment", path.display(), std::io::Error::from(e))
                })?;
            }
            let mut opts = MmapOptions::new();
            if populate {
                opts.populate();
            }
            let map = opts
                .len(len)
                .map_raw(&file)
                .map_err(|e| SetupError::io("map segment", path.display(), e))?;
            Ok::<_, SetupError>(map)
        })();
        match seg {
            Ok(map) => Ok(Segment {
                map,
                path: path.to_path_buf(),
                len,
                owner: true,
                _file: Some(file),
            }),
            Err(e) => {
                let _ = std::fs::remove_file(path);
                Err(e)
            }
        }
    }

    /// Opens an existing segment, which must be exactly `len` bytes long.
    pub fn open(path: &Path, len: usize) -> Result<Segment, SetupError> {
        Segment::open_with(path, len, false)
    }

    /// [`Segment::open`]; with `populate`, the mapping's page tables are filled now
    /// (`MAP_POPULATE`).
    pub fn open_with(path: &Path, len: usize, populate: bool) -> Result<Segment, SetupError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| SetupError::io("open segment", path.display(), e))?;
        let actual = file
            .metadata()
            .map_err(|e| SetupError::io("stat segment", path.display(), e))?
            .len();
        if actual != len as u64 || len == 0 || len % 8 != 0 {
            return Err(SetupError::Invalid(format!(
                "segment {} is {actual} bytes, expected {len}",
                path.display()
            )));
        }
        let mut opts = MmapOptions::new();
        if populate {
            opts.populate();
        }
        let map = opts
            .len(len)
            .map_raw(&file)
            .map_err(|e| SetupError::io("map segment", path.display(), e))?;
        Ok(Segment {
            map,
            path: path.to_path_buf(),
            len,
            owner: false,
            _file: Some(file),
        })
    }

    /// A private, zero-filled anonymous mapping of `len` bytes (a non-zero multiple of 8)
    /// with the same views as a shared segment: for in-process use and tests. Pages cost
    /// memory only once touched.
    pub fn anonymous(len: usize) -> Result<Segment, SetupError> {
        Segment::anonymous_with(len, false)
    }

    /// [`Segment::anonymous`]; with `populate`, every page is allocated now.
    pub fn anonymous_with(len: usize, populate: bool) -> Result<Segment, SetupError> {
        if len == 0 || len % 8 != 0 {
            return Err(SetupError::Invalid(format!(
                "segment length {len} is not a positive multiple of 8"
            )));
        }
        let mut opts = MmapOptions::new();
        if populate {
            opts.populate();
        }
        let map = opts
            .len(len)
            .map_anon()
            .map_err(|e| SetupError::io("map anonymous memory", "(anonymous)", e))?;
        Ok(Segment {
            map: MmapRaw::from(map),
            path: PathBuf::new(),
            len,
            owner: false,
            _file: None,
        })
    }

    /// The segment's file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first byte of the mapping (page-aligned).
    pub(crate) fn base(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Gives up ownership: the file stays when this handle is dropped (the parent
    /// prepares a segment for its roles and removes it with [`crate::Endpoint::cleanup`]).
    pub fn persist(mut self) {
        self.owner = false;
    }

    /// The whole segment seen as 32-bit atomic words.
    pub fn words32(&self) -> &[AtomicU32] {
        // SAFETY: as in `words`: page-aligned, `len` a multiple of 8 (so of 4), alive as
        // long as `self`; AtomicU32 has the size and alignment of u32 and permits the
        // shared mutation another process makes.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<AtomicU32>(), self.len / 4) }
    }

    /// The whole segment seen as 64-bit atomic words.
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is page-aligned (so aligned for AtomicU64), `len` is a
        // multiple of 8 and the mapping lives as long as `self`. AtomicU64 has the size
        // and alignment of u64 and allows shared mutation, which is exactly what another
        // process mapping the same file does; no `&mut` to this memory is ever made.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<AtomicU64>(), self.len / 8) }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.owner {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn create_open_share_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let a = Segment::create(&path, 4096).unwrap();
        assert!(
            Segment::create(&path, 4096).is_err(),
            "O_EXCL: a second create must fail"
        );
        let b = Segment::open(&path, 4096).unwrap();
        a.words()[3].store(42, Ordering::Relaxed);
        assert_eq!(b.words()[3].load(Ordering::Relaxed), 42);
        assert!(
            Segment::open(&path, 8192).is_err(),
            "size mismatch is refused"
        );
        drop(b);
        drop(a);
        assert!(!path.exists(), "the creator removes the file");
    }
}
