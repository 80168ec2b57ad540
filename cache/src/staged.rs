//! One-pass ingestion of a compressed layer blob as it arrives from the network: the bytes are
//! written to a temp blob and hashed, decompressed, hashed again and extracted into a staging
//! directory, all while reading. The blob becomes visible only once its digest and size check
//! out; the layer directory stays staged ([`StagedLayer`]) until its parent is published, so
//! layers can be fetched in parallel and still enter the store bottom-up.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;

use strata_image::digest::{Digest, HashingReader, HashingWriter};
use strata_image::layer::{extract_layer, ExtractOptions};
use strata_image::spec::Descriptor;
use strata_image::{compress, pipeline};

use crate::error::{IoContext, Result, StoreError};
use crate::fsutil;
use crate::layers::LayerMeta;
use crate::store::Store;

/// A verified layer waiting in `tmp/` for its parent; removed on drop unless published.
pub struct StagedLayer {
    dir: PathBuf,
    pub diff_id: Digest,
    pub size: u64,
    pub blob: Descriptor,
}

impl Drop for StagedLayer {
    fn drop(&mut self) {
        let _ = fsutil::remove_any(&self.dir);
    }
}

/// Copies what is read into a hashing temp file, refusing more than `limit` bytes.
struct Tee<'a, R> {
    inner: R,
    out: HashingWriter<BufWriter<File>>,
    limit: u64,
    what: &'a str,
    progress: &'a mut (dyn FnMut(u64) + Send),
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.out.len() + n as u64 > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: more than the {} bytes announced",
                    self.what, self.limit
                ),
            ));
        }
        self.out.write_all(&buf[..n])?;
        (self.progress)(self.out.len());
        Ok(n)
    }
}

impl Store {
    /// Reads the compressed layer `blob` (described by `desc`) once: keeps it as a blob, and
    /// extracts it into a staged directory whose uncompressed stream must hash to `diff_id`.
    /// `progress` is told the number of compressed bytes read so far.
    pub fn stage_layer_stream<R: Read + Send>(
        &self,
        blob: R,
        desc: &Descriptor,
        diff_id: &Digest,
        what: &str,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<StagedLayer> {
        let tmp = self.temp_path("blob");
        let staging = StagedLayer {
            dir: self.temp_dir("layer")?,
            diff_id: diff_id.clone(),
            size: 0,
            blob: desc.clone(),
        };
        let result = self.stage_into(&tmp, blob, staging, what, progress);
        let _ = fs::remove_file(&tmp);
        result
    }

    /// Three stages (two pipelines, one inside the other's consumer): one thread reads, keeps
    /// and hashes the compressed bytes and decompresses them; a second hashes the tar stream;
    /// this thread extracts it. The work is about equal thirds of inflate, hashing and the
    /// extraction's file-system calls, so two cores stay busy whichever is slower.
    fn stage_into<R: Read + Send>(
        &self,
        tmp: &std::path::Path,
        blob: R,
        mut staged: StagedLayer,
        what: &str,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<StagedLayer> {
        let invalid = |e: io::Error| StoreError::Invalid(format!("{what}: {e}"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .at(tmp)?;
        let mut tee = Tee {
            inner: blob,
            out: HashingWriter::new(BufWriter::with_capacity(256 << 10, file)),
            limit: staged.blob.size,
            what,
            progress,
        };
        let diff = staged.dir.join("diff");
        fs::create_dir(&diff).at(&diff)?;
        let produce = |tx: &mut pipeline::ChunkSender| {
            let (_, mut tar) = compress::decompress(&mut tee)?;
            tx.send_all(&mut tar)?;
            drop(tar);
            // Whatever follows the compressed stream still belongs to the blob.
            io::copy(&mut tee, &mut io::sink())?;
            Ok(tee.out.finish())
        };
        let consume = |rx: &mut pipeline::ChunkReader| {
            let hash = |tx: &mut pipeline::ChunkSender| {
                let mut tar = HashingReader::new(rx);
                tx.send_all(&mut tar)?;
                Ok::<_, io::Error>(tar.finish())
            };
            let extract = |rx2: &mut pipeline::ChunkReader| {
                let (_, rest) = extract_layer(rx2, &diff, &ExtractOptions::default())
                    .map_err(|e| StoreError::Invalid(format!("{what}: {e}")))?;
                io::copy(rest, &mut io::sink()).map_err(invalid)
            };
            pipeline::run(hash, extract)
                .map(|(h, _)| h)
                .map_err(|f| f.into_error(invalid))
        };
        let ((buf, digest, size), (actual_diff, diff_size)) =
            pipeline::run(produce, consume).map_err(|f| f.into_error(invalid))?;
        if size != staged.blob.size {
            return Err(StoreError::SizeMismatch {
                what: what.to_string(),
                expected: staged.blob.size,
                actual: size.to_string(),
            });
        }
        if digest != staged.blob.digest {
            return Err(StoreError::DigestMismatch {
                what: what.to_string(),
                expected: staged.blob.digest.to_string(),
                actual: digest.to_string(),
            });
        }
        if actual_diff != staged.diff_id {
            return Err(StoreError::DigestMismatch {
                what: format!("{what} (uncompressed)"),
                expected: staged.diff_id.to_string(),
                actual: actual_diff.to_string(),
            });
        }
        staged.size = diff_size;
        self.commit_temp_blob(tmp, buf, &digest)?;
        Ok(staged)
    }

    /// Moves a staged layer into `layers/` on top of `parent` (which must be there already).
    pub fn publish_staged(
        &self,
        parent: Option<&Digest>,
        staged: StagedLayer,
    ) -> Result<LayerMeta> {
        self.publish_layer(
            &staged.dir,
            parent,
            staged.diff_id.clone(),
            staged.size,
            vec![staged.blob.clone()],
            false,
        )
    }
}
