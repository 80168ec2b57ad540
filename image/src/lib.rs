//! strata-image: the OCI/Docker image model and its byte formats.
//!
//! Main types: [`Digest`] (validated `sha256:` digests and streaming hashers),
//! [`spec::ImageConfig`] / [`spec::Manifest`] / [`spec::Index`] (our own serde structs that
//! keep unknown fields), [`Reference`] (Docker's normalisation), the layer codec in [`layer`]
//! (deterministic tar writer, safe extractor into overlayfs form), [`compress`], and
//! [`pipeline`] (two-thread stream stages: decompress | extract, tar | hash).
//!
//! Key design decision: documents strata makes are canonical JSON (sorted keys, compact) so a
//! digest depends only on content; documents from elsewhere are kept as received, never
//! re-encoded, so their digests survive every round trip.

pub mod archive;
pub mod compress;
pub mod digest;
pub mod layer;
pub mod pipeline;
pub mod pool;
pub mod reference;
pub mod spec;

pub use digest::{chain_ids, Digest, HashingReader, HashingWriter};
pub use reference::Reference;
