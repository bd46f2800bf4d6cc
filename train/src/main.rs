fn main() { println!("mamba: coming"); }
