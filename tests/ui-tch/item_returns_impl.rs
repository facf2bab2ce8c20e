// The item form of safe_mps! cannot wrap a function that returns
// `impl Trait`, and says so.

opguard::safe_mps! {
    #[safe_mps([xs])]
    fn sizes(xs: &mut tch::Tensor) -> impl Iterator<Item = i64> {
        xs.size().into_iter()
    }
}

fn main() {}
