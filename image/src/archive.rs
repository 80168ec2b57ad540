//! Image archives: the OCI image layout and `docker save` formats, as one tar that is both
//! (like Docker 25+): `blobs/sha256/*`, `oci-layout`, `index.json` and `manifest.json`.
//!
//! This module knows the file names and documents; the store decides what goes in.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::reference::Reference;
use crate::spec::{self, media, Descriptor, DockerArchiveEntry, Index};

pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const OCI_LAYOUT_VERSION: &str = "1.0.0";
pub const INDEX_FILE: &str = "index.json";
pub const DOCKER_MANIFEST_FILE: &str = "manifest.json";
/// Annotation holding the full image name in an index (containerd, Docker).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// The OCI annotation holding the tag (or, from some tools, the full name).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// `{"imageLayoutVersion":"1.0.0"}`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OciLayout {
    #[serde(rename = "imageLayoutVersion")]
    pub image_layout_version: String,
}

/// The archive path of a blob.
pub fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// The digest named by an archive path `blobs/sha256/<hex>`, if it is one.
pub fn digest_of_blob_path(path: &str) -> Option<Digest> {
    let p = clean_path(path).ok()?;
    let hex = p.strip_prefix("blobs/sha256/")?;
    Digest::from_hex(hex).ok()
}

/// Normalises a path inside an archive (strips `./`, refuses `..`, absolute paths and NUL).
pub fn clean_path(path: &str) -> Result<String, String> {
    if path.starts_with('/') || path.contains('\0') {
        return Err(format!(
            "{path:?} is not a relative path inside the archive"
        ));
    }
    let mut parts = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => return Err(format!("{path:?} points outside the archive")),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Resolves a link `target` found in directory `dir` of an archive, lexically; `..` may climb
/// back up but never above the archive's root.
pub fn join_inside(dir: &str, target: &str) -> Result<String, String> {
    if target.starts_with('/') || target.contains('\0') {
        return Err(format!("link target {target:?} is not relative"));
    }
    let mut parts: Vec<&str> = dir
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    for p in target.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!("link target {target:?} points outside the archive"));
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// One image to put in an archive.
pub struct ArchiveImage {
    pub config: Descriptor,
    /// Uncompressed layer blobs (their digests are the diffIDs).
    pub layers: Vec<Descriptor>,
    pub tags: Vec<Reference>,
}

/// The OCI manifest strata writes for an image in an archive.
pub fn archive_manifest(img: &ArchiveImage) -> Vec<u8> {
    let m = spec::Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.to_string()),
        config: img.config.clone(),
        layers: img.layers.clone(),
        annotations: BTreeMap::new(),
        extra: BTreeMap::new(),
    };
    spec::to_canonical_json(&m)
}

/// `index.json`: one entry per tag (or one untagged entry) per image or nested index.
pub fn archive_index(entries: &[(Descriptor, &[Reference])]) -> Vec<u8> {
    let mut manifests = Vec::new();
    for (desc, tags) in entries {
        if tags.is_empty() {
            manifests.push(desc.clone());
        }
        for t in tags.iter() {
            let mut d = desc.clone();
            d.annotations
                .insert(ANNOTATION_IMAGE_NAME.into(), t.to_string());
            d.annotations.insert(
                ANNOTATION_REF_NAME.into(),
                t.tag().unwrap_or("latest").to_string(),
            );
            manifests.push(d);
        }
    }
    spec::to_canonical_json(&Index::new(media::OCI_INDEX, manifests))
}

/// `manifest.json` of the docker-save format.
pub fn docker_manifest(images: &[&ArchiveImage]) -> Vec<u8> {
    let entries: Vec<DockerArchiveEntry> = images
        .iter()
        .map(|img| DockerArchiveEntry {
            config: blob_path(&img.config.digest),
            repo_tags: img.tags.iter().map(|t| t.familiar()).collect(),
            layers: img.layers.iter().map(|l| blob_path(&l.digest)).collect(),
            layer_sources: None,
            extra: BTreeMap::new(),
        })
        .collect();
    serde_json::to_vec(&entries).expect("entries serialize")
}

/// A tar writer with fixed metadata (mode 0644/0755, uid 0, mtime 0) for archives.
pub struct ArchiveWriter<W: Write> {
    out: W,
    dirs: std::collections::BTreeSet<String>,
}

impl<W: Write> ArchiveWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            dirs: Default::default(),
        }
    }

    fn header(path: &str, kind: tar::EntryType, size: u64, mode: u32) -> io::Result<tar::Header> {
        let mut h = tar::Header::new_ustar();
        h.set_path(path)?;
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        Ok(h)
    }

    fn ensure_dirs(&mut self, path: &str) -> io::Result<()> {
        let mut acc = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for p in &parts[..parts.len() - 1] {
            acc.push_str(p);
            acc.push('/');
            if self.dirs.insert(acc.clone()) {
                let h = Self::header(&acc, tar::EntryType::Directory, 0, 0o755)?;
                self.out.write_all(h.as_bytes())?;
            }
        }
        Ok(())
    }

    /// Adds a file of exactly `size` bytes read from `data`.
    pub fn add_file(&mut self, path: &str, size: u64, data: &mut dyn Read) -> io::Result<()> {
        self.ensure_dirs(path)?;
        let h = Self::header(path, tar::EntryType::Regular, size, 0o644)?;
        self.out.write_all(h.as_bytes())?;
        let n = io::copy(&mut data.take(size), &mut self.out)?;
        if n != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{path}: expected {size} bytes, got {n}"),
            ));
        }
        self.pad(size)
    }

    /// Adds a file whose content `produce` writes (exactly `size` bytes).
    pub fn add_file_with(
        &mut self,
        path: &str,
        size: u64,
        produce: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<()> {
        self.ensure_dirs(path)?;
        let h = Self::header(path, tar::EntryType::Regular, size, 0o644)?;
        self.out.write_all(h.as_bytes())?;
        let mut counter = CountingWriter {
            inner: &mut self.out,
            n: 0,
        };
        produce(&mut counter)?;
        if counter.n != size {
            return Err(io::Error::other(format!(
                "{path}: expected {size} bytes, produced {}",
                counter.n
            )));
        }
        self.pad(size)
    }

    pub fn add_bytes(&mut self, path: &str, bytes: &[u8]) -> io::Result<()> {
        self.add_file(path, bytes.len() as u64, &mut &bytes[..])
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % 512) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; 512][..512 - rem])?;
        }
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 1024])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths() {
        let d = Digest::of(b"x");
        assert_eq!(
            digest_of_blob_path(&format!("./blobs/sha256/{}", d.hex())),
            Some(d)
        );
        assert_eq!(digest_of_blob_path("blobs/sha256/../../x"), None);
        assert!(clean_path("../x.json").is_err());
        assert_eq!(clean_path("./a//b").unwrap(), "a/b");
        assert_eq!(
            join_inside("abc", "../def/layer.tar").unwrap(),
            "def/layer.tar"
        );
        assert!(join_inside("abc", "../../x").is_err());
    }
}
