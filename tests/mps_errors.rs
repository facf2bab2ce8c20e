//! `is_mps_error` against PyTorch's real texts. The MPS texts come from
//! PyTorch's sources (file named beside each), the negatives from CUDA,
//! NVIDIA's own "MPS" service and ordinary errors whose backtraces name MPS
//! sources. Runs without libtorch.

use opguard::mps::MpsErrorKind::{self, Device, Op};
use opguard::mps::{is_mps_error, mps_error_kind};

/// PyTorch appends a C++ backtrace like this one; its paths name mps sources.
const BACKTRACE: &str = "\nException raised from check at /Users/runner/work/pytorch/pytorch/aten/src/ATen/native/mps/operations/LinearAlgebra.mm:412 (most recent call first):\nframe #0: c10::Error::Error(c10::SourceLocation, std::string) + 0x52 (0x10 in libc10.dylib)\nframe #1: at::native::mps::mm_out_mps_impl(...) + 0x1c (0x20 in libtorch_cpu.dylib)\n";

const MPS_TEXTS: &[(&str, MpsErrorKind, &str)] = &[
    (
        "c10/core/impl/DeviceGuardImplInterface.h",
        Device,
        "PyTorch is not linked with support for mps devices",
    ),
    (
        "ATen/core/dispatch/OperatorEntry.cpp (seen here)",
        Device,
        "Could not run 'aten::empty.memory_format' with arguments from the 'MPS' backend. This could be because the operator doesn't exist for this backend, or was omitted during the selective/custom build process (if using custom build). 'aten::empty.memory_format' is only available for these backends: [CPU, Meta, QuantizedCPU, AutogradMPS].",
    ),
    (
        "ATen/core/dispatch/OperatorEntry.cpp",
        Device,
        "Could not run 'aten::_copy_from' with arguments from the 'MPS' backend.",
    ),
    (
        "ATen/mps/MPSFallback.mm",
        Op,
        "The operator 'aten::_linalg_solve_ex.result' is not currently implemented for the MPS device. If you want this op to be considered for addition please comment on https://github.com/pytorch/pytorch/issues/141287 and mention use-case, that resulted in missing op as well as commit hash abc123. As a temporary fix, you can set the environment variable `PYTORCH_ENABLE_MPS_FALLBACK=1` to use the CPU as a fallback for this op. WARNING: this will be slower than running natively on MPS.",
    ),
    (
        "ATen/mps/MPSFallback.mm",
        Op,
        "The operator 'aten::_fft_r2c' is not currently implemented for the MPS device.",
    ),
    (
        "ATen/mps/MPSAllocator.mm",
        Device,
        "MPS backend out of memory (MPS allocated: 17.01 GB, other allocations: 1.07 GB, max allowed: 18.13 GB). Tried to allocate 152.30 MB on private pool. Use PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 to disable upper limit for memory allocations (may cause system failure).",
    ),
    (
        "ATen/mps/MPSAllocator.mm",
        Device,
        "MPS backend out of memory (MPS allocated: 40.00 MB, other allocations: 18.10 GB). Tried to allocate 512 bytes on shared pool.",
    ),
    (
        "ATen/mps/MPSAllocator.mm (older)",
        Device,
        "MPS backend out of memory (currently allocated: 8.84 GB, max allowed: 9.07 GB). Tried to allocate 192.00 MB on private pool. Use PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 to disable upper limit for memory allocations (may cause system failure).",
    ),
    (
        "ATen/mps/MPSAllocator.mm",
        Device,
        "Invalid buffer size: 36.00 GB",
    ),
    (
        "ATen/mps/EmptyTensor.cpp",
        Op,
        "Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't support float64. Please use float32 instead.",
    ),
    (
        "ATen/mps/EmptyTensor.cpp",
        Op,
        "only strided tensors are supported on MPS",
    ),
    (
        "ATen/mps/EmptyTensor.cpp",
        Op,
        "MPS supports tensors with dimensions <= 16, but got 17.",
    ),
    (
        "ATen/mps/EmptyTensor.cpp",
        Op,
        "MPS BFloat16 is only supported on MacOS 14 or newer",
    ),
    (
        "ATen/mps/EmptyTensor.cpp",
        Device,
        "The MPS backend is supported on MacOS 13.0+.Current OS version can be queried using `sw_vers`",
    ),
    (
        "ATen/mps/EmptyTensor.cpp",
        Device,
        "PyTorch code is not compiled with MPS enabled",
    ),
    (
        "ATen/native/mps/OperationUtils.mm",
        Op,
        "Cannot convert a float64 Tensor to MPS as the MPS framework doesn't support float64. Please use float32 instead.",
    ),
    (
        "ATen/native/mps/OperationUtils.mm",
        Op,
        "Trying to convert ComplexDouble to the MPS backend but it does not have support for that dtype.",
    ),
    (
        "ATen/native/mps/OperationUtils.mm",
        Op,
        "Placeholder storage has not been allocated on MPS device!",
    ),
    (
        "ATen/native/mps/OperationUtils.mm",
        Op,
        "MPSGraph does not support tensor dims larger than INT_MAX",
    ),
    (
        "ATen/native/mps/OperationUtils.mm",
        Op,
        "Unsupported scalar type 'ComplexDouble' on MPS backend.",
    ),
    (
        "ATen/native/mps/OperationUtils.mm (comment)",
        Op,
        "[MPSNDArray initWithDevice:descriptor:isTextureBacked:] Error: NDArray dimension length > INT_MAX",
    ),
    (
        "ATen/native/mps/OperationUtils.mm (older)",
        Op,
        "BFloat16 is not supported on MPS",
    ),
    (
        "ATen/mps/MPSFallback.mm",
        Op,
        "slow_conv2d_forward_mps: input(device='cpu') and weight(device=mps:0')  must be on the same device",
    ),
    (
        "c10/core/TensorImpl / TensorIterator",
        Op,
        "Expected all tensors to be on the same device, but found at least two devices, mps:0 and cpu!",
    ),
    (
        "c10/core/TensorImpl / TensorIterator",
        Op,
        "Expected all tensors to be on the same device, but found at least two devices, cpu and mps:0!",
    ),
    (
        "ATen/core/Generator checks",
        Op,
        "Expected a 'mps' device type for generator but found 'cpu'",
    ),
    (
        "tch's TchError Display",
        Device,
        "Internal torch error: PyTorch is not linked with support for mps devices",
    ),
    (
        "with backtrace",
        Op,
        "Placeholder storage has not been allocated on MPS device!\nException raised from Placeholder at /Users/runner/work/pytorch/aten/src/ATen/native/mps/OperationUtils.mm:390 (most recent call first):\nframe #0: c10::Error::Error",
    ),
    (
        "a tch plain method's panic",
        Device,
        "called `Result::unwrap()` on an `Err` value: Torch(\"Could not run 'aten::empty.memory_format' with arguments from the 'MPS' backend. This could be because the operator doesn't exist for this backend\\n\\nException raised from reportError at OperatorEntry.cpp:640 (most recent call first):\\nframe #0: c10::Error::Error\")",
    ),
    (
        "Python traceback",
        Device,
        "Traceback (most recent call last):\n  File \"train.py\", line 9, in <module>\nRuntimeError: MPS backend out of memory (MPS allocated: 20.48 GiB, other allocations: 146.27 GiB, max allowed: 163.20 GiB). Tried to allocate 3.00 GB on private pool.",
    ),
    (
        "ATen/mps/MPSDevice.mm",
        Device,
        "Missing Metal support for MTLGPUFamilyMac2",
    ),
    (
        "ATen/native/mps/operations (attention kernels)",
        Op,
        "Failed to create Metal library: compiler error",
    ),
    (
        "ATen/native/mps/operations/ScanKernel.mm (older)",
        Op,
        "MPS does not support cumsum op with int64 input. Support has been added in macOS 13.3",
    ),
];

