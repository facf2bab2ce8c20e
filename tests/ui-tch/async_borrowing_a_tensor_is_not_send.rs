// An async safe_mps! whose work borrows a tensor by shared reference across
// an await is not Send (a tch Tensor is not Sync): tokio::spawn refuses it.
// Naming the tensor, `[xs] => async |dev| ..`, makes it Send.
use opguard::safe_mps;
use tch::{Device, Kind, Tensor};

fn main() {
    let xs: &'static Tensor = Box::leak(Box::new(Tensor::ones([1], (Kind::Float, Device::Cpu))));
    tokio::spawn(safe_mps!(async |dev| {
        tokio::task::yield_now().await;
        xs.to_device(dev)
    }));
}
