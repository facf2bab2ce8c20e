//! A tensor whose move to CPU fails, for real: libtorch's meta tensors (shapes,
//! no data), which tch reports as on `Device::Mps` and which libtorch refuses
//! to copy. See tests/data/make_meta_tensor.py for where they come from.
#![cfg(feature = "tch")]

mod common;

use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use common::mps::{fresh, logs_containing};
use common::on_log_here;
use opguard::mps::MoveToCpu;
use tch::{CModule, Device, IValue, Tensor, nn};

/// A tensor of `n` floats on libtorch's meta device.
fn meta_tensor(n: i64) -> Tensor {
    let module = CModule::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/meta_tensor.pt"
    ))
    .expect("tests/data/meta_tensor.pt loads");
    match module.forward_is(&[IValue::Int(n)]) {
        Ok(IValue::Tensor(t)) => t,
        other => panic!("the meta module gave {other:?}"),
    }
}

#[test]
fn a_meta_tensor_reads_as_on_mps_and_cannot_be_copied_to_cpu() {
    // What the other tests rest on: if tch ever reports meta tensors as
    // their own device, or libtorch copies them, this says so first.
    let t = meta_tensor(4);
    assert_eq!(t.device(), Device::Mps);
    assert!(t.is_on_mps());
    assert!(t.f_to_device(Device::Cpu).is_err());
}

#[test]
fn a_tensor_whose_move_fails_stays_put_and_the_failure_is_logged() {
    let _g = fresh();
    let mut t = meta_tensor(3);
    t.move_to_cpu();
    assert_eq!(t.device(), Device::Mps, "left where it was");
    assert_eq!(t.size(), [3]);
    let warned = logs_containing("could not move a Mps tensor to CPU");
    assert!(
        warned
            .iter()
            .any(|l| l.starts_with("WARN") && l.contains("meta tensor")),
        "a warning naming the device and libtorch's reason: {warned:?}"
    );
    assert!(
        warned
            .iter()
            .all(|l| !l.contains("Exception raised from") && !l.contains('\n')),
        "one line, without PyTorch's backtrace: {warned:?}"
    );
}

#[test]
fn a_logger_that_reads_the_model_while_its_move_fails_does_not_deadlock() {
    let _g = fresh();
    let (done, finished) = mpsc::channel();
    // On its own thread: before the fix this thread hung for good, and the
    // test must fail rather than hang with it.
    std::thread::spawn(move || {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let _fc = nn::linear(&root / "fc", 3, 2, Default::default());
        let _stuck = root.add("stuck", meta_tensor(2), false);
        // A logger that looks at the model as it logs (say, to report its
        // parameters' devices): it takes the store's lock.
        let variables = vs.variables_.clone();
        on_log_here(Some(Box::new(move || {
            let n = variables
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .named_variables
                .len();
            assert_eq!(n, 3);
        })));
        vs.move_to_cpu();
        on_log_here(None);
        let devices: Vec<Device> = vs.variables().values().map(Tensor::device).collect();
        done.send(devices).unwrap();
    });
    let devices = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("move_to_cpu returned (a logger that reads the store must not deadlock it)");
    assert_eq!(
        devices.iter().filter(|&&d| d == Device::Cpu).count(),
        2,
        "the layer stays on CPU: {devices:?}"
    );
    assert_eq!(
        devices.iter().filter(|&&d| d == Device::Mps).count(),
        1,
        "the stuck tensor stays: {devices:?}"
    );
    assert!(!logs_containing("could not move a Mps tensor to CPU").is_empty());
}

#[test]
fn a_named_tensor_that_cannot_move_leaves_the_cpu_retry_to_report_its_own_error() {
    let _g = fresh();
    let mut stuck = meta_tensor(2);
    let devices = Mutex::new(Vec::new());
    let out = opguard::safe_mps!(label = "unmovable", device = Device::Mps, [stuck] => |dev| {
        devices.lock().unwrap().push(dev);
        // MPS's real error on the first attempt; on CPU, libtorch refuses
        // to add a tensor that has no data.
        Tensor::f_ones([2], (tch::Kind::Float, dev))?.f_add(&stuck)
    });
    assert_eq!(*devices.lock().unwrap(), [Device::Mps, Device::Cpu]);
    let err = out.expect_err("the retry cannot work with a tensor that stayed behind");
    assert!(
        !err.to_string().contains("'MPS' backend"),
        "the retry's error, not the first attempt's: {err}"
    );
    assert_eq!(stuck.device(), Device::Mps, "left where it was");
    assert!(!logs_containing("could not move a Mps tensor to CPU").is_empty());
    let site = opguard::mps::stats();
    let site = site.site("unmovable").expect("the call site is listed");
    assert_eq!((site.fallbacks, site.failed_fallbacks), (0, 1));
}
