//! `MoveToCpu` reaches every tensor in nested values, a model's parameters
//! included, and keeps their data.
#![cfg(feature = "tch")]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use opguard::mps::MoveToCpu;
use tch::{Device, Tensor, nn};

/// Counts the calls that reach it (a test double for the recursion only);
/// `Probe(true)` says it is on MPS.
struct Probe(bool);
static REACHED: AtomicUsize = AtomicUsize::new(0);
static ASKED: AtomicUsize = AtomicUsize::new(0);
impl MoveToCpu for Probe {
    fn move_to_cpu(&mut self) {
        REACHED.fetch_add(1, SeqCst);
    }

    fn is_on_mps(&self) -> bool {
        ASKED.fetch_add(1, SeqCst);
        self.0
    }
}

const P: Probe = Probe(false);

/// The probes' counters are shared: the tests that use them take turns, so
/// that one test's probes do not count in another's.
static PROBES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn probes() -> std::sync::MutexGuard<'static, ()> {
    PROBES.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn recursion_reaches_every_leaf_of_every_container() {
    let _turn = probes();
    let mut map = HashMap::new();
    map.insert("a", (P, Box::new(P)));
    map.insert("b", (P, Box::new(P)));
    let mut nested = (
        vec![Some(P), None, Some(P)],
        [P, P, P],
        Some(map),
        BTreeMap::from([(1, VecDeque::from([P]))]),
        &mut [P, P][..],
    );
    REACHED.store(0, SeqCst);
    nested.move_to_cpu();
    assert_eq!(REACHED.load(SeqCst), 2 + 3 + 4 + 1 + 2);
    ASKED.store(0, SeqCst);
    assert!(!nested.is_on_mps(), "no leaf is on MPS");
    assert_eq!(
        ASKED.load(SeqCst),
        2 + 3 + 4 + 1 + 2,
        "every leaf was asked"
    );
}

#[test]
fn one_leaf_on_mps_anywhere_makes_the_whole_value_on_mps() {
    let _turn = probes();
    let deep = (P, vec![None, Some(Box::new([P, Probe(true)]))]);
    assert!(deep.is_on_mps());
    let mut map = HashMap::new();
    map.insert(1, Probe(true));
    assert!(Some(map).is_on_mps());
    assert!(!(P, [P], Some(P)).is_on_mps());
}

#[test]
fn tensors_keep_their_data_and_handles() {
    let mut batch = (
        Tensor::from_slice(&[1.0f32, 2.0]),
        vec![Tensor::from_slice(&[3i64, 4])],
        Some(Box::new(Tensor::from_slice(&[5.0f64]))),
    );
    let alias = batch.0.shallow_clone();
    batch.move_to_cpu();
    assert_eq!(batch.0.device(), Device::Cpu);
    assert_eq!(Vec::<f32>::try_from(&batch.0).unwrap(), [1.0, 2.0]);
    assert_eq!(Vec::<i64>::try_from(&batch.1[0]).unwrap(), [3, 4]);
    assert_eq!(batch.2.as_ref().unwrap().double_value(&[0]), 5.0);
    // Moved in place: another handle to the same tensor still agrees.
    assert_eq!(alias.device(), Device::Cpu);
    assert_eq!(Vec::<f32>::try_from(&alias).unwrap(), [1.0, 2.0]);
}

#[test]
fn a_shared_reference_to_a_tensor_can_be_named() {
    let t = Tensor::from_slice(&[7.0f32]);
    let mut by_ref: &Tensor = &t;
    by_ref.move_to_cpu();
    assert_eq!(t.double_value(&[0]), 7.0);
}

#[test]
fn a_var_store_moves_with_its_model() {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let linear = nn::linear(vs.root() / "fc", 3, 2, Default::default());
    let before = linear.ws.copy();
    vs.move_to_cpu();
    assert_eq!(vs.device(), Device::Cpu);
    assert_eq!(linear.ws.device(), Device::Cpu);
    assert!(linear.ws.allclose(&before, 0.0, 0.0, false));
    assert_eq!(vs.variables().len(), 2);
}
