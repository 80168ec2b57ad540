//! Unpacked layers: `layers/<chainID hex>/{diff/, meta.json}`, created in `tmp/` and renamed
//! into place only when complete and synced.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_image::compress::{Compression, Encoder};
use strata_image::digest::{Digest, Hasher, HashingReader, HashingWriter};
use strata_image::layer::{extract_layer, write_layer_tar, ExtractOptions, TarOptions};
use strata_image::pipeline;
use strata_image::spec::{media, Descriptor};

use crate::error::{IoContext, Result, StoreError};
use crate::fsutil;
use crate::store::{list_hex_names, Store};

pub const LAYER_SCHEMA: &str = "strata.layer.v1";

/// What the store knows of an unpacked layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerMeta {
    pub schema: String,
    pub chain_id: Digest,
    pub diff_id: Digest,
    #[serde(default)]
    pub parent: Option<Digest>,
    /// Bytes of the uncompressed layer tar.
    pub size: u64,
    pub created: String,
    /// Blobs known to hold this layer (compressed or not), reused by save and push.
    #[serde(default)]
    pub blobs: Vec<Descriptor>,
    /// The diffID is the digest of strata's own deterministic tar of `diff/`, so the directory
    /// can be verified (and the tar regenerated) from the directory alone.
    #[serde(default)]
    pub canonical: bool,
}

/// The chain ID of a layer with `diff_id` on top of `parent`.
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => Digest::of(format!("{p} {diff_id}").as_bytes()),
    }
}

impl Store {
    pub fn layer_path(&self, chain: &Digest) -> PathBuf {
        self.layers_dir().join(chain.hex())
    }

    /// The unpacked layer directory (an overlayfs lowerdir).
    pub fn layer_diff(&self, chain: &Digest) -> PathBuf {
        self.layer_path(chain).join("diff")
    }

    pub fn has_layer(&self, chain: &Digest) -> bool {
        self.layer_path(chain).join("meta.json").is_file()
    }

    pub fn layer_meta(&self, chain: &Digest) -> Result<LayerMeta> {
        let p = self.layer_path(chain).join("meta.json");
        let bytes = fs::read(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                StoreError::NotFound(format!("layer {chain} is not in the store"))
            }
            _ => StoreError::io(&p, e),
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", p.display())))
    }

    pub fn list_layers(&self) -> Result<Vec<Digest>> {
        list_hex_names(&self.layers_dir())
    }

    /// Unpacks an uncompressed layer tar on top of `parent`. When `expect_diff` is given the
    /// stream must hash to it. `blob` records the blob the tar came from, if it is kept.
    /// Reading `tar` (typically decompressing a blob) runs on a second thread, hashing and
    /// extracting on this one.
    pub fn add_layer_from_tar<R: Read + Send>(
        &self,
        parent: Option<&Digest>,
        mut tar: R,
        expect_diff: Option<&Digest>,
        blob: Option<Descriptor>,
        what: &str,
    ) -> Result<LayerMeta> {
        pipeline::run(
            |tx| tx.send_all(&mut tar),
            |rx| self.add_layer_from_tar_inner(parent, rx, expect_diff, blob, what, false),
        )
        .map(|(_, layer)| layer)
        .map_err(|f| f.into_error(|e| StoreError::Invalid(format!("{what}: {e}"))))
    }

    fn add_layer_from_tar_inner<R: Read>(
        &self,
        parent: Option<&Digest>,
        tar: R,
        expect_diff: Option<&Digest>,
        blob: Option<Descriptor>,
        what: &str,
        canonical: bool,
    ) -> Result<LayerMeta> {
        let staging = self.temp_dir("layer")?;
        let result = (|| {
            let diff = staging.join("diff");
            fs::create_dir(&diff).at(&diff)?;
            let hashing = HashingReader::new(tar);
            let (_, rest) = extract_layer(hashing, &diff, &ExtractOptions::default())
                .map_err(|e| StoreError::Invalid(format!("{what}: {e}")))?;
            let (diff_id, size) = rest
                .finish_draining()
                .map_err(|e| StoreError::Invalid(format!("{what}: {e}")))?;
            if let Some(expected) = expect_diff {
                if expected != &diff_id {
                    return Err(StoreError::DigestMismatch {
                        what: format!("{what} (uncompressed)"),
                        expected: expected.to_string(),
                        actual: diff_id.to_string(),
                    });
                }
            }
            self.publish_layer(
                &staging,
                parent,
                diff_id,
                size,
                blob.into_iter().collect(),
                canonical,
            )
        })();
        let _ = fsutil::remove_any(&staging);
        result
    }

