//! strata-cache: the on-disk store.
//!
//! Main types: [`Store`] (layout, leases and locks, content-addressed blobs), [`LayerMeta`]
//! (unpacked layers in overlayfs form under `layers/<chainID>`), [`ImageRecord`] / [`Refs`]
//! (images, tags, and multi-platform tags naming one image per platform), [`transfer`]
//! (`import`, and `save`/`load` of images and image indexes), [`CacheRecord`] (build cache),
//! garbage collection ([`ImagePrune`]) and the integrity check ([`CheckReport`]).
//!
//! Key design decision: nothing becomes visible until it is complete. Content is written under
//! `tmp/`, synced, and renamed into place; metadata is replaced atomically under a lock; and
//! visible records are written only after everything they point at. A crash therefore leaves
//! only garbage, which the exclusive-lock sweep reclaims, never a broken reference.

pub mod buildcache;
pub mod check;
pub mod error;
pub mod events;
pub mod fsutil;
pub mod gc;
pub mod hints;
pub mod images;
pub mod layers;
pub mod mountarchive;
pub mod staged;
pub mod store;
pub mod transfer;

pub use buildcache::CacheRecord;
pub use check::CheckReport;
pub use error::{Result, StoreError};
pub use gc::{ContainerLink, GcReport, ImagePrune};
pub use images::{Image, ImageRecord, Refs};
pub use layers::LayerMeta;
pub use store::Store;
