use tch::Tensor;

fn main() {
    let xs = Tensor::from_slice(&[1.0f32]);
    let _ = opguard::safe_mps!([xs] => xs.sum(tch::Kind::Float));
}
