//! Storage for a ring: anything that can show 8-byte atomic words and copy bytes in and
//! out. The ring algorithm is written once against [`Region`]; the heap implementation
//! here serves tests and in-process use, the shared mapping (in ipcbench-transport) serves
//! two processes, and a loom one (in the loom tests) lets loom explore the protocol.

use alloc::boxed::Box;
use core::ptr::NonNull;

use crate::sync::AtomicU64;

/// Storage for a ring.
///
/// # Safety
///
/// Implementations promise that `word(i)` for `i < words()` always returns the same
/// atomic, that the region spans `words() * 8` bytes, and that `write`, `read` and
/// `raw` address those same bytes (byte offset `8 * i` is word `i`). For every
/// implementation in this workspace the region is 128-byte aligned.
pub unsafe trait Region {
    /// The number of 8-byte words.
    fn words(&self) -> usize;

    /// Word `i`. Panics if `i >= words()`: the ring only asks for words it has
    /// bounds-checked.
    fn word(&self, i: usize) -> &AtomicU64;

    /// Copies `src` into the region at byte offset `at`.
    ///
    /// # Safety
    ///
    /// `at + src.len() <= words() * 8`, and by the ring protocol no one else reads or
    /// writes those bytes during the call.
    unsafe fn write(&self, at: usize, src: &[u8]);

    /// Copies bytes at byte offset `at` into `dst`.
    ///
    /// # Safety
    ///
    /// `at + dst.len() <= words() * 8`, and by the ring protocol no one writes those
    /// bytes during the call.
    unsafe fn read(&self, at: usize, dst: &mut [u8]);

    /// The region's first byte, for zero-copy loans; `None` if the storage cannot lend
    /// its bytes (the loom region).
    fn raw(&self) -> Option<NonNull<u8>> {
        None
    }
}

// SAFETY: forwarding to the pointee keeps every promise the pointee makes.
unsafe impl<R: Region + ?Sized> Region for alloc::sync::Arc<R> {
    fn words(&self) -> usize {
        (**self).words()
    }
    fn word(&self, i: usize) -> &AtomicU64 {
        (**self).word(i)
    }
    unsafe fn write(&self, at: usize, src: &[u8]) {
        // SAFETY: the caller's promise, passed on unchanged.
        unsafe { (**self).write(at, src) }
    }
    unsafe fn read(&self, at: usize, dst: &mut [u8]) {
        // SAFETY: the caller's promise, passed on unchanged.
        unsafe { (**self).read(at, dst) }
    }
    fn raw(&self) -> Option<NonNull<u8>> {
        (**self).raw()
    }
}

#[cfg(not(loom))]
// SAFETY: a slice's elements are contiguous: word `i` is element `i`, at byte `8 * i` of
// the slice's memory, which spans `len() * 8` bytes; the copies go through that same
// memory, whose atomics' UnsafeCell permits writes through a shared reference.
unsafe impl Region for [AtomicU64] {
    fn words(&self) -> usize {
        self.len()
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        &self[i]
    }

    unsafe fn write(&self, at: usize, src: &[u8]) {
        let base = self.as_ptr().cast::<u8>().cast_mut();
        // SAFETY: in bounds (caller's promise); see the impl's note on aliasing.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), base.add(at), src.len()) }
    }

    unsafe fn read(&self, at: usize, dst: &mut [u8]) {
        let base = self.as_ptr().cast::<u8>();
        // SAFETY: in bounds (caller's promise), ordered by the caller's protocol.
        unsafe { core::ptr::copy_nonoverlapping(base.add(at), dst.as_mut_ptr(), dst.len()) }
    }

    fn raw(&self) -> Option<NonNull<u8>> {
        NonNull::new(self.as_ptr().cast::<u8>().cast_mut())
    }
}

/// 128 bytes of atomic words, so a region made of them is 128-byte aligned.
#[repr(C, align(128))]
struct Line([AtomicU64; 16]);

/// A zeroed, 128-byte aligned heap region.
pub struct HeapRegion {
    lines: Box<[Line]>,
}

impl core::fmt::Debug for HeapRegion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "HeapRegion({} bytes)", self.lines.len() * 128)
    }
}

impl HeapRegion {
    /// A zeroed region of at least `bytes` bytes (rounded up to 128).
    pub fn new(bytes: usize) -> HeapRegion {
        let lines = bytes.div_ceil(128);
        HeapRegion {
            lines: (0..lines)
                .map(|_| Line(core::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
        }
    }
}

#[cfg(not(loom))]
// SAFETY: the words are laid out contiguously (repr(C) lines of 16 words each, no
// padding since 16 * 8 == 128), word `i` is byte `8 * i`, and the copies go through
// the same memory, whose atomics' UnsafeCell permits writes through a shared reference.
unsafe impl Region for HeapRegion {
    fn words(&self) -> usize {
        self.lines.len() * 16
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        &self.lines[i / 16].0[i % 16]
    }

    unsafe fn write(&self, at: usize, src: &[u8]) {
        let base = self.lines.as_ptr().cast::<u8>().cast_mut();
        // SAFETY: in bounds (caller's promise); the bytes belong to atomics, whose
        // UnsafeCell allows this write through a shared borrow, and the ring protocol
        // (Release/Acquire on headers and positions) orders it with every other access.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), base.add(at), src.len()) }
    }

    unsafe fn read(&self, at: usize, dst: &mut [u8]) {
        let base = self.lines.as_ptr().cast::<u8>();
        // SAFETY: in bounds (caller's promise) and ordered after the producer's writes
        // by the Acquire load of the record header.
        unsafe { core::ptr::copy_nonoverlapping(base.add(at), dst.as_mut_ptr(), dst.len()) }
    }

    fn raw(&self) -> Option<NonNull<u8>> {
        NonNull::new(self.lines.as_ptr().cast::<u8>().cast_mut())
    }
}

#[cfg(loom)]
// SAFETY: word `i` is `lines[i / 16][i % 16]`; the copies go word by word through the
// same atomics (loom cannot see raw memory), so they address the same bytes.
unsafe impl Region for HeapRegion {
    fn words(&self) -> usize {
        self.lines.len() * 16
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        &self.lines[i / 16].0[i % 16]
    }

    unsafe fn write(&self, at: usize, src: &[u8]) {
        use crate::sync::Ordering::Relaxed;
        for (k, &b) in src.iter().enumerate() {
            let (w, shift) = ((at + k) / 8, ((at + k) % 8) * 8);
            let old = self.word(w).load(Relaxed);
            self.word(w)
                .store((old & !(0xff << shift)) | (u64::from(b) << shift), Relaxed);
        }
    }

    unsafe fn read(&self, at: usize, dst: &mut [u8]) {
        use crate::sync::Ordering::Relaxed;
        for (k, b) in dst.iter_mut().enumerate() {
            let (w, shift) = ((at + k) / 8, ((at + k) % 8) * 8);
            *b = (self.word(w).load(Relaxed) >> shift) as u8;
        }
    }
}
