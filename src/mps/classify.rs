//! Telling MPS errors from the rest, and op-level from device-level, by
//! their text.
//!
//! PyTorch reports MPS trouble in many words, but nearly always names the
//! backend: `'MPS' backend`, `MPS device`, `mps:0`, `mps devices`, one of
//! Apple's `MPS*` classes (`MPSGraph`, `MPSNDArray`), or Metal, the GPU API
//! under MPS (`Missing Metal support for MTLGPUFamilyMac2`). So the test is
//! the word `mps` (any case) standing alone, `MPS` starting a CamelCase name,
//! the word `Metal`, or `MTL` starting a CamelCase name, in the message
//! proper. What is not judged:
//!
//! - the C++ backtrace PyTorch appends (`Exception raised from ...`, `frame #0:
//!   ...`): its paths name `native/mps/` sources even for shape errors;
//! - the dispatcher's list of backends an operator has (`is only available
//!   for these backends: [CPU, MPS, ...]`), which follows every "Could not
//!   run ... from the 'CUDA' backend" too;
//! - letters inside words: `timestamps`, `dumps`, `mpsc`, `AutogradMPS`,
//!   `ämps` (a non-ASCII character counts as a letter).
//!
//! NVIDIA's unrelated CUDA "MPS" (Multi-Process Service: its control daemon,
//! server and client) is recognised and rejected. One MPS-only message names
//! no backend, the allocator's `Invalid buffer size`, and is matched as such.
//!
//! An MPS error is [`Device`](MpsErrorKind::Device)-level when its words say
//! that MPS itself is missing or unusable ([`DEVICE_MARKERS`]); every other
//! MPS error is [`Op`](MpsErrorKind::Op)-level. An MPS text this module does
//! not know is therefore op-level: it pins one call site for a cool-down,
//! the local and bounded answer, rather than counting against MPS as a whole.
//!
//! Every step is a forward scan, so the answer takes time linear in the
//! message's length, and no step allocates.

use std::any::Any;

/// What kind of MPS error a message reports, from [`mps_error_kind`].
///
/// `safe_mps!` answers each kind differently: an op-level error keeps that
/// one call site on CPU for a cool-down while the rest of the work stays on
/// MPS (as PyTorch's own per-op CPU fallback does); device-level errors count
/// toward disabling MPS for the whole process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MpsErrorKind {
    /// This operation cannot run on MPS, while MPS itself works: an operator
    /// MPS does not implement, a dtype it lacks (float64, int64 `cumsum` on
    /// older macOS), a layout or size it does not take, tensors on MPS and
    /// CPU mixed in one op. The same call fails the same way next time.
    Op,
    /// MPS is not there or not usable: PyTorch built without it, macOS or the
    /// GPU too old (Metal support, GPU families), the backend unavailable,
    /// out of memory, an allocator failure.
    Device,
}

impl std::fmt::Display for MpsErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MpsErrorKind::Op => "op",
            MpsErrorKind::Device => "device",
        })
    }
}

/// Words of a device-level MPS error (compared ignoring ASCII case), each
/// from a PyTorch check: MPS not built in, not available, macOS or GPU too
/// old, out of memory, the allocator, and the dispatcher finding no MPS
/// backend at all (PyTorch with MPS answers an op it lacks with "not
/// currently implemented for the MPS device" instead).
const DEVICE_MARKERS: [&[u8]; 11] = [
    b"not linked with support for mps",
    b"not compiled with mps",
    b"backend is supported on macos",
    b"not available",
    b"not supported on this device",
    b"out of memory",
    b"invalid buffer size",
    b"allocator",
    b"with arguments from the 'mps' backend",
    b"metal support",
    b"gpu family",
];

/// Whether `message` reports an error of PyTorch's MPS (Apple Metal) backend.
///
/// Judges the message, not an appended C++ backtrace. Works on `TchError`
/// texts, panic messages and Python tracebacks alike; available without the
/// `tch` feature. The same as `mps_error_kind(message).is_some()`.
///
/// ```
/// use opguard::mps::is_mps_error;
///
/// assert!(is_mps_error("PyTorch is not linked with support for mps devices"));
/// assert!(is_mps_error("MPS backend out of memory (MPS allocated: 1.00 GB)"));
/// assert!(is_mps_error(
///     "Expected all tensors to be on the same device, but found at least two devices, mps:0 and cpu!"
/// ));
/// assert!(is_mps_error("Missing Metal support for MTLGPUFamilyMac2"));
/// assert!(!is_mps_error(
///     "MPS client failed to connect to the MPS control daemon or the MPS server"
/// ));
/// assert!(!is_mps_error("timestamps must increase"));
/// ```
pub fn is_mps_error(message: &str) -> bool {
    mps_error_kind(message).is_some()
}

/// The kind of MPS error `message` reports, or `None` when it is not an MPS
/// error (see [`is_mps_error`] for what counts).
///
/// ```
/// use opguard::mps::{MpsErrorKind, mps_error_kind};
///
/// assert_eq!(
///     mps_error_kind("The operator 'aten::_fft_r2c' is not currently implemented for the MPS device."),
///     Some(MpsErrorKind::Op)
/// );
/// assert_eq!(
///     mps_error_kind("MPS backend out of memory (MPS allocated: 17.01 GB)"),
///     Some(MpsErrorKind::Device)
/// );
/// assert_eq!(mps_error_kind("mat1 and mat2 shapes cannot be multiplied"), None);
/// ```
pub fn mps_error_kind(message: &str) -> Option<MpsErrorKind> {
    let message = message_proper(message).as_bytes();
    if is_cuda_mps(message) {
        return None;
    }
    let allocator = contains_ignore_ascii_case(message, b"invalid buffer size");
    if !(allocator || names_mps(message)) {
        return None;
    }
    let device = DEVICE_MARKERS
        .iter()
        .any(|marker| contains_ignore_ascii_case(message, marker));
    Some(if device {
        MpsErrorKind::Device
    } else {
        MpsErrorKind::Op
    })
}

