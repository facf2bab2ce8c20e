//! Macro call sites: where a call is in the source, its label, and a
//! process-wide list of the sites that have something to report.
//!
//! Each `timeout_async!` expands to a `static Site` (each `safe_mps!` to a
//! `static MpsSite`), so a site costs nothing until its first event. Then it
//! links itself, once, into a push-only [`StaticList`], which the stats walk
//! to report counts per site.
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

/// Where a macro call is: its label and its place in the source.
pub(crate) struct Location {
    pub(crate) label: Option<&'static str>,
    pub(crate) file: &'static str,
    pub(crate) line: u32,
    pub(crate) column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// The link of a `'static` item in a [`StaticList`].
pub(crate) struct Link<T: 'static> {
    linked: AtomicBool,
    next: AtomicPtr<T>,
}

impl<T> Link<T> {
    pub(crate) const fn new() -> Self {
        Link {
            linked: AtomicBool::new(false),
            next: AtomicPtr::new(ptr::null_mut()),
        }
    }
}

/// An item that a [`StaticList`] can hold: it carries its own [`Link`].
pub(crate) trait Listed: Sync + Sized + 'static {
    fn link(&self) -> &Link<Self>;
}

/// A push-only, lock-free list of `'static` items, newest first.
pub(crate) struct StaticList<T: 'static> {
    head: AtomicPtr<T>,
}

impl<T: Listed> StaticList<T> {
    pub(crate) const fn new() -> Self {
        StaticList {
            head: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Whether `item` has been pushed.
    #[inline]
    pub(crate) fn has(item: &T) -> bool {
        item.link().linked.load(Ordering::Relaxed)
    }

    /// Pushes `item` the first time it is offered; later calls cost a load.
    #[inline]
    pub(crate) fn push_once(&self, item: &'static T) {
        let link = item.link();
        if !link.linked.load(Ordering::Relaxed) && !link.linked.swap(true, Ordering::Relaxed) {
            self.push(item);
        }
    }

    #[cold]
    fn push(&self, item: &'static T) {
        let me = item as *const T as *mut T;
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            item.link().next.store(head, Ordering::Relaxed);
            // Release: publishes `next` (and the item) with the new head.
            match self
                .head
                .compare_exchange_weak(head, me, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => head = now,
            }
        }
    }

    /// Every item pushed so far, newest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &'static T> {
        // Acquire: pairs with the Release push, so `next` links are visible.
        let mut cur = self.head.load(Ordering::Acquire);
        std::iter::from_fn(move || {
            // SAFETY: only `&'static T`s are ever pushed, and never removed.
            let item: &'static T = unsafe { cur.as_ref()? };
            cur = item.link().next.load(Ordering::Acquire);
            Some(item)
        })
    }
}

/// One `timeout_async!` call site and its timeout counter.
#[doc(hidden)] // Not public API: built by the macros.
pub struct Site {
    at: Location,
    count: AtomicU64,
    link: Link<Site>,
    /// The key of its timeouts counter, made on its first metric.
    #[cfg(feature = "metrics")]
    timeouts_key: std::sync::OnceLock<metrics::Key>,
}

static SITES: StaticList<Site> = StaticList::new();

impl Listed for Site {
    fn link(&self) -> &Link<Self> {
        &self.link
    }
}

impl Site {
    #[doc(hidden)]
    pub const fn new(
        label: Option<&'static str>,
        file: &'static str,
        line: u32,
        column: u32,
    ) -> Site {
        Site {
            at: Location {
                label,
                file,
                line,
                column,
            },
            count: AtomicU64::new(0),
            link: Link::new(),
            #[cfg(feature = "metrics")]
            timeouts_key: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn label(&self) -> Option<&'static str> {
        self.at.label
    }

    pub(crate) fn file(&self) -> &'static str {
        self.at.file
    }

    /// The key of the counter its timeouts are recorded in, made once per
    /// call site (a bounded number).
    #[cfg(feature = "metrics")]
    #[inline]
    pub(crate) fn timeouts_key(&self) -> &metrics::Key {
        self.timeouts_key
            .get_or_init(|| crate::export::timeouts_key(self.label()))
    }

    pub(crate) fn line(&self) -> u32 {
        self.at.line
    }

    pub(crate) fn column(&self) -> u32 {
        self.at.column
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub(crate) fn reset(&self) {
        self.count.store(0, Ordering::Relaxed);
    }

    /// Counts one event here, linking the site into the list the first time.
    ///
    /// One shared counter, unlike `safe_mps!`'s per-thread counts
    /// (`mps::tally`): a timeout counts here only when it fires, which costs
    /// far more than the add, and nothing on the poll path reads this line.
    /// Measured with 1 000 000 timeouts of one site firing on tokio's
    /// multi-thread runtime (2 workers), the process's CPU time was the same
    /// within 1 % with the add and without it.
    pub(crate) fn record(&'static self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        SITES.push_once(self);
    }

    /// Every site that has recorded an event, newest first.
    pub(crate) fn all() -> impl Iterator<Item = &'static Site> {
        SITES.iter()
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.at.fmt(f)
    }
}

impl fmt::Debug for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Site")
            .field("label", &self.at.label)
            .field("at", &format_args!("{self}"))
            .field("count", &self.count())
            .finish()
    }
}
