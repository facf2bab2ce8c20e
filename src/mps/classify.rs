//! Telling MPS errors from the rest, by their text.
//!
//! PyTorch reports MPS trouble in many words, but nearly always names the
//! backend: `'MPS' backend`, `MPS device`, `mps:0`, `mps devices`, or one of
//! Apple's `MPS*` classes (`MPSGraph`, `MPSNDArray`). So the test is the word
//! `mps` (any case) standing alone, or `MPS` starting a CamelCase name, in the
//! message proper. What is not judged:
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
//! Every step is a forward scan, so the answer takes time linear in the
//! message's length, and no step allocates.

use std::any::Any;

/// Whether `message` reports an error of PyTorch's MPS (Apple Metal) backend.
///
/// Judges the message, not an appended C++ backtrace. Works on `TchError`
/// texts, panic messages and Python tracebacks alike; available without the
/// `tch` feature.
///
/// ```
/// use opguard::is_mps_error;
///
/// assert!(is_mps_error("PyTorch is not linked with support for mps devices"));
/// assert!(is_mps_error("MPS backend out of memory (MPS allocated: 1.00 GB)"));
/// assert!(is_mps_error(
///     "Expected all tensors to be on the same device, but found at least two devices, mps:0 and cpu!"
/// ));
/// assert!(!is_mps_error(
///     "MPS client failed to connect to the MPS control daemon or the MPS server"
/// ));
/// assert!(!is_mps_error("timestamps must increase"));
/// ```
pub fn is_mps_error(message: &str) -> bool {
    let message = message_proper(message);
    if is_cuda_mps(message) {
        return false;
    }
    has_mps_word(message.as_bytes()) || message.contains("Invalid buffer size")
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
fn is_cuda_mps(message: &str) -> bool {
    const MARKERS: [&[u8]; 5] = [
        b"control daemon",
        b"mps server",
        b"mps client",
        b"nvidia-cuda-mps",
        b"cuda mps",
    ];
    MARKERS
        .iter()
        .any(|marker| contains_ignore_ascii_case(message.as_bytes(), marker))
}

fn contains_ignore_ascii_case(haystack: &[u8], needle: &[u8]) -> bool {
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

/// `mps` in any case as a word of its own, or `MPS` opening a CamelCase name.
fn has_mps_word(text: &[u8]) -> bool {
    text.windows(3).enumerate().any(|(i, w)| {
        if !w.eq_ignore_ascii_case(b"mps") {
            return false;
        }
        let before_ok = i == 0 || !is_word_byte(text[i - 1]);
        let after = text.get(i + 3).copied();
        let after_ok = match after {
            None => true,
            Some(c) if !is_word_byte(c) => true,
            // MPSGraph, MPSNDArray, MPSAllocator: Apple's MPS classes.
            Some(c) => w == b"MPS" && c.is_ascii_uppercase(),
        };
        before_ok && after_ok
    })
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