const OTHER_TEXTS: &[(&str, &str)] = &[
    (
        "NVIDIA CUDA MPS",
        "MPS client failed to connect to the MPS control daemon or the MPS server",
    ),
    (
        "NVIDIA CUDA MPS",
        "CUDA error: MPS client failed to connect to the MPS control daemon or the MPS server",
    ),
    (
        "NVIDIA CUDA MPS",
        "nvidia-cuda-mps-control: failed to start the MPS server",
    ),
    (
        "letters, not a word",
        "timestamps must be monotonically increasing",
    ),
    ("letters, not a word", "core dumps are disabled"),
    ("letters, not a word", "sending on a closed mpsc channel"),
    (
        "CUDA OOM",
        "CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 15.78 GiB total capacity; 14.21 GiB already allocated)",
    ),
    (
        "CUDA dispatch, backend list names MPS",
        "Could not run 'aten::foo' with arguments from the 'CUDA' backend. 'aten::foo' is only available for these backends: [CPU, MPS, Meta, AutogradMPS].\n\nCPU: registered at RegisterCPU.cpp:1 [kernel]\nMPS: registered at RegisterMPS.cpp:1 [kernel]",
    ),
    (
        "devices",
        "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!",
    ),
    (
        "other backend",
        "PyTorch is not linked with support for xpu devices",
    ),
    ("other backend", "Torch not compiled with CUDA enabled"),
    (
        "shape error with an mps backtrace",
        "mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)",
    ),
    (
        "index error with an mps backtrace",
        "index 5 is out of bounds for dimension 0 with size 3",
    ),
    (
        "broadcast error",
        "The size of tensor a (3) must match the size of tensor b (4) at non-singleton dimension 1",
    ),
    (
        "autograd",
        "element 0 of tensors does not require grad and does not have a grad_fn",
    ),
    (
        "CUDA",
        "CUDA error: an illegal memory access was encountered",
    ),
    ("Rust panic", "called `Option::unwrap()` on a `None` value"),
    (
        "dispatcher key only",
        "AutogradMPS: registered at VariableType_7.cpp:10102 [autograd kernel]",
    ),
    ("empty", ""),
    ("metal, not Metal", "heavy metal is not an API"),
    ("letters, not a word", "HTML parse error near MTLx"),
];

