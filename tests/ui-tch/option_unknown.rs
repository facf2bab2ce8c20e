// An option safe_mps! does not have, or one given twice, is named.
use tch::Tensor;

fn main() {
    let xs = Tensor::from_slice(&[1.0f32]);
    let _ = opguard::safe_mps!(fallback = false, |dev| xs.to_device(dev));
    let _ = opguard::safe_mps!(label = "a", label = "b", |dev| xs.to_device(dev));
}