/// Whether a caught panic's payload is an MPS error message (see [`is_mps_error`]).
///
/// tch's plain tensor methods panic with the `TchError` they unwrap, so this
/// is how `safe_mps!` recognises them.
pub fn is_mps_panic(payload: &(dyn Any + Send)) -> bool {
    panic_message(payload).is_some_and(is_mps_error)
}

/// The text of a panic payload, when it has one.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&'static str>().copied())
}

/// The part of a PyTorch message before its backtrace or backend list.
fn message_proper(message: &str) -> &str {
    const ENDS: [&str; 3] = [
        "Exception raised from",
        "is only available for these backends",
        "frame #0",
    ];
    let end = ENDS
        .iter()
        .filter_map(|marker| message.find(marker))
        .min()
        .unwrap_or(message.len());
    &message[..end]
}

/// NVIDIA's Multi-Process Service, which shares the name and nothing else.
fn is_cuda_mps(message: &[u8]) -> bool {
    const MARKERS: [&[u8]; 5] = [
        b"control daemon",
        b"mps server",
        b"mps client",
        b"nvidia-cuda-mps",
        b"cuda mps",
    ];
    MARKERS
        .iter()
        .any(|marker| contains_ignore_ascii_case(message, marker))
}

fn contains_ignore_ascii_case(haystack: &[u8], needle: &[u8]) -> bool {
    if needle.len() > haystack.len() {
        return false;
    }
    // `needle` is a few bytes long, so this stays linear in `haystack`.
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Letters and digits, in any script: a byte of a non-ASCII character counts
/// as one, so that `ämps` is not the word `mps`.
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || !b.is_ascii()
}

/// Whether the text names MPS or Metal.
fn names_mps(text: &[u8]) -> bool {
    // MPSGraph, MPSNDArray, MPSAllocator: Apple's MPS classes.
    has_word(text, b"mps", true, b"MPS")
        // Metal itself, and its classes: MTLGPUFamilyMac2, MTLBuffer.
        || has_word(text, b"Metal", false, b"")
        || has_word(text, b"MTL", false, b"MTL")
}

/// `word` standing alone (in any ASCII case when `any_case`), or spelled as
/// `camel` and opening a CamelCase name (followed by a capital letter).
fn has_word(text: &[u8], word: &[u8], any_case: bool, camel: &[u8]) -> bool {
    let n = word.len();
    text.windows(n).enumerate().any(|(i, w)| {
        let same = if any_case {
            w.eq_ignore_ascii_case(word)
        } else {
            w == word
        };
        if !same {
            return false;
        }
        let before_ok = i == 0 || !is_word_byte(text[i - 1]);
        let after_ok = match text.get(i + n).copied() {
            None => true,
            Some(c) if !is_word_byte(c) => true,
            Some(c) => !camel.is_empty() && w == camel && c.is_ascii_uppercase(),
        };
        before_ok && after_ok
    })
}

/// `mps` in any case as a word of its own, or `MPS` opening a CamelCase name.
#[cfg(test)]
fn has_mps_word(text: &[u8]) -> bool {
    has_word(text, b"mps", true, b"MPS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_not_letters() {
        assert!(has_mps_word(b"mps"));
        assert!(has_mps_word(b"on 'MPS' backend"));
        assert!(has_mps_word(b"forward_mps: x"));
        assert!(has_mps_word(b"MPSGraph failed"));
        assert!(!has_mps_word(b"AutogradMPS"));
        assert!(!has_mps_word(b"mpsc"));
        assert!(!has_mps_word(b"Mpsgraph"));
        assert!(!has_mps_word(b"timestamps"));
        assert!(!has_mps_word(b"mp"));
        assert!(!has_mps_word(b""));
    }

    #[test]
    fn metal_by_name_and_by_class() {
        assert!(names_mps(b"Missing Metal support for MTLGPUFamilyMac2"));
        assert!(names_mps(b"MTLBuffer could not be created"));
        assert!(!names_mps(b"heavy metal"), "Metal is a proper name");
        assert!(!names_mps(b"Metallic paint"));
        assert!(!names_mps(b"HTML"));
        assert!(!names_mps(b"MTLx"));
    }

    #[test]
    fn kinds() {
        use MpsErrorKind::{Device, Op};
        assert_eq!(mps_error_kind("mps: op foo unsupported"), Some(Op));
        assert_eq!(mps_error_kind("MPS backend out of memory"), Some(Device));
        assert_eq!(mps_error_kind("Invalid buffer size: 3 GB"), Some(Device));
        assert_eq!(mps_error_kind("out of memory"), None, "names no MPS");
        assert_eq!(mps_error_kind("CUDA MPS server out of memory"), None);
    }

    #[test]
    fn the_backtrace_is_cut_off() {
        let m = "shape mismatch\nException raised from f at aten/src/ATen/native/mps/Ops.mm:1";
        assert_eq!(message_proper(m), "shape mismatch\n");
        assert_eq!(message_proper("plain"), "plain");
    }

    #[test]
    fn panic_payloads_of_both_string_types() {
        let owned: Box<dyn Any + Send> = Box::new(String::from("MPS backend out of memory"));
        let borrowed: Box<dyn Any + Send> =
            Box::new("Placeholder storage has not been allocated on MPS device!");
        let other: Box<dyn Any + Send> = Box::new(42u8);
        assert!(is_mps_panic(owned.as_ref()));
        assert!(is_mps_panic(borrowed.as_ref()));
        assert!(!is_mps_panic(other.as_ref()));
    }
}
