//! The global allocator: the system allocator, except that very large requests are mapped
//! lazily (`MAP_NORESERVE`). A malformed request can declare an array of two billion entries
//! before the decoder notices the frame is too short; reserving that much would abort the
//! process, while a lazy mapping costs nothing until touched and is released with the error.

use std::alloc::{GlobalAlloc, Layout, System};

/// Requests at least this large are mapped lazily.
const LAZY_BYTES_MIN: usize = 1 << 30;

pub struct LazyHugeAlloc;

/// A private anonymous mapping of `len` bytes: zero pages, backed once touched, reserved lazily
/// (`MAP_NORESERVE`).
pub fn map_anonymous(len: usize) -> std::io::Result<std::ptr::NonNull<u8>> {
    // SAFETY: a fresh mapping; nothing else refers to it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(std::ptr::NonNull::new(p.cast::<u8>()).expect("mmap returned a null mapping"))
}

// SAFETY: small requests go to `System`; large ones to anonymous mappings, which are page
// aligned (enough for any alignment below a page) and released with the same size.
unsafe impl GlobalAlloc for LazyHugeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() < LAZY_BYTES_MIN || layout.align() > 4096 {
            return System.alloc(layout);
        }
        map_anonymous(layout.size()).map_or(std::ptr::null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() < LAZY_BYTES_MIN || layout.align() > 4096 {
            System.dealloc(ptr, layout);
        } else {
            libc::munmap(ptr as *mut libc::c_void, layout.size());
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() < LAZY_BYTES_MIN || layout.align() > 4096 {
            return System.alloc_zeroed(layout);
        }
        self.alloc(layout) // fresh anonymous pages are zero
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let small = |size: usize| size < LAZY_BYTES_MIN || layout.align() > 4096;
        if small(layout.size()) && small(new_size) {
            return System.realloc(ptr, layout, new_size);
        }
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new = self.alloc(new_layout);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_huge_reservation_does_not_abort() {
        // 64 GiB, more than this machine has: reserved lazily and released.
        let v: Vec<u64> = Vec::with_capacity(8 << 30);
        assert!(v.capacity() >= 8 << 30);
    }
}
