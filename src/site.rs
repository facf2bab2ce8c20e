//! One macro call site: its label and place in the source, and its counter.
//!
//! Each `timeout_async!` expands to a `static Site`, so a site costs nothing
//! until its first timeout. Then it links itself, once, into a process-wide
//! push-only list, which [`crate::stats`] walks to report counts per label.
//!
//! # Atomic orderings
//! - `count` is a plain event counter read for reports: `Relaxed`.
//! - `linked` only elects the one thread that pushes the site: `Relaxed` is
//!   enough, because the push itself publishes the site.
//! - The list head is pushed with `Release` and read with `Acquire`, so a
//!   reader that sees a site also sees its `next` link. Sites are `'static`
//!   and never removed, so there is no ABA and no reclamation.

use std::fmt;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

#[doc(hidden)] // Not public API: built by the macros.
pub struct Site {
    label: Option<&'static str>,
    file: &'static str,
    line: u32,
    column: u32,
    count: AtomicU64,
    linked: AtomicBool,
    next: AtomicPtr<Site>,
}

static HEAD: AtomicPtr<Site> = AtomicPtr::new(ptr::null_mut());

impl Site {
    #[doc(hidden)]
    pub const fn new(
        label: Option<&'static str>,
        file: &'static str,
        line: u32,
        column: u32,
    ) -> Site {
        Site {
            label,
            file,
            line,
            column,
            count: AtomicU64::new(0),
            linked: AtomicBool::new(false),
            next: AtomicPtr::new(ptr::null_mut()),
        }
    }

    pub(crate) fn label(&self) -> Option<&'static str> {
        self.label
    }

    pub(crate) fn file(&self) -> &'static str {
        self.file
    }

    pub(crate) fn line(&self) -> u32 {
        self.line
    }

    pub(crate) fn column(&self) -> u32 {
        self.column
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub(crate) fn reset(&self) {
        self.count.store(0, Ordering::Relaxed);
    }

    /// Counts one event here, linking the site into the list the first time.
    pub(crate) fn record(&'static self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if !self.linked.load(Ordering::Relaxed) && !self.linked.swap(true, Ordering::Relaxed) {
            let me = self as *const Site as *mut Site;
            let mut head = HEAD.load(Ordering::Relaxed);
            loop {
                self.next.store(head, Ordering::Relaxed);
                // Release: publishes `next` (and the site) with the new head.
                match HEAD.compare_exchange_weak(head, me, Ordering::Release, Ordering::Relaxed) {
                    Ok(_) => break,
                    Err(now) => head = now,
                }
            }
        }
    }

    /// Every site that has recorded an event, newest first.
    pub(crate) fn all() -> impl Iterator<Item = &'static Site> {
        // Acquire: pairs with the Release push, so `next` links are visible.
        let mut cur = HEAD.load(Ordering::Acquire);
        std::iter::from_fn(move || {
            // SAFETY: only `&'static Site`s are ever pushed, and never removed.
            let site: &'static Site = unsafe { cur.as_ref()? };
            cur = site.next.load(Ordering::Acquire);
            Some(site)
        })
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

impl fmt::Debug for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Site")
            .field("label", &self.label)
            .field("at", &format_args!("{self}"))
            .field("count", &self.count())
            .finish()
    }
}
