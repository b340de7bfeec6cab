//! my-agent: the monitoring agent shipped in the prefix. Its pipeline lands
//! with the agent issues; for now the binary only reports its version.

fn main() {
    println!("my-agent {}", env!("CARGO_PKG_VERSION"));
}
