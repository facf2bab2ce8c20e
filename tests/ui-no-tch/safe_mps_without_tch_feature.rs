fn main() {
    let _ = opguard::safe_mps!(|dev| dev);
}
