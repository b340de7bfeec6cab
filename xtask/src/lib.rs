//! The my-agent build toolchain: `cargo xtask <command>`.
//!
//! One path from command to result: fetch -> build deps -> (agent -> stage
//! -> render -> health check -> rpm). `main.rs` only parses flags
//! (`flags.rs`) and dispatches. The stages are folders, and each depends
//! only on those below it and on the shared files here (the architecture
//! test in agent/tests checks both):
//!
//! - `builders/`: `cargo xtask package`, per target: which machine builds
//!   it (here, a container, a VM), running the package step
//! - `package/`: the package step: the agent, the payload, health check,
//!   service files, RPM
//! - `deps/`: `cargo xtask deps`: recipes fetched, built, cached and staged
//! - `toolchain/`: the compilers that build here (the host's, zig)
//!
//! beside them `repo/` (`cargo xtask repo`, over packages already written)
//! and `test_cmd.rs` (`cargo xtask test`). The benches are their own crate
//! (`xtask/bench/`), compiled only by `cargo xtask bench`.

// Stages, top to bottom.
pub mod builders;
pub mod repo;
pub mod test_cmd;

pub mod package;

pub mod deps;

pub mod toolchain;

// Shared by every stage; none of these imports a stage.
pub mod file_tree;
pub mod flags;
pub mod layout;
pub mod product;
pub mod targets;
pub mod template;
pub mod tools;
pub mod version;