    /// Turns the directory `dir` (overlayfs form, e.g. a container's upper dir) into a layer on
    /// top of `parent`. With `take`, `dir` itself is moved into the store (it must be on the
    /// store's filesystem and nobody may use it afterwards); otherwise it is copied.
    pub fn add_layer_from_dir(
        &self,
        parent: Option<&Digest>,
        dir: &Path,
        take: bool,
        opts: &TarOptions,
    ) -> Result<LayerMeta> {
        if !take || opts.clamp_mtime.is_some() {
            // Copy through the codec: the copy holds exactly what the tar says, clamped times
            // included, so regenerating the tar later gives the same bytes.
            let (reader, writer) = io::pipe().at(dir)?;
            let src = dir.to_path_buf();
            let o = opts.clone();
            let producer = std::thread::spawn(move || {
                let w = io::BufWriter::with_capacity(256 << 10, writer);
                write_layer_tar(&src, w, &o).map(|_| ())
            });
            let what = format!("layer from {}", dir.display());
            let result = self.add_layer_from_tar_inner(parent, reader, None, None, &what, true);
            let produced = producer.join().expect("tar writer thread does not panic");
            produced.map_err(StoreError::from)?;
            return result;
        }
        let (diff_id, size) = Store::hash_layer_dir(dir, opts)?;
        let published = self.publish_layer_dir(parent, dir, diff_id, size);
        let _ = fsutil::remove_any(dir);
        published
    }

    /// The diffID and size of the canonical tar of `dir` (overlayfs form), without writing it.
    /// Needs no store: a build hashes a step's layer on its own thread while the next step
    /// runs on top of the directory, and publishes it afterwards ([`Store::publish_layer_dir`]).
    pub fn hash_layer_dir(dir: &Path, opts: &TarOptions) -> Result<(Digest, u64)> {
        // The tar stream is made on one core and hashed on the other: a layer of many small
        // files costs its walk's syscalls or its hashing, not both.
        let (_, hashed) = pipeline::run(
            |tx| write_layer_tar(dir, tx, opts).map(|_| ()),
            |rx| {
                let mut h = Hasher::new();
                h.update_from(rx).at(dir)?;
                let len = h.len();
                Ok((h.finish(), len))
            },
        )
        .map_err(|f| f.into_error(StoreError::from))?;
        Ok(hashed)
    }

    /// Moves `dir`, whose canonical tar [`Store::hash_layer_dir`] gave `diff_id` and `size`,
    /// into the store as a layer on top of `parent`. `dir` must be on the store's filesystem
    /// and unchanged since it was hashed. When the store has the layer already (another
    /// process made it), `dir` stays where it was, for its owner to remove.
    pub fn publish_layer_dir(
        &self,
        parent: Option<&Digest>,
        dir: &Path,
        diff_id: Digest,
        size: u64,
    ) -> Result<LayerMeta> {
        let staging = self.temp_dir("layer")?;
        let diff = staging.join("diff");
        let result = fs::rename(dir, &diff)
            .at(dir)
            .and_then(|_| self.publish_layer(&staging, parent, diff_id, size, Vec::new(), true));
        // Not taken into the store: back where the caller (who may still be using it) has it.
        if diff.exists() {
            let _ = fs::rename(&diff, dir);
        }
        let _ = fsutil::remove_any(&staging);
        result
    }

    /// Writes meta.json into `staging`, syncs, and renames it to `layers/<chainID>`. If the layer
    /// already exists (another process made it), the existing one wins.
    pub(crate) fn publish_layer(
        &self,
        staging: &Path,
        parent: Option<&Digest>,
        diff_id: Digest,
        size: u64,
        blobs: Vec<Descriptor>,
        canonical: bool,
    ) -> Result<LayerMeta> {
        if let Some(p) = parent {
            if !self.has_layer(p) {
                return Err(StoreError::NotFound(format!(
                    "parent layer {p} is not in the store"
                )));
            }
        }
        let chain = chain_id(parent, &diff_id);
        if self.has_layer(&chain) {
            for b in blobs {
                self.record_layer_blob(&chain, b)?;
            }
            return self.layer_meta(&chain);
        }
        let meta = LayerMeta {
            schema: LAYER_SCHEMA.to_string(),
            chain_id: chain.clone(),
            diff_id,
            parent: parent.cloned(),
            size,
            created: fsutil::now_rfc3339(),
            blobs,
            canonical,
        };
        let meta_path = staging.join("meta.json");
        fs::write(
            &meta_path,
            serde_json::to_vec_pretty(&meta).expect("meta serializes"),
        )
        .at(&meta_path)?;
        // Layer contents are not fsynced (neither containerd nor Docker does): a kill leaves the
        // page cache intact, and after a power loss `system check` re-hashes every canonical
        // layer against its diffID. Syncing here would tie every import and build step to the
        // disk's write speed.
        let dest = self.layer_path(&chain);
        match fs::rename(staging, &dest) {
            Ok(()) => {}
            // Lost a race with another process publishing the same layer: theirs is as good.
            Err(e) if dest.join("meta.json").is_file() => {
                tracing::debug!("layer {chain} appeared concurrently: {e}");
                return self.layer_meta(&chain);
            }
            Err(e) => return Err(StoreError::io(&dest, e)),
        }
        fsutil::sync_dir(&self.layers_dir())?;
        Ok(meta)
    }

