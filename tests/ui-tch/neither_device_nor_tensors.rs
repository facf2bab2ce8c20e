fn main() {
    let x = 1;
    let _ = opguard::safe_mps!(x + 1);
}
