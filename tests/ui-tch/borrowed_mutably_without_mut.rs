use tch::{Device, Kind, Tensor, nn};

// A `&mut` binding needs no `mut`; a plain shared one cannot be moved.
fn step(vs: &mut nn::VarStore, xs: &Tensor) -> Tensor {
    opguard::safe_mps!([vs, xs] => |dev| xs.to_device(dev).sum(Kind::Float))
}

fn main() {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let _ = step(&mut vs, &Tensor::from_slice(&[1.0f32]));
}
