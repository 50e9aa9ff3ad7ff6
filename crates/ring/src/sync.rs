//! The atomics the ring uses: std's, or loom's under `cfg(loom)` so the protocol's
//! interleavings can be explored exhaustively.

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU64, Ordering};

#[cfg(not(loom))]
pub use core::sync::atomic::{AtomicU64, Ordering};
