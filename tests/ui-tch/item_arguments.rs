use tch::Tensor;

opguard::safe_mps! {
    #[safe_mps(xs)]
    fn double(xs: &Tensor) -> Tensor {
        xs * 2
    }
}

fn main() {}