    /// Remembers that `blob` holds the layer `chain`.
    pub fn record_layer_blob(&self, chain: &Digest, blob: Descriptor) -> Result<()> {
        let _lock = self.meta_lock("layers")?;
        let mut meta = self.layer_meta(chain)?;
        match meta.blobs.iter_mut().find(|b| b.digest == blob.digest) {
            // Newer annotations (where the blob was last seen) replace older ones.
            Some(b) if blob.annotations.is_empty() || b.annotations == blob.annotations => {
                return Ok(())
            }
            Some(b) => b.annotations = blob.annotations,
            None => meta.blobs.push(blob),
        }
        let p = self.layer_path(chain).join("meta.json");
        self.atomic_write(
            &p,
            &serde_json::to_vec_pretty(&meta).expect("meta serializes"),
        )
    }

    /// Writes the layer's uncompressed tar to `out` and checks it still hashes to its diffID.
    pub fn write_layer_tar<W: Write>(&self, chain: &Digest, out: W) -> Result<W> {
        let meta = self.layer_meta(chain)?;
        let w = HashingWriter::new(out);
        let w = write_layer_tar(&self.layer_diff(chain), w, &TarOptions::default())?;
        let (out, digest, _) = w.finish();
        if digest != meta.diff_id {
            return Err(StoreError::Corrupt(format!(
                "layer {chain} no longer hashes to its diffID {} (got {digest})",
                meta.diff_id
            )));
        }
        Ok(out)
    }

    /// A blob holding the layer with the given compression, made on demand and kept.
    pub fn layer_blob(&self, chain: &Digest, compression: Compression) -> Result<Descriptor> {
        let meta = self.layer_meta(chain)?;
        let wanted = match compression {
            Compression::None => media::OCI_LAYER,
            Compression::Gzip => media::OCI_LAYER_GZIP,
            Compression::Zstd => media::OCI_LAYER_ZSTD,
            other => {
                return Err(StoreError::Invalid(format!(
                    "{} layers are not supported",
                    other.name()
                )))
            }
        };
        let same_kind = |mt: &str| match compression {
            Compression::None => mt == media::OCI_LAYER || mt == media::DOCKER_LAYER,
            Compression::Gzip => mt == media::OCI_LAYER_GZIP || mt == media::DOCKER_LAYER_GZIP,
            _ => mt == wanted,
        };
        if let Some(b) = meta
            .blobs
            .iter()
            .find(|b| same_kind(&b.media_type) && self.has_blob(&b.digest))
        {
            return Ok(b.clone());
        }
        if compression == Compression::None {
            // The uncompressed tar is the diffID itself.
            if self.has_blob(&meta.diff_id) {
                let d =
                    Descriptor::new(wanted, meta.diff_id.clone(), self.blob_size(&meta.diff_id)?);
                return Ok(d);
            }
        }
        let (digest, size) = self.write_blob_with(&format!("layer {chain}"), |w| {
            let enc = Encoder::new(w, compression).at(self.layer_path(chain))?;
            let mut enc = enc;
            // From the blob the layer came in when there is one (a pulled or loaded layer's
            // bytes cannot be regenerated from its directory).
            self.write_uncompressed_layer(chain, &mut enc)?;
            enc.finish().at(self.layer_path(chain))?;
            Ok(())
        })?;
        let desc = Descriptor::new(wanted, digest, size);
        self.record_layer_blob(chain, desc.clone())?;
        Ok(desc)
    }

    /// The uncompressed tar size of a layer, computed without reading file contents.
    pub fn layer_tar_size(&self, chain: &Digest) -> Result<u64> {
        Ok(self.layer_meta(chain)?.size)
    }

    /// The chain of layers from the bottom up to `top`.
    pub fn layer_chain(&self, top: &Digest) -> Result<Vec<LayerMeta>> {
        let mut chain = Vec::new();
        let mut cur = Some(top.clone());
        while let Some(c) = cur {
            let m = self.layer_meta(&c)?;
            cur = m.parent.clone();
            chain.push(m);
            if chain.len() > 4096 {
                return Err(StoreError::Corrupt(format!(
                    "layer {top} has a parent cycle"
                )));
            }
        }
        chain.reverse();
        Ok(chain)
    }
}
