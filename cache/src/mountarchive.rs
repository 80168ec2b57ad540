//! Carrying `RUN --mount=type=cache` directories between machines (`strata builder cache
//! export|import DIR`), which BuildKit cannot do (its issue #1474).
//!
//! The export is a directory: one zstd tar per cache mount, written by the deterministic layer
//! writer, and an `index.json` (`strata.cache-mounts.v1`) naming each with its digest. The
//! import copies each archive into the store while hashing it, checks the digest, extracts the
//! private copy with the confined layer extractor into `tmp/`, and only then swaps it in under
//! the mount's exclusive lock, so a build using the mount never sees half an import.

use std::fs;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_image::compress::{self, Compression, Encoder};
use strata_image::digest::{Digest, HashingWriter};
use strata_image::layer::{extract_layer, write_layer_tar, ExtractOptions, TarOptions};

use crate::error::{IoContext, Result, StoreError};
use crate::fsutil::{self, FileLock, LockMode};
use crate::store::Store;

pub const MOUNTS_EXPORT_SCHEMA: &str = "strata.cache-mounts.v1";
const INDEX: &str = "index.json";
const MAX_INDEX_BYTES: u64 = 16 << 20;

/// `index.json` of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountsIndex {
    pub schema: String,
    pub mounts: Vec<MountEntry>,
}

/// One cache mount in an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountEntry {
    /// sha256 of the mount's id (its directory name in the store).
    pub key: String,
    /// The id as written in the Dockerfile, when the store recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub archive: String,
    pub digest: Digest,
    pub size: u64,
}

fn is_key(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl Store {
    /// Writes every cache mount into the directory `dir` (created if needed). Mounts in use
    /// by a `sharing=locked` build are waited for; shared users may keep writing, as with a
    /// plain copy. Returns the index written.
    pub fn export_cache_mounts(&self, dir: &Path) -> Result<MountsIndex> {
        fs::create_dir_all(dir).at(dir)?;
        let base = self.cache_mounts_dir();
        let mut keys: Vec<String> = match fs::read_dir(&base) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| is_key(n))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(StoreError::io(&base, e)),
        };
        keys.sort();
        let mut index = MountsIndex {
            schema: MOUNTS_EXPORT_SCHEMA.to_string(),
            mounts: Vec::new(),
        };
        for key in keys {
            let _lock = FileLock::acquire(&base.join(format!("{key}.lock")), LockMode::Shared)?;
            let archive = format!("{key}.tar.zst");
            let path = dir.join(&archive);
            let mut tmp = tempfile::NamedTempFile::new_in(dir).at(dir)?;
            let hashing = HashingWriter::new(BufWriter::new(tmp.as_file_mut()));
            let enc = Encoder::new(hashing, Compression::Zstd).at(&path)?;
            let enc = write_layer_tar(&base.join(&key), enc, &TarOptions::default())?;
            let (mut w, digest, size) = enc.finish().at(&path)?.finish();
            w.flush().at(&path)?;
            drop(w);
            tmp.as_file().sync_all().at(&path)?;
            tmp.persist(&path)
                .map_err(|e| StoreError::io(&path, e.error))?;
            let id = fs::read_to_string(base.join(format!("{key}.id"))).ok();
            index.mounts.push(MountEntry {
                key,
                id,
                archive,
                digest,
                size,
            });
        }
        let bytes = serde_json::to_vec_pretty(&index)
            .map_err(|e| StoreError::Invalid(format!("cache mounts index: {e}")))?;
        fsutil::atomic_write(dir, &dir.join(INDEX), &bytes)?;
        Ok(index)
    }

    /// Imports the export in `dir`: each mount replaces the store's mount of the same id.
    pub fn import_cache_mounts(&self, dir: &Path) -> Result<MountsIndex> {
        let index_path = dir.join(INDEX);
        let f = fs::File::open(&index_path).at(&index_path)?;
        let len = f.metadata().at(&index_path)?.len();
        if len > MAX_INDEX_BYTES {
            return Err(StoreError::Invalid(format!(
                "{}: {len} bytes is too large for an index",
                index_path.display()
            )));
        }
        let index: MountsIndex = serde_json::from_reader(BufReader::new(f))
            .map_err(|e| StoreError::Invalid(format!("{}: {e}", index_path.display())))?;
        if index.schema != MOUNTS_EXPORT_SCHEMA {
            return Err(StoreError::Invalid(format!(
                "{}: schema {:?} is not {MOUNTS_EXPORT_SCHEMA}",
                index_path.display(),
                index.schema
            )));
        }
        let _lease = self.lease()?;
        let base = self.cache_mounts_dir();
        fs::create_dir_all(&base).at(&base)?;
        for m in &index.mounts {
            if !is_key(&m.key) || m.archive.contains('/') || m.archive.starts_with('.') {
                return Err(StoreError::Invalid(format!(
                    "{}: entry {:?} has a bad key or archive name",
                    index_path.display(),
                    m.key
                )));
            }
            self.import_one_mount(dir, &base, m)?;
        }
        Ok(index)
    }

    fn import_one_mount(&self, dir: &Path, base: &Path, m: &MountEntry) -> Result<()> {
        let src = dir.join(&m.archive);
        // A private copy, hashed while copied: what is extracted is what was verified.
        let copy = self.temp_path("mount-archive");
        let mut from = fs::File::open(&src).at(&src)?;
        let mut out = HashingWriter::new(fs::File::create(&copy).at(&copy)?);
        let copied = std::io::copy(&mut Read::take(&mut from, m.size + 1), &mut out);
        let (file, digest, size) = out.finish();
        drop(file);
        let cleanup = |e: StoreError| {
            let _ = fs::remove_file(&copy);
            e
        };
        copied.at(&src).map_err(cleanup)?;
        if digest != m.digest || size != m.size {
            return Err(cleanup(StoreError::Corrupt(format!(
                "{}: content is {digest} ({size} bytes), the index says {} ({} bytes)",
                src.display(),
                m.digest,
                m.size
            ))));
        }
        let staged = self.temp_dir("mount-import").map_err(cleanup)?;
        let tree = staged.join("x");
        let extracted = fs::create_dir(&tree).at(&tree).and_then(|()| {
            let f = fs::File::open(&copy).at(&copy)?;
            let (_, r) = compress::decompress(BufReader::new(f)).at(&copy)?;
            extract_layer(r, &tree, &ExtractOptions::default())?;
            Ok(())
        });
        let _ = fs::remove_file(&copy);
        if let Err(e) = extracted {
            let _ = fsutil::remove_any(&staged);
            return Err(e);
        }
        let _lock = FileLock::acquire(&base.join(format!("{}.lock", m.key)), LockMode::Exclusive)?;
        let target = base.join(&m.key);
        let old = self.temp_path("mount-old");
        match fs::rename(&target, &old) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(&target, e)),
        }
        fs::rename(&tree, &target).at(&target)?;
        if let Some(id) = &m.id {
            fsutil::atomic_write(
                &self.tmp_dir(),
                &base.join(format!("{}.id", m.key)),
                id.as_bytes(),
            )?;
        }
        let _ = fsutil::remove_any(&staged);
        let _ = fsutil::remove_any(&old);
        Ok(())
    }
}
