//! The my-agent build toolchain: `cargo xtask <command>`.
//!
//! One path from command to result: fetch -> build deps -> (agent -> stage
//! -> render -> health check -> rpm). Each step is a module taking typed
//! inputs; `main.rs` only parses flags and dispatches.

pub mod agent_build;
pub mod apt_source;
pub mod bench;
pub mod bench_forward;
pub mod bench_rpm;
pub mod build_cache;
pub mod builder;
pub mod cache_lock;
pub mod component_build;
pub mod container;
pub mod deps;
pub mod extract;
pub mod fetch;
pub mod file_tree;
pub mod flags;
pub mod health;
pub mod layout;
pub mod package;
pub mod package_cmd;
pub mod payload;
pub mod product;
pub mod recipe;
pub mod repo;
pub mod rpm_package;
pub mod rpm_rules;
pub mod source_cache;
pub mod targets;
pub mod template;
pub mod test_cmd;
pub mod tools;
pub mod vagrant;
pub mod zig;
