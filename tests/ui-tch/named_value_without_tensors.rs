fn main() {
    let mut n = 1;
    let _ = opguard::safe_mps!([n] => n + 1);
}
