use tch::Tensor;

fn main() {
    let xs = Tensor::from_slice(&[1.0f32]);
    let _ = opguard::safe_mps!(|dev| xs.to_device(dev), label = "late");
}
