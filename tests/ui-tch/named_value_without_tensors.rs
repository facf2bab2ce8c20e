fn main() {
    let mut n: u32 = 1;
    let _ = opguard::safe_mps!([n] => n + 1);
}