#[test]
fn the_table_is_large_enough() {
    assert!(MPS_TEXTS.len() >= 25, "{}", MPS_TEXTS.len());
    assert!(OTHER_TEXTS.len() >= 15, "{}", OTHER_TEXTS.len());
}

#[test]
fn every_mps_text_from_pytorch_is_recognised_with_its_kind() {
    for (source, kind, text) in MPS_TEXTS {
        assert!(is_mps_error(text), "not recognised ({source}): {text}");
        assert_eq!(mps_error_kind(text), Some(*kind), "({source}): {text}");
    }
}

#[test]
fn mps_texts_keep_their_kind_with_a_backtrace_appended() {
    for (source, kind, text) in MPS_TEXTS {
        let with_trace = format!("{text}{BACKTRACE}");
        assert_eq!(
            mps_error_kind(&with_trace),
            Some(*kind),
            "lost with a backtrace ({source}): {text}"
        );
    }
}

#[test]
fn both_kinds_are_in_the_table() {
    let ops = MPS_TEXTS.iter().filter(|(_, k, _)| *k == Op).count();
    let devices = MPS_TEXTS.iter().filter(|(_, k, _)| *k == Device).count();
    assert!(ops >= 15 && devices >= 10, "{ops} op, {devices} device");
}

#[test]
fn other_texts_have_no_kind() {
    for (source, text) in OTHER_TEXTS {
        assert_eq!(mps_error_kind(text), None, "({source}): {text}");
    }
}

#[test]
fn no_other_text_is_taken_for_an_mps_error() {
    for (source, text) in OTHER_TEXTS {
        assert!(!is_mps_error(text), "false positive ({source}): {text}");
    }
}

#[test]
fn a_backtrace_naming_mps_sources_does_not_make_an_error_mps() {
    for (source, text) in OTHER_TEXTS {
        let with_trace = format!("{text}{BACKTRACE}");
        assert!(
            !is_mps_error(&with_trace),
            "the backtrace decided ({source}): {text}"
        );
    }
}

#[test]
fn empty_and_whitespace_are_not_mps_errors() {
    assert!(!is_mps_error(""));
    assert!(!is_mps_error(" \n\t"));
}

#[test]
fn non_ascii_text_is_judged_without_panicking() {
    assert!(is_mps_error("Ошибка: MPS backend out of memory"));
    assert!(is_mps_error("🔥 mps 🔥 device lost"));
    assert!(is_mps_error("設備 'MPS' backend 不可用"));
    assert!(!is_mps_error("ｍｐｓ fullwidth letters are not the word"));
    assert!(!is_mps_error("émps, ämps: letters around it"));
    // A multi-byte character right before the backtrace marker.
    assert!(!is_mps_error(
        "é\nException raised from x at native/mps/Foo.mm"
    ));
    assert!(is_mps_error(
        "MPS fehlgeschlagen — ü\nException raised from x"
    ));
}

#[test]
fn megabyte_messages_are_answered() {
    let mb = 1 << 20;
    // Near-misses everywhere: letters that almost make the word, almost the daemon.
    let near_misses = "AutogradMPS timestamps mpsc control daemo ".repeat(mb / 40);
    assert!(!is_mps_error(&near_misses));
    let found_at_the_end =
        format!("{near_misses} Placeholder storage has not been allocated on MPS device!");
    assert!(is_mps_error(&found_at_the_end));
    let one_letter = "m".repeat(mb);
    assert!(!is_mps_error(&one_letter));
    let multibyte = "ü".repeat(mb / 2);
    assert!(!is_mps_error(&multibyte));
}
