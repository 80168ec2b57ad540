//! The store: layout, locks, blobs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use strata_image::digest::{Digest, HashingWriter};

use crate::error::{IoContext, Result, StoreError};
use crate::fsutil::{self, FileLock, LockMode};

/// The on-disk format version of a store.
pub const STORE_VERSION: &str = "strata.store.v1";

/// The default store location.
pub const DEFAULT_ROOT: &str = "/var/lib/strata";

/// A handle on a store directory. Cheap to clone; holds no locks itself.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Store> {
        let s = Store {
            root: root.to_path_buf(),
        };
        let version = s.root.join("version");
        let dirs = [
            s.root.clone(),
            s.blobs_dir(),
            s.layers_dir(),
            s.images_dir(),
            s.buildcache_dir(),
            s.containers_dir(),
            s.tmp_dir(),
            s.locks_dir(),
        ];
        // This is on every container start's path (twice): a store that is complete is only
        // looked at; one that is not (new, or a directory someone deleted) is completed.
        if fs::read_to_string(&version).is_ok_and(|v| v.trim() == STORE_VERSION)
            && dirs.iter().all(|d| d.is_dir())
        {
            return Ok(s);
        }
        for d in &dirs {
            fs::create_dir_all(d).at(d)?;
        }
        match fs::read_to_string(&version) {
            Ok(v) if v.trim() == STORE_VERSION => {}
            Ok(v) => {
                return Err(StoreError::Invalid(format!(
                    "{}: store format {:?} is not {STORE_VERSION}",
                    version.display(),
                    v.trim()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fsutil::atomic_write(
                    &s.tmp_dir(),
                    &version,
                    format!("{STORE_VERSION}\n").as_bytes(),
                )?;
            }
            Err(e) => return Err(StoreError::io(version, e)),
        }
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }
    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }
    pub fn buildcache_dir(&self) -> PathBuf {
        self.root.join("buildcache")
    }
    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    pub fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// A lease for work that adds to the store: garbage collection waits while any is held,
    /// and it ends when the process does (flock), so a killed client pins nothing.
    pub fn lease(&self) -> Result<FileLock> {
        FileLock::acquire(&self.locks_dir().join("gc.lock"), LockMode::Shared)
    }

    /// The exclusive side of [`Store::lease`], for GC and repairs.
    pub fn exclusive(&self) -> Result<FileLock> {
        FileLock::acquire(&self.locks_dir().join("gc.lock"), LockMode::Exclusive)
    }

    /// The exclusive lock if no lease is held now.
    pub fn try_exclusive(&self) -> Result<Option<FileLock>> {
        FileLock::try_acquire(&self.locks_dir().join("gc.lock"), LockMode::Exclusive)
    }

    /// Serialises read-modify-write of small metadata files.
    pub fn meta_lock(&self, name: &str) -> Result<FileLock> {
        FileLock::acquire(
            &self.locks_dir().join(format!("{name}.lock")),
            LockMode::Exclusive,
        )
    }

    /// A fresh, empty directory under `tmp/`.
    pub fn temp_dir(&self, prefix: &str) -> Result<PathBuf> {
        let p = self.tmp_dir().join(fsutil::tmp_name(prefix));
        fs::create_dir(&p).at(&p)?;
        Ok(p)
    }

    /// A path under `tmp/` that does not exist yet.
    pub fn temp_path(&self, prefix: &str) -> PathBuf {
        self.tmp_dir().join(fsutil::tmp_name(prefix))
    }

    /// Writes `bytes` atomically to `path` inside the store.
    pub fn atomic_write(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        fsutil::atomic_write(&self.tmp_dir(), path, bytes)
    }

    // ---- blobs -------------------------------------------------------------------------

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs_dir().join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    pub fn blob_size(&self, d: &Digest) -> Result<u64> {
        let p = self.blob_path(d);
        fs::metadata(&p)
            .map(|m| m.len())
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => {
                    StoreError::NotFound(format!("blob {d} is not in the store"))
                }
                _ => StoreError::io(&p, e),
            })
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        let p = self.blob_path(d);
        File::open(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                StoreError::NotFound(format!("blob {d} is not in the store"))
            }
            _ => StoreError::io(&p, e),
        })
    }

    /// Reads a small blob whole (at most `cap` bytes) and verifies its digest.
    pub fn read_blob(&self, d: &Digest, cap: u64) -> Result<Vec<u8>> {
        let mut f = self.open_blob(d)?;
        let mut buf = Vec::new();
        (&mut f)
            .take(cap + 1)
            .read_to_end(&mut buf)
            .at(self.blob_path(d))?;
        if buf.len() as u64 > cap {
            return Err(StoreError::Invalid(format!(
                "blob {d} is larger than {cap} bytes"
            )));
        }
        let actual = Digest::of(&buf);
        if &actual != d {
            return Err(StoreError::Corrupt(format!(
                "blob {d} hashes to {actual}; run `strata system check`"
            )));
        }
        Ok(buf)
    }

    /// Stores `bytes` as a blob and returns its digest.
    pub fn put_blob_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let (d, _) = self.ingest_blob(bytes, None, None, "blob")?;
        Ok(d)
    }

    /// Streams `r` into the store, verifying the expected digest and size while reading (and
    /// reading at most size+1 bytes). Nothing becomes visible unless it verifies.
    pub fn ingest_blob<R: Read>(
        &self,
        r: R,
        expect: Option<&Digest>,
        expect_size: Option<u64>,
        what: &str,
    ) -> Result<(Digest, u64)> {
        let tmp = self.temp_path("blob");
        let result = self.ingest_into(&tmp, r, expect, expect_size, what);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn ingest_into<R: Read>(
        &self,
        tmp: &Path,
        r: R,
        expect: Option<&Digest>,
        expect_size: Option<u64>,
        what: &str,
    ) -> Result<(Digest, u64)> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .at(tmp)?;
        let mut w = HashingWriter::new(io::BufWriter::with_capacity(256 << 10, file));
        let mut limited = r.take(expect_size.map(|s| s + 1).unwrap_or(u64::MAX));
        io::copy(&mut limited, &mut w).map_err(|e| StoreError::Invalid(format!("{what}: {e}")))?;
        let (buf, digest, size) = w.finish();
        if let Some(es) = expect_size {
            if size != es {
                return Err(StoreError::SizeMismatch {
                    what: what.to_string(),
                    expected: es,
                    actual: if size > es {
                        format!("more than {es}")
                    } else {
                        size.to_string()
                    },
                });
            }
        }
        if let Some(ed) = expect {
            if ed != &digest {
                return Err(StoreError::DigestMismatch {
                    what: what.to_string(),
                    expected: ed.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        self.commit_temp_blob(tmp, buf, &digest)?;
        Ok((digest, size))
    }

    /// Makes a fully written and verified temp file the blob `digest`: read-only, synced,
    /// renamed into `blobs/`.
    pub(crate) fn commit_temp_blob(
        &self,
        tmp: &Path,
        buf: io::BufWriter<File>,
        digest: &Digest,
    ) -> Result<()> {
        let file = buf
            .into_inner()
            .map_err(|e| StoreError::io(tmp, e.into_error()))?;
        file.set_permissions(fs::Permissions::from_mode(0o444))
            .at(tmp)?;
        file.sync_all().at(tmp)?;
        drop(file);
        let dest = self.blob_path(digest);
        fs::rename(tmp, &dest).at(&dest)?;
        fsutil::sync_dir(&self.blobs_dir())
    }

    /// Writes a blob produced by `produce` (e.g. a compressed layer) and returns its digest.
    pub fn write_blob_with(
        &self,
        what: &str,
        produce: impl FnOnce(&mut dyn Write) -> Result<()>,
    ) -> Result<(Digest, u64)> {
        let tmp = self.temp_path("blob");
        let result = (|| {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .at(&tmp)?;
            let mut w = HashingWriter::new(io::BufWriter::with_capacity(256 << 10, file));
            produce(&mut w)?;
            let (buf, digest, size) = w.finish();
            self.commit_temp_blob(&tmp, buf, &digest)?;
            let _ = what;
            Ok((digest, size))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Every blob digest in the store (names that are not digests are skipped).
    pub fn list_blobs(&self) -> Result<Vec<Digest>> {
        list_hex_names(&self.blobs_dir())
    }
}

/// Entries of `dir` whose names are sha256 hex, as digests; `.json` suffixes are stripped.
pub(crate) fn list_hex_names(dir: &Path) -> Result<Vec<Digest>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        let name = name.strip_suffix(".json").unwrap_or(&name);
        if let Ok(d) = Digest::from_hex(name) {
            out.push(d);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_verifies_digest_and_size() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let d = Digest::of(b"hello");
        let err = s
            .ingest_blob(&b"hellO"[..], Some(&d), Some(5), "layer x")
            .unwrap_err();
        assert!(err.to_string().contains("digest mismatch"), "{err}");
        let err = s
            .ingest_blob(&b"hello!!"[..], Some(&d), Some(5), "layer x")
            .unwrap_err();
        assert!(err.to_string().contains("size mismatch"), "{err}");
        assert!(!s.has_blob(&d));
        assert_eq!(fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
        s.ingest_blob(&b"hello"[..], Some(&d), Some(5), "layer x")
            .unwrap();
        assert_eq!(s.read_blob(&d, 100).unwrap(), b"hello");
    }

    #[test]
    fn corrupt_blob_is_detected_on_read() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let d = s.put_blob_bytes(b"{}").unwrap();
        let p = s.blob_path(&d);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&p, b"{ }").unwrap();
        assert!(matches!(s.read_blob(&d, 10), Err(StoreError::Corrupt(_))));
    }
}
